"""Peak memory of ``vdf predict`` against video length: it must not grow with the length.

Writes synthetic-world videos of each length, runs ``vdf predict`` on each in a fresh process
(same config, same strategy), and reports each process's peak RSS and the ratio to the shortest.
A decoder or writer that held the whole video would add ``T*H*W*3*4`` bytes (listed for scale).

    python benchmarks/predict_memory.py --lengths "[100, 1000]" --height 256 --width 384

Prints a table and writes ``predict_memory.json`` into ``--workdir``.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from jsonargparse import CLI

ROOT = Path(__file__).resolve().parent.parent


def worker(config_file: str, input_dir: str, output_dir: str, strategy: str | None = None) -> None:
    """Run ``vdf predict`` in this process and print its peak RSS in bytes."""
    from vdf.cli import main

    configs = [x for path in config_file.split("+") for x in ("--config", path)]  # recipes joined by +
    args = [
        "predict",
        *configs,
        "--input",
        input_dir,
        "--output",
        output_dir,
        "--overwrite",
        "true",
        "--writer.progress",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    if strategy:
        args += ["--model.init_args.predictor.init_args.strategy", strategy]
    main(args)
    print(json.dumps({"peak_rss_bytes": _peak_rss_bytes()}))


def _peak_rss_bytes() -> int:
    """This process's peak resident memory since its exec.

    ``VmHWM`` from ``/proc`` rather than ``getrusage``: on Linux ``ru_maxrss`` survives ``execve``, so
    a child forked from a large parent would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(
    lengths: list[int] = [100, 1000],  # noqa: B006
    height: int = 256,
    width: int = 384,
    model_config: str = f"{ROOT / 'configs' / 'dav2.yaml'}+{ROOT / 'configs' / 'tiny' / 'dav2.yaml'}",
    strategy: str | None = None,
    workdir: str | None = None,
) -> dict:
    """Measure peak RSS of ``vdf predict`` for one video of each length."""
    from vdf.data.datasets.synthetic import SyntheticWorld
    from vdf.io import write_episodes

    work = Path(workdir or tempfile.mkdtemp(prefix="vdf_predict_memory_"))
    rows = []
    for length in lengths:
        videos = work / f"videos_{length}"
        if not (videos / "episode_00000.mp4").exists():
            write_episodes(SyntheticWorld(num_episodes=1, num_frames=length, height=height, width=width), videos)
        cmd = [sys.executable, __file__, "worker", model_config, str(videos), str(work / f"out_{length}")]
        if strategy:
            cmd += ["--strategy", strategy]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if done.returncode != 0:
            raise RuntimeError(f"predict on {length} frames failed:\n{done.stderr[-3000:]}")
        peak = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_bytes"]
        rows.append(
            {"frames": length, "peak_rss_mib": peak / 2**20, "whole_video_mib": length * height * width * 12 / 2**20}
        )
    base = rows[0]["peak_rss_mib"]
    for row in rows:
        row["ratio"] = row["peak_rss_mib"] / base
    result = {
        "config": model_config,
        "strategy": strategy or "config default",
        "height": height,
        "width": width,
        "rows": rows,
    }
    print(f"vdf predict peak RSS, {height}x{width}, config {Path(model_config).name}, strategy {result['strategy']}")
    print(f"{'frames':>8}  {'peak RSS MiB':>12}  {'ratio':>6}  {'whole video float32 MiB':>24}")
    for row in rows:
        print(
            f"{row['frames']:>8}  {row['peak_rss_mib']:>12.1f}  {row['ratio']:>6.3f}  {row['whole_video_mib']:>24.1f}"
        )
    (work / "predict_memory.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    CLI([run, worker]) if len(sys.argv) > 1 and sys.argv[1] in ("run", "worker") else CLI(run)
