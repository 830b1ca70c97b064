"""Depth Any Video as a configuration of the latent-diffusion core: the base and interpolation
models, RoPE positions from ``frame_index``, normalisation, and `KeyframeInterpolation`."""

from __future__ import annotations

import pytest
import torch
from test_dav_unet import DAV_CONFIG, dav_state_dict, write_folder

from vdf.diffusion import FlowMatching, PercentileDisparity
from vdf.inference.keyframe_interpolation import (
    KeyframeInterpolation,
    ensemble_median,
    keyframe_extra,
    official_keyframes,
)
from vdf.models.dav import load_dav_unet
from vdf.models.svd import SVDVAE, SVDCondition, SVDDepthDenoiser, SVDUNet, ZeroFrameEmbedder, svd_unet_forward
from vdf.models.weights import StateDictMismatchError
from vdf.predictors import LatentDiffusionPredictor
from vdf.tasks import KeyframeInterpolationTask, LatentDiffusionTask

# -- tiny DAV models ------------------------------------------------------------------------------


def tiny_denoiser(in_channels: int = 8, seed: int = 0) -> SVDDepthDenoiser:
    torch.manual_seed(seed)
    unet = SVDUNet(
        in_channels=in_channels,
        block_out_channels=(32, 64),
        layers_per_block=1,
        num_attention_heads=(2, 4),
        cross_attention_dim=32,
        added_time_ids=False,
        temporal_rope=True,
    )
    vae = SVDVAE(block_out_channels=(32, 32), layers_per_block=1, chunk_size=4)
    return SVDDepthDenoiser(
        unet, vae, ZeroFrameEmbedder(32), video_latent_scaled=True, noise_aug_strength=0.0, clamp_channels=False
    )


def dav_predictor(
    in_channels: int = 8, interpolator: LatentDiffusionPredictor | None = None, **kwargs
) -> LatentDiffusionPredictor:
    return LatentDiffusionPredictor(
        tiny_denoiser(in_channels),
        objective=FlowMatching(shift=3.0),
        normalization=PercentileDisparity(0.02, 0.98, per_frame=True),
        steps=3,
        frame_positions=True,
        interpolator=interpolator,
        **kwargs,
    ).eval()


def dav_task(cls=LatentDiffusionTask, in_channels: int = 8, **kwargs):
    """A task whose trained network (``task.network``) has ``in_channels``: the base predictor for
    `LatentDiffusionTask`; for `KeyframeInterpolationTask`, the interpolator of a predictor whose
    base network is the 8-channel one."""
    if cls is KeyframeInterpolationTask:
        predictor = dav_predictor(interpolator=dav_predictor(in_channels))
    else:
        predictor = dav_predictor(in_channels)
    return cls(predictor, **kwargs).eval()


@pytest.fixture(scope="module")
def base_task():
    return dav_task()


@pytest.fixture(scope="module")
def base_weights(base_task, tmp_path_factory):
    path = tmp_path_factory.mktemp("dav_base") / "base.ckpt"
    torch.save({"state_dict": base_task.state_dict()}, path)
    return path


def test_interpolation_unet_equals_the_base_at_initialisation(base_task, base_weights):
    interp = dav_task(KeyframeInterpolationTask, in_channels=16, base_weights=str(base_weights))
    assert interp.network is interp.predictor.interpolator
    assert interp.network.denoiser.unet.in_channels == 16
    w8 = base_task.predictor.denoiser.unet.unet.conv_in.weight
    assert torch.equal(interp.network.denoiser.unet.unet.conv_in.weight, torch.cat([w8, w8], 1) / 2)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(1, 3, 3, 16, 16, generator=g)
    cond = base_task.predictor.condition(video)
    x = torch.randn(1, 3, 4, 8, 8, generator=g)
    t = torch.full((1, 3), 751.0)
    pos = torch.tensor([[0, 3, 7]])
    with torch.no_grad():
        ref = base_task.predictor.denoiser(x, t, cond, position_ids=pos)
        out = interp.network.denoiser(x, t, cond, position_ids=pos, extra=torch.cat([x, cond.video_latents], dim=2))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_interpolation_task_refuses_an_8_channel_unet():
    with pytest.raises(ValueError, match="16 input channels"):
        dav_task(KeyframeInterpolationTask)
    with pytest.raises(ValueError, match="16 input channels"):  # no interpolator at all
        KeyframeInterpolationTask(dav_predictor())


