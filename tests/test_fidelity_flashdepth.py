"""FlashDepth reproduces the official pipeline: golden fixtures from the official code.

The fixtures (``tests/fixtures/fidelity/flashdepth/``) were written by
``python scripts/fidelity/flashdepth.py --official <checkout of Eyeline-Research/FlashDepth>``:
tiny random weights in the official checkpoint layout, frames, and what the official inference
(its video reader's preprocessing, then ``FlashDepth.forward`` streaming frame by frame) made of
them. Here the predictor is built with `vdf.load` from the shipped configs (FlashDepth-S:
``configs/flashdepth.yaml`` + ``configs/flashdepth/s.yaml``; the hybrid: ``configs/flashdepth.yaml``)
with only the widths shrunk to the fixture's and the weight paths pointed at the fixture files,
and run through vdf's inference path: the config's resolution rule and the `Streaming` strategy,
one frame at a time with the carried Mamba state, in float32.
"""

from __future__ import annotations

import os

import pytest
import torch
import yaml

import vdf
from tests.fidelity import FIXTURES, load_case, max_relative_difference
from vdf.cli import main
from vdf.inference import Streaming
from vdf.models.dav2 import normalize_imagenet
from vdf.predictors.resolution import CapThenRoundToMultiple, run_at_resolution

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(ROOT, "configs", "flashdepth.yaml")
# The shipped recipes: the family base, then the variant's overlay.
CONFIGS = {"s": [BASE, os.path.join(ROOT, "configs", "flashdepth", "s.yaml")], "full": [BASE]}
TOLERANCE = 1e-4


def _overrides(case: str, meta: dict) -> dict:
    """The fixture's tiny widths and weight file, as one more layer of the shipped config.

    The rest of the model (variant, Mamba placement, conv width, fusion blocks and heads, the
    teacher's role) is the config's. ``mamba_downsample`` and ``teacher_resolution`` are the two
    config values the fixture changed on both sides (see the script's docstring).
    """
    tiny = meta["tiny"]
    features, channels = tiny["dpt"]["64"]
    args = {
        "embed_dim": tiny["vit"]["vits"]["embed_dim"],
        "depth": tiny["vit"]["vits"]["depth"],
        "num_heads": tiny["vit"]["vits"]["num_heads"],
        "layer_indices": tiny["layers"]["vits"],
        "features": features,
        "out_channels": channels,
        "mamba_d_state": tiny["mamba"]["d_state"],
        "mamba_expand": tiny["mamba"]["expand"],
        "mamba_headdim": tiny["mamba"]["headdim"],
        "mamba_downsample": meta["downsample_mamba"],
        "weights": str(FIXTURES / "flashdepth" / meta["weights"]),
    }
    if case == "s":
        args["dav2_weights"] = None
    else:
        teacher_features, teacher_channels = tiny["dpt"]["256"]
        args.update(
            {
                "student_weights": None,
                "teacher_weights": None,
                "teacher_embed_dim": tiny["vit"]["vitl"]["embed_dim"],
                "teacher_depth": tiny["vit"]["vitl"]["depth"],
                "teacher_num_heads": tiny["vit"]["vitl"]["num_heads"],
                "teacher_layer_indices": tiny["layers"]["vitl"],
                "teacher_features": teacher_features,
                "teacher_out_channels": teacher_channels,
                "teacher_resolution": meta["teacher_resolution"],
            }
        )
    # A config layer (not `vdf.load` keyword overrides), so that nulls are nulls.
    return {"model": {"init_args": {"predictor": {"init_args": {"net": {"init_args": args}}}}}}


@pytest.fixture(scope="module", params=["s", "full"])
def case(request, tmp_path_factory):
    tensors, meta = load_case("flashdepth", request.param)
    layer = tmp_path_factory.mktemp("flashdepth") / "fixture.yaml"
    layer.write_text(yaml.safe_dump(_overrides(request.param, meta)))
    predictor = vdf.load([*CONFIGS[request.param], layer], device="cpu")
    return request.param, predictor, tensors, meta


