"""Time per frame of FlashDepth against its baselines, measured side by side in one run.

- FlashDepth-S streaming (ViT-S + DPT + temporal Mamba2) vs Depth-Anything-V2-S per frame at the
  same resolution: the temporal module's overhead (the paper: negligible).
- FlashDepth (Full: ViT-S at full resolution + frozen ViT-L at short side ``teacher_resolution``)
  vs FlashDepth-L at full resolution (the paper: about 4x faster at 2K).

Models use random weights (speed does not depend on them). Every round runs one frame through
each model in turn, so machine noise hits all of them alike; the table reports medians.

    python benchmarks/flashdepth_speed.py --height 518 --width 924 --teacher_resolution 224
    python benchmarks/flashdepth_speed.py --device cuda --dtype bfloat16 --height 1148 --width 2044 --teacher_resolution 490

Writes ``flashdepth_speed.json`` when ``--output`` is given.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from jsonargparse import CLI

from vdf.models import DepthAnythingV2, FlashDepth


def run(
    height: int = 518,
    width: int = 924,
    teacher_resolution: int = 224,
    rounds: int = 5,
    warmup: int = 2,
    device: str = "cpu",
    dtype: str = "float32",
    threads: int | None = None,
    output: str | None = None,
) -> dict:
    """Median seconds per frame of each model; H and W must be multiples of 14."""
    if threads:
        torch.set_num_threads(threads)
    amp = getattr(torch, dtype)
    dev = torch.device(device)
    models = {
        "dav2_s_per_frame": DepthAnythingV2("vits"),
        "flashdepth_s": FlashDepth("s"),
        "flashdepth_l": FlashDepth("l"),
        "flashdepth_full": FlashDepth("full", teacher_resolution=teacher_resolution),
    }
    states: dict[str, object] = {}
    for name, model in models.items():
        model.to(dev).eval()
        if name.startswith("flashdepth"):
            states[name] = model.init_state(1, device=dev)

    def frame_fn(name):
        model = models[name]
        if name.startswith("flashdepth"):

            def fn(x):
                _, states[name] = model.step(x, states[name])
        else:

            def fn(x):
                model(x)

        return fn

    fns = {name: frame_fn(name) for name in models}
    times: dict[str, list[float]] = {name: [] for name in models}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode(), torch.autocast(dev.type, dtype=amp, enabled=amp != torch.float32):
        for r in range(warmup + rounds):
            x = torch.randn(1, 3, height, width, device=dev)
            for name, fn in fns.items():
                sync()
                start = time.perf_counter()
                fn(x)
                sync()
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "height": height,
        "width": width,
        "teacher_resolution": teacher_resolution,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "seconds_per_frame": median,
        "ratios": {
            "flashdepth_s / dav2_s (temporal overhead)": median["flashdepth_s"] / median["dav2_s_per_frame"],
            "flashdepth_l / flashdepth_full (hybrid speed-up)": median["flashdepth_l"] / median["flashdepth_full"],
        },
    }
    print(
        f"time per frame at {height}x{width}, {device} {dtype}, teacher short side {teacher_resolution}, "
        f"median of {rounds} rounds after {warmup} warm-up"
    )
    for name, s in median.items():
        print(f"  {name:<18} {s * 1000:10.1f} ms   {1 / s:8.2f} frames/s")
    for name, ratio in result["ratios"].items():
        print(f"  {name}: {ratio:.3f}")
    if output:
        with open(output, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    CLI(run)