def test_init_weights_load_a_lightning_checkpoint_strictly(base_task, tmp_path):
    trained = {k: v + 0.5 if v.is_floating_point() else v for k, v in base_task.state_dict().items()}
    torch.save({"state_dict": trained, "epoch": 1, "hyper_parameters": {"steps": 3}}, tmp_path / "last.ckpt")
    task = dav_task(init_weights=str(tmp_path / "last.ckpt"))
    assert all(torch.equal(v, trained[k]) for k, v in task.state_dict().items())
    del trained["predictor.denoiser.unet.unet.conv_out.bias"]
    torch.save({"state_dict": trained}, tmp_path / "broken.ckpt")
    with pytest.raises(StateDictMismatchError, match=r"init_weights .*broken\.ckpt does not match.*\n1 missing key"):
        dav_task(init_weights=str(tmp_path / "broken.ckpt"))


def test_base_weights_from_a_dav_unet_folder(tmp_path):
    folder = write_folder(tmp_path / "unet", DAV_CONFIG, dav_state_dict(DAV_CONFIG))
    interp = dav_task(KeyframeInterpolationTask, in_channels=16, base_weights=str(folder))
    base = SVDUNet(weights=str(folder), added_time_ids=False, temporal_rope=True)
    w8 = base.unet.conv_in.weight
    assert torch.equal(interp.network.denoiser.unet.unet.conv_in.weight, torch.cat([w8, w8], 1) / 2)
    assert torch.equal(interp.network.denoiser.unet.unet.conv_out.weight, base.unet.conv_out.weight)


def test_dav_folders_load_through_svd_unet(tmp_path):
    sd = dav_state_dict(DAV_CONFIG)
    folder = write_folder(tmp_path / "unet", DAV_CONFIG, sd)
    unet = SVDUNet(weights=str(folder), added_time_ids=False, temporal_rope=True)
    for key, value in unet.unet.state_dict().items():
        assert torch.equal(value, sd[key]), key
    reference = load_dav_unet(folder)
    g = torch.Generator().manual_seed(1)
    sample, ctx = torch.randn(1, 3, 8, 8, 8, generator=g), torch.zeros(1, 1, 32)
    pos = torch.tensor([[0, 12, 17]])
    with torch.no_grad():
        torch.testing.assert_close(
            unet(sample, torch.tensor([500.0]), ctx, position_ids=pos),
            svd_unet_forward(reference, sample, torch.tensor([500.0]), ctx, position_ids=pos),
        )
    # unet_interp: 16 input channels, read from its config.json.
    config16 = {**DAV_CONFIG, "in_channels": 16}
    folder16 = write_folder(tmp_path / "unet_interp", config16, dav_state_dict(config16))
    assert SVDUNet(weights=str(folder16), added_time_ids=False, temporal_rope=True).in_channels == 16


# -- training: RoPE positions, zero embeddings, normalisation ---------------------------------------


def _batch(frame_index):
    g = torch.Generator().manual_seed(0)
    t = len(frame_index)
    depth = 1 + torch.rand(1, t, 1, 16, 16, generator=g) * 5
    return {
        "video": torch.rand(1, t, 3, 16, 16, generator=g),
        "depth": depth,
        "valid": torch.ones_like(depth, dtype=torch.bool),
        "frame_index": torch.tensor([frame_index]),
    }