def test_streaming_inference_equals_the_official_pipeline(case):
    name, predictor, tensors, meta = case
    assert isinstance(predictor.resolution, CapThenRoundToMultiple) and isinstance(predictor.strategy, Streaming)
    assert predictor.net.variant == name and predictor.input_size is None
    frames = tensors["frames"].float() / 255  # decoded 8-bit frames, (T, 3, H, W) in [0, 1]
    height, width = frames.shape[-2:]
    size = predictor.resolution.size(height, width)
    assert list(size) == meta["processed_size"]
    with torch.no_grad():
        # At the processed size (the official output), frame by frame with the carried state ...
        prepared = [predictor.resolution.prepare(frame[None], size)[0] for frame in frames]
        processed = list(predictor.strategy(predictor, iter(prepared)))
        # ... and the whole path, prediction mapped back to the input size.
        restored = list(predictor.stream(iter(frames)))
    differences = []
    for t in range(meta["frames"]):
        ours, theirs = processed[t], tensors["official.processed"][t]
        assert ours.shape == theirs.shape == (1, *size)
        assert restored[t].shape == tensors["official.restored"][t].shape == (1, height, width)
        differences.append(
            (
                max_relative_difference(ours, theirs),
                max_relative_difference(restored[t], tensors["official.restored"][t]),
            )
        )
    print(
        f"\nFlashDepth {name}: max relative difference per frame (processed, restored): "
        + ", ".join(f"({a:.2e}, {b:.2e})" for a, b in differences)
    )
    assert max(max(d) for d in differences) <= TOLERANCE, differences


def test_the_fixture_exercises_the_recurrence(case):
    # Restarting the state at every frame must miss the official outputs of the later frames by
    # far more than the tolerance: the test above really checks the carried Mamba state.
    _name, predictor, tensors, meta = case
    assert meta["temporal_effect"] > 0.05
    frames = tensors["frames"].float() / 255
    with torch.no_grad():
        restarted = list(run_at_resolution(predictor.resolution, Streaming(reset_every=1), predictor, iter(frames)))
    official = tensors["official.restored"]
    assert max_relative_difference(restarted[0], official[0]) <= TOLERANCE
    later = max(max_relative_difference(restarted[t], official[t]) for t in range(1, meta["frames"]))
    assert later > 100 * TOLERANCE


def test_the_resolution_rule_reproduces_the_official_reader():
    tensors, meta = load_case("flashdepth", "preprocess")
    rule = CapThenRoundToMultiple(max_size=2044, multiple=14, rounding="up", mode="bicubic", clip=True)
    for h, w, official_h, official_w in tensors["sizes"].tolist():
        assert rule.size(h, w) == (official_h, official_w), (h, w)
    # A frame over the cap: two bicubic resizes, each clipped to [0,1], then normalised.
    frame = tensors["frame"].float() / 255
    size = rule.size(*frame.shape[-2:])
    assert list(size) == meta["processed_size"]
    ours = normalize_imagenet(rule.prepare(frame, size))[0, ..., :: meta["column_stride"]]
    difference = max_relative_difference(ours, tensors["official.normalised"])
    print(f"\nFlashDepth preprocessing over the cap: max relative difference {difference:.2e}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("overlay", ["s", "l", None], ids=["flashdepth-s", "flashdepth-l", "flashdepth"])
def test_shipped_configs_run_the_official_inference_settings(overlay, capsys, in_tmp_cwd):
    # The official inference autocasts to bfloat16; the native-resolution rule runs at test and
    # predict time only, training keeps the data's crop size. The recipe as the CLI composes it
    # (the family base, then the variant's overlay), resolved without building the networks.
    configs = [BASE] + ([os.path.join(ROOT, "configs", "flashdepth", f"{overlay}.yaml")] if overlay else [])
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *[x for c in configs for x in ("--config", c)], "--print_config"])
    assert exit_info.value.code in (0, None)
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["trainer"]["precision"] == "bf16-mixed"
    init = data["model"]["init_args"]
    predictor = init["predictor"]["init_args"]
    assert predictor["resolution"]["class_path"].endswith("CapThenRoundToMultiple")
    # The official settings; the resolved config also lists the arguments left at their defaults.
    assert predictor["resolution"]["init_args"] == {
        "max_size": 2044,
        "multiple": 14,
        "rounding": "up",
        "mode": "bicubic",
        "antialias": False,
        "clip": True,
        "restore_mode": "bilinear",
        "restore_align_corners": True,
    }
    assert predictor.get("input_size") is None and init.get("loss") is None  # default: L1 on 100/depth
