"""Video-Depth-Anything reproduces the official pipeline: golden fixtures from the official code.

The fixtures (``tests/fixtures/fidelity/vda/``) were written by
``python scripts/fidelity/vda.py --official <checkout of DepthAnything/Video-Depth-Anything>``:
tiny random weights in the official checkpoint layout, frames, and what the official inference
made of them: ``infer_video_depth`` (offline windows, two lengths that need padding and several
windows) and ``infer_video_depth_one`` (streaming, frame by frame), both in float32, plus the
released training loss on a random clip. Here the predictors are built with `vdf.load` from the
shipped configs (``configs/vda.yaml``, ``+ configs/vda/streaming.yaml``) with only the widths
shrunk to the fixture's, the weight path pointed at the fixture file and the input size 28.
"""

from __future__ import annotations

import os

import pytest
import torch
import yaml

import vdf
from tests.fidelity import FIXTURES, load_case, max_relative_difference
from vdf.inference import KeyframeAlignedWindows, Streaming
from vdf.tasks.losses import VideoDepthAnythingLoss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "vda.yaml")
STREAMING = os.path.join(ROOT, "configs", "vda", "streaming.yaml")
TOLERANCE = 1e-4


def _load(tmp_path, *overlays: str):
    _, meta = load_case("vda", "offline_31")
    tiny = meta["tiny"]
    net = {
        "encoder": "vits",
        "embed_dim": tiny["vit"]["embed_dim"],
        "depth": tiny["vit"]["depth"],
        "num_heads": tiny["vit"]["num_heads"],
        "layer_indices": tiny["layers"],
        "features": tiny["features"],
        "out_channels": tiny["out_channels"],
        "weights": str(FIXTURES / "vda" / meta["weights"]),
    }
    layer = tmp_path / "fixture.yaml"
    predictor = {"net": {"init_args": net}, "input_size": tiny["input_size"]}
    layer.write_text(yaml.safe_dump({"model": {"init_args": {"predictor": {"init_args": predictor}}}}))
    return vdf.load([BASE, *overlays, layer], device="cpu")


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    return _load(tmp_path_factory.mktemp("vda"))


@pytest.mark.parametrize("case", ["offline_31", "offline_50"])
def test_offline_windows_equal_the_official_inference(offline, case):
    tensors, meta = load_case("vda", case)
    strategy = offline.strategy
    assert isinstance(strategy, KeyframeAlignedWindows) and strategy.align
    constants = meta["official_constants"]
    assert (strategy.window, strategy.overlap, strategy.crossfade) == (
        constants["INFER_LEN"],
        constants["OVERLAP"],
        constants["INTERP_LEN"],
    )
    assert strategy.keyframes == constants["KEYFRAMES"]
    ours = offline.predict(tensors["frames"].numpy())  # (T,H,W) uint8 frames, as the official input
    theirs = tensors["official"]
    assert ours.shape == theirs.shape == (meta["frames"], meta["height"], meta["width"])
    per_frame = [max_relative_difference(a, b) for a, b in zip(ours, theirs)]
    print(f"\nVDA {case}: max relative difference {max(per_frame):.2e} (worst frame {per_frame.index(max(per_frame))})")
    assert max(per_frame) <= TOLERANCE
    # The temporal modules matter in the fixture: zeroing them moves the official output a lot.
    assert meta["temporal_effect"] > 100 * TOLERANCE


def test_streaming_equals_the_official_streaming(tmp_path):
    predictor = _load(tmp_path, STREAMING)
    assert isinstance(predictor.strategy, Streaming)
    tensors, meta = load_case("vda", "stream")
    assert meta["cache_entries"] == 42 and meta["gap"] == 41
    ours = predictor.predict(tensors["frames"].numpy())
    theirs = tensors["official"]
    assert ours.shape == theirs.shape == (meta["frames"], meta["height"], meta["width"])
    per_frame = [max_relative_difference(a, b) for a, b in zip(ours, theirs)]
    print(f"\nVDA streaming: max relative difference {max(per_frame):.2e} over {len(per_frame)} frames")
    assert max(per_frame) <= TOLERANCE
    # Without the cache (each frame alone) the later frames miss the official ones by far.
    alone = predictor.predict(tensors["frames"][:1].numpy())
    assert max_relative_difference(alone[0], theirs[0]) <= TOLERANCE
    restarted = torch.stack([predictor.predict(f[None].numpy())[0] for f in tensors["frames"][40:44]])
    assert max_relative_difference(restarted, theirs[40:44]) > 100 * TOLERANCE


def test_loss_equals_the_released_loss():
    tensors, _ = load_case("vda", "loss")
    loss = VideoDepthAnythingLoss()
    pred, depth, valid = tensors["pred"][:, :, None], tensors["depth"][:, :, None], tensors["valid"][:, :, None].bool()
    target, mask = (1.0 / depth)[:, :, 0], valid[:, :, 0]
    spatial = loss.spatial(pred[:, :, 0].flatten(0, 1), target.flatten(0, 1), mask.flatten(0, 1))
    stable = loss.stable_scale * loss.temporal(pred[:, :, 0], target, mask)
    torch.testing.assert_close(spatial.reshape(1), tensors["official.spatial_loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(stable.reshape(1), tensors["official.stable_loss"], rtol=1e-5, atol=0)
    torch.testing.assert_close(loss(pred, depth, valid).reshape(1), tensors["official.total_loss"], rtol=1e-5, atol=0)
