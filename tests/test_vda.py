"""Video-Depth-Anything: official key layout, zero-initialised temporal head = DAv2, streaming cache,
the keyframe-aligned windows strategy, and the tiny twin learning on the synthetic world."""

import os

import pytest
import torch
from official_layouts import official_shapes, official_vda_shapes, random_tensors
from recipes import tiny_files

import vdf
from vdf.inference import KeyframeAlignedWindows, Streaming
from vdf.models import DepthAnythingV2, VideoDepthAnything
from vdf.models.vda import VDAStreamState
from vdf.models.weights import StateDictMismatchError
from vdf.predictors.vda import vda_input_size

# (embed_dim, depth, DPT features, DPT out_channels, SwiGLU hidden or None)
OFFICIAL = {
    "vits": (384, 12, 64, [48, 96, 192, 384], None),
    "vitb": (768, 12, 128, [96, 192, 384, 768], None),
    "vitl": (1024, 24, 256, [256, 512, 1024, 1024], None),
}
TINY = dict(embed_dim=48, depth=4, num_heads=2, layer_indices=[0, 1, 2, 3], features=32, out_channels=[16, 32, 32, 32])
TINY_SPEC = (48, 4, 32, [16, 32, 32, 32], None)


@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl"])
def test_state_dict_matches_the_official_layout(encoder):
    ours = {k: tuple(v.shape) for k, v in VideoDepthAnything(encoder, device="meta").state_dict().items()}
    assert ours == official_vda_shapes(OFFICIAL[encoder])


def test_parameter_counts():
    # The official code builds 29.04M parameters for S (counted on its VideoDepthAnything); the
    # README's table says 28.4M / 113.1M / 381.8M for S / B / L, 0.7% below what the code builds.
    counts = {e: sum(p.numel() for p in VideoDepthAnything(e, device="meta").parameters()) for e in OFFICIAL}
    assert counts["vits"] == 29_035_137
    assert [round(counts[e] / 1e6, 1) for e in ("vits", "vitb", "vitl")] == [29.0, 114.4, 384.4]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    state = random_tensors(official_vda_shapes(TINY_SPEC), seed=3)
    for key in [k for k in state if k.endswith("pos_encoder.pe")]:
        state[key] = VideoDepthAnything("vits", **TINY).state_dict()[key]  # the sinusoidal table
    path = tmp_path_factory.mktemp("vda") / "video_depth_anything_vits.pth"
    torch.save(state, path)
    return path, state


def test_official_checkpoint_loads_strictly_and_mismatches_are_named(tiny_checkpoint, tmp_path):
    path, state = tiny_checkpoint
    model = VideoDepthAnything.from_checkpoint(path, "vits", **TINY)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    torch.save({"model": state}, tmp_path / "wrapped.pth")  # a wrapped dict loads too
    VideoDepthAnything.from_checkpoint(tmp_path / "wrapped.pth", "vits", **TINY)
    dav2 = {k: v for k, v in state.items() if "motion_modules" not in k}
    torch.save(dav2, tmp_path / "no_temporal.pth")
    with pytest.raises(StateDictMismatchError, match="motion_modules"):
        VideoDepthAnything.from_checkpoint(tmp_path / "no_temporal.pth", "vits", **TINY)
    with pytest.raises(FileNotFoundError, match="video_depth_anything_vits.pth"):
        VideoDepthAnything.from_checkpoint(tmp_path / "missing.pth", "vits", **TINY)
    with pytest.raises(FileNotFoundError, match="metric_video_depth_anything_vitl.pth"):
        VideoDepthAnything.from_checkpoint(tmp_path / "missing.pth", "vitl", metric=True, device="meta")


def test_zero_initialised_temporal_head_leaves_dav2_unchanged(tmp_path):
    # The official DAv2 layout, loaded into DAv2 and, through dav2_weights, into VDA.
    dav2_spec = (48, 4, 32, [16, 32, 32, 32], None)
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(random_tensors(official_shapes(dav2_spec), seed=5), path)
    dav2 = DepthAnythingV2.from_checkpoint(path, "vits", **TINY).eval()
    vda = VideoDepthAnything("vits", dav2_weights=str(path), **TINY).eval()
    frames = torch.randn(2, 5, 3, 28, 42)
    with torch.no_grad():
        ours = vda(frames)
        per_frame = dav2(frames.flatten(0, 1)).unflatten(0, (2, 5))
        streamed = torch.stack([vda.step(frames[:, t], None)[0] for t in range(5)], 1)
    torch.testing.assert_close(ours, per_frame, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed, per_frame, rtol=1e-5, atol=1e-5)
    # The temporal modules act once their output projection is trained.
    with torch.no_grad():
        for module in vda.head.motion_modules:
            module.temporal_transformer.proj_out.weight.normal_(0, 0.3)
        moved = vda(frames)
    assert (moved - per_frame).abs().max() > 1e-2


