"""RoPE temporal attention on diffusers' spatio-temporal UNet (vdf.models.rope)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

from vdf.models.rope import (
    RopeTransformerSpatioTemporalModel,
    TemporalRopeAttnProcessor,
    apply_rope,
    enable_temporal_rope,
    rope_angles,
    temporal_positions,
)
from vdf.models.svd import svd_unet_forward

# Two levels, head dim 16 everywhere (32/2, 64/4), one spatio-temporal transformer per cross-attn block.
TINY_UNET = dict(
    sample_size=8,
    in_channels=8,
    out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    block_out_channels=(32, 64),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
    layers_per_block=1,
    cross_attention_dim=32,
    num_attention_heads=(2, 4),
    num_frames=8,
)


def tiny_unet(seed: int = 0, **overrides) -> UNetSpatioTemporalConditionModel:
    torch.manual_seed(seed)
    return UNetSpatioTemporalConditionModel(**{**TINY_UNET, **overrides}).eval()


def tiny_inputs(batch: int = 1, frames: int = 4, tokens: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, frames, 8, 8, 8, generator=g)
    context = torch.randn(batch, tokens, 32, generator=g)
    return sample, torch.full((batch,), 500.0), context, torch.randn(batch, 3, generator=g)


@pytest.fixture(scope="module")
def rope_unet():
    return enable_temporal_rope(tiny_unet())


def _first_rope_module(unet) -> RopeTransformerSpatioTemporalModel:
    return next(m for m in unet.modules() if isinstance(m, RopeTransformerSpatioTemporalModel))


# --- the rotation itself -------------------------------------------------------------------------


def test_rope_angles_follow_the_frequency_formula():
    pos = torch.tensor([[0, 1, 5], [2, 7, 30]])
    cos, sin = rope_angles(pos, dim=8, theta=100.0)
    assert cos.dtype == sin.dtype == torch.float64 and cos.shape == (2, 3, 4)
    for b in range(2):
        for f in range(3):
            for k in range(4):
                angle = pos[b, f].item() * 100.0 ** (-2 * k / 8)
                assert cos[b, f, k].item() == pytest.approx(math.cos(angle), abs=1e-12)
                assert sin[b, f, k].item() == pytest.approx(math.sin(angle), abs=1e-12)
    with pytest.raises(ValueError, match="even"):
        rope_angles(pos, dim=7)


def test_apply_rope_is_a_rotation_of_each_adjacent_pair():
    x = torch.randn(3, 2, 5, 16, dtype=torch.float64)
    cos, sin = rope_angles(torch.arange(5)[None] * 3, dim=16)
    y = apply_rope(x, cos[:, None], sin[:, None])
    pair_norm = lambda t: t.unflatten(-1, (-1, 2)).norm(dim=-1)
    torch.testing.assert_close(pair_norm(y), pair_norm(x))
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    # position 0 is the identity
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])


def test_apply_rope_equals_complex_multiplication():
    theta, dim = 10000.0, 16
    pos = torch.tensor([[0.0, 1.0, 4.0, 9.5]])
    x = torch.randn(1, 3, 4, dim)
    cos, sin = rope_angles(pos, dim=dim, theta=theta)
    got = apply_rope(x, cos[:, None], sin[:, None])
    omega = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    phase = torch.polar(torch.ones(4, dim // 2, dtype=torch.float64), pos[0, :, None].double() * omega)
    want = torch.view_as_real(torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous()) * phase)
    torch.testing.assert_close(got, want.flatten(-2).float(), atol=1e-6, rtol=1e-5)
    # low precision input is rotated in float32 and returned in its own dtype
    assert apply_rope(x.half(), cos, sin).dtype == torch.float16


def test_scores_depend_only_on_position_differences():
    q, k = torch.randn(6, 32, dtype=torch.float64), torch.randn(6, 32, dtype=torch.float64)
    pos = torch.tensor([[0, 2, 3, 7, 11, 12]])

    def scores(p):
        cos, sin = rope_angles(p, dim=32)
        return apply_rope(q, cos[0], sin[0]) @ apply_rope(k, cos[0], sin[0]).T

    torch.testing.assert_close(scores(pos + 37), scores(pos))
    assert not torch.allclose(scores(pos * 2), scores(pos))


# --- the module swap -----------------------------------------------------------------------------


def test_swap_removes_frame_embedding_and_keeps_every_other_parameter():
    plain = tiny_unet()
    before = plain.state_dict()
    rope = enable_temporal_rope(copy.deepcopy(plain))
    after = rope.state_dict()
    dropped = {k for k in before if ".time_pos_embed." in k or ".time_proj." in k}
    assert dropped and not any(".time_pos_embed." in k or ".attentions.0.time_proj" in k for k in after)
    assert set(after) == set(before) - dropped
    for key in after:
        assert torch.equal(after[key], before[key])
    transformers = [m for m in rope.modules() if isinstance(m, TransformerSpatioTemporalModel)]
    n_plain = sum(isinstance(m, TransformerSpatioTemporalModel) for m in plain.modules())
    assert len(transformers) == n_plain == 4 and all(
        isinstance(m, RopeTransformerSpatioTemporalModel) for m in transformers
    )
    for m in transformers:
        assert not hasattr(m, "time_pos_embed") and not hasattr(m, "time_proj")
        for block in m.temporal_transformer_blocks:
            assert isinstance(block.attn1.processor, TemporalRopeAttnProcessor)
            assert isinstance(block.attn2.processor, TemporalRopeAttnProcessor)
        for block in m.transformer_blocks:  # spatial attention untouched
            assert isinstance(block.attn1.processor, AttnProcessor2_0)
    # idempotent
    assert set(enable_temporal_rope(rope).state_dict()) == set(after)


def test_constructor_builds_the_same_layout():
    m = RopeTransformerSpatioTemporalModel(2, 16, in_channels=32, cross_attention_dim=32)
    ref = TransformerSpatioTemporalModel(2, 16, in_channels=32, cross_attention_dim=32)
    want = {k for k in ref.state_dict() if not k.startswith(("time_pos_embed.", "time_proj."))}
    assert set(m.state_dict()) == want


def test_identity_rotation_reproduces_diffusers_without_frame_embedding():
    """Equal positions rotate nothing: the RoPE module must then be diffusers' module whose
    frame embedding is zero, i.e. the rest of the computation is unchanged."""
    torch.manual_seed(0)
    plain = TransformerSpatioTemporalModel(2, 16, in_channels=32, cross_attention_dim=32).eval()
    torch.nn.init.zeros_(plain.time_pos_embed.linear_2.weight)
    torch.nn.init.zeros_(plain.time_pos_embed.linear_2.bias)
    rope = RopeTransformerSpatioTemporalModel.from_module(copy.deepcopy(plain))
    b, f = 2, 3
    x, ctx = torch.randn(b * f, 32, 4, 4), torch.randn(b * f, 2, 32)
    ind = torch.zeros(b, f)
    with torch.no_grad():
        want = plain(x, ctx, ind).sample
        got = rope(x, ctx, ind, position_ids=torch.zeros(b, f, dtype=torch.long)).sample
        moved = rope(x, ctx, ind).sample
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(moved, want, atol=1e-4)


def _rotate_slow(x: torch.Tensor, positions: list[float], theta: float = 10000.0) -> torch.Tensor:
    """Explicit 2x2 rotation of each channel pair of ``x`` (``(..., F, d)``), frame by frame."""
    out = x.clone()
    d = x.shape[-1]
    for fi, p in enumerate(positions):
        for k in range(d // 2):
            a = p * theta ** (-2 * k / d)
            rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=x.dtype)
            out[..., fi, 2 * k : 2 * k + 2] = x[..., fi, 2 * k : 2 * k + 2] @ rot.T
    return out


def _attention_slow(attn, x, context, positions, rotate_key):
    """softmax(R q · (R) k / sqrt(d)) v, head by head, for ``x`` ``(S, F, C)``."""
    heads, c = attn.heads, x.shape[-1]
    d = c // heads
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    out = torch.empty_like(q)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        qh, kh = _rotate_slow(q[..., sl], positions), k[..., sl]
        if rotate_key:
            kh = _rotate_slow(kh, positions)
        w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out[..., sl] = w @ v[..., sl]
    return attn.to_out[0](out)


def test_temporal_attention_equals_slow_recomputation():
    """attn1 rotates q and k, attn2 rotates q only; both equal an explicit per-head recomputation."""
    torch.manual_seed(0)
    m = RopeTransformerSpatioTemporalModel(2, 16, in_channels=32, cross_attention_dim=32).eval()
    block = m.temporal_transformer_blocks[0]
    seen = {}

    def keep(name):
        def hook(module, args, kwargs, output):
            seen[name] = (args[0], kwargs.get("encoder_hidden_states"), output)

        return hook

    block.attn1.register_forward_hook(keep("attn1"), with_kwargs=True)
    block.attn2.register_forward_hook(keep("attn2"), with_kwargs=True)
    positions = [0.0, 3.0, 7.0]
    x, ctx = torch.randn(3, 32, 2, 2), torch.randn(3, 3, 32)  # 3 context tokens: q rotation matters
    with torch.no_grad():
        m(x, ctx, torch.zeros(1, 3), position_ids=torch.tensor([[0, 3, 7]]))
        inp, _, out = seen["attn1"]
        torch.testing.assert_close(_attention_slow(block.attn1, inp, inp, positions, True), out, atol=1e-5, rtol=1e-4)
        inp, context, out = seen["attn2"]
        assert context.shape == (4, 3, 32)
        torch.testing.assert_close(
            _attention_slow(block.attn2, inp, context, positions, False), out, atol=1e-5, rtol=1e-4
        )
        assert not torch.allclose(_attention_slow(block.attn2, inp, context, positions, True), out, atol=1e-4)


def test_processor_refuses_to_run_without_angles():
    m = RopeTransformerSpatioTemporalModel(2, 16, in_channels=32, cross_attention_dim=32)
    with pytest.raises(RuntimeError, match="not set"):
        m.temporal_transformer_blocks[0].attn1(torch.randn(4, 3, 32))


# --- the whole UNet ------------------------------------------------------------------------------


def test_unet_output_is_invariant_to_a_common_shift_of_positions(rope_unet):
    sample, t, ctx, ids = tiny_inputs(frames=4)
    pos = torch.tensor([[0, 2, 5, 6]])
    with torch.no_grad():
        a = svd_unet_forward(rope_unet, sample, t, ctx, ids, pos)
        b = svd_unet_forward(rope_unet, sample, t, ctx, ids, pos + 40)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_frame_dropout_positions_change_the_output(rope_unet):
    sample, t, ctx, ids = tiny_inputs(frames=3)
    with torch.no_grad():
        dense = svd_unet_forward(rope_unet, sample, t, ctx, ids, None)
        arange = svd_unet_forward(rope_unet, sample, t, ctx, ids, torch.arange(3)[None])
        dropped = svd_unet_forward(rope_unet, sample, t, ctx, ids, torch.tensor([[0, 3, 7]]))
    torch.testing.assert_close(dense, arange)
    assert (dropped - dense).abs().max() > 1e-4


def test_positions_via_context_manager_are_reset(rope_unet):
    sample, t, ctx, ids = tiny_inputs(batch=2, frames=3)
    pos = torch.tensor([[0, 3, 7], [4, 5, 9]])
    with torch.no_grad():
        batched = svd_unet_forward(rope_unet, sample, t, ctx, ids, pos)
        for i in range(2):  # each clip of the batch uses its own positions
            alone = svd_unet_forward(
                rope_unet, sample[i : i + 1], t[:1], ctx[i : i + 1], ids[i : i + 1], pos[i : i + 1]
            )
            torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=1e-4)
    module = _first_rope_module(rope_unet)
    with temporal_positions(rope_unet, pos):
        assert all(
            m.position_ids is pos for m in rope_unet.modules() if isinstance(m, RopeTransformerSpatioTemporalModel)
        )
    assert module.position_ids is None
    # a (F,) vector is shared by the batch; a wrong length is an error naming the shapes
    x, c = torch.randn(6, 32, 8, 8), torch.randn(6, 1, 32)
    with torch.no_grad():
        shared = module(x, c, torch.zeros(2, 3), position_ids=torch.tensor([0, 3, 7])).sample
        explicit = module(x, c, torch.zeros(2, 3), position_ids=torch.tensor([[0, 3, 7], [0, 3, 7]])).sample
        torch.testing.assert_close(shared, explicit)
        with pytest.raises(ValueError, match="do not fit"):
            module(x, c, torch.zeros(2, 3), position_ids=torch.arange(4))


def test_replacing_the_processors_is_detected():
    unet = enable_temporal_rope(tiny_unet())
    sample, t, ctx, ids = tiny_inputs(frames=2)
    unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(RuntimeError, match="enable_temporal_rope"):
        svd_unet_forward(unet, sample, t, ctx, ids)
    enable_temporal_rope(unet)
    with torch.no_grad():
        svd_unet_forward(unet, sample, t, ctx, ids)
    with pytest.raises(ValueError, match="no TransformerSpatioTemporalModel"):
        enable_temporal_rope(torch.nn.Linear(2, 2))


def test_gradients_flow_through_rope_attention(rope_unet):
    unet = copy.deepcopy(rope_unet).train()
    sample, t, ctx, ids = tiny_inputs(frames=3)
    svd_unet_forward(unet, sample, t, ctx, ids, torch.tensor([[0, 3, 7]])).square().mean().backward()
    grad = _first_rope_module(unet).temporal_transformer_blocks[0].attn1.to_q.weight.grad
    assert grad is not None and grad.abs().sum() > 0
