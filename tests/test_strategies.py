import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vdf.inference import IndependentWindows, PerFrame
from vdf.inference.base import fit_scale_shift


class AffinePerClip:
    """A fake video model: disparity = s_clip * frame_mean_map + b_clip.

    With ``per_clip=False`` s=1, b=0 (a per-frame model). Otherwise the scale and shift depend on
    the clip's first frame, as a video model's arbitrary per-clip scale does. Records clip lengths.
    """

    def __init__(self, per_clip: bool):
        self.per_clip = per_clip
        self.calls: list[tuple[int, int]] = []

    def predict_clip(self, video):
        b, t = video.shape[:2]
        self.calls.append((b, t))
        base = video.mean(dim=2, keepdim=True)  # (B,T,1,H,W)
        if not self.per_clip:
            return base
        key = video[:, :1].mean(dim=(1, 2, 3, 4)).view(b, 1, 1, 1, 1)
        return (1.0 + 3.0 * key) * base + 2.0 * key


def video(n, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for _ in range(n)]


class CountingIterator:
    def __init__(self, frames):
        self.frames, self.pulled = frames, 0

    def __iter__(self):
        for f in self.frames:
            self.pulled += 1
            yield f


def test_per_frame_runs_each_frame_alone_in_batches():
    frames = video(7)
    model = AffinePerClip(per_clip=True)
    out = list(PerFrame(batch_size=3)(model, frames))
    assert len(out) == 7 and out[0].shape == (1, 4, 5)
    assert model.calls == [(3, 1), (3, 1), (1, 1)]
    for f, o in zip(frames, out):
        alone = AffinePerClip(per_clip=True).predict_clip(f.view(1, 1, 3, 4, 5))[0, 0]
        assert torch.allclose(o, alone)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 40), window=st.integers(1, 9), data=st.data())
def test_independent_windows_yield_one_output_per_frame_in_order(n, window, data):
    overlap = data.draw(st.integers(0, window - 1))
    frames = video(n, h=2, w=2, seed=n)
    out = list(IndependentWindows(window, overlap)(AffinePerClip(per_clip=False), frames))
    # A per-frame model gives the same value in every window: blending must reproduce it exactly.
    assert len(out) == n
    for f, o in zip(frames, out):
        assert torch.allclose(o, f.mean(0, keepdim=True), atol=1e-6)


def test_independent_windows_hold_at_most_one_window_of_frames():
    source = CountingIterator(video(50))
    stream = IndependentWindows(window=8, overlap=3)(AffinePerClip(per_clip=False), source)
    next(stream)
    assert source.pulled == 8
    list(stream)
    assert source.pulled == 50


def test_alignment_on_the_overlap_removes_per_window_scale_jumps():
    frames = video(30, seed=5)
    truth = torch.stack([f.mean(0, keepdim=True) for f in frames])
    naive = torch.stack(list(IndependentWindows(10, 4, align=False)(AffinePerClip(per_clip=True), frames)))
    aligned = torch.stack(list(IndependentWindows(10, 4, align=True)(AffinePerClip(per_clip=True), frames)))
    # Aligned: one affine map of the truth for the whole video (that of the first window).
    s, b = fit_scale_shift(truth, aligned)
    assert torch.allclose(aligned.double(), s * truth.double() + b, atol=1e-5)
    s, b = fit_scale_shift(truth, naive)
    assert (naive.double() - (s * truth.double() + b)).abs().max() > 0.05


def test_fit_scale_shift_recovers_an_affine_map_and_handles_constants():
    x = torch.linspace(0, 1, 50)
    s, b = fit_scale_shift(x, 2.5 * x - 0.75)
    assert s.item() == pytest.approx(2.5) and b.item() == pytest.approx(-0.75)
    s, b = fit_scale_shift(torch.full((10,), 3.0), torch.full((10,), 5.0))
    assert s.item() == 1.0 and b.item() == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs", [dict(window=0), dict(window=4, overlap=4), dict(window=4, overlap=0, align=True)])
def test_independent_windows_reject_bad_settings(kwargs):
    with pytest.raises(ValueError):
        IndependentWindows(**kwargs)


def test_vdf_test_runs_sequences_through_the_configured_strategy(in_tmp_cwd):

    from recipes import tiny_args

    from vdf.cli import main

    args = ["test", *tiny_args("dav2"), "--trainer.limit_test_batches", "1"]
    per_frame = main(args).trainer.callback_metrics["test/abs_rel"].item()
    windows = main(
        [
            *args,
            "--model.init_args.predictor.init_args.strategy",
            "vdf.inference.IndependentWindows",
            "--model.init_args.predictor.init_args.strategy.window",
            "3",
            "--model.init_args.predictor.init_args.strategy.overlap",
            "1",
        ]
    )
    assert (
        isinstance(windows.model.predictor.strategy, IndependentWindows)
        and windows.model.predictor.strategy.window == 3
    )
    # A per-frame network gives the same per-frame outputs whatever the windowing.
    assert windows.trainer.callback_metrics["test/abs_rel"].item() == pytest.approx(per_frame, abs=1e-6)


class RunningMean:
    """A fake recurrent model: disparity_t = mean of frames 0..t (state = running sum and count)."""

    def stream_step(self, frame, state):
        total, count = (torch.zeros_like(frame), 0) if state is None else state
        total, count = total + frame, count + 1
        return (total / count).mean(dim=1, keepdim=True), (total, count)


def test_streaming_carries_the_state_and_holds_one_frame():
    from vdf.inference import Streaming

    frames = video(12, seed=8)
    source = CountingIterator(frames)
    stream = Streaming()(RunningMean(), source)
    first = next(stream)
    assert source.pulled == 1 and first.shape == (1, 4, 5)
    out = [first, *stream]
    for t, o in enumerate(out):
        expected = torch.stack(frames[: t + 1]).mean(0).mean(0, keepdim=True)
        assert torch.allclose(o, expected, atol=1e-6)
    # reset_every restarts the recurrence: frame 5 then only sees itself.
    reset = list(Streaming(reset_every=5)(RunningMean(), frames))
    assert torch.allclose(reset[5], frames[5].mean(0, keepdim=True), atol=1e-6)


def test_streaming_refuses_a_model_without_state():
    from vdf.inference import Streaming

    with pytest.raises(TypeError, match="stream_step"):
        list(Streaming()(AffinePerClip(per_clip=False), video(2)))
