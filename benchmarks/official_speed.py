"""vdf against the official inference code, side by side: time ratio and output agreement.

Usage::

    python benchmarks/official_speed.py --official /path/to/checkouts            # all families
    python benchmarks/official_speed.py --official /path/to/checkouts --quick    # fewer, smaller runs
    python benchmarks/official_speed.py --official /path/to/checkouts --families depthcrafter dav2 \
        --vdf "{compile: true}" --output speed.json

``--official`` is a folder holding local checkouts of the official repositories (``DepthCrafter``,
``ChronoDepth``, ``DepthAnyVideo``, ``FlashDepth``, ``Depth-Anything-V2``). For every family the
script builds the official inference (imported from its checkout, as ``scripts/fidelity/<family>.py``
runs it, with the same CPU stand-ins) and vdf's predictor (from the shipped config, as the fidelity
tests build it) on the same tiny random weights (the fidelity fixtures; DAv2: a random ViT-S), the
same input video and, for the diffusion families, the same noise (the draws the official code makes
are replayed into vdf). Then:

- **agreement**: vdf's output against the official output of this run, max relative difference
  (float32; it must be within the fidelity tolerance, 1e-4);
- **speed**: ``--rounds`` rounds after one warm-up call each, alternating which side runs first in
  each round, in one process; the median seconds of each side and their ratio (vdf / official).

``--vdf`` sets vdf's inference options (`vdf.predictors.InferenceOptions`, a YAML mapping:
``"{channels_last: true}"``, ``"{compile: true}"``, ``"{dtype: bfloat16}"``); the agreement of a
reduced-precision run is reported against the official float32 output (no tolerance applies).
``--threads`` intra-op threads (default 1: the small networks gain nothing from more, and a shared
machine disturbs one thread least).

Nothing here is imported by vdf; the official code is run, never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TQDM_DISABLE", "1")  # the official pipelines' progress bars
for extra in (ROOT, ROOT / "tests", ROOT / "scripts" / "fidelity"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from common import import_official  # noqa: E402  (scripts/fidelity/common.py)

FIXTURES = ROOT / "tests" / "fixtures" / "fidelity"
TINY_VAE = ROOT / "vdf" / "models" / "assets" / "tiny_svd_vae"
TOLERANCE = 1e-4  # the fidelity tests' (max relative difference, float32)


@dataclass
class Pair:
    """One family's two inferences on the same weights and input."""

    name: str
    setting: str  # what runs: frames, size, steps
    official: Callable[[], torch.Tensor]  # the official inference -> its output
    vdf: Callable[[], torch.Tensor]  # vdf's -> the same frames, same layout
    notes: list[str] = field(default_factory=list)
    model: Any = None  # vdf's predictor (for --profile)
    frames: int = 0  # frames of the input video


