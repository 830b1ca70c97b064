"""``vdf bench --train``: peak memory per device of a training step, per stage, and a memory model.

    vdf bench --train configs/depthcrafter.yaml+configs/depthcrafter/stage2.yaml --sizes "[25x320x640]" --device cuda

Each config is a ``vdf fit`` config (a recipe and its overlays joined by ``+``); the weight files
it names are ignored (random weights: memory does not depend on them). One training step —
``training_loss`` (the task's own: VAE/CLIP encoding, UNet forward), backward, optimizer step — runs
on a synthetic-world clip of ``T x H x W`` (batch 1), with the stage's trainable layers (the
config's `StagedFreezing`), with and without gradient checkpointing of the trained network.

Measured (per device):

- **CUDA**: ``torch.cuda.max_memory_allocated`` over a steady-state step (the second: the
  optimizer state exists), i.e. every tensor: weights, gradients, optimizer state, activations.
- **CPU**: the process's peak resident set (``VmHWM``, reset before the step) over its resident
  set before the *first* step, in a fresh worker process per measurement (``--isolate``; in-process
  figures are lower bounds: freed memory is reused). Steady state is rebuilt from it as
  ``weights + batch + optimizer + max(fwd/bwd increase, step increase - optimizer)``.
- Counted exactly: parameter bytes (all modules, frozen VAE and image encoder included), the
  trainable bytes (= gradient bytes), the optimizer state bytes.

Sharding is **modelled**, not measured (a multi-process measurement is beyond a CPU run): with
``N`` devices, ZeRO-2 keeps ``1/N`` of the optimizer state and gradients per device, FSDP full
sharding (ZeRO-3) also ``1/N`` of the trained network's weights:

    zero2 = ddp - (1 - 1/N) * (optimizer + gradients)
    fsdp  = zero2 - (1 - 1/N) * network weights

(lower bounds: the engines' communication buckets and FSDP's gathered unit come on top).

``--extrapolate`` fits the measured activation term (peak minus weights, batch, optimizer and
gradients) as ``a * T * h * w + b`` over the measured sizes (``h, w`` the latent size), scales
``a`` by ``1 / --width_fraction`` (activations are linear in the channel width) and adds the
full-size parameter, gradient and optimizer bytes, counted on the meta device from the configs
without the width override — the table of `docs/memory.md`.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ActionYesNo, ArgumentParser

from vdf.bench import MB, _current_rss, _reset_peak_rss, _status_kb, build_model, weight_file_overrides

UNET = "model.init_args.predictor.init_args.denoiser.init_args.unet.init_args"
CLIP = "model.init_args.predictor.init_args.denoiser.init_args.image_encoder.init_args"
VAE = "model.init_args.predictor.init_args.denoiser.init_args.vae"


@dataclass
class TrainSpec:
    """One config to measure: its ``+``-joined files and the CLI arguments that build it."""

    name: str
    config: str
    args: list[str]
    trainable: str = "all"
    module: str = "predictor.denoiser.unet"


@dataclass
class TrainSettings:
    sizes: list[tuple[int, int, int]] = field(default_factory=lambda: [(4, 32, 48)])
    checkpointing: list[bool] = field(default_factory=lambda: [False, True])
    device: str = "cpu"
    bf16: bool = False
    devices: int = 8
    threads: int | None = None
    seed: int = 0
    width_fraction: float | None = None


@dataclass
class TrainResult:
    name: str
    config: str
    trainable: str
    frames: int
    height: int
    width: int
    checkpointing: bool
    params_mb: float = 0.0  # every parameter (trained network, frozen VAE / image encoder)
    network_mb: float = 0.0  # the trained network's parameters (what FSDP shards)
    gradients_mb: float = 0.0  # trainable parameters' gradients
    optimizer_mb: float = 0.0  # optimizer state after a step
    batch_mb: float = 0.0
    forward_backward_mb: float = 0.0  # measured increase over the resident set through forward + backward
    step_mb: float = 0.0  # measured increase through the whole step (optimizer included)
    activations_mb: float = 0.0  # peak - weights - batch - optimizer - gradients
    peak_mb: float = 0.0  # steady-state peak per device, no sharding (DDP)
    zero2_mb: float = 0.0  # modelled
    fsdp_mb: float = 0.0  # modelled
    seconds: float = 0.0  # the measured step's time
    memory_kind: str = ""


# --------------------------------------------------------------------------- configs


def stage_of(config_paths: list[str]) -> tuple[str, str]:
    """``(trainable, module)`` of the configs' `StagedFreezing` (its first stage); ``all`` without one."""
    from vdf.cli import merge_configs

    callbacks = (merge_configs(config_paths).get("trainer") or {}).get("callbacks") or []
    for cb in callbacks if isinstance(callbacks, list) else [callbacks]:
        if isinstance(cb, dict) and str(cb.get("class_path", "")).endswith("StagedFreezing"):
            init = cb.get("init_args") or {}
            stages = init.get("stages")
            trainable = stages[0].get("trainable", "all") if stages else init.get("trainable", "all")
            return trainable, init.get("module", "predictor.denoiser.unet")
    return "all", "predictor.denoiser.unet"


