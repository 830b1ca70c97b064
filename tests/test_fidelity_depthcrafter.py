"""DepthCrafter end to end against golden fixtures of the official inference code.

The fixtures (``tests/fixtures/fidelity/depthcrafter``, written by
``scripts/fidelity/depthcrafter.py --official <checkout>``) hold tiny random networks in the
official layout, fixed videos, every noise tensor the official pipeline drew and its
post-processed output. Here vdf builds the DepthCrafter predictor from the shipped
``configs/depthcrafter.yaml`` with `vdf.load` (weights pointed at the fixture folders, float32 on
the CPU), replays the official noise and runs the strategy a user runs (`Predictor.run`); the
outputs must agree to 1e-4 (max relative difference).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fidelity import FIXTURES, Replay, load_case, max_relative_difference, noise_draws

import vdf
from vdf.models.tiny_vae import ASSET as TINY_VAE
from vdf.predictors.resolution import RoundToMultiple

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "depthcrafter.yaml")
FOLDER = FIXTURES / "depthcrafter"
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these small networks run several times faster than on two busy
    threads, and the run does not depend on the machine's other load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fixture_overrides() -> dict[str, str]:
    """The shipped config with its weight folders pointed at the fixtures, in float32 (CPU): settings
    of the predictor, as `vdf.load` takes them."""
    out = {}
    for net, folder in (("unet", FOLDER / "unet"), ("vae", TINY_VAE), ("image_encoder", FOLDER / "image_encoder")):
        out[f"denoiser.init_args.{net}.init_args.weights"] = str(folder)
        out[f"denoiser.init_args.{net}.init_args.weights_dtype"] = "float32"
    return out


def build_predictor(**overrides):
    """The predictor of the shipped config with the fixture weights, on the CPU."""
    return vdf.load(CONFIG, device="cpu", **fixture_overrides(), **overrides)


def vdf_draw_order(draws: list[torch.Tensor], frames: int, window: int, overlap: int) -> list[torch.Tensor]:
    """The official draws in the order vdf's streaming strategy asks for them.

    The official pipeline draws the noise augmentation of the whole video, then one window of
    initial noise. Streaming, vdf draws each segment's augmentation when it reads the segment's
    new frames: the first segment's, the initial noise, then each later segment's.
    """
    augmentation, initial = draws
    first = min(window, frames)
    order = [augmentation[:first], initial]
    for start in range(first, frames, window - overlap):
        order.append(augmentation[start : start + window - overlap])
    return order


def run_case(case: str) -> float:
    tensors, meta = load_case("depthcrafter", case)
    overrides = {}
    if meta["frames"] > meta["window_size"]:
        overrides = {"strategy.init_args.window": meta["window_size"], "strategy.init_args.overlap": meta["overlap"]}
    model = build_predictor(**overrides)
    assert model.steps == meta["steps"] and model.sampling_seed == meta["seed"]
    draws = noise_draws(tensors)
    assert [list(d.shape) for d in draws] == meta["noise_shapes"]
    replay = Replay(vdf_draw_order(draws, meta["frames"], meta["window_size"], meta["overlap"]))
    model.noise_like = lambda shape, generator=None: replay(shape)
    model.denoiser.augmentation_noise = lambda shape, generator=None, device=None: replay(shape)

    video = tensors["video"].permute(0, 3, 1, 2).float() / 255  # (T,3,H,W) in [0,1]
    ours, present = model.run(video)
    assert present.all()
    ours = ours[:, 0]
    replay.done()
    difference = max_relative_difference(ours, tensors["depth"])
    print(f"depthcrafter/{case}: max relative difference {difference:.3g}")
    return difference


@pytest.mark.parametrize("case", ["one_segment", "segments"])
def test_depthcrafter_equals_the_official_pipeline(case):
    assert run_case(case) <= TOLERANCE


def test_resolution_rule_equals_read_video_frames():
    """`RoundToMultiple` as configured gives the size the official reader decodes at, for many sizes."""
    table = json.loads((FOLDER / "resolution.json").read_text())
    assert len(table["rows"]) > 40
    for height, width, max_res, out_h, out_w in table["rows"]:
        rule = RoundToMultiple(max_size=max_res, multiple=64, rounding="nearest", protocol_sizes=True)
        if 0 in (out_h, out_w):
            # Under 32 pixels a side rounds to 0 there (no decodable size); vdf keeps 64.
            assert rule.size(height, width) == (out_h or 64, out_w or 64)
            continue
        assert rule.size(height, width) == (out_h, out_w), (height, width, max_res)


def official_size(height: int, width: int, max_res: int) -> tuple[int, int]:
    """``read_video_frames``' arithmetic for an open video, written out independently."""
    h, w = round(height / 64) * 64, round(width / 64) * 64
    if max(h, w) > max_res:
        scale = max_res / max(height, width)
        h, w = round(height * scale / 64) * 64, round(width * scale / 64) * 64
    return h, w


def test_resolution_rule_equals_the_official_formula_on_many_sizes():
    model_rule = build_predictor().resolution
    assert isinstance(model_rule, RoundToMultiple) and model_rule.protocol_sizes
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(40, 4096, (500, 2), generator=g).tolist()
    sizes += [[32 * i, 32 * j] for i in range(2, 70, 3) for j in (2, 3, 7, 33, 64)]  # halves: Python's round
    for height, width in sizes:
        h, w = official_size(height, width, 1024)
        # A side the official arithmetic rounds to 0 (no decodable size) is one multiple in vdf.
        assert model_rule.size(height, width) == (h or 64, w or 64), (height, width)
    # A benchmark dataset's fixed size wins (the official --dataset sizes).
    for name, size in json.loads((FOLDER / "resolution.json").read_text())["dataset_res_dict"].items():
        assert model_rule.size(436, 1024, requested=tuple(size)) == tuple(size), name


def test_same_seed_draws_the_official_cpu_noise():
    """With ``sampling_seed`` 42 vdf draws, for a video of one window, the numbers the official code
    draws after ``set_seed(42)`` on the CPU in float32 (the fixtures' run): same shapes, same order.
    For a longer video the first window's augmentation noise still agrees; the initial noise does
    not (the official code draws the whole video's augmentation first)."""
    model = build_predictor()
    for case in ("one_segment", "segments"):
        tensors, meta = load_case("depthcrafter", case)
        augmentation, initial = noise_draws(tensors)
        first = min(meta["frames"], meta["window_size"])
        generator = model.generator()
        ours = model.denoiser.augmentation_noise((1, first, 3, meta["height"], meta["width"]), generator)
        assert torch.equal(ours[0], augmentation[:first])
        ours = model.noise_like((1, first, 4, meta["height"] // 2, meta["width"] // 2), generator)
        assert torch.equal(ours, initial) == (meta["frames"] <= meta["window_size"])
