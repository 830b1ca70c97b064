"""Peak memory of `SegmentStitching` against video length (it should not grow).

The tiny DepthCrafter (``configs/depthcrafter.yaml`` with ``configs/tiny/depthcrafter.yaml``, random weights: memory does not depend
on them) streams synthetic videos of increasing length through ``SegmentStitching`` with
DepthCrafter's window/overlap ratio. Each length runs in its own worker process through
``vdf bench``'s measurement (peak resident memory above the level before warm-up). For contrast, the
same model runs each video as one clip (``IndependentWindows`` with the window the video's length),
which holds the whole video, as a pipeline that decodes everything first does.

    python benchmarks/segment_stitching_memory.py --lengths "[40, 160, 640]" --output stitching_memory.json
"""

from __future__ import annotations

import json
from pathlib import Path

from jsonargparse import CLI

from vdf.bench import BenchSettings, _specs, measure

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "depthcrafter.yaml")


def run(
    lengths: list[int] = [40, 160, 640],  # noqa: B006 - jsonargparse reads the default
    height: int = 64,
    width: int = 96,
    window: int = 22,
    overlap: int = 5,
    whole_clip_up_to: int = 160,
    output: str | None = None,
) -> list[dict]:
    rows = []
    for length in lengths:
        settings = BenchSettings(height=height, width=width, frames=length, warmup=window, repeats=1)
        strategies = {
            "SegmentStitching": f"{{class_path: vdf.inference.SegmentStitching, init_args: "
            f"{{window: {window}, overlap: {overlap}}}}}"
        }
        if length <= whole_clip_up_to:
            strategies["one clip"] = (
                f"{{class_path: vdf.inference.IndependentWindows, init_args: {{window: {length}}}}}"
            )
        for name, strategy in strategies.items():
            result = measure(_specs([CONFIG], [strategy], [name], tiny=True), settings, isolate=True)[0]
            rows.append(
                {
                    "strategy": name,
                    "frames": length,
                    "peak_memory_mb": result.peak_memory_mb,
                    "fps": result.fps,
                    "memory_kind": result.memory_kind,
                }
            )
    base = {r["strategy"]: r["peak_memory_mb"] for r in rows if r["frames"] == lengths[0]}
    print(f"tiny DepthCrafter, {height}x{width}, SegmentStitching(window={window}, overlap={overlap})\n")
    print("| strategy | frames | peak memory (MB) | × shortest | frames/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        ratio = r["peak_memory_mb"] / base[r["strategy"]] if base.get(r["strategy"]) else float("nan")
        print(f"| {r['strategy']} | {r['frames']} | {r['peak_memory_mb']:.1f} | {ratio:.2f} | {r['fps']:.1f} |")
    if output:
        Path(output).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    CLI(run)