def width_overrides(fraction: float) -> list[str]:
    """Arguments shrinking an SVD-family config's UNet channels by ``fraction`` (rounded to multiples
    of 32, the GroupNorm groups; 32-wide heads) with SVD's layout kept (levels, layers, /8 latents):
    a small VAE of the same /8 downsampling and a one-layer image encoder of the same output width."""
    channels = [max(32, round(c * fraction / 32) * 32) for c in (320, 640, 1280, 1280)]
    heads = [c // 32 for c in channels]
    return [
        f"--{UNET}.block_out_channels",
        json.dumps(channels),
        f"--{UNET}.num_attention_heads",
        json.dumps(heads),
        f"--{VAE}.init_args.block_out_channels",
        "[32, 32, 32, 32]",
        f"--{VAE}.init_args.layers_per_block",
        "1",
        f"--{CLIP}.hidden_size",
        "32",
        f"--{CLIP}.intermediate_size",
        "64",
        f"--{CLIP}.num_hidden_layers",
        "1",
        f"--{CLIP}.num_attention_heads",
        "2",
        f"--{CLIP}.patch_size",
        "8",
        f"--{CLIP}.image_size",
        "32",
    ]


def specs_for(configs: list[str], tiny: bool = False) -> list[TrainSpec]:
    from vdf.cli import run_name, tiny_configs

    specs = []
    for entry in configs:
        paths = entry.split("+")
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config file not found: {path!r}")
        paths = tiny_configs(paths) if tiny else paths
        trainable, module = stage_of(paths)
        args = [x for p in paths for x in ("--config", p)] + weight_file_overrides(paths)
        specs.append(TrainSpec(run_name(paths), "+".join(paths), args, trainable, module))
    return specs


# --------------------------------------------------------------------------- one measurement


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _module(task, path: str):
    module = task
    for part in path.split("."):
        module = getattr(module, part)
    return module


def _set_checkpointing(network: torch.nn.Module, on: bool) -> None:
    for m in network.modules():
        if hasattr(m, "enable_gradient_checkpointing") and hasattr(m, "disable_gradient_checkpointing"):
            m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()


def prepare(spec: TrainSpec, checkpointing: bool, settings: TrainSettings, meta: bool = False):
    """The task of ``spec`` with the stage's layers trainable and checkpointing set; on ``meta``
    nothing is allocated (parameter counting)."""
    from vdf.models.svd import parameter_group

    args = list(spec.args) + (width_overrides(settings.width_fraction) if settings.width_fraction and not meta else [])
    if meta:
        with torch.device("meta"):
            task = build_model(args)
    else:
        task = build_model(args)
    network = _module(task, spec.module)
    task.requires_grad_(False)
    for name, p in network.named_parameters():
        p.requires_grad_(spec.trainable == "all" or parameter_group(name) == spec.trainable)
    _set_checkpointing(network, checkpointing)
    return task, network


def _batch(frames: int, height: int, width: int, seed: int, device: torch.device) -> dict[str, Any]:
    from vdf.data.collate import collate_clips
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=1, num_frames=frames, height=height, width=width, seed=seed)
    batch = collate_clips([world[0]])
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def measure_one(
    spec: TrainSpec, size: tuple[int, int, int], checkpointing: bool, settings: TrainSettings, built=None
) -> TrainResult:
    """One training step's memory for ``spec`` at ``size`` = ``(T, H, W)`` (see the module docstring);
    ``built``: the ``(task, network)`` of `prepare` to reuse (in-process runs)."""
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    cuda = device.type == "cuda"
    task, network = built if built is not None else prepare(spec, checkpointing, settings)
    _set_checkpointing(network, checkpointing)
    task.to(device).train()
    groups = [g for g in task.param_groups() if g["params"]]
    optimizer = task.optimizer(groups) if task.optimizer is not None else torch.optim.AdamW(groups, lr=1e-4)
    batch = _batch(*size, settings.seed, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16)
    result = TrainResult(spec.name, spec.config, spec.trainable, *size, checkpointing)
    result.params_mb = _bytes(task.parameters()) / MB
    result.network_mb = _bytes(network.parameters()) / MB
    result.batch_mb = _bytes(v for v in batch.values() if isinstance(v, torch.Tensor)) / MB

    def step() -> tuple[int, int, float]:
        """(fwd/bwd increase, whole-step increase) in bytes over the state before, and seconds."""
        start = time.perf_counter()
        if cuda:
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        else:
            # The baseline is the reset high-water mark itself, so the increase cannot come out
            # negative from resident pages returned between two separate readings.
            reset = _reset_peak_rss()
            before = (_status_kb("VmHWM") or 0) * 1024 if reset else _current_rss()
        with autocast:
            loss = task.training_loss(batch)
        loss.backward()
        if cuda:
            torch.cuda.synchronize(device)
            fb = torch.cuda.max_memory_allocated(device) - before
        else:
            fb = (_status_kb("VmHWM") or 0) * 1024 - before
        result.gradients_mb = _bytes(p.grad for g in groups for p in g["params"] if p.grad is not None) / MB
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
            whole = torch.cuda.max_memory_allocated(device) - before
        else:
            whole = (_status_kb("VmHWM") or 0) * 1024 - before
        return fb, whole, time.perf_counter() - start

    fb, whole, seconds = step()  # CPU: the first step of a fresh process is the one measured
    result.optimizer_mb = _bytes(t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)) / MB
    if cuda:  # steady state: the second step, with the optimizer state resident
        fb, whole, seconds = step()
        resident = result.params_mb + result.batch_mb + result.optimizer_mb
        result.peak_mb = resident + max(fb, whole) / MB
        result.memory_kind = "cuda max_memory_allocated (steady-state step)"
    else:
        resident = result.params_mb + result.batch_mb + result.optimizer_mb
        result.peak_mb = resident + max(fb, whole - result.optimizer_mb * MB) / MB
        result.memory_kind = "cpu: tensors resident + peak RSS increase of the first step"
    result.forward_backward_mb, result.step_mb, result.seconds = fb / MB, whole / MB, seconds
    result.activations_mb = result.peak_mb - resident - result.gradients_mb
    shard(result, settings.devices)
    return result


