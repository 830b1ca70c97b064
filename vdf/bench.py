"""``vdf bench``: frames/s and peak memory of models and strategies, side by side in one run.

    vdf bench configs/dav2.yaml configs/flashdepth.yaml --height 518 --width 924 --frames 64 --output bench.json

Each config is a ``vdf fit`` config (parsed exactly as ``vdf`` parses it, model section only used;
the weight files it names are ignored unless ``--no_random_weights``);
``--strategy`` replaces the config's long-video strategy (one for all, or one per config, ``default``
keeps the config's). Every model streams the same video (a synthetic-world episode, or random
frames) through the predictor's strategy.

Measurement:

- **Side by side**: all models are built first, then each repeat runs every model once in turn
  (round robin), so slow phases of a noisy machine hit all of them alike; frames/s is the number
  of frames over the median repeat's seconds, after ``--warmup`` frames. Ratios are to the first
  model.
- **Isolation** (default): each model lives in its own worker process, so one model's memory
  peak cannot hide another's (freed memory stays mapped in a process and would be reused).
- **Peak memory**: on CUDA, ``torch.cuda.max_memory_allocated`` after a reset, minus what was
  allocated before the run (weights, video) — the inference working set. On CPU, the process's
  peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before the warm-up) minus
  its resident set before the warm-up; where the peak cannot be reset, a thread samples the
  resident set every millisecond instead. ``peak_total_mb`` is the whole process (or all
  allocated CUDA memory).
- **The predict path**: frames of ``--height`` x ``--width`` go through the model's resolution
  rule (``model size`` in the table is the size the network sees) and its long-video strategy, as
  in ``vdf predict``. frames/s counts the frames that get a prediction (Depth Any Video's official
  layout predicts a fixed span of the video).
- ``--bf16``: autocast to bfloat16. ``--compile``: ``torch.compile`` of the network (CUDA only).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from jsonargparse import ActionYesNo, ArgumentParser

from vdf.models.weights import is_hub_reference, is_weights_argument
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import run_at_resolution

MB = 1024.0 * 1024.0


@dataclass
class BenchSpec:
    """One column of a comparison: a model built from CLI-style ``args`` (``--config ...``)."""

    name: str
    args: list[str]
    config: str = ""
    strategy: str | None = None


@dataclass
class BenchSettings:
    height: int = 224
    width: int = 336
    frames: int = 32
    warmup: int = 8
    repeats: int = 3
    device: str = "cpu"
    bf16: bool = False
    compile: bool = False
    inference: dict | None = None  # InferenceOptions fields for every model (vdf.predictors.InferenceOptions)
    video: str = "synthetic"
    threads: int | None = None
    seed: int = 0


@dataclass
class BenchResult:
    name: str
    config: str
    strategy: str
    window: int
    params_m: float
    frames_requested: int
    inference_size: str = ""
    frames_counted: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    fps: float = 0.0
    peak_memory_mb: float = 0.0
    peak_total_mb: float = 0.0
    memory_kind: str = ""
    fps_ratio: float = 1.0
    memory_ratio: float | None = 1.0


# --------------------------------------------------------------------------- memory


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _RssSampler:
    """Fallback peak-RSS meter: a thread reading the resident set every millisecond."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _current_rss())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _current_rss())


def _current_rss() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


# --------------------------------------------------------------------------- one model