@pytest.mark.parametrize("task_kind", ["base", "interp"])
def test_frame_dropout_positions_reach_the_unet(base_task, task_kind, monkeypatch):
    task = base_task if task_kind == "base" else dav_task(KeyframeInterpolationTask, in_channels=16)
    rope = next(m for m in task.network.denoiser.unet.unet.modules() if hasattr(m, "set_position_ids"))
    seen = []
    original = rope.set_position_ids

    def spy(ids):
        seen.append(None if ids is None else ids.tolist())
        return original(ids)

    monkeypatch.setattr(rope, "set_position_ids", spy)
    losses = []
    for index in ([0, 1, 2], [0, 3, 7], [5, 8, 12]):
        torch.manual_seed(0)
        with torch.no_grad():
            losses.append(float(task.training_loss(_batch(index))))
    assert [s for s in seen if s is not None] == [[[0, 1, 2]], [[0, 3, 7]], [[0, 3, 7]]]
    assert losses[0] != losses[1] and losses[1] == pytest.approx(losses[2])


def test_zero_clip_embedding(base_task):
    video = torch.rand(2, 3, 3, 16, 16)
    cond = base_task.predictor.condition(video)
    assert cond.embeddings.shape == (2, 3, 1, 32) and not cond.embeddings.any()
    assert cond.added_time_ids is None
    assert not list(base_task.predictor.denoiser.image_encoder.parameters())


def test_video_latents_are_scaled_modes(base_task):
    video = torch.rand(1, 2, 3, 16, 16)
    cond = base_task.predictor.condition(video)
    mode = base_task.predictor.denoiser.vae.encode(video * 2 - 1)
    torch.testing.assert_close(cond.video_latents, mode * 0.18215)


def test_percentile_disparity_targets():
    disparity = torch.linspace(1, 100, 100).view(1, 1, 1, 10, 10)
    depth = torch.cat([1 / disparity, 1 / (10 * disparity)], dim=1)  # second frame: 10x the disparity
    target = PercentileDisparity(0.02, 0.98, per_frame=True)(depth, torch.ones_like(depth, dtype=torch.bool))
    lo, hi = torch.quantile(disparity.flatten(), torch.tensor([0.02, 0.98]))
    expected = (((disparity - lo) / (hi - lo)).clamp(0, 1) * 2 - 1)[0, 0]
    torch.testing.assert_close(target[0, 0], expected)
    torch.testing.assert_close(target[0, 1], expected, atol=1e-5, rtol=1e-5)  # per frame: scale-free
    assert target.min() == -1 and target.max() == 1


# -- KeyframeInterpolation with recording stand-ins ------------------------------------------------


class Recorder:
    """A latent model whose latents are each frame's mean value, so the output of frame ``i`` is
    ``i / 1000`` when frames are routed correctly. ``window_value``: the interpolator returns its
    window's first-frame value everywhere (to see the blending). ``interpolator``: the model's
    interpolation network (what `KeyframeInterpolation` uses). Decode calls are recorded."""

    objective = FlowMatching()
    steps = 3
    device = torch.device("cpu")
    decode_chunk_size = 4

    def __init__(self, window_value: bool = False, interpolator: Recorder | None = None):
        self.interpolator = interpolator
        self.calls = []
        self.decoded = []
        self.noise = []
        self.window_value = window_value

    def generator(self, offset=0):
        return torch.Generator().manual_seed(offset)

    def noise_like(self, shape, generator=None):
        self.noise.append(tuple(shape))
        return torch.randn(shape, generator=generator)

    def condition(self, video, generator=None):
        v = video.mean(dim=(2, 3, 4))
        return SVDCondition(
            v[:, :, None, None, None].expand(*v.shape, 4, 2, 2).clone(), torch.zeros(*v.shape, 1, 8), None
        )

    def denoise(self, cond, x, fixed=None, fixed_latents=None, position_ids=None, extra=None, steps=None):
        frames = [round(float(v) * 1000) for v in cond.video_latents[0, :, 0, 0, 0]]
        self.calls.append(
            dict(
                frames=frames,
                positions=position_ids[0].tolist(),
                extra=extra,
                fixed=None if fixed is None else fixed[0].tolist(),
                steps=steps,
            )
        )
        out = cond.video_latents.clone()
        if self.window_value:
            out = out[:, :1].expand_as(out).clone()
        if fixed is not None:
            out = torch.where(fixed[:, :, None, None, None], fixed_latents, out)
        return out

    def decode(self, latents):
        self.decoded.append([round(float(v) * 1000) for v in latents[0, :, 0, 0, 0]])
        return latents.mean(dim=2, keepdim=True)