def shard(r: TrainResult, devices: int) -> None:
    """The modelled per-device figures under ZeRO-2 and FSDP full sharding over ``devices``."""
    keep = 1.0 - 1.0 / devices
    r.zero2_mb = r.peak_mb - keep * (r.optimizer_mb + r.gradients_mb)
    r.fsdp_mb = r.zero2_mb - keep * r.network_mb


def _worker(conn, spec, size, checkpointing, settings) -> None:
    try:
        conn.send(("ok", measure_one(spec, size, checkpointing, settings)))
    except BaseException as error:  # report, do not hang the parent
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


def _isolated(spec, size, checkpointing, settings) -> TrainResult:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_worker, args=(child, spec, size, checkpointing, settings), daemon=True)
    process.start()
    child.close()
    try:
        tag, value = parent.recv()
    except EOFError:
        raise RuntimeError(f"the measuring worker died (exit code {process.exitcode})") from None
    finally:
        process.join(timeout=60)
    if tag == "error":
        raise RuntimeError(value)
    return value


def measure(specs: list[TrainSpec], settings: TrainSettings, isolate: bool = True) -> list[TrainResult]:
    results = []
    for spec in specs:
        built = None if isolate else prepare(spec, False, settings)  # in-process: built once per config
        for size in settings.sizes:
            for ckpt in settings.checkpointing:
                if isolate:
                    r = _isolated(spec, size, ckpt, settings)
                else:
                    r = measure_one(spec, size, ckpt, settings, built)
                if not isolate and not settings.device.startswith("cuda"):
                    r.memory_kind += " (in-process: a lower bound)"
                results.append(r)
    return results


