"""``vdf predict`` with and without the I/O overlap: frames/s, and memory over the run.

Writes one procedural test video (``--frames`` frames at ``--height`` x ``--width``, H.264 via
PyAV) into a temporary folder, then predicts it with each model configuration twice per round,
once with the overlap (the defaults: ``--data.prefetch_frames 8``, ``--writer.queue_frames 8``)
and once without (both 0), alternating which goes first, each run in a fresh process. Prints
frames/s per run, the median per setting and the ratio.

What is timed: from the prediction writer's ``on_predict_start`` to its ``on_predict_end``, i.e.
decoding, the model, and every output written (npz and colourised mp4, the defaults); not the
process start, config parsing or model construction, which are the same in both settings.

Memory: a thread in the run's process reads its resident set size (``/proc/self/statm``) every
20 ms; the table gives the largest sample while the first 200, 500 and all frames were written
(pass 1), and the largest over the whole run (pass 2 included). Flat means the numbers do not grow
with the frame count; a decoder or writer that held the video would add ``12 * H * W`` bytes per
frame (1.1 MiB at 256x384).

    python benchmarks/predict_overlap.py                  # ~10 min on 2 CPU cores shared with other jobs
    python benchmarks/predict_overlap.py --frames 300 --rounds 1 --configs "[tiny]"

Configurations (random weights; ``--configs`` picks):

- ``tiny``: the tiny DAv2 twin at its 42-pixel input: the model costs almost nothing, so the run
  is decoding and writing;
- ``balanced``: the same network at a 182-pixel input, where the model takes about as long as
  decoding and writing a frame; this is where overlapping them matters;
- ``flashdepth``: tiny FlashDepth-S streaming one frame at a time (``Streaming``);
- ``device``: the tiny twin, each network call followed by a wait of ``DEVICE_MS`` per frame
  that leaves the CPU free, as a GPU computing the frame would (a simulation for machines
  without one: the model's time then does not compete with decoding and writing for the CPU).

Writes ``predict_overlap.json`` into ``--workdir``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from jsonargparse import CLI

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

#: name -> (config files, extra command-line arguments)
SETUPS: dict[str, tuple[list[Path], list[str]]] = {
    "device": ([CONFIGS / "dav2.yaml", CONFIGS / "tiny" / "dav2.yaml"], []),
    "tiny": ([CONFIGS / "dav2.yaml", CONFIGS / "tiny" / "dav2.yaml"], []),
    "balanced": (
        [CONFIGS / "dav2.yaml", CONFIGS / "tiny" / "dav2.yaml"],
        ["--model.init_args.predictor.init_args.input_size", "182"],
    ),
    "flashdepth": (
        [CONFIGS / "flashdepth.yaml", CONFIGS / "flashdepth" / "s.yaml", CONFIGS / "tiny" / "flashdepth.yaml"],
        [],
    ),
}
SETTINGS = {
    "overlap": [],  # the defaults
    "sync": ["--data.prefetch_frames", "0", "--writer.queue_frames", "0"],
}
MARKS = (200, 500)
#: Milliseconds per frame the ``device`` setup waits after each network call.
DEVICE_MS = 30.0


def make_video(path: Path, frames: int, height: int, width: int, fps: int = 24) -> None:
    """A moving procedural pattern with fixed noise, H.264 (``ultrafast``) or MPEG-4: cheap to make."""
    import av
    import numpy as np

    from vdf.io.codecs import video_codec

    codec = video_codec()
    yy, xx = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 48, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for t in range(frames):
            image = np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, ((xx + yy) // 2 + t) % 256], -1)
            image = (image // 2).astype(np.uint8) + noise
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(setup: str, setting: str, input_dir: str, output_dir: str) -> None:
    """One ``vdf predict`` run in this process; prints its timing and memory as JSON."""
    import vdf.callbacks.prediction_writer as pw
    from vdf.cli import main
    from vdf.io import depth

    clock: dict[str, float] = {}
    frames = [0]
    samples: list[tuple[int, int]] = []  # (frames written so far, RSS bytes)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            samples.append((frames[0], _rss_bytes()))

    original_add, original_start, original_end = (
        depth.DepthVideoWriter.add,
        pw.DepthPredictionWriter.on_predict_start,
        pw.DepthPredictionWriter.on_predict_end,
    )

    def add(self, *args, **kwargs):
        original_add(self, *args, **kwargs)
        frames[0] += 1

    def on_predict_start(self, *args):
        original_start(self, *args)
        clock["start"] = time.perf_counter()

    def on_predict_end(self, *args):
        original_end(self, *args)  # waits for the background writer
        clock["end"] = time.perf_counter()

    if setup == "device":
        from vdf.models.dav2 import DepthAnythingV2

        forward = DepthAnythingV2.forward

        def device_forward(self, images, *args, **kwargs):
            out = forward(self, images, *args, **kwargs)
            time.sleep(DEVICE_MS / 1000 * images.shape[0])  # the CPU is free meanwhile
            return out

        DepthAnythingV2.forward = device_forward
    depth.DepthVideoWriter.add = add
    pw.DepthPredictionWriter.on_predict_start = on_predict_start
    pw.DepthPredictionWriter.on_predict_end = on_predict_end
    files, extra = SETUPS[setup]
    args = ["predict", *[a for f in files for a in ("--config", str(f))], *extra, *SETTINGS[setting]]
    args += ["--input", input_dir, "--output", output_dir, "--overwrite", "true", "--writer.progress", "false"]
    args += ["--trainer.enable_progress_bar", "false"]
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    main(args)
    stop.set()
    thread.join()
    seconds = clock["end"] - clock["start"]
    marks = sorted({*(m for m in MARKS if m < frames[0]), frames[0]})
    peaks = {f"<= {m} frames": max((r for n, r in samples if n <= m), default=0) for m in marks}
    peaks["whole run"] = max(r for _, r in samples)
    print(json.dumps({"frames": frames[0], "seconds": seconds, "rss_peaks": peaks, "samples": len(samples)}))


def run(
    frames: int = 1000,
    height: int = 256,
    width: int = 384,
    rounds: int = 2,
    configs: list[str] = ["tiny", "balanced"],  # noqa: B006 - jsonargparse reads the default
    threads: int | None = 1,
    workdir: str | None = None,
) -> dict:
    """Predict one ``frames``-frame video with and without the overlap, ``rounds`` times each.

    ``threads``: ``OMP_NUM_THREADS`` of the runs (None: the environment's). PyTorch's OpenMP pool
    serves the main thread only (a background thread runs its tensor operations on one core), so
    on a CPU shared with other work, small tensor operations in the main thread can be many times
    slower with several OpenMP threads than with one; one thread keeps that effect out of the
    comparison, so that the difference is the overlap's.
    """
    work = Path(workdir or tempfile.mkdtemp(prefix="vdf_predict_overlap_"))
    videos = work / "videos"
    video = videos / "clip.mp4"
    if not video.exists():
        videos.mkdir(parents=True, exist_ok=True)
        make_video(video, frames, height, width)
    runs = []
    for setup in configs:
        for r in range(rounds):
            order = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
            for setting in order:
                cmd = [sys.executable, __file__, "worker", setup, setting, str(videos), str(work / f"out_{setting}")]
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                if threads is not None:
                    env["OMP_NUM_THREADS"] = str(threads)
                done = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if done.returncode != 0:
                    raise RuntimeError(f"{setup} / {setting} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                result.update(setup=setup, setting=setting, round=r, fps=result["frames"] / result["seconds"])
                runs.append(result)
                mib = {k: round(v / 2**20, 1) for k, v in result["rss_peaks"].items()}
                print(
                    f"{setup:>10} {setting:>8} round {r}: {result['fps']:6.1f} frames/s  peak RSS MiB {mib}", flush=True
                )
    summary = {}
    print(
        f"\nvdf predict, one {frames}-frame video at {height}x{width}, median of {rounds} runs per setting, "
        f"OMP_NUM_THREADS={threads if threads is not None else os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"{'config':>10}  {'overlap fps':>11}  {'sync fps':>8}  {'ratio':>5}  peak RSS MiB at 200 / 500 / all frames / whole run (overlap)"
    )
    for setup in configs:
        fps = {
            s: statistics.median(x["fps"] for x in runs if x["setup"] == setup and x["setting"] == s) for s in SETTINGS
        }
        last = [x for x in runs if x["setup"] == setup and x["setting"] == "overlap"][-1]["rss_peaks"]
        peaks = " / ".join(f"{v / 2**20:.0f}" for v in last.values())
        summary[setup] = {**{f"{s}_fps": v for s, v in fps.items()}, "ratio": fps["overlap"] / fps["sync"]}
        print(
            f"{setup:>10}  {fps['overlap']:>11.1f}  {fps['sync']:>8.1f}  {fps['overlap'] / fps['sync']:>5.2f}  {peaks}"
        )
    result = {"frames": frames, "height": height, "width": width, "rounds": rounds, "threads": threads}
    result.update(runs=runs, summary=summary)
    (work / "predict_overlap.json").write_text(json.dumps(result, indent=2))
    print(f"(details: {work / 'predict_overlap.json'})")
    return result


if __name__ == "__main__":
    CLI([run, worker]) if len(sys.argv) > 1 and sys.argv[1] in ("run", "worker") else CLI(run)