def fidelity_script(family: str):
    """``scripts/fidelity/<family>.py`` as a module (under another name: the official packages own theirs)."""
    import importlib.util

    name = f"fidelity_script_{family}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "fidelity" / f"{family}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def relative(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = torch.as_tensor(ours).double(), torch.as_tensor(theirs).double()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


def _predictor_options(options: dict[str, Any] | None) -> dict[str, Any]:
    return {"inference": options} if options else {}


# ------------------------------------------------------------------------------------ DepthCrafter


def depthcrafter(official_root: Path, quick: bool, options: dict | None) -> Pair:
    import test_fidelity_depthcrafter as dc_test
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from fidelity import Replay
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    dc_script = fidelity_script("depthcrafter")
    checkout = official_root / "DepthCrafter"
    dc_script.stub_io_modules()
    official = {
        "ppl": import_official(checkout, "depthcrafter.depth_crafter_ppl"),
        "unet": import_official(checkout, "depthcrafter.unet"),
        "inference": import_official(checkout, "depthcrafter.inference"),
        "svd": import_official(checkout, "diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion"),
    }
    folder = FIXTURES / "depthcrafter"
    unet_class = official["unet"].DiffusersUNetSpatioTemporalConditionModelDepthCrafter
    pipe = official["ppl"].DepthCrafterPipeline(
        vae=AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE)),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(
            str(folder / "image_encoder"), torch_dtype=torch.float32
        ),
        unet=unet_class.from_pretrained(str(folder / "unet"), torch_dtype=torch.float32),
        scheduler=EulerDiscreteScheduler.from_pretrained(str(folder / "scheduler")),
        feature_extractor=CLIPImageProcessor.from_pretrained(str(folder / "feature_extractor")),
    )
    pipe.set_progress_bar_config(disable=True)
    frames, height, width = (6, 64, 64) if quick else (24, 64, 128)
    spec = dict(frames=frames, height=height, width=width, window_size=110, overlap=25, steps=5, seed=42, episode=0)

    video_u8, _, draws = dc_script.run_official(official, pipe, "bench", spec)
    order = dc_test.vdf_draw_order([d.float() for d in draws], frames, spec["window_size"], spec["overlap"])
    model = dc_test.build_predictor(**_predictor_options(options))
    video = torch.from_numpy(video_u8).permute(0, 3, 1, 2).float() / 255

    def run_official() -> torch.Tensor:
        return torch.from_numpy(dc_script.run_official(official, pipe, "bench", spec)[1])

    def run_vdf() -> torch.Tensor:
        replay = Replay(order)
        model.noise_like = lambda shape, generator=None: replay(shape)
        model.denoiser.augmentation_noise = lambda shape, generator=None, device=None: replay(shape)
        out, _ = model.run(video)
        replay.done()
        return out[:, 0]

    setting = f"{frames} frames {height}x{width}, 5 steps, one segment"
    notes = ["official time includes its .npz write"]
    return Pair("DepthCrafter", setting, run_official, run_vdf, notes, model, frames)


# ------------------------------------------------------------------------------------ ChronoDepth


def chronodepth(official_root: Path, quick: bool, options: dict | None) -> Pair:
    import types

    import test_fidelity_chronodepth as cd_test
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from diffusers.models.autoencoders import vae as vae_module
    from fidelity import Replay, load_case, noise_draws
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    checkout = official_root / "ChronoDepth"
    pipeline_module = import_official(checkout, "chronodepth.chronodepth_pipeline")
    unet_module = import_official(checkout, "chronodepth.unet_chronodepth")
    run_infer = import_official(checkout, "run_infer")
    folder = FIXTURES / "chronodepth"
    case = "one_window" if quick else "four_windows"
    tensors, meta = load_case("chronodepth", case)
    pipe = pipeline_module.ChronoDepthPipeline(
        vae=AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE)),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(
            str(folder / "image_encoder"), torch_dtype=torch.float32
        ),
        unet=unet_module.DiffusersUNetSpatioTemporalConditionModelChronodepth.from_pretrained(
            str(folder / "unet"), torch_dtype=torch.float32
        ),
        scheduler=EulerDiscreteScheduler.from_pretrained(str(folder / "scheduler")),
        feature_extractor=CLIPImageProcessor.from_pretrained(str(folder / "feature_extractor")),
    )
    pipe.n_tokens, pipe.chunk_size = meta["n_tokens"], meta["chunk_size"]
    pipe.set_progress_bar_config(disable=True)
    cfg = types.SimpleNamespace(
        max_res=meta["max_res"],
        denoise_steps=meta["denoise_steps"],
        decode_chunk_size=meta["decode_chunk_size"],
        infer_mode="ours",
        sigma_epsilon=meta["sigma_epsilon"],
    )
    video_u8 = tensors["video"].permute(0, 2, 3, 1).contiguous().numpy()  # (T,H,W,3), as run_infer reads

    def run_official() -> torch.Tensor:
        torch.manual_seed(meta["seed"])  # run_infer's seed_all (the VAE posterior draws)
        generator = torch.Generator(device="cpu").manual_seed(meta["seed"])
        return run_infer.run_pipeline(pipe, cfg, video_u8, generator, torch.device("cpu"))

    model = _chronodepth_model(cd_test, options)
    draws, sources = noise_draws(tensors), meta["noise_sources"]
    video = tensors["video"].float() / 255

    def run_vdf() -> torch.Tensor:
        initial = Replay([d for d, s in zip(draws, sources) if s == "generator"])
        posterior = cd_test.FrameReplay([d for d, s in zip(draws, sources) if s == "posterior"])
        model.noise_like = lambda shape, generator=None: initial(shape)
        saved = vae_module.randn_tensor
        vae_module.randn_tensor = posterior
        try:
            out, _ = model.run(video)
        finally:
            vae_module.randn_tensor = saved
        initial.done()
        posterior.done()
        return out[:, 0]

    frames, h, w = meta["frames"], meta["height"], meta["width"]
    windows = "one window" if quick else "four windows"
    return Pair("ChronoDepth", f"{frames} frames {h}x{w}, 5 steps, {windows}", run_official, run_vdf, [], model, frames)