# --------------------------------------------------------------------------- extrapolation


def fit_activations(results: list[TrainResult], downsample: int = 8) -> dict[bool, dict[str, float]]:
    """Per checkpointing setting, least squares ``activations_mb = a * T * h * w + b`` (``h, w`` the
    latent size, ``H/downsample``) over the measured sizes, with the fit's largest relative error."""
    fits = {}
    for ckpt in sorted({r.checkpointing for r in results}):
        rows = [r for r in results if r.checkpointing == ckpt]
        x = torch.tensor(
            [r.frames * (r.height // downsample) * (r.width // downsample) for r in rows], dtype=torch.float64
        )
        y = torch.tensor([r.activations_mb for r in rows], dtype=torch.float64)
        if len(set(x.tolist())) < 2:
            raise ValueError("--extrapolate needs at least two measured sizes with different T*H*W")
        design = torch.stack([x, torch.ones_like(x)], dim=1)
        a, b = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
        worst = max(abs(a * xi + b - yi) / max(abs(yi), 1e-9) for xi, yi in zip(x.tolist(), y.tolist()))
        fits[ckpt] = {"a_mb_per_latent_pixel_frame": a, "b_mb": b, "max_relative_error": worst}
    return fits


def full_size_counts(spec: TrainSpec) -> dict[str, float]:
    """Parameter, network, trainable bytes (MB) of the config at its own size (meta device: nothing allocated)."""
    settings = TrainSettings(width_fraction=None)
    task, network = prepare(spec, False, settings, meta=True)
    return {
        "params_mb": _bytes(task.parameters()) / MB,
        "network_mb": _bytes(network.parameters()) / MB,
        "gradients_mb": _bytes(p for p in network.parameters() if p.requires_grad) / MB,
    }


def extrapolate(
    results: list[TrainResult],
    full_specs: list[TrainSpec],
    targets: list[tuple[int, int, int]],
    width_fraction: float,
    devices: int,
    downsample: int = 8,
) -> dict[str, Any]:
    """Full-size per-device estimates: the ``i``-th full config at ``targets[i]`` ``(T, H, W)``, with
    the activation fit of the ``i``-th measured config (in the order measured)."""
    measured = list(dict.fromkeys(r.config for r in results))
    if len(measured) != len(full_specs):
        raise ValueError(f"give one --extrapolate config per measured config ({len(measured)}), got {len(full_specs)}")
    optimizer_ratio = sum(r.optimizer_mb for r in results) / max(sum(r.gradients_mb for r in results), 1e-9)
    rows, all_fits = [], {}
    for config, spec, (t, h, w) in zip(measured, full_specs, targets):
        fits = fit_activations([r for r in results if r.config == config], downsample)
        all_fits[spec.name] = {("checkpointing on" if k else "checkpointing off"): v for k, v in fits.items()}
        counts = full_size_counts(spec)
        for ckpt, fit in fits.items():
            activations = (
                fit["a_mb_per_latent_pixel_frame"] / width_fraction * t * (h // downsample) * (w // downsample)
            )
            activations += fit["b_mb"]
            r = TrainResult(spec.name, spec.config, spec.trainable, t, h, w, ckpt)
            r.params_mb, r.network_mb, r.gradients_mb = (
                counts["params_mb"],
                counts["network_mb"],
                counts["gradients_mb"],
            )
            r.optimizer_mb = optimizer_ratio * r.gradients_mb
            r.activations_mb = activations
            r.peak_mb = r.params_mb + r.optimizer_mb + r.gradients_mb + activations
            r.memory_kind = "extrapolated"
            shard(r, devices)
            rows.append(r)
    return {
        "fits": all_fits,
        "optimizer_per_gradient": optimizer_ratio,
        "width_fraction": width_fraction,
        "rows": rows,
    }


# --------------------------------------------------------------------------- report


def to_markdown(results: list[TrainResult], devices: int, title: str) -> str:
    # GB for full-size figures, MB for tiny ones.
    gb, unit = (1024.0, "GB") if max((r.peak_mb for r in results), default=0) > 1024 else (1.0, "MB")
    lines = [
        f"{title}; figures in {unit} per device",
        "",
        f"| config | trained | T×H×W | checkpointing | params | gradients | optimizer | activations | DDP | ZeRO-2 ×{devices} | FSDP ×{devices} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.trainable} | {r.frames}×{r.height}×{r.width} | {'on' if r.checkpointing else 'off'} | "
            f"{r.params_mb / gb:.2f} | {r.gradients_mb / gb:.2f} | {r.optimizer_mb / gb:.2f} | {r.activations_mb / gb:.2f} | "
            f"{r.peak_mb / gb:.2f} | {r.zero2_mb / gb:.2f} | {r.fsdp_mb / gb:.2f} |"
        )
    return "\n".join(lines) + "\n"


def parse_size(text: str) -> tuple[int, int, int]:
    try:
        t, h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ValueError(f"a size is TxHxW (frames x height x width), e.g. 25x320x640; got {text!r}") from None
    if min(t, h, w) < 1:
        raise ValueError(f"size {text!r}: frames, height and width must be >= 1")
    return t, h, w


def bench_train(
    configs: list[str],
    settings: TrainSettings,
    tiny: bool = False,
    isolate: bool = True,
    output: str | None = None,
    extrapolate_to: list[str] | None = None,
    targets: list[tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    """Measure ``configs``; with ``extrapolate_to`` (full-size configs, one per target size) add the
    extrapolated table. Prints markdown; writes JSON to ``output``."""
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {settings.device}: CUDA is not available on this machine")
    specs = specs_for(configs, tiny)
    results = measure(specs, settings, isolate)
    scale = f", UNet width ×{settings.width_fraction}" if settings.width_fraction else ""
    title = (
        f"Measured on {settings.device}{', bf16 autocast' if settings.bf16 else ''}{scale}, batch 1; "
        f"ZeRO-2 / FSDP over {settings.devices} devices modelled from the measured parts"
    )
    table = to_markdown(results, settings.devices, title)
    print(table)
    report: dict[str, Any] = {
        "settings": asdict(settings),
        "isolate": isolate,
        "machine": {"platform": platform.platform(), "torch": torch.__version__},
        "results": [asdict(r) for r in results],
        "table": table,
    }
    if extrapolate_to:
        if not settings.width_fraction:
            raise ValueError("--extrapolate needs the measurements' --width_fraction (activations scale with width)")
        if not targets or len(targets) != len(extrapolate_to):
            raise ValueError("give one --targets size (TxHxW) per --extrapolate config")
        full_specs = specs_for(extrapolate_to)
        model = extrapolate(results, full_specs, targets, settings.width_fraction, settings.devices)
        lines = [
            f"{name}, {c}: activations_mb = {f['a_mb_per_latent_pixel_frame']:.4g} / {settings.width_fraction} * T*h*w"
            f" + {f['b_mb']:.4g} (fit's largest relative error {f['max_relative_error']:.1%})"
            for name, per in model["fits"].items()
            for c, f in per.items()
        ]
        extra = to_markdown(model["rows"], settings.devices, "Extrapolated to full size (model, see docs/memory.md)")
        print("\n".join(lines) + "\n\n" + extra)
        report["extrapolation"] = {
            **model,
            "rows": [asdict(r) for r in model["rows"]],
            "table": extra,
            "formulas": lines,
        }
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``vdf bench --train CONFIG [CONFIG ...] [options]``."""
    parser = ArgumentParser(prog="vdf bench --train", description="Peak memory per device of a training step.")
    parser.add_argument("configs", nargs="+", help="training configs (a recipe and its overlays joined by '+')")
    parser.add_argument("--tiny", action=ActionYesNo, default=False, help="add each recipe's tiny overlay")
    parser.add_argument(
        "--sizes",
        type=list[str] | None,
        default=None,
        help="clip sizes TxHxW (default --frames x --height x --width)",
    )
    parser.add_argument("--frames", type=int, default=4, help="frames (without --sizes)")
    parser.add_argument("--height", type=int, default=32, help="height (without --sizes)")
    parser.add_argument("--width", type=int, default=48, help="width (without --sizes)")
    parser.add_argument(
        "--checkpointing", type=list[bool], default=[False, True], help="gradient checkpointing settings"
    )
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action=ActionYesNo, default=False, help="autocast to bfloat16")
    parser.add_argument("--devices", type=int, default=8, help="devices of the modelled ZeRO-2 / FSDP sharding")
    parser.add_argument("--threads", type=int | None, default=None, help="torch intra-op threads")
    parser.add_argument("--isolate", action=ActionYesNo, default=True, help="a fresh worker process per measurement")
    parser.add_argument(
        "--width_fraction", type=float | None, default=None, help="shrink the SVD UNet's channels by this factor"
    )
    parser.add_argument(
        "--extrapolate", type=list[str] | None, default=None, help="full-size configs to extrapolate to"
    )
    parser.add_argument("--targets", type=list[str] | None, default=None, help="TxHxW per --extrapolate config")
    parser.add_argument("--output", type=str | None, default=None, help="write the results as JSON here")
    # `vdf bench`'s own timing options are accepted and unused here (a docs command may carry them).
    for name, kind in (("--warmup", int), ("--repeats", int)):
        parser.add_argument(name, type=kind | None, default=None, help="unused by --train")
    parser.add_argument("--compile", action=ActionYesNo, default=False, help="unused by --train")
    cfg = parser.parse_args(args)
    sizes = [parse_size(s) for s in cfg.sizes] if cfg.sizes else [(cfg.frames, cfg.height, cfg.width)]
    if cfg.devices < 1:
        raise ValueError("--devices must be >= 1")
    settings = TrainSettings(
        sizes=sizes,
        checkpointing=list(cfg.checkpointing),
        device=cfg.device,
        bf16=cfg.bf16,
        devices=cfg.devices,
        threads=cfg.threads,
        width_fraction=cfg.width_fraction,
    )
    targets = [parse_size(s) for s in cfg.targets] if cfg.targets else None
    return bench_train(cfg.configs, settings, cfg.tiny, cfg.isolate, cfg.output, cfg.extrapolate, targets)


if __name__ == "__main__":
    main(sys.argv[1:])