def run_strategy(n, interpolator=None, model=None, **kwargs):
    """Outputs as frame values (None where the strategy gives no prediction), and the base model
    (whose ``interpolator`` is ``interpolator``)."""
    model = model or Recorder(interpolator=interpolator)
    strategy = KeyframeInterpolation(**kwargs)
    frames = (torch.full((3, 16, 16), i / 1000) for i in range(n))
    return [None if o is None else float(o.mean()) * 1000 for o in strategy(model, frames)], model


def official_outputs(n, num_frames=32, interp_frames=16, overlap=6):
    """The frames run_infer.py + DAVPipeline give an output, from the keyframe rule."""
    n = min(n, (interp_frames + 2 - overlap) * (num_frames // 2))
    keys = official_keyframes(n, num_frames, interp_frames, overlap)
    return list(range(keys[0] + 1, keys[-1])) if keys else list(range(n))


def test_official_keyframes():
    assert official_keyframes(32) == [] and official_keyframes(33) == [0, 17, 12, 29]
    assert official_keyframes(40) == [0, 17, 12, 29]
    assert official_keyframes(42) == [0, 17, 12, 29, 24, 41]
    assert official_keyframes(47) == [0, 17, 12, 29, 24, 41]
    keys = official_keyframes(192)
    assert len(keys) == 30 and keys[-2:] == [168, 185]
    assert len(official_keyframes(400)) == 32  # the budget of 32 keyframes
    assert official_keyframes(20, num_frames=6, interp_frames=4, overlap=3) == [0, 5, 3, 8, 6, 11]


@pytest.mark.parametrize("n", [1, 7, 20, 32, 33, 40, 47, 70, 200])
@pytest.mark.parametrize("settings", [{}, {"num_frames": 8, "interp_frames": 4, "overlap": 2}], ids=["dav", "small"])
def test_official_layout_one_item_per_frame(n, settings):
    out, _ = run_strategy(n, interpolator=Recorder(), **settings)
    assert len(out) == n
    present = [i for i, o in enumerate(out) if o is not None]
    assert present == official_outputs(n, **settings)
    assert [out[i] for i in present] == pytest.approx(present, abs=1e-3)


@pytest.mark.parametrize("n", [1, 7, 20, 33, 40, 47, 70, 200])
@pytest.mark.parametrize(
    "settings",
    [{}, {"num_frames": 8, "interp_frames": 4, "overlap": 2}, {"num_frames": 4, "interp_frames": 3, "overlap": 2}],
    ids=["dav", "small", "tiny"],
)
def test_fill_dropped_frames_gives_every_frame_an_output(n, settings):
    out, _ = run_strategy(n, interpolator=Recorder(), fill_dropped_frames=True, **settings)
    assert out == pytest.approx(list(range(n)), abs=1e-3)


def test_frames_past_the_span_are_not_read_into_memory():
    strategy = KeyframeInterpolation()
    read = []

    def frames():
        for i in range(250):
            read.append(i)
            yield torch.full((3, 16, 16), i / 1000)

    out = strategy(Recorder(interpolator=Recorder()), frames())
    first = next(out)  # frame 0: no output; everything up to the span is read and predicted
    assert first is None and len(read) == 192
    rest = list(out)
    assert len(rest) == 249 and all(o is None for o in rest[184:])


def test_short_video_is_one_joint_pass():
    _, model = run_strategy(32)
    assert len(model.calls) == 1 and model.calls[0]["positions"] == list(range(32))
    assert model.noise == [(1, 32, 4, 2, 2)]


def test_keyframes_at_true_positions_then_windows_as_the_official_pipeline():
    # 42 frames: keyframes (0, 17), (12, 29), (24, 41); windows 0, 12, 24 of 18 frames.
    interp = Recorder()
    out, base = run_strategy(42, interpolator=interp)
    assert len(base.calls) == 1
    keyframes = [0, 12, 17, 24, 29, 41]
    assert base.calls[0]["positions"] == keyframes and base.calls[0]["frames"] == keyframes
    assert [c["frames"][0] for c in interp.calls] == [0, 12, 24]
    for call in interp.calls:
        assert call["frames"] == list(range(call["frames"][0], call["frames"][0] + 18))
        assert call["positions"] == list(range(18))
        extra = call["extra"]
        assert extra.shape == (1, 18, 8, 2, 2)
        mask = extra[0, :, 4:].amax(dim=(1, 2, 3))
        assert mask.tolist() == [1.0] + [0.0] * 16 + [1.0]
        s = call["frames"][0]  # keyframe latents at the ends, zeros between
        assert extra[0, 0, :4].mean() * 1000 == pytest.approx(s, abs=1e-3)
        assert extra[0, -1, :4].mean() * 1000 == pytest.approx(s + 17, abs=1e-3)
        assert not extra[0, 1:-1, :4].any()
    # Noise: the keyframe pass, then each window, in order.
    assert base.noise == [(1, 6, 4, 2, 2)] + [(1, 18, 4, 2, 2)] * 3
    assert out[0] is None and out[41] is None
    assert out[1:41] == pytest.approx(list(range(1, 41)), abs=1e-3)


def test_decoding_chunks_start_at_the_first_output_frame():
    _, base = run_strategy(47, interpolator=Recorder())  # outputs 1..40, chunks of 4
    assert base.decoded == [list(range(i, i + 4)) for i in range(1, 41, 4)]
    _, base = run_strategy(10)  # one pass: chunks from frame 0
    assert base.decoded == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_fill_tail_windows_start_at_the_last_keyframe_then_flush_with_the_end():
    interp = Recorder()
    out, base = run_strategy(40, interpolator=interp, fill_dropped_frames=True)
    # Official: keyframes 0, 12, 17, 29, windows 0 and 12. Tail: [29, 46] does not fit, so one
    # window flush with the end, [22, 39], its new keyframes with the last two known held fixed.
    assert base.calls[0]["positions"] == [0, 12, 17, 29]
    assert base.calls[1]["positions"] == [17, 22, 29, 39] and base.calls[1]["fixed"] == [True, False, True, False]
    assert [c["frames"][0] for c in interp.calls] == [0, 12, 22]
    assert out == pytest.approx(list(range(40)), abs=1e-3)


def test_fill_does_not_change_the_official_frames():
    # Interpolators returning the window's first value: tail windows must not blend into frames < 41.
    official, _ = run_strategy(70, interpolator=Recorder(window_value=True))
    filled, _ = run_strategy(70, interpolator=Recorder(window_value=True), fill_dropped_frames=True)
    assert filled[1:65] == official[1:65] and official[65] is None
    assert filled[0] == pytest.approx(0, abs=1e-3) and all(v is not None for v in filled)


def test_overlapping_windows_blend_linearly():
    out, _ = run_strategy(42, interpolator=Recorder(window_value=True))
    # Window 0 keeps frames 1..16 (value 0), window 12 keeps 13..28 (value 12): 13..16 blended.
    assert out[0] is None
    assert out[1:13] == pytest.approx([0] * 12, abs=1e-3)
    assert out[13:17] == pytest.approx([0, 4, 8, 12], abs=1e-3)
    assert out[17:25] == pytest.approx([12] * 8, abs=1e-3)
    assert out[41] is None


def test_fill_groups_carry_context_keyframes_and_respect_the_budget():
    interp = Recorder()
    settings = dict(num_frames=8, interp_frames=4, overlap=2, context_keyframes=2, fill_dropped_frames=True)
    out, base = run_strategy(60, interpolator=interp, **settings)
    assert out == pytest.approx(list(range(60)), abs=1e-3)
    assert base.calls[0]["positions"] == [0, 4, 5, 8, 9, 13] and base.calls[0]["fixed"] is None  # official
    assert len(base.calls) > 2
    for call in base.calls:
        assert len(call["positions"]) <= 8
        assert call["positions"] == sorted(call["positions"]) == call["frames"]  # true indices
    for previous, call in zip(base.calls, base.calls[1:]):
        context = [p for p, f in zip(call["positions"], call["fixed"]) if f]
        assert context == previous["positions"][-2:]


def test_without_interpolator_the_base_model_fills_windows_with_fixed_keyframes():
    out, base = run_strategy(40, num_frames=8, interp_frames=4, overlap=2, fill_dropped_frames=True)
    assert out == pytest.approx(list(range(40)), abs=1e-3)
    windows = [c for c in base.calls if c["positions"] == list(range(6))]
    assert windows and all(c["fixed"] == [True, False, False, False, False, True] for c in windows)


def test_ensemble_runs_every_member_and_keeps_the_layout():
    out, base = run_strategy(40, interpolator=Recorder(), ensemble_size=3)
    assert len(base.calls) == 3
    assert [i for i, o in enumerate(out) if o is not None] == official_outputs(40)


def test_ensemble_median_aligns_members_then_takes_the_median():
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(1, 8, 8, generator=g)
    scaled = 2 * ref + 1
    outlier = 0.5 * ref + 3
    outlier[0, 0, 0] = 50.0
    torch.testing.assert_close(ensemble_median([ref, scaled, outlier]), ref)
    # Even count: the mean of the two middle aligned values.
    a, b = ref.clone(), ref.clone()
    b[0, 1, 1] += 0.0  # identical members
    torch.testing.assert_close(ensemble_median([a, 3 * b - 2]), ref)


def test_keyframe_extra_channels():
    latents = torch.randn(1, 4, 4, 2, 2)
    mask = torch.tensor([[True, False, False, True]])
    extra = keyframe_extra(latents, mask)
    assert extra.shape == (1, 4, 8, 2, 2)
    assert torch.equal(extra[0, 0, :4], latents[0, 0]) and not extra[0, 1:3].any()
    assert torch.equal(extra[0, 3, 4:], torch.ones(4, 2, 2))


def test_strategy_argument_checks():
    with pytest.raises(ValueError, match="overlap"):
        KeyframeInterpolation(overlap=1)
    with pytest.raises(ValueError, match="overlap"):
        KeyframeInterpolation(overlap=10)  # DAV's run script: overlap <= (16 + 3) // 2
    with pytest.raises(ValueError, match="even"):
        KeyframeInterpolation(num_frames=31)
    with pytest.raises(ValueError, match="num_frames"):
        KeyframeInterpolation(num_frames=8, interp_frames=16)
    assert KeyframeInterpolation().span == 192


# -- the real tiny models through the strategy -------------------------------------------------------


def test_tiny_models_through_keyframe_interpolation(base_task):
    # The base network is base_task's (same seed), the interpolator a 16-channel one.
    predictor = dav_predictor(interpolator=dav_predictor(16))
    assert all(
        torch.equal(v, base_task.predictor.denoiser.state_dict()[k]) for k, v in predictor.denoiser.state_dict().items()
    )
    settings = dict(num_frames=4, interp_frames=3, overlap=2, steps=1)
    video = torch.rand(9, 3, 16, 16)  # the first 6 frames: keyframes 0 and 4, outputs 1..3
    out = list(KeyframeInterpolation(**settings)(predictor, iter(video)))
    assert [o is not None for o in out] == [False, True, True, True] + [False] * 5
    assert all(o.shape == (1, 16, 16) and torch.isfinite(o).all() for o in out if o is not None)
    filled = list(
        KeyframeInterpolation(fill_dropped_frames=True, context_keyframes=1, **settings)(predictor, iter(video))
    )
    assert all(o is not None and o.shape == (1, 16, 16) for o in filled)
    for i in (1, 2, 3):  # the same noise draws come first: the official frames are unchanged
        torch.testing.assert_close(filled[i], out[i])


def test_interpolation_task_validates_with_ground_truth_keyframes():
    interp = dav_task(KeyframeInterpolationTask, in_channels=16)
    batch = _batch([0, 1, 2, 3])
    pred = interp.interpolate(batch["video"], batch["depth"], batch["valid"], batch["frame_index"])
    assert pred.shape == (1, 4, 1, 16, 16) and torch.isfinite(pred).all()
    with pytest.raises(RuntimeError, match="keyframe"):  # the interpolation network alone needs keyframes
        interp.network.clip(batch["video"])