def build_model(args: list[str]):
    """The task a ``vdf`` config builds (``args`` as for ``vdf fit`` without the subcommand).

    Parsed by `VDFCLI` itself (so configs, overrides and their errors are exactly the CLI's);
    trainer and datamodule are built but never run, nothing is written.
    """
    from vdf.cli import VDFCLI, cli_options

    options = cli_options()
    options["trainer_defaults"] = {**options["trainer_defaults"], "logger": False, "callbacks": []}
    argv, sys.argv = sys.argv, sys.argv[:1]  # the CLI reads only ``args``
    try:
        cli = VDFCLI(
            **options, run=False, args=[*args, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
        )
    finally:
        sys.argv = argv
    return cli.model


def _strategy_value(strategy: str) -> str:
    """A strategy argument as the CLI takes it: a class path, or a YAML mapping (class_path/init_args)."""
    value = yaml.safe_load(strategy)
    if isinstance(value, dict):
        return json.dumps(value)
    return strategy


def weight_file_overrides(config_paths: list[str]) -> list[str]:
    """Arguments setting to null every weight file the configs name under ``model``: the
    arguments named ``weights`` or ``<part>_weights`` (`vdf.models.weights.is_weights_argument`)
    with a path, and any other Hub reference (a scheduler config). Speed does not depend on the
    weights, and a benchmark should not need them downloaded.

    The nulls go in as one more ``--config`` (a YAML string), which merges into nested
    ``init_args`` exactly like a config file.
    """
    nulls: dict[str, Any] = {}
    found = False

    def walk(node: Any, out: dict[str, Any]) -> bool:
        hit = False
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (is_weights_argument(str(key)) or is_hub_reference(value)):
                    out[key] = None
                    hit = True
                elif isinstance(value, dict):
                    sub: dict[str, Any] = {}
                    if walk(value, sub):
                        out[key] = sub
                        hit = True
        return hit

    from vdf.cli import merge_configs

    # The layered result, where a later class_path replaces an earlier node, so that no weights
    # argument of a class an overlay replaced is nulled.
    merged = merge_configs(config_paths)
    if walk(merged.get("model"), nulls):
        found = True
    return ["--config", yaml.safe_dump({"model": nulls})] if found else []


def _strategy_name(strategy: str) -> str:
    value = yaml.safe_load(strategy)
    path = value.get("class_path", "?") if isinstance(value, dict) else str(value)
    return path.rsplit(".", 1)[-1]


def _video(settings: BenchSettings) -> torch.Tensor:
    if settings.video == "random":
        g = torch.Generator().manual_seed(settings.seed)
        return torch.rand(settings.frames, 3, settings.height, settings.width, generator=g)
    if settings.video != "synthetic":
        raise ValueError(f"--video must be 'synthetic' or 'random', got {settings.video!r}")
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(
        num_episodes=1, num_frames=settings.frames, height=settings.height, width=settings.width, seed=settings.seed
    )
    return world[0]["video"]


class _Runner:
    """Builds one model, then runs the video through its strategy on request."""

    def __init__(self, spec: BenchSpec, settings: BenchSettings, isolated: bool = False):
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.spec, self.settings = spec, settings
        self.device = torch.device(settings.device)
        self.cuda = self.device.type == "cuda"
        model = build_model(spec.args).predictor
        model.to(self.device).eval()
        model.requires_grad_(False)
        # The predictor's inference options (dtype, channels-last, attention, compile), as predict applies them.
        options = {**vars(model.inference), **(settings.inference or {})}
        if settings.compile:
            options["compile"] = True
        model.inference = InferenceOptions(**options)
        model.apply_inference_options()
        self.model = model
        self.video = _video(settings)
        strategy = model.strategy
        self.result = BenchResult(
            name=spec.name,
            config=spec.config,
            strategy=type(strategy).__name__,
            window=int(getattr(strategy, "window", 1)),
            params_m=sum(p.numel() for p in model.parameters()) / 1e6,
            inference_size="x".join(str(v) for v in model.resolution.size(settings.height, settings.width)),
            frames_requested=settings.frames,
            memory_kind="cuda max_memory_allocated - allocated before" if self.cuda else "peak RSS - RSS before",
        )
        if not self.cuda and not isolated:
            # Memory freed by an earlier model (or run) is reused without growing the resident set.
            self.result.memory_kind += " (in-process: a lower bound)"
        # CPU baseline: weights and the video are resident; the warm-up is the first thing measured.
        self.hwm = False
        self.working = 0  # largest (peak - baseline) seen, bytes
        self.total = 0  # largest peak seen, bytes
        if not self.cuda:
            self.base = _current_rss()
            self.hwm = _reset_peak_rss() and _status_kb("VmHWM") is not None
        # At least one full window, so that the timed runs see no first-call costs of its shape.
        self._stream(self.video[: min(settings.frames, max(settings.warmup, self.result.window))])

    def _stream(self, video: torch.Tensor) -> int:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.settings.bf16 else nullcontext()
        count = 0
        if self.cuda:
            # Per run, against what is allocated right before it: sound with several models in
            # one process (their weights are in `before`, never in the working set).
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        # The predict path: frames through the model's resolution rule and its strategy.
        model = self.model
        with torch.inference_mode(), autocast, model.inference.attention_context():
            if self.cuda or self.hwm:
                for out in run_at_resolution(model.resolution, model.strategy, model, iter(video)):
                    count += out is not None
            else:
                with _RssSampler() as sampler:
                    for out in run_at_resolution(model.resolution, model.strategy, model, iter(video)):
                        count += out is not None
        if self.cuda:
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.working = max(self.working, peak - before)
        else:
            peak = (_status_kb("VmHWM") or 0) * 1024 if self.hwm else sampler.peak
            self.working = max(self.working, peak - self.base)
        self.total = max(self.total, peak)
        return count

    def run_once(self) -> tuple[float, int]:
        start = time.perf_counter()
        count = self._stream(self.video)
        return time.perf_counter() - start, count

    def memory(self) -> tuple[float, float]:
        """(working set over the baseline, total peak), in MB."""
        return self.working / MB, self.total / MB


def _worker(conn, spec: BenchSpec, settings: BenchSettings) -> None:
    try:
        runner = _Runner(spec, settings, isolated=True)
        conn.send(("ready", runner.result))
        while True:
            command = conn.recv()
            if command == "run":
                conn.send(("ran", runner.run_once()))
            elif command == "memory":
                conn.send(("memory", runner.memory()))
            else:
                break
    except BaseException as error:  # report, do not hang the parent
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


class _Remote:
    """A `_Runner` in its own process (spawned, so nothing is inherited but the arguments)."""

    def __init__(self, spec: BenchSpec, settings: BenchSettings):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, spec, settings), daemon=True)
        self.process.start()
        child.close()
        self.result: BenchResult | None = None

    def wait_ready(self) -> None:
        self.result = self._expect("ready")

    def _expect(self, tag: str):
        try:
            got, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the benchmark worker died (exit code {self.process.exitcode})") from None
        if got == "error":
            self.close()
            raise RuntimeError(value)
        return value

    def run_once(self) -> tuple[float, int]:
        self.conn.send("run")
        return self._expect("ran")

    def memory(self) -> tuple[float, float]:
        self.conn.send("memory")
        return self._expect("memory")

    def close(self) -> None:
        try:
            self.conn.send("stop")
        except (OSError, BrokenPipeError):
            pass
        self.process.join(timeout=30)


