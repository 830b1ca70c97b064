"""ChronoDepth against golden fixtures of its official inference code.

The fixtures (``tests/fixtures/fidelity/chronodepth/``) were written by
``python scripts/fidelity/chronodepth.py --official <ChronoDepth checkout>``: tiny random weights
in the official layout, fixed input frames, every noise tensor the official pipeline drew and its
outputs. Here vdf builds the predictor from the shipped ``configs/chronodepth.yaml`` with
`vdf.load` (weight paths pointed at the fixture folders), consumes the same noise in the same
order, runs the strategy a user runs (`Predictor.run`: resolution rule, `SlidingWindowContext`,
resize back) and must match the official output to 1e-4 (max difference relative to the largest
value).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fidelity import FIXTURES, Replay, load_case, max_relative_difference, noise_draws

import vdf

ROOT = Path(__file__).resolve().parents[1]
FOLDER = FIXTURES / "chronodepth"
CONFIG = ROOT / "configs" / "chronodepth.yaml"
TOLERANCE = 1e-4
CASES = ["one_window", "four_windows", "resized"]


class FrameReplay:
    """Hands out the official VAE posterior draws frame by frame, whatever the chunking.

    The official pipeline samples the RGB latents' posteriors in chunks of 5 frames counted from the
    first frame; vdf encodes each window's new frames in chunks of the VAE's ``chunk_size``. The
    encoder works frame by frame, so only the order of the frames' noise matters.
    """

    def __init__(self, draws: list[torch.Tensor]):
        self.frames = torch.cat(draws) if draws else torch.empty(0)
        self.used = 0

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None):
        n = shape[0]
        if self.used + n > len(self.frames):
            raise AssertionError(f"vdf drew posterior noise for more frames than the official code ({self.used + n})")
        out = self.frames[self.used : self.used + n]
        if tuple(out.shape[1:]) != tuple(shape[1:]):
            raise AssertionError(
                f"posterior noise of {tuple(shape)} requested, the official frames are {tuple(out.shape[1:])}"
            )
        self.used += n
        return out.clone().to(device=device or "cpu", dtype=dtype or out.dtype)

    def done(self) -> None:
        assert self.used == len(self.frames), (
            f"vdf used {self.used} of the official {len(self.frames)} posterior frames"
        )


@pytest.fixture(scope="module")
def model():
    """The shipped inference config with the fixture weights (the VAE is vdf's shipped tiny one),
    in float32 (the config holds the networks in float16, as the official script; the fixtures
    compare in float32 on the CPU)."""
    folders = {
        "unet": FOLDER / "unet",
        "vae": ROOT / "vdf" / "models" / "assets" / "tiny_svd_vae",
        "image_encoder": FOLDER / "image_encoder",
    }
    overrides = {}
    for net, folder in folders.items():
        overrides[f"denoiser.init_args.{net}.init_args.weights"] = str(folder)
        overrides[f"denoiser.init_args.{net}.init_args.weights_dtype"] = "float32"
    return vdf.load(CONFIG, device="cpu", **overrides)


def run_case(model, case: str, monkeypatch) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """vdf's prediction ``(T,1,H,W)`` on a fixture case with the official noise, and the official one."""
    from diffusers.models.autoencoders import vae as vae_module

    tensors, meta = load_case("chronodepth", case)
    draws = noise_draws(tensors)
    sources = meta["noise_sources"]
    initial = Replay([d for d, s in zip(draws, sources) if s == "generator"])
    posterior = FrameReplay([d for d, s in zip(draws, sources) if s == "posterior"])
    monkeypatch.setattr(model, "noise_like", lambda shape, generator=None: initial(shape))
    monkeypatch.setattr(vae_module, "randn_tensor", posterior)
    monkeypatch.setattr(model.resolution, "max_size", meta["max_res"])
    video = tensors["video"].float() / 255  # the frames the official run_pipeline got, in [0,1]
    with torch.no_grad():
        pred, present = model.run(video)
    assert present.all()
    initial.done()
    posterior.done()
    return pred, tensors["depth"], meta


def test_shipped_config_is_the_official_pipeline(model):
    from vdf.diffusion import ScaledSampleEulerSampler
    from vdf.inference import SlidingWindowContext
    from vdf.predictors.resolution import RoundToMultiple

    assert type(model.sampler) is ScaledSampleEulerSampler
    assert isinstance(model.strategy, SlidingWindowContext)
    assert (model.strategy.window, model.strategy.stride, model.steps) == (10, 5, 5)
    assert model.decode_chunk_size == 8
    assert model.denoiser.vae.force_upcast
    rule = model.resolution
    assert isinstance(rule, RoundToMultiple)
    assert (rule.max_size, rule.multiple, rule.rounding, rule.mode, rule.antialias) == (
        1024,
        64,
        "nearest",
        "bilinear",
        False,
    )
    assert rule.restore_mode == "bilinear"


@pytest.mark.parametrize("case", CASES)
def test_matches_the_official_pipeline(model, case, monkeypatch):
    pred, official, meta = run_case(model, case, monkeypatch)
    assert pred.shape == (meta["frames"], 1, meta["height"], meta["width"])
    difference = max_relative_difference(pred[:, 0], official)
    print(f"chronodepth {case}: max relative difference {difference:.2e}")
    assert difference <= TOLERANCE


def test_the_textbook_euler_step_is_not_the_official_pipeline(model, monkeypatch):
    """The fixtures tell the samplers apart: the textbook step is a deviation, not rounding."""
    from vdf.diffusion import EulerSampler

    monkeypatch.setattr(model, "sampler", EulerSampler())
    pred, official, _ = run_case(model, "one_window", monkeypatch)
    assert max_relative_difference(pred[:, 0], official) > 100 * TOLERANCE


def test_resolution_rule_sizes_and_restore_match_the_official_script(model):
    tensors, meta = load_case("chronodepth", "resized")
    rule = model.resolution
    assert rule.max_size == 1024  # the table was made with run_infer's default max_res
    for height, width, h, w in meta["resolution_table"]:
        if h is None:  # the official resize fails (a side under 32 pixels rounds to 0); vdf keeps 64
            assert min(rule.size(height, width)) == 64
        else:
            assert rule.size(height, width) == (h, w), (height, width)
    # The way back: bilinear to the input size (run_infer then clamps to [0,1], which a bilinear
    # resize of values in [0,1] never leaves).
    restored = rule.restore(tensors["depth_processing"], meta["height"], meta["width"])
    assert max_relative_difference(restored[:, 0], tensors["depth"]) <= 1e-6
