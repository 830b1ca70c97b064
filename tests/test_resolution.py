"""Resolution rules: the official size arithmetic, the way back to the input frame, the strategy wrapper."""

import numpy as np
import pytest
import torch

from vdf.predictors.resolution import (
    CenterCropToMultiple,
    FixedSize,
    Resolution,
    RoundToMultiple,
    resize_frames,
    run_at_resolution,
)


def _official_round64(height: int, width: int, max_res: int) -> tuple[int, int]:
    """DepthCrafter's ``read_video_frames`` / ChronoDepth's ``resize_max_res`` size rule, restated."""
    h, w = round(height / 64) * 64, round(width / 64) * 64
    if max(h, w) > max_res:
        scale = max_res / max(height, width)
        h, w = round(height * scale / 64) * 64, round(width * scale / 64) * 64
    return h, w


@pytest.mark.parametrize("max_res", [512, 1024])
def test_round_to_multiple_is_the_official_64_rule(max_res):
    rule = RoundToMultiple(max_size=max_res, multiple=64, rounding="nearest")
    rng = np.random.default_rng(0)
    sizes = [(436, 1024), (375, 1242), (480, 640), (1080, 1920), (720, 1280), (100, 97), (2160, 3840)]
    sizes += [tuple(int(v) for v in rng.integers(64, 2400, size=2)) for _ in range(300)]
    for h, w in sizes:
        official = _official_round64(h, w, max_res)
        # The official arithmetic gives a 0-pixel side for extreme aspect ratios (its pipeline then
        # fails); vdf keeps at least one multiple there.
        expected = tuple(max(64, v) for v in official)
        assert rule.size(h, w) == expected, (h, w)
    # Rounding to the nearest multiple can upscale (DepthCrafter runs a 436x1024 Sintel frame at 448x1024).
    assert RoundToMultiple(1024, 64).size(436, 1024) == (448, 1024)


def test_round_to_multiple_other_roundings_and_protocol_sizes():
    assert RoundToMultiple(None, 14, "up").size(100, 150) == (112, 154)
    assert RoundToMultiple(None, 14, "down").size(100, 150) == (98, 140)
    assert RoundToMultiple(2044, 14, "down").size(1148, 4088) == (574, 2044)
    # A dataset's fixed benchmark size wins only when the rule says so.
    assert RoundToMultiple(1024, 64).size(436, 1024, requested=(448, 640)) == (448, 1024)
    assert RoundToMultiple(1024, 64, protocol_sizes=True).size(436, 1024, requested=(448, 640)) == (448, 640)
    assert Resolution().size(33, 47, requested=(64, 64)) == (33, 47)
    assert FixedSize(64, 96).size(33, 47) == (64, 96)
    with pytest.raises(ValueError, match="rounding"):
        RoundToMultiple(rounding="ceil")
    with pytest.raises(ValueError, match="max_size"):
        RoundToMultiple(max_size=32, multiple=64)


def test_round_to_multiple_prepares_and_restores_sizes():
    rule = RoundToMultiple(max_size=128, multiple=16, mode="bicubic", clip=True)
    frames = torch.rand(2, 3, 50, 90)
    size = rule.size(50, 90)
    prepared = rule.prepare(frames, size)
    assert prepared.shape == (2, 3, *size) and size == (48, 96)
    assert prepared.min() >= 0 and prepared.max() <= 1  # clipped after the bicubic overshoot
    restored = rule.restore(torch.rand(2, 1, *size), 50, 90)
    assert restored.shape == (2, 1, 50, 90)
    # A constant prediction stays constant on the way back.
    assert torch.allclose(rule.restore(torch.full((1, 1, *size), 0.25), 50, 90), torch.tensor(0.25))


def _official_dav_crop(image: np.ndarray, max_res: int = 1024, multiple: int = 32) -> np.ndarray:
    """Depth Any Video's ``imresize_max`` (PIL LANCZOS, never up) + ``imcrop_multi``, restated."""
    from PIL import Image

    h, w = image.shape[:2]
    factor = min(max_res / max(h, w), 1.0)
    resized = np.asarray(Image.fromarray(image).resize((int(w * factor), int(h * factor)), Image.LANCZOS))
    ch, cw = resized.shape[0] // multiple * multiple, resized.shape[1] // multiple * multiple
    top, left = (resized.shape[0] - ch) // 2, (resized.shape[1] - cw) // 2
    return resized[top : top + ch, left : left + cw]


@pytest.mark.parametrize("shape", [(77, 101), (200, 150), (45, 64)])
def test_center_crop_to_multiple_matches_the_official_preprocessing(shape):
    rule = CenterCropToMultiple(max_size=96, multiple=32, mode="lanczos")
    image = np.random.default_rng(1).integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    frames = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    ours = rule.prepare(frames, rule.size(*shape))
    theirs = torch.from_numpy(_official_dav_crop(image, 96, 32).copy()).permute(2, 0, 1)[None].float() / 255
    assert ours.shape == theirs.shape
    assert torch.equal((ours * 255).round(), (theirs * 255).round())


def test_center_crop_restore_places_the_prediction_in_its_window():
    rule = CenterCropToMultiple(max_size=None, multiple=8, mode="bilinear")
    top, left, h, w = rule.crop_box(21, 30)
    assert (top, left, h, w) == (2, 3, 16, 24)
    pred = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    full = rule.restore(pred, 21, 30)
    assert full.shape == (1, 1, 21, 30)
    assert torch.equal(full[..., top : top + h, left : left + w], pred)
    # Margins repeat the nearest predicted row / column.
    assert torch.equal(full[..., 0, left : left + w], pred[..., 0, :])
    assert torch.equal(full[..., top : top + h, -1], pred[..., :, -1])
    with pytest.raises(ValueError, match="smaller than one"):
        CenterCropToMultiple(max_size=None, multiple=32).size(20, 40)


def test_resize_frames_lanczos_is_pil_on_8_bit_frames():
    frames = torch.rand(1, 3, 30, 40)
    out = resize_frames(frames, (15, 20), "lanczos")
    assert out.shape == (1, 3, 15, 20)
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)  # 8-bit levels
    assert resize_frames(frames, (30, 40), "bilinear") is frames


class _Recorder:
    """A strategy that records the frame size it sees, answers 2·mean, and skips frame 1."""

    def __init__(self):
        self.sizes = []

    def __call__(self, model, frames):
        for i, frame in enumerate(frames):
            self.sizes.append(tuple(frame.shape[-2:]))
            yield None if i == 1 else frame.mean(0, keepdim=True) * 2


def test_run_at_resolution_resizes_in_and_out_and_passes_none_through():
    strategy = _Recorder()
    frames = [torch.rand(3, 37, 53) for _ in range(3)]
    outs = list(run_at_resolution(RoundToMultiple(None, 16, "up"), strategy, None, iter(frames)))
    assert strategy.sizes == [(48, 64)] * 3
    assert outs[1] is None
    assert outs[0].shape == (1, 37, 53) and outs[2].shape == (1, 37, 53)
    with pytest.raises(ValueError, match="one size"):
        list(run_at_resolution(Resolution(), _Recorder(), None, iter([torch.rand(3, 8, 8), torch.rand(3, 9, 8)])))
    assert list(run_at_resolution(Resolution(), _Recorder(), None, iter([]))) == []