def _chronodepth_model(cd_test, options: dict | None):
    import vdf

    overrides = {}
    for net, folder in (
        ("unet", FIXTURES / "chronodepth" / "unet"),
        ("vae", TINY_VAE),
        ("image_encoder", FIXTURES / "chronodepth" / "image_encoder"),
    ):
        overrides[f"denoiser.init_args.{net}.init_args.weights"] = str(folder)
        overrides[f"denoiser.init_args.{net}.init_args.weights_dtype"] = "float32"
    return vdf.load(cd_test.CONFIG, device="cpu", **overrides, **_predictor_options(options))


# ------------------------------------------------------------------------------------ Depth Any Video


def depthanyvideo(official_root: Path, quick: bool, options: dict | None) -> Pair:
    import test_fidelity_depthanyvideo as dav_test
    from diffusers import AutoencoderKLTemporalDecoder, FlowMatchEulerDiscreteScheduler
    from fidelity import Replay, load_case, noise_draws

    dav_script = fidelity_script("depthanyvideo")
    checkout = official_root / "DepthAnyVideo"
    dav_models = import_official(checkout, "dav.models")
    dav_pipelines = import_official(checkout, "dav.pipelines")
    img_utils = import_official(checkout, "dav.utils.img_utils")
    folder = FIXTURES / "depthanyvideo"
    case = "single" if quick else "keyframes_40"
    tensors, meta = load_case("depthanyvideo", case)

    load = dict(torch_dtype=torch.float32)
    unet_class = dav_models.UNetSpatioTemporalRopeConditionModel
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE), **load)
    to = vae.to

    def to_without_dtype(*args, **kwargs):  # DAVPipeline casts the VAE to float16 (CUDA autocast): keep float32
        kwargs.pop("dtype", None)
        return to(*[a for a in args if not isinstance(a, torch.dtype)], **kwargs)

    vae.to = to_without_dtype
    pipe = dav_pipelines.DAVPipeline(
        vae=vae,
        unet=unet_class.from_pretrained(str(folder / "unet"), **load),
        unet_interp=unet_class.from_pretrained(str(folder / "unet_interp"), **load),
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(str(folder / "scheduler")),
    )
    pipe.set_progress_bar_config(disable=True)
    video_u8 = tensors["video"].permute(0, 2, 3, 1).contiguous().numpy()
    n_frames, interp, overlap = meta["num_frames"], meta["num_interp_frames"], meta["num_overlap_frames"]
    read = list(video_u8[: (interp + 2 - overlap) * (n_frames // 2)])

    def run_official() -> torch.Tensor:
        # run_infer.py: resize, crop, to a tensor; then the pipeline (global RNG seeded as seed_all).
        image = img_utils.imcrop_multi(img_utils.imresize_max(read, meta["max_resolution"]))
        rgb = torch.from_numpy(np.ascontiguousarray([im.transpose(2, 0, 1) / 255.0 for im in image]))
        torch.manual_seed(meta["seed"])
        with torch.no_grad():
            out = pipe(
                rgb,
                num_frames=n_frames,
                num_overlap_frames=overlap,
                num_interp_frames=interp,
                decode_chunk_size=meta["decode_chunk_size"],
                num_inference_steps=meta["denoise_steps"],
            )
        return torch.from_numpy(out.disparity)

    settings = {"num_frames": n_frames, "interp_frames": interp, "overlap": overlap}
    model = dav_test.dav_model(settings) if not options else _with_options(dav_test.dav_model, settings, options)
    draws = noise_draws(tensors)
    frames = tensors["frames"].tolist()
    top, left, h, w = meta["crop_box"]
    video = tensors["video"].float() / 255

    def run_vdf() -> torch.Tensor:
        replay = Replay(draws)
        model.noise_like = lambda shape, generator=None: replay(shape).to(model.device)
        pred, _ = model.run(video)
        replay.done()
        return pred[frames, 0, top : top + h, left : left + w]

    assert meta["decode_chunk_size"] == dav_script.DECODE_CHUNK
    kind = "one clip" if quick else "keyframes + interpolation"
    setting = f"{meta['frames']} frames {h}x{w}, {meta['denoise_steps']} steps, {kind}"
    return Pair("Depth Any Video", setting, run_official, run_vdf, [], model, len(read))


def _with_options(builder, settings, options):
    """A test helper's `vdf.load` with the predictor's ``inference`` options added."""
    import vdf

    load = vdf.load

    def load_with(*args, **kwargs):
        return load(*args, **kwargs, **_predictor_options(options))

    vdf.load = load_with
    try:
        return builder(settings)
    finally:
        vdf.load = load


# ------------------------------------------------------------------------------------ FlashDepth


def flashdepth(official_root: Path, quick: bool, options: dict | None) -> Pair:
    import test_fidelity_flashdepth as fd_test
    import yaml
    from fidelity import load_case

    import vdf

    fd_script = fidelity_script("flashdepth")
    checkout = (official_root / "FlashDepth").resolve()
    if not getattr(fd_script, "patched_for_benchmark", False):  # the patches wrap: apply them once
        fd_script._stub_modules()
        sys.path.insert(0, str(checkout / "mamba"))
        import_official(checkout, "mamba_ssm")
        fd_script._patch_mamba_for_cpu()
        import_official(checkout, "flashdepth.model")
        import_official(checkout, "dataloaders.random_dataset")
        fd_script._patch_attention_for_cpu()
        fd_script._shrink_size_tables()
        fd_script.patched_for_benchmark = True
    model_module = import_official(checkout, "flashdepth.model")

    case = "full"  # the hybrid: the model the paper's speed claim is about
    _, meta = load_case("flashdepth", case)
    net = model_module.FlashDepth(**fd_script._official_config(checkout, "flashdepth")).eval()
    net.intermediate_layer_idx = dict(fd_script.TINY_LAYERS)
    state = torch.load(FIXTURES / "flashdepth" / meta["weights"], map_location="cpu", weights_only=True)["model"]
    net.load_state_dict({k: v.float() for k, v in state.items()})

    frames = 8 if quick else 24
    video = fd_script._frames(frames, tuple(meta["frame_size"]), meta["seed"] + 100)
    with tempfile.TemporaryDirectory() as tmp:
        batch = fd_script._official_reader(video, Path(tmp))  # (1,T,3,h,w) normalised, processed size

    def run_official() -> torch.Tensor:
        with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
            return fd_script._official_stream(net, batch, None, Path(tmp))[:, 0]

    with tempfile.TemporaryDirectory() as tmp:
        layer = Path(tmp) / "fixture.yaml"
        overlay = fd_test._overrides(case, meta)
        if options:
            overlay["model"]["init_args"]["predictor"]["init_args"]["inference"] = options
        layer.write_text(yaml.safe_dump(overlay))
        predictor = vdf.load([*fd_test.CONFIGS[case], layer], device="cpu")
    size = predictor.resolution.size(*video.shape[-2:])
    prepared = [predictor.resolution.prepare(frame[None].float() / 255, size)[0] for frame in video]

    def run_vdf() -> torch.Tensor:
        with torch.inference_mode():
            return torch.stack(list(predictor.strategy(predictor, iter(prepared))))[:, 0]

    setting = f"hybrid, {frames} frames {tuple(batch.shape[-2:])}, streamed"
    notes = [
        "official: its inference loop on the read batch, .npy per frame written; its flash_attn and Mamba2 "
        "CUDA kernels replaced by the fidelity script's CPU stand-ins (einsum attention, minimal SSD)"
    ]
    return Pair("FlashDepth", setting, run_official, run_vdf, notes, predictor, frames)


# ------------------------------------------------------------------------------------ Depth-Anything-V2


def dav2(official_root: Path, quick: bool, options: dict | None) -> Pair:
    import cv2

    from vdf.models import DepthAnythingV2
    from vdf.predictors import FramePredictor

    dpt = import_official(official_root / "Depth-Anything-V2", "depth_anything_v2.dpt")
    torch.manual_seed(0)
    official = dpt.DepthAnythingV2(encoder="vits", features=64, out_channels=[48, 96, 192, 384]).eval()
    with torch.no_grad():  # random weights at a readable output scale
        for p in official.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.02)
    input_size = 126 if quick else 252
    frames, height, width = (4, 96, 128) if quick else (8, 192, 256)
    net = DepthAnythingV2(encoder="vits")
    net.load_state_dict(official.state_dict())
    from vdf.predictors import InferenceOptions

    model = FramePredictor(net.eval(), input_size=input_size, inference=InferenceOptions(**(options or {}))).eval()
    g = torch.Generator().manual_seed(3)
    video = (torch.rand(frames, height, width, 3, generator=g) * 255).round().to(torch.uint8).numpy()

    def run_official() -> torch.Tensor:
        # run.py: a BGR image through infer_image, one frame at a time.
        with torch.no_grad():
            return torch.stack(
                [torch.from_numpy(official.infer_image(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), input_size)) for f in video]
            )

    def run_vdf() -> torch.Tensor:
        return model.predict(video)

    # The networks alone on one preprocessed tensor (the official image2tensor): the fidelity check.
    x, _ = official.image2tensor(cv2.cvtColor(video[0], cv2.COLOR_RGB2BGR), input_size)
    with torch.no_grad():
        network = relative(net(x)[:, 0] if net(x).dim() == 4 else net(x), official(x))
    setting = f"ViT-S, {frames} frames {height}x{width} at short side {input_size}"
    notes = [
        f"networks alone on the official preprocessed tensor: max relative difference {network:.2e}",
        "end to end the preprocessing differs by design (official: OpenCV bicubic; vdf: torch bicubic)",
    ]
    pair = Pair("DAv2", setting, run_official, run_vdf, notes, model, frames)
    pair.network_difference = network  # type: ignore[attr-defined]
    return pair


FAMILIES = {
    "depthcrafter": depthcrafter,
    "chronodepth": chronodepth,
    "depthanyvideo": depthanyvideo,
    "dav2": dav2,
    "flashdepth": flashdepth,  # last: its CPU stand-in for flash_attn would break later diffusers imports
}


# ------------------------------------------------------------------------------------ measuring


def measure(pair: Pair, rounds: int, plain: Callable[[], torch.Tensor] | None = None) -> dict[str, Any]:
    """Agreement once, then ``rounds`` alternating timed rounds (after one warm-up call each).

    ``plain``: vdf without the options, timed in the same rounds (the options' own contribution).
    """
    theirs = pair.official()
    ours = pair.vdf()
    difference = relative(ours, theirs)
    runs = {"official": pair.official, "vdf": pair.vdf}
    if plain is not None:
        plain()
        runs["vdf_plain"] = plain
    times: dict[str, list[float]] = {side: [] for side in runs}
    for r in range(rounds):
        sides = list(runs)
        for side in sides[r % len(sides) :] + sides[: r % len(sides)]:
            start = time.perf_counter()
            runs[side]()
            times[side].append(time.perf_counter() - start)
    official_s, vdf_s = statistics.median(times["official"]), statistics.median(times["vdf"])
    extra = {}
    if plain is not None:
        plain_s = statistics.median(times["vdf_plain"])
        extra = {"vdf_plain_s": plain_s, "plain_ratio": plain_s / official_s, "options_speedup": vdf_s / plain_s}
    return {
        **extra,
        "family": pair.name,
        "setting": pair.setting,
        "official_s": official_s,
        "vdf_s": vdf_s,
        "ratio": vdf_s / official_s,
        "round_ratios": [v / o for v, o in zip(times["vdf"], times["official"])],
        "max_relative_difference": difference,
        "network_difference": getattr(pair, "network_difference", None),
        "notes": pair.notes,
    }


class StageTimer:
    """Exclusive wall time per stage: methods wrapped in place, a nested stage's time counted once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.frames: dict[str, int] = {}
        self._stack: list[float] = []  # time spent in children of each open call
        self._saved: list[tuple[Any, str, bool, Any]] = []

    def wrap(self, label: str, owner: Any, name: str, frames_of: Callable[..., int] | None = None) -> None:
        if owner is None or not hasattr(owner, name):
            return
        had = name in vars(owner)
        fn = getattr(owner, name)
        self._saved.append((owner, name, had, vars(owner).get(name)))

        def timed(*args, **kwargs):
            self._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total = time.perf_counter() - start
                children = self._stack.pop()
                if self._stack:
                    self._stack[-1] += total
                self.seconds[label] = self.seconds.get(label, 0.0) + total - children
                self.calls[label] = self.calls.get(label, 0) + 1
                if frames_of is not None:
                    self.frames[label] = self.frames.get(label, 0) + frames_of(*args, **kwargs)

        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, had, value in reversed(self._saved):
            if had:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
        self._saved.clear()


def stages(timer: StageTimer, model: Any) -> None:
    """The stages of each family's vdf inference (see the speed page)."""
    from vdf.predictors import FlashDepthPredictor, FramePredictor, LatentDiffusionPredictor

    if isinstance(model, LatentDiffusionPredictor):
        for prefix, predictor in (("", model), ("interpolation ", model.interpolator)):
            if predictor is None:
                continue
            denoiser = predictor.denoiser
            timer.wrap(
                prefix + "conditioning (CLIP + VAE encode)", predictor, "condition", lambda v, *a, **k: v.shape[1]
            )
            timer.wrap(prefix + "sampler (outside the UNet)", predictor, "denoise")
            timer.wrap(prefix + "UNet", denoiser.unet, "forward")
            timer.wrap(prefix + "decode (outside the VAE)", predictor, "decode")
            timer.wrap("VAE decoder", denoiser.vae.vae.decoder, "forward")
    elif isinstance(model, FlashDepthPredictor):
        net = model.net
        timer.wrap("ViT encoder", net.pretrained, "get_intermediate_layers")
        timer.wrap("teacher (ViT + DPT)", net, "teacher_path4")
        timer.wrap("DPT", net.depth_head, "project")
        timer.wrap("DPT", net.depth_head, "fuse")
        timer.wrap("DPT", net.depth_head, "head")
        timer.wrap("hybrid fusion", getattr(net, "hybrid_fusion", None), "forward")
        timer.wrap("Mamba", getattr(net, "mamba", None), "forward")
    elif isinstance(model, FramePredictor):
        timer.wrap("network", model.net, "forward")


def profile(pair: Pair) -> dict[str, Any]:
    """One vdf run with its stages timed: seconds per stage (exclusive) and the rest."""
    timer = StageTimer()
    stages(timer, pair.model)
    start = time.perf_counter()
    try:
        pair.vdf()
    finally:
        total = time.perf_counter() - start
        timer.restore()
    out = {label: seconds for label, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1])}
    out["other (preprocessing, strategy, resizing)"] = total - sum(timer.seconds.values())
    return {"total_s": total, "stages_s": out, "frames_conditioned": dict(timer.frames), "frames": pair.frames}


