"""`vdf predict` on a folder: good inputs written, bad ones reported, re-runs skip, killed runs resume."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from recipes import tiny_args

from vdf.callbacks.prediction_writer import DepthPredictionWriter
from vdf.cli import main
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io import outputs_complete, write_episodes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = tiny_args("dav2")


def vdf_predict(inp, out, *extra, timeout=240):
    return subprocess.run(
        [sys.executable, "-m", "vdf", "predict", *TINY, "--input", str(inp), "--output", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=9, height=48, width=64, seed=1), root / "a")
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=14, height=64, width=40, seed=2), root / "b")
    frames = root / "frames"
    frames.mkdir()
    for i, frame in enumerate(SyntheticWorld(num_episodes=1, num_frames=5, height=30, width=44, seed=3)[0]["video"]):
        Image.fromarray((frame.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(frames / f"img{i}.png")
    (root / "zero.mp4").write_bytes(b"")
    good = (root / "a" / "episode_00000.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "readme.mp4").write_text("this is not a video\n")
    return root


def test_predict_folder_writes_good_inputs_reports_bad_ones_and_skips_on_rerun(folder, tmp_path):
    out = tmp_path / "out"
    first = vdf_predict(folder, out)
    assert first.returncode == 1, first.stderr[-2000:]
    good = {"a__episode_00000": (9, 48, 64), "b__episode_00000": (14, 64, 40), "frames": (5, 30, 44)}
    for name, (t, h, w) in good.items():
        assert outputs_complete(out, name), name
        with np.load(out / f"{name}.npz") as npz:
            assert npz["disparity"].shape == (t, h, w) and npz["disparity"].dtype == np.float16
            assert npz["frame_index"].tolist() == list(range(t))
        manifest = json.loads((out / f"{name}.json").read_text())
        assert manifest["frames"] == t and manifest["strategy"]["class"] == "PerFrame"
        assert (out / f"{name}_depth.mp4").stat().st_size > 0
    for bad in ("zero.mp4", "truncated.mp4", "readme.mp4"):
        lines = [line for line in first.stderr.splitlines() if line.startswith("[error]") and bad in line]
        assert len(lines) == 1, (bad, first.stderr[-2000:])
    assert "empty file" in first.stderr
    run = json.loads((out / "manifest.json").read_text())
    statuses = {v["name"]: v["status"] for v in run["videos"]}
    assert statuses == {**{n: "ok" for n in good}, "zero": "failed", "truncated": "failed", "readme": "failed"}

    # Re-runs, in-process (the exit status was checked above).
    mtime = (out / "frames.npz").stat().st_mtime_ns
    args = ["predict", *TINY, "--input", str(folder), "--output", str(out), "--data.predict_glob", "frames"]
    second = _writer(main(args))
    assert [(r["name"], r["status"]) for r in second.results] == [("frames", "skipped")]
    assert (out / "frames.npz").stat().st_mtime_ns == mtime
    third = _writer(main([*args, "--overwrite", "true"]))
    assert [(r["name"], r["status"]) for r in third.results] == [("frames", "ok")]
    assert (out / "frames.npz").stat().st_mtime_ns != mtime and outputs_complete(out, "frames")


def _writer(cli):
    return next(c for c in cli.trainer.callbacks if isinstance(c, DepthPredictionWriter))


def test_killed_run_leaves_nothing_that_looks_complete_and_the_next_run_finishes(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=400, height=48, width=64, seed=4), inp)
    name = "episode_00000"
    cmd = [sys.executable, "-m", "vdf", "predict", *TINY, "--input", str(inp), "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        # Kill once the writer has started its temporary files (mid-video).
        while time.time() < deadline and not (out.is_dir() and any(p.name.startswith(".") for p in out.iterdir())):
            time.sleep(0.05)
        time.sleep(0.3)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not outputs_complete(out, name)
    assert not (out / f"{name}.json").exists() and not (out / f"{name}.npz").exists()
    resumed = vdf_predict(inp, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert outputs_complete(out, name)
    assert not any(p.name.startswith(".") for p in out.iterdir()), "temporary files are cleaned"
    with np.load(out / f"{name}.npz") as npz:
        assert npz["disparity"].shape == (400, 48, 64)
        assert torch.isfinite(torch.from_numpy(npz["disparity"].astype(np.float32))).all()


def test_predict_datasets_are_written_when_an_output_folder_is_given(tmp_path):
    write_episodes(SyntheticWorld(num_episodes=2, num_frames=5, height=32, width=48, seed=9), tmp_path / "eps")
    dataset = json.dumps(
        [
            {
                "class_path": "vdf.data.datasets.episodes.EpisodeFolder",
                "init_args": {"root": str(tmp_path / "eps"), "name": "demo"},
            }
        ]
    )
    cli = main(
        ["predict", *TINY, "--data.predict", dataset, "--output", str(tmp_path / "out"), "--writer.png16", "true"]
    )
    writer = _writer(cli)
    assert [r["status"] for r in writer.results] == ["ok", "ok"]
    for name in ("demo__episode_00000", "demo__episode_00001"):
        assert outputs_complete(tmp_path / "out", name)
        with np.load(tmp_path / "out" / f"{name}.npz") as npz:
            assert npz["disparity"].shape == (5, 32, 48)
        assert len(list((tmp_path / "out" / f"{name}_png16").iterdir())) == 5


def test_one_file_without_output_writes_beside_it_at_the_strided_frame_rate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=8, height=32, width=48, seed=5), tmp_path / "in", fps=10)
    clip = tmp_path / "in" / "episode_00000.mp4"
    main(["predict", *TINY, "--input", str(clip), "--data.stride", "2"])
    out = tmp_path / "in" / "episode_00000_depth"
    assert outputs_complete(out, "episode_00000")
    manifest = json.loads((out / "episode_00000.json").read_text())
    # Every second frame of a 10 fps video: the depth video plays at 5 fps, at the source's speed.
    assert manifest["frames"] == 4 and manifest["fps"] == pytest.approx(5.0)
    err = capsys.readouterr().err
    assert f"writing to {out}" in err and "[start] " in err and ": 4 frames" in err
    assert not (tmp_path / "runs").exists()


def test_progress_gives_the_total_and_an_eta():
    from vdf.callbacks.prediction_writer import _progress

    assert _progress(100, 1000, 10.0) == "100/1000 frames (10%), 10.0 frames/s, ETA 1:30"
    assert _progress(5, None, 1.0) == "5 frames, 5.0 frames/s"
