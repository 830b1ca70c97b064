"""FlashDepth: identity at initialisation, streaming == clip forward, BPTT, official checkpoint layout.

The official key layout is written out here from the architecture description (reference
§2.11 + the Depth-Anything-V2 formulas of §1.5), independently of the vdf modules, and the
temporal module and the cross-attention are checked against slow re-implementations.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from official_layouts import official_shapes, random_tensors

from vdf.models.dav2 import DepthAnythingV2
from vdf.models.flashdepth import (
    FlashDepth,
    FlashDepthState,
    TemporalMamba,
    flashdepth_official_to_vdf,
    teacher_input_size,
    vdf_to_flashdepth_official,
)
from vdf.models.hybrid_fusion import HybridFusion
from vdf.models.weights import StateDictMismatchError

# Tiny widths for CPU (what configs/tiny/flashdepth*.yaml use).
TINY_STUDENT = dict(
    embed_dim=48, depth=4, num_heads=2, layer_indices=[0, 1, 2, 3], features=16, out_channels=[8, 16, 24, 32]
)
TINY_MAMBA = dict(mamba_d_state=16, mamba_expand=2, mamba_headdim=8)
TINY_TEACHER = dict(
    teacher_embed_dim=48,
    teacher_depth=4,
    teacher_num_heads=2,
    teacher_layer_indices=[0, 1, 2, 3],
    teacher_features=32,
    teacher_out_channels=[8, 16, 24, 32],
    teacher_resolution=28,  # inputs taller than 28 exercise the teacher's resize
)
TINY = {**TINY_STUDENT, **TINY_MAMBA}
TINY_FULL = {**TINY, **TINY_TEACHER}

# (embed_dim, depth, dpt features, dpt out_channels) and Mamba (d_state, expand, headdim)
REAL = {
    "vits": ((384, 12, 64, [48, 96, 192, 384]), (256, 4, 32)),
    "vitl": ((1024, 24, 256, [256, 512, 1024, 1024]), (256, 2, 64)),
}
TINY_ENC = ((48, 4, 16, [8, 16, 24, 32]), (16, 2, 8))
TINY_TEACHER_ENC = (48, 4, 32, [8, 16, 24, 32])


# ----------------------------------------------------------------------------- official layout


def dav2_layout(enc, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """``pretrained.*`` + ``depth_head.*`` of a DAv2 checkpoint (GELU-MLP encoders), under ``prefix``."""
    return {prefix + k: v for k, v in official_shapes((*enc, None)).items()}


def mamba_layout(d: int, n: int, expand: int, headdim: int, k: int = 4, layers: int = 4) -> dict[str, tuple[int, ...]]:
    """``mamba.*`` of a FlashDepth checkpoint (mamba_ssm Mamba2 shapes, ngroups 1)."""
    e = expand * d
    nh = e // headdim
    s: dict[str, tuple[int, ...]] = {}
    for i in range(layers):
        p = f"mamba.blocks.0.{i}."
        s |= {p + "norm1.weight": (d,), p + "norm1.bias": (d,)}
        s |= {p + "mamba.in_proj.weight": (2 * e + 2 * n + nh, d), p + "mamba.conv1d.weight": (e + 2 * n, 1, k)}
        s |= {p + "mamba.conv1d.bias": (e + 2 * n,), p + "mamba.dt_bias": (nh,), p + "mamba.A_log": (nh,)}
        s |= {p + "mamba.D": (nh,), p + "mamba.norm.weight": (e,), p + "mamba.out_proj.weight": (d, e)}
        s |= {p + "norm2.weight": (d,), p + "norm2.bias": (d,)}
        s |= {p + "mlp.0.weight": (4 * d, d), p + "mlp.0.bias": (4 * d,)}
        s |= {p + "mlp.2.weight": (d, 4 * d), p + "mlp.2.bias": (d,)}
    s |= {"mamba.final_layer.1.weight": (d, d), "mamba.final_layer.1.bias": (d,)}
    return s


def fusion_layout(d: int, ctx: int, blocks: int = 4, expand: int = 2) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    for i in range(blocks):
        p = f"hybrid_fusion.blocks.0.{i}."
        for norm in ("norm1", "context_norm", "norm2"):
            s |= {f"{p}{norm}.weight": (d,), f"{p}{norm}.bias": (d,)}
        s |= {p + "attention.q.weight": (d, d), p + "attention.kv.weight": (2 * d, d)}
        s |= {p + "attention.proj.weight": (d, d), p + "attention.proj.bias": (d,)}
        s |= {p + "mlp.0.weight": (expand * d, d), p + "mlp.0.bias": (expand * d,)}
        s |= {p + "mlp.2.weight": (d, expand * d), p + "mlp.2.bias": (d,)}
        s |= {p + "context_proj.weight": (d, ctx), p + "context_proj.bias": (d,)}
    return s


def official_layout(variant: str, tiny: bool) -> dict[str, tuple[int, ...]]:
    if tiny:
        enc, (n, expand, headdim) = TINY_ENC
        teacher = TINY_TEACHER_ENC
        if variant == "l":
            enc = TINY_TEACHER_ENC
    else:
        enc, (n, expand, headdim) = REAL["vitl" if variant == "l" else "vits"]
        teacher = REAL["vitl"][0]
    s = dav2_layout(enc) | mamba_layout(enc[2], n, expand, headdim)
    if variant == "full":
        s |= dav2_layout(teacher, "teacher_model.") | fusion_layout(enc[2], teacher[2])
    return s


def save_official(path, sd) -> str:
    torch.save({"model": sd, "step": 1, "optimizer": {"state": {}, "param_groups": []}}, path)
    return str(path)


def shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def perturb_zero_inits(model: FlashDepth, seed: int = 0, scale: float = 0.3) -> None:
    """Give the zero-initialised layers random values so the temporal module / fusion act."""
    g = torch.Generator().manual_seed(seed)
    layers = [model.mamba.final_layer[1]]
    if model.hybrid_fusion is not None:
        for blk in model.hybrid_fusion.blocks[0]:
            layers += [blk.attention.proj, blk.mlp[-1]]
    with torch.no_grad():
        for lin in layers:
            for p in (lin.weight, lin.bias):
                p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def video(b=2, t=3, h=42, w=56, seed=0, dtype=torch.float32):
    return torch.randn(b, t, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------------------- identity at init


@pytest.mark.parametrize("variant,encoder", [("s", "vits"), ("l", "vitl")])
def test_zero_init_temporal_module_is_identity(variant, encoder):
    torch.manual_seed(0)
    model = FlashDepth(variant, **TINY).eval()
    assert model.mamba_stage == {"s": 1, "l": 3}[variant]
    dav2 = DepthAnythingV2(encoder, **TINY_STUDENT).eval()
    dav2.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("mamba.")})
    x = video()
    with torch.no_grad():
        ours, state = model(x)
        ref = dav2(x.flatten(0, 1)).reshape(ours.shape)
    assert ours.shape == (2, 3, 1, 42, 56) and ref.abs().max() > 0
    assert torch.equal(ours, ref)
    assert isinstance(state, FlashDepthState) and state.frames_seen == 3
    assert state.mamba[0].ssm.abs().max() > 0  # the recurrence did run

    perturb_zero_inits(model)
    with torch.no_grad():
        moved, _ = model(x)
    assert (moved - ref).abs().max() > 1e-3


def test_hybrid_at_init_equals_student(tmp_path):
    """The fusion is an identity at init: Full (student S + teacher L) == FlashDepth-S alone.

    Built the official stage-2 way: student from a FlashDepth-S file, teacher from a FlashDepth-L file.
    """
    s_path = save_official(tmp_path / "s.pth", random_tensors(official_layout("s", tiny=True), seed=1))
    l_path = save_official(tmp_path / "l.pth", random_tensors(official_layout("l", tiny=True), seed=2))
    student = FlashDepth.from_checkpoint(s_path, "s", **TINY).eval()
    assert student.mamba.final_layer[1].weight.abs().max() > 0  # a trained-like temporal module
    full = FlashDepth("full", **TINY_FULL, student_weights=s_path, teacher_weights=l_path).eval()
    assert teacher_input_size(42, 56, 28) == (28, 28)  # the teacher really runs on resized frames
    x = video(seed=3)
    with torch.no_grad():
        ref, _ = student(x)
        ours, _ = full(x)
    assert ref.abs().max() > 0
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)

    # Once the fusion is trained, the teacher matters.
    perturb_zero_inits(full, seed=4)
    with torch.no_grad():
        fused, _ = full(x)
        for p in full.teacher_model.parameters():
            p.mul_(1.5)
        other_teacher, _ = full(x)
    assert (fused - ref).abs().max() > 1e-3
    assert (other_teacher - fused).abs().max() > 1e-4


def test_teacher_input_size():
    assert teacher_input_size(1148, 2044) == (490, 868)  # grid 35 x 62, as in the reference
    assert teacher_input_size(518, 924) == (490, 868)
    assert teacher_input_size(490, 700) == (490, 700)  # short enough: unchanged
    assert teacher_input_size(434, 1022) == (434, 1022)


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("variant", ["full", "l"])
def test_step_equals_forward_and_state_carries(variant):
    torch.manual_seed(1)
    model = FlashDepth(variant, **(TINY_FULL if variant == "full" else TINY)).eval()
    perturb_zero_inits(model, seed=5)
    x = video(b=2, t=4, seed=6)
    with torch.no_grad():
        clip, clip_state = model(x)
        state = model.init_state(2)
        assert state.mamba[0].ssm.dtype == torch.float32
        frames = []
        for i in range(4):
            d, state = model.step(x[:, i], state)
            assert d.shape == (2, 1, 42, 56)
            frames.append(d)
        first, mid = model(x[:, :2])
        second, end = model(x[:, 2:], mid)
        alone, _ = model(x[:, 2:])
    # float32; frames batched differently in the ViT/DPT only change the rounding
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(frames, 1), clip, **tol)
    torch.testing.assert_close(torch.cat([first, second], 1), clip, **tol)
    for a, b, c in zip(state.mamba, end.mamba, clip_state.mamba):
        torch.testing.assert_close(a.ssm, c.ssm, **tol)
        torch.testing.assert_close(b.ssm, c.ssm, **tol)
    assert state.frames_seen == end.frames_seen == 4
    # The state matters: frames 2-3 without the history of frames 0-1 differ.
    assert (alone - second).abs().max() > 1e-6


def test_bptt_reaches_every_frame_and_not_the_teacher():
    torch.manual_seed(2)
    model = FlashDepth("full", **TINY_FULL).train()
    assert not model.teacher_model.training  # the frozen teacher stays in eval mode
    perturb_zero_inits(model, seed=7)
    x = video(b=1, t=4, seed=8).requires_grad_(True)
    out, _ = model(x)
    out[:, -1].square().mean().backward()  # a loss on the last frame only
    # ViT and DPT are per frame: earlier frames reach the last one only through the Mamba state.
    for t in range(4):
        assert x.grad[:, t].abs().sum() > 0, f"no gradient reaches frame {t}"
    for name, p in model.mamba.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in model.teacher_model.parameters())
    assert model.hybrid_fusion.blocks[0][0].context_proj.weight.grad.abs().sum() > 0
    # Every trainable parameter takes part (DDP needs no find_unused_parameters).
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []

    # Detaching the state truncates BPTT.
    x.grad = None
    _, state = model(x[:, :2])
    late, _ = model(x[:, 2:], state.detach())
    late[:, -1].square().mean().backward()
    assert x.grad[:, :2].abs().sum() == 0 and x.grad[:, 2:].abs().sum() > 0


def test_param_groups_by_module():
    model = FlashDepth("full", **TINY_FULL)
    groups = model.param_groups_by_module()
    assert list(groups) == ["vit", "dpt", "mamba", "fusion"]
    ids = [id(p) for g in groups.values() for p in g]
    assert len(ids) == len(set(ids))
    teacher = {id(p) for p in model.teacher_model.parameters()}
    assert not teacher & set(ids)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert {id(p) for p in groups["mamba"]} == {id(p) for p in model.mamba.parameters()}
    assert FlashDepth("s", **TINY).param_groups_by_module()["fusion"] == []


# ----------------------------------------------------------------------------- components vs slow references


def test_temporal_module_matches_slow_reference():
    torch.manual_seed(3)
    mod = TemporalMamba(16, num_layers=2, downsample=0.1, d_state=16, expand=2, headdim=8).double()
    with torch.no_grad():
        mod.final_layer[1].weight.normal_()
        mod.final_layer[1].bias.normal_()
    feats = torch.randn(2, 3, 16, 74, 52, dtype=torch.float64)
    out, _ = mod(feats)
    # Written from the description: pool to (int(0.1 h), int(0.1 w)), row-major tokens, blocks with
    # state carried per frame, bilinear (align_corners) back, GELU -> Linear, residual.
    states = [None, None]
    for t in range(3):
        f = feats[:, t]
        x = F.adaptive_avg_pool2d(f, (7, 5)).flatten(2).transpose(1, 2)
        for j, blk in enumerate(mod.layers):
            y, states[j] = blk.mamba(F.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias), states[j])
            x = x + y
            normed = F.layer_norm(x, (16,), blk.norm2.weight, blk.norm2.bias)
            hdn = F.gelu(F.linear(normed, blk.mlp[0].weight, blk.mlp[0].bias))
            x = x + F.linear(hdn, blk.mlp[2].weight, blk.mlp[2].bias)
        up = F.interpolate(x.transpose(1, 2).reshape(2, 16, 7, 5), (74, 52), mode="bilinear", align_corners=True)
        lin = mod.final_layer[1]
        ref = f + F.linear(F.gelu(up.permute(0, 2, 3, 1)), lin.weight, lin.bias).permute(0, 3, 1, 2)
        torch.testing.assert_close(out[:, t], ref, rtol=1e-10, atol=1e-10)
    assert mod.token_grid(3, 5) == (1, 1)  # guarded: never an empty grid


def test_cross_attention_fusion_matches_slow_reference():
    torch.manual_seed(4)
    fusion = HybridFusion(16, context_dim=32, num_blocks=2, num_heads=2, mlp_expand=2).double()
    student = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    teacher = torch.randn(2, 32, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(fusion(student, teacher), student, rtol=0, atol=0)  # zero init
    with torch.no_grad():
        for p in fusion.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = student.flatten(2).transpose(1, 2)
    blocks = fusion.blocks[0]
    ctx = F.linear(teacher.flatten(2).transpose(1, 2), blocks[0].context_proj.weight, blocks[0].context_proj.bias)
    for blk in blocks:
        a = blk.attention
        q = F.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias) @ a.q.weight.T
        kv = F.layer_norm(ctx, (16,), blk.context_norm.weight, blk.context_norm.bias) @ a.kv.weight.T
        k, v = kv[..., :16], kv[..., 16:]
        heads = []
        for h in range(2):
            sl = slice(8 * h, 8 * h + 8)
            w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(8), dim=-1)
            heads.append(w @ v[..., sl])
        x = x + F.linear(torch.cat(heads, -1), a.proj.weight, a.proj.bias)
        m = blk.mlp
        hdn = F.gelu(F.linear(F.layer_norm(x, (16,), blk.norm2.weight, blk.norm2.bias), m[0].weight, m[0].bias))
        x = x + F.linear(hdn, m[2].weight, m[2].bias)
    ref = x.transpose(1, 2).reshape(2, 16, 5, 6)
    torch.testing.assert_close(fusion(student, teacher), ref, rtol=1e-10, atol=1e-10)
    # Only block 0's context projection is used; the others are frozen so DDP sees no unused grads.
    assert all(not p.requires_grad for p in blocks[1].context_proj.parameters())


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("variant,count", [("s", 193), ("full", 384)])
def test_official_checkpoint_loads_strictly_and_round_trips(tmp_path, variant, count):
    layout = official_layout(variant, tiny=True)
    assert len(layout) == count
    official = random_tensors(layout, seed=10)
    path = save_official(tmp_path / "iter_1.pth", official)
    kwargs = TINY_FULL if variant == "full" else TINY
    model = FlashDepth.from_checkpoint(path, variant, **kwargs)
    sd = model.state_dict()
    assert shapes(sd) == layout
    assert all(torch.equal(sd[k], official[k]) for k in official)
    back = vdf_to_flashdepth_official(flashdepth_official_to_vdf({"model": official, "step": 1}))
    assert list(back) == list(official) and all(back[k] is official[k] for k in official)
    again = vdf_to_flashdepth_official(sd)
    assert set(again) == set(official) and all(torch.equal(again[k], official[k]) for k in official)
    with torch.no_grad():
        out, _ = model.eval()(video(b=1, t=2))
    assert torch.isfinite(out).all() and out.abs().max() > 0
    # Same file through the constructor argument, and with DDP / torch.compile prefixes.
    prefixed = {f"module._orig_mod.{k}": v for k, v in official.items()}
    path2 = save_official(tmp_path / "prefixed.pth", prefixed)
    model2 = FlashDepth(variant, **kwargs, weights=path2)
    assert all(torch.equal(model2.state_dict()[k], official[k]) for k in official)


@pytest.mark.parametrize("variant,count", [("s", 305), ("l", 473), ("full", 776)])
def test_real_size_layout_on_meta(variant, count):
    model = FlashDepth(variant, device="meta")
    ours = shapes(vdf_to_flashdepth_official(model.state_dict()))
    assert len(ours) == count
    assert ours == official_layout(variant, tiny=False)
    if variant == "l":
        b = model.mamba.layers[0].mamba
        assert ours["mamba.blocks.0.0.mamba.in_proj.weight"] == (1544, 256)
        assert ours["mamba.blocks.0.3.mamba.conv1d.weight"] == (1024, 1, 4)
        assert ours["mamba.blocks.0.0.mamba.out_proj.weight"] == (256, 512)
        assert (b.nheads, b.headdim, b.d_state) == (8, 64, 256)
    else:
        assert ours["mamba.blocks.0.0.mamba.in_proj.weight"] == (1032, 64)
        assert ours["mamba.blocks.0.0.mamba.conv1d.weight"] == (768, 1, 4)
        assert ours["mamba.blocks.0.0.mamba.out_proj.weight"] == (64, 256)
    if variant == "full":
        teacher = [k for k in ours if k.startswith("teacher_model.")]
        assert len(teacher) == 407
        assert ours["hybrid_fusion.blocks.0.0.context_proj.weight"] == (64, 256)


def test_parameter_counts():
    counts = {v: sum(p.numel() for p in FlashDepth(v, device="meta").parameters()) for v in ("s", "l", "full")}
    assert counts == {"s": 25_268_833, "l": 339_615_777, "full": 360_783_906}
    mamba_l = sum(p.numel() for p in FlashDepth("l", device="meta").mamba.parameters())
    assert round(mamba_l / 1e6, 1) == 4.3  # reference §2.4: about 4.3M


def test_mismatched_checkpoints_raise_clear_errors(tmp_path):
    official = random_tensors(official_layout("s", tiny=True), seed=11)
    broken = dict(official)
    del broken["mamba.blocks.0.2.mamba.A_log"]
    broken["mamba.blocks.0.9.norm1.weight"] = torch.ones(16)
    path = save_official(tmp_path / "broken.pth", broken)
    with pytest.raises(StateDictMismatchError) as err:
        FlashDepth.from_checkpoint(path, "s", **TINY)
    msg = str(err.value)
    assert "1 missing key(s): mamba.blocks.0.2.mamba.A_log" in msg
    assert "1 unexpected key(s): mamba.blocks.0.9.norm1.weight" in msg

    full = random_tensors(official_layout("full", tiny=True), seed=12)
    path = save_official(tmp_path / "full.pth", full)
    with pytest.raises(StateDictMismatchError, match=r"looks like FlashDepth \(Full\)") as err:
        FlashDepth.from_checkpoint(path, "s", **TINY)
    assert "191 unexpected key(s): teacher_model." in str(err.value)

    bad_shape = dict(official)
    bad_shape["mamba.final_layer.1.weight"] = torch.zeros(16, 8)
    path = save_official(tmp_path / "shape.pth", bad_shape)
    expected = r"mamba.final_layer.1.weight: checkpoint \(16, 8\) vs model \(16, 16\)"
    with pytest.raises(StateDictMismatchError, match=expected):
        FlashDepth.from_checkpoint(path, "s", **TINY)


def test_missing_files_name_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"configs/flashdepth-s/iter_\*\.pth.*Eyeline-Research/FlashDepth"):
        FlashDepth.from_checkpoint(tmp_path / "nope.pth", "s", **TINY)
    full = FlashDepth("full", **TINY_FULL)
    with pytest.raises(FileNotFoundError, match=r"configs/flashdepth-l/iter_\*\.pth"):
        full.load_teacher(tmp_path / "teacher.pth")
    with pytest.raises(FileNotFoundError, match="depth_anything_v2_vits.pth"):
        full.load_dav2(tmp_path / "dav2.pth")
    with pytest.raises(FileNotFoundError, match=r"configs/flashdepth/iter_\*\.pth"):
        full.load_official(tmp_path / "full.pth")


def test_load_dav2_and_teacher(tmp_path):
    dav2 = random_tensors(dav2_layout(TINY_ENC[0]), seed=13)
    torch.save(dav2, tmp_path / "depth_anything_v2_vits.pth")  # a flat dict, as released
    model = FlashDepth("full", **TINY_FULL)
    mamba_before = {k: v.clone() for k, v in model.mamba.state_dict().items()}
    model.load_dav2(tmp_path / "depth_anything_v2_vits.pth")
    sd = model.state_dict()
    assert all(torch.equal(sd[k], dav2[k]) for k in dav2)
    assert all(torch.equal(model.mamba.state_dict()[k], v) for k, v in mamba_before.items())

    l_ckpt = random_tensors(official_layout("l", tiny=True), seed=14)
    model.load_teacher(save_official(tmp_path / "l.pth", l_ckpt))
    teacher = model.teacher_model.state_dict()
    assert len(teacher) == 127 and all(torch.equal(teacher[k], l_ckpt[k]) for k in teacher)

    stray = dict(l_ckpt, **{"hybrid_fusion.blocks.0.0.norm1.weight": torch.ones(16)})
    with pytest.raises(StateDictMismatchError, match="1 unexpected key"):
        model.load_teacher(save_official(tmp_path / "stray.pth", stray))
    wrong = random_tensors(official_layout("s", tiny=True), seed=15)  # an S file is no teacher
    with pytest.raises(StateDictMismatchError, match="shape mismatch"):
        model.load_teacher(save_official(tmp_path / "s.pth", wrong))


# ----------------------------------------------------------------------------- token counts


@pytest.mark.parametrize("variant,tokens", [("l", 841), ("s", 49)])
def test_mamba_tokens_per_frame_at_518(variant, tokens):
    model = FlashDepth(variant, **TINY).eval()
    seen = []
    model.mamba.layers[0].register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.zeros(1, 2, 3, 518, 518))
    assert seen == [(1, tokens, 16)] * 2  # one call per frame
    side = int(math.isqrt(tokens))
    assert model.mamba_token_grid(518, 518) == (side, side)


def test_token_grid_of_full_at_2k():
    full = FlashDepth("full", device="meta")
    assert full.mamba_token_grid(1148, 2044) == (16, 29)  # 464 tokens (reference §2.3)
    assert full.mamba_token_grid(1078, 1918) == (15, 27)  # the stage-2 training crop


def test_temporal_off_predicts_each_frame_alone():
    """``temporal=False`` (the ablation): frames are independent, the state passes through, Mamba is frozen."""
    torch.manual_seed(0)
    model = FlashDepth("s", **TINY, temporal=False).eval()
    perturb_zero_inits(model)  # a trained temporal module would change the output, if it ran
    x = video(b=1, t=3)
    with torch.no_grad():
        clip, state = model(x)
        alone = torch.cat([model(x[:, i : i + 1])[0] for i in range(3)], dim=1)
    torch.testing.assert_close(clip, alone)
    assert all(not p.requires_grad for p in model.mamba.parameters())
    assert model.param_groups_by_module()["mamba"] == []
    assert state.frames_seen == 3
    on = FlashDepth("s", **TINY).eval()
    on.load_state_dict(model.state_dict())  # same keys either way: checkpoints load in both settings