def test_streaming_cache_window_and_bounded_memory():
    # The cache bookkeeping alone, on stand-in entries (frame t's entry is [tensor filled with t]).
    state = VDAStreamState()
    sizes, contexts = [], []
    for t in range(50):
        if state.history:
            contexts.append([int(x) for x in state.context()[0][0, :, 0]])
        state.push([torch.full((1, 1, 1), float(t))])
        sizes.append(len(state.history))
    # 32 copies of frame 0, then one entry per frame up to 42 entries, the anchor always first.
    assert sizes[:11] == list(range(32, 43)) and set(sizes[10:]) == {VDAStreamState.HISTORY}
    assert contexts[0] == [0] * 31  # frame 1 sees frame 0 in every slot
    assert contexts[10] == [0] * 21 + list(range(1, 11))
    # Frame 49 sees frame 0, frame 49 - 41 and the 29 latest frames: the offline window's slots.
    assert contexts[48] == [0, 8, *range(20, 49)]
    assert len({id(e) for e in state.history}) == VDAStreamState.HISTORY

    torch.manual_seed(0)
    model = VideoDepthAnything("vits", **TINY).eval()
    with torch.no_grad():
        for module in model.head.motion_modules:
            module.temporal_transformer.proj_out.weight.normal_(0, 0.3)
        frames = torch.randn(3, 1, 3, 28, 42)
        first, state = model.step(frames[0], None)
        torch.testing.assert_close(first, model(frames[0][:, None])[:, 0])  # frame 0 alone, position 0
        second, state = model.step(frames[1], state)
    assert len(state.history) == 33 and len(state.context()) == 8 and state.context()[0].shape == (6, 31, 32)
    assert (second - model(frames[1][:, None])[:, 0]).abs().max() > 1e-3  # the cache is read


class _Affine:
    """A clip model whose every window sees the true signal up to its own scale and shift."""

    def __init__(self):
        self.calls = []

    def predict_clip(self, video):
        self.calls.append(video.shape[1])
        signal = video[0, :, :1]  # (T,1,H,W)
        k = len(self.calls)
        return ((1.0 + 0.5 * k) * signal + 0.1 * k)[None]


@pytest.mark.parametrize("length", [1, 22, 23, 31, 32, 33, 44, 45, 54, 67])
def test_windows_cover_every_frame_and_undo_per_window_scale(length):
    frames = [torch.full((3, 2, 3), float(t + 1)) for t in range(length)]
    model = _Affine()
    out = list(KeyframeAlignedWindows()(model, iter(frames)))
    assert len(out) == length
    # ceil(N / 22) windows of 32 frames (padded with the last frame).
    assert model.calls == [32] * max(1, -(-length // 22))
    # Alignment on the keyframes maps each window back onto the first one: the signal itself.
    expected = torch.stack([1.5 * f[:1] + 0.1 for f in frames])
    torch.testing.assert_close(torch.stack(out), expected, rtol=1e-5, atol=1e-5)


def test_windows_validate_their_constants_and_work_with_frame_models():
    with pytest.raises(ValueError, match="last 8 keyframes"):
        KeyframeAlignedWindows(keyframes=[0, 12, 23, 24, 25, 26, 27, 28, 29, 30])
    with pytest.raises(ValueError, match="keyframes must be 10 slots"):
        KeyframeAlignedWindows(keyframes=[0, 24, 25, 26, 27, 28, 29, 30, 31])
    assert KeyframeAlignedWindows().stride == 22 and KeyframeAlignedWindows().window == 32
    dav2 = vdf.load(tiny_files("dav2"), device="cpu", strategy=None)
    dav2.strategy = KeyframeAlignedWindows(window=8, overlap=4, keyframes=[0, 5, 6, 7], crossfade=2)
    depth = dav2.predict(torch.rand(13, 3, 32, 48))
    assert depth.shape == (13, 32, 48) and torch.isfinite(depth).all()


def test_input_size_shrinks_beyond_16_by_9():
    assert vda_input_size(1080, 1920) == 518  # 1.777...
    assert vda_input_size(1080, 2560) == 392  # round(int(518 * 1.777 / 2.370) / 14) * 14
    assert vda_input_size(2560, 1080) == 392


def test_tiny_twin_loss_falls_on_the_synthetic_world(in_tmp_cwd):
    from vdf.cli import main

    cli = main(
        ["validate", *[a for f in tiny_files("vda") for a in ("--config", f)], "--trainer.limit_val_batches", "0"]
    )
    task = cli.model.train()
    torch.manual_seed(0)
    batch = next(iter(cli.datamodule.train_dataloader()))
    opt = torch.optim.AdamW(task.param_groups(), lr=2e-3)
    losses = []
    for _ in range(4):
        opt.zero_grad()
        loss = task.loss(task(batch["video"]), batch["depth"], batch["valid"])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    # The temporal modules take part in training (their zero output projection moves).
    assert task.predictor.net.head.motion_modules[2].temporal_transformer.proj_out.weight.abs().max() > 0


def test_metric_nets_are_not_realigned_and_output_depth():
    predictor = vdf.load(
        [*tiny_files("vda")[:1], os.path.join(os.path.dirname(tiny_files("vda")[0]), "tiny", "vda.yaml")],
        device="cpu",
        net__init_args__metric=True,
        strategy=None,
    )
    assert predictor.output_space == "depth"
    assert isinstance(predictor.default_strategy(), KeyframeAlignedWindows)
    assert not predictor.default_strategy().align


def test_streaming_strategy_runs_the_predictor_frame_by_frame():
    predictor = vdf.load(tiny_files("vda", "streaming"), device="cpu")
    assert isinstance(predictor.strategy, Streaming)
    video = torch.rand(5, 3, 32, 48)
    streamed = predictor.predict(video)
    first = predictor.predict(video[:1])
    assert streamed.shape == (5, 32, 48)
    torch.testing.assert_close(streamed[0], first[0])