# --------------------------------------------------------------------------- comparison


def check_settings(settings: BenchSettings) -> None:
    device = torch.device(settings.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {settings.device}: CUDA is not available on this machine")
    if settings.compile and device.type != "cuda":
        raise ValueError(
            "--compile is for GPU runs (torch.compile on CPU is not what vdf bench measures); use --device cuda"
        )
    if min(settings.height, settings.width, settings.frames, settings.repeats) < 1 or settings.warmup < 0:
        raise ValueError("height, width, frames and repeats must be >= 1 and warmup >= 0")


def measure(specs: list[BenchSpec], settings: BenchSettings, isolate: bool = True) -> list[BenchResult]:
    """Build every model, then time them round robin; returns one `BenchResult` per spec."""
    check_settings(settings)
    runners: list[Any] = []
    try:
        for spec in specs:
            runners.append(_Remote(spec, settings) if isolate else _Runner(spec, settings))
        for runner in runners:  # workers build at the same time; timing starts when all are ready
            if isinstance(runner, _Remote):
                runner.wait_ready()
        for _ in range(settings.repeats):
            for runner in runners:
                seconds, count = runner.run_once()
                runner.result.seconds.append(seconds)
                runner.result.frames_counted.append(count)
        results = []
        for runner in runners:
            r = runner.result
            r.fps = settings.frames / statistics.median(r.seconds)
            r.peak_memory_mb, r.peak_total_mb = runner.memory()
            results.append(r)
    finally:
        for runner in runners:
            if isinstance(runner, _Remote):
                runner.close()
    first = results[0]
    for r in results:
        r.fps_ratio = r.fps / first.fps
        r.memory_ratio = r.peak_memory_mb / first.peak_memory_mb if first.peak_memory_mb > 0 else None
    return results


def to_markdown(results: list[BenchResult], settings: BenchSettings) -> str:
    lines = [
        f"{settings.frames} frames of {settings.height}x{settings.width} on {settings.device}"
        f"{', bf16' if settings.bf16 else ''}{', compiled' if settings.compile else ''}"
        f"{f', inference options {settings.inference}' if settings.inference else ''}; median of "
        f"{settings.repeats} round-robin repeats after {settings.warmup} warm-up frames; ratios to the first row\n",
        "| model | strategy | window | model size | params (M) | frames/s | × first | peak memory (MB) | × first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "–" if r.memory_ratio is None else f"{r.memory_ratio:.2f}"
        lines.append(
            f"| {r.name} | {r.strategy} | {r.window} | {r.inference_size} | {r.params_m:.2f} | {r.fps:.2f} | {r.fps_ratio:.2f} | "
            f"{r.peak_memory_mb:.1f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def _specs(
    configs: list[str],
    strategies: list[str] | None,
    names: list[str] | None,
    random_weights: bool = True,
    tiny: bool = False,
) -> list[BenchSpec]:
    from vdf.cli import run_name, tiny_configs

    layered = [entry.split("+") for entry in configs]
    for paths in layered:
        for path in paths:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config file not found: {path!r}")
    if strategies and len(strategies) not in (1, len(configs)):
        raise ValueError(
            f"give one --strategy for all configs or one per config ({len(configs)}), got {len(strategies)}"
        )
    if names and len(names) != len(configs):
        raise ValueError(f"give one --names entry per config ({len(configs)}), got {len(names)}")
    specs = []
    for i, paths in enumerate(layered):
        strategy = None if not strategies else strategies[0 if len(strategies) == 1 else i]
        strategy = None if strategy in (None, "default") else strategy
        paths = tiny_configs(paths) if tiny else paths
        args = [x for path in paths for x in ("--config", path)]
        if random_weights:
            args += weight_file_overrides(paths)
        if strategy is not None:
            args += ["--model.init_args.predictor.init_args.strategy", _strategy_value(strategy)]
        name = names[i] if names else run_name(paths) + (f" + {_strategy_name(strategy)}" if strategy else "")
        specs.append(BenchSpec(name=name, args=args, config="+".join(paths), strategy=strategy))
    return specs


def bench(
    configs: list[str],
    strategy: list[str] | None = None,
    names: list[str] | None = None,
    settings: BenchSettings | None = None,
    isolate: bool = True,
    output: str | None = None,
    random_weights: bool = True,
    tiny: bool = False,
) -> dict[str, Any]:
    """Measure ``configs`` side by side; print a markdown table; write JSON to ``output``.

    Each entry of ``configs`` is a config file or several joined by ``+`` (a recipe and its
    overlays: ``configs/flashdepth.yaml+configs/flashdepth/s.yaml``); ``tiny`` adds each recipe's
    tiny overlay (``configs/tiny/<family>.yaml``)."""
    settings = settings or BenchSettings()
    specs = _specs(configs, strategy, names, random_weights, tiny)
    check_settings(settings)
    results = measure(specs, settings, isolate=isolate)
    table = to_markdown(results, settings)
    print(table)
    report = {
        "settings": asdict(settings),
        "isolate": isolate,
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name(settings.device) if settings.device.startswith("cuda") else None,
        },
        "results": [asdict(r) for r in results],
        "table": table,
    }
    if output:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    return report


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``vdf bench CONFIG [CONFIG ...] [options]``; ``vdf bench --train ...`` is `vdf.bench_train`."""
    argv = list(sys.argv[1:] if args is None else args)
    if "--train" in argv:  # training-step memory per stage (vdf.bench_train)
        from vdf import bench_train

        return bench_train.main([a for a in argv if a != "--train"])
    parser = ArgumentParser(prog="vdf bench", description="Frames/s and peak memory of vdf models, side by side.")
    parser.add_argument(
        "configs",
        nargs="+",
        help="model configs (as for vdf fit --config; a recipe and its overlays joined by '+'), compared in this order",
    )
    parser.add_argument(
        "--tiny", action=ActionYesNo, default=False, help="add each recipe's tiny overlay (configs/tiny/)"
    )
    parser.add_argument(
        "--strategy",
        type=Optional[list[str]],
        default=None,
        help="long-video strategy per config (or one for all): a class path such as vdf.inference.IndependentWindows, "
        "a YAML mapping {class_path: ..., init_args: {...}}, or 'default' for the config's own",
    )
    parser.add_argument("--names", type=Optional[list[str]], default=None, help="row labels (default: config names)")
    parser.add_argument("--height", type=int, default=224, help="frame height")
    parser.add_argument("--width", type=int, default=336, help="frame width")
    parser.add_argument("--frames", type=int, default=32, help="video length (frames per timed repeat)")
    parser.add_argument(
        "--warmup", type=int, default=8, help="frames streamed once before timing (at least the strategy's window)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per model (round robin)")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--bf16", action=ActionYesNo, default=False, help="autocast to bfloat16")
    parser.add_argument("--compile", action=ActionYesNo, default=False, help="torch.compile the network (CUDA only)")
    parser.add_argument(
        "--inference",
        type=Optional[dict],
        default=None,
        help="inference options for every model (vdf.predictors.InferenceOptions), a YAML mapping such as "
        "'{channels_last: true, dtype: bfloat16, compile: true}'",
    )
    parser.add_argument(
        "--video", type=str, default="synthetic", help="'synthetic' (a synthetic-world episode) or 'random'"
    )
    parser.add_argument("--threads", type=Optional[int], default=None, help="torch intra-op threads")
    parser.add_argument(
        "--isolate", action=ActionYesNo, default=True, help="one worker process per model (sound CPU memory peaks)"
    )
    parser.add_argument("--output", type=Optional[str], default=None, help="write the results as JSON here")
    parser.add_argument(
        "--random_weights",
        action=ActionYesNo,
        default=True,
        help="ignore the weight files the configs name (speed does not depend on them); --no_random_weights loads them",
    )
    cfg = parser.parse_args(argv)
    settings = BenchSettings(
        height=cfg.height,
        width=cfg.width,
        frames=cfg.frames,
        warmup=cfg.warmup,
        repeats=cfg.repeats,
        device=cfg.device,
        bf16=cfg.bf16,
        compile=cfg.compile,
        inference=cfg.inference,
        video=cfg.video,
        threads=cfg.threads,
    )
    return bench(
        cfg.configs,
        cfg.strategy,
        cfg.names,
        settings,
        isolate=cfg.isolate,
        output=cfg.output,
        random_weights=cfg.random_weights,
        tiny=cfg.tiny,
    )


if __name__ == "__main__":
    main()