def table(rows: list[dict[str, Any]], options: dict | None, strict: bool) -> str:
    lines = [
        "| family | setting | official (s) | vdf (s) | vdf / official | max rel. difference |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['family']} | {row['setting']} | {row['official_s']:.3f} | {row['vdf_s']:.3f} | "
            f"{row['ratio']:.2f} | {row['max_relative_difference']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="folder with the official checkouts")
    parser.add_argument("--families", nargs="+", choices=sorted(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="smaller inputs and 3 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5, quick 3)")
    parser.add_argument("--vdf", default=None, help="vdf's inference options, a YAML mapping")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--compare", action="store_true", help="with --vdf: also time vdf without the options in the same rounds"
    )
    parser.add_argument("--profile", action="store_true", help="also time vdf's stages (one extra run)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    import yaml

    options = yaml.safe_load(args.vdf) if args.vdf else None
    if options is not None and not isinstance(options, dict):
        parser.error(f"--vdf must be a YAML mapping of inference options, got {args.vdf!r}")
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 5)
    official_root = Path(args.official)
    exact = not options or options.get("dtype", "float32") in ("float32", None)
    rows = []
    for name in sorted(set(args.families), key=list(FAMILIES).index):
        start = time.perf_counter()
        pair = FAMILIES[name](official_root, args.quick, options)
        plain = FAMILIES[name](official_root, args.quick, None).vdf if options and args.compare else None
        row = measure(pair, rounds, plain)
        if args.profile:
            row["profile"] = profile(pair)
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        verdict = "" if not exact else (" ok" if row["max_relative_difference"] <= TOLERANCE else " ABOVE TOLERANCE")
        plain = (
            f", without the options {row['plain_ratio']:.2f} (options x{row['options_speedup']:.2f})"
            if "plain_ratio" in row
            else ""
        )
        print(
            f"{row['family']}: vdf/official {row['ratio']:.2f}{plain} (official {row['official_s']:.3f}s, "
            f"vdf {row['vdf_s']:.3f}s), max rel. difference {row['max_relative_difference']:.1e}{verdict} "
            f"[{row['wall_s']:.0f}s]",
            flush=True,
        )
    print()
    print(
        f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}; "
        f"median of {rounds} alternating rounds; vdf options: {options or 'none (shipped numerics)'}"
    )
    print(table(rows, options, exact))
    for row in rows:
        for note in row["notes"]:
            print(f"- {row['family']}: {note}")
    for row in rows if args.profile else []:
        prof = row["profile"]
        parts = ", ".join(f"{k} {100 * v / prof['total_s']:.0f}%" for k, v in prof["stages_s"].items())
        counts = ", ".join(f"{k.split(' (')[0]} {v}" for k, v in prof["frames_conditioned"].items())
        extra = f"; frames through {counts} (video: {prof['frames']} frames)" if counts else ""
        print(f"- {row['family']} profile ({prof['total_s']:.2f}s): {parts}{extra}")
    if args.output:
        settings = {"rounds": rounds, "threads": args.threads, "quick": args.quick, "vdf_options": options}
        Path(args.output).write_text(json.dumps({"settings": settings, "results": rows}, indent=1) + "\n")
    failed = [r["family"] for r in rows if exact and r["max_relative_difference"] > TOLERANCE]
    if failed:
        raise SystemExit(f"outputs differ beyond {TOLERANCE} in float32: {', '.join(failed)}")
    return rows


if __name__ == "__main__":
    main()
