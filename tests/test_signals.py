"""SIGTERM mid-step stops `vdf fit`, `vdf test` and `vdf predict` within seconds, keeping what is done.

Each run is a real `vdf` process whose step is made slow (minutes of tensor work, as a diffusion
step can be); the test waits until the process is inside that step, sends SIGTERM, and checks how
fast and in what state it stops.
"""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import torch
from recipes import tiny_args

from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io import outputs_complete, write_episodes

TINY = tiny_args("dav2")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]

#: Runs `vdf` with one slow step: ``SLOW`` names what is slowed and when (see the code).
SLOW_RUNNER = r"""
import pathlib, sys, time
import torch
marker, what = pathlib.Path(sys.argv[1]), sys.argv[2]

def slow():
    marker.write_text("inside the slow step")
    a = torch.randn(128, 128)
    end = time.time() + 300
    while time.time() < end:  # minutes of tensor operations, like a long diffusion step
        a = torch.tanh(a @ a)

if what == "fit":  # the third training step
    from vdf.tasks.base import VideoDepthTask
    original = VideoDepthTask.training_step
    def training_step(self, batch, batch_idx):
        if self.global_step == 2:
            slow()
        return original(self, batch, batch_idx)
    VideoDepthTask.training_step = training_step
elif what == "test":
    from vdf.tasks.base import VideoDepthTask
    original = VideoDepthTask.test_step
    def test_step(self, *args, **kwargs):
        slow()
        return original(self, *args, **kwargs)
    VideoDepthTask.test_step = test_step
else:  # predict: the network is slow on the second video, once the first video's outputs are complete
    from vdf.models.dav2 import DepthAnythingV2
    original = DepthAnythingV2.forward
    seen = [0]
    def forward(self, images, *args, **kwargs):
        seen[0] += images.shape[0]
        if seen[0] > 6:  # a frame of the second video (the first has 6)
            # Its outputs are written beside the model: wait until they are, then be slow.
            deadline = time.time() + 120
            while not pathlib.Path(what, "episode_00000.json").exists() and time.time() < deadline:
                time.sleep(0.05)
            slow()
        return original(self, images, *args, **kwargs)
    DepthAnythingV2.forward = forward

from vdf.cli import entrypoint
sys.argv = ["vdf", *sys.argv[3:]]
entrypoint()
"""


def _interrupt_when_slow(tmp_path, what, args, timeout=180):
    """Start the run, SIGTERM it once inside the slow step; returns (returncode, stderr, seconds to stop)."""
    marker = tmp_path / "inside"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUNNER, str(marker), what, *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + timeout
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "the run never reached the slow step"
            time.sleep(0.1)
        time.sleep(0.5)
        sent = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        return proc.returncode, proc.stderr.read(), time.time() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_mid_step_stops_fit_within_seconds_with_a_resumable_checkpoint(tmp_path):
    args = ["fit", *TINY, *QUIET, "--trainer.max_steps=4", "--trainer.limit_val_batches=0"]
    code, err, seconds = _interrupt_when_slow(tmp_path, "fit", args)
    assert seconds < 15, (seconds, err[-2000:])
    assert code == 1, err[-2000:]
    ckpt = tmp_path / "runs" / "dav2" / "version_0" / "checkpoints" / "last.ckpt"
    assert "at step 2; saved runs/dav2/version_0/checkpoints/last.ckpt (resume with --ckpt_path)" in err, err[-2000:]
    state = torch.load(ckpt, weights_only=False, map_location="cpu")
    assert state["global_step"] == 2  # two completed steps; the interrupted one left no trace
    # ... and the data position is that of step 2, so the resumed run trains on the interrupted batch.
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_yielded"] == 2
    # The checkpoint resumes: the run finishes its remaining steps.
    resumed = subprocess.run(
        [sys.executable, "-m", "vdf", *args, "--ckpt_path", str(ckpt)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    last = tmp_path / "runs" / "dav2" / "version_1" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False, map_location="cpu")["global_step"] == 4


def test_sigterm_mid_test_step_stops_within_seconds(tmp_path):
    code, err, seconds = _interrupt_when_slow(tmp_path, "test", ["test", *TINY, *QUIET])
    assert seconds < 15, (seconds, err[-2000:])
    assert code == 1 and "SIGTERM received" in err, err[-2000:]


def test_sigterm_mid_video_keeps_finished_videos_and_the_next_run_completes(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_episodes(SyntheticWorld(num_episodes=2, num_frames=6, height=32, width=48, seed=7), inp)
    args = ["predict", *TINY, *QUIET, "--input", str(inp), "--output", str(out)]
    code, err, seconds = _interrupt_when_slow(tmp_path, str(out), args)
    assert seconds < 15, (seconds, err[-2000:])
    assert code == 1, err[-2000:]
    assert outputs_complete(out, "episode_00000")
    assert not outputs_complete(out, "episode_00001")
    assert not any(p.name.startswith(".") for p in out.iterdir()), "the interrupted video leaves no temporary files"
    run = json.loads((out / "manifest.json").read_text())
    assert [v["name"] for v in run["videos"] if v["status"] == "ok"] == ["episode_00000"]

    again = subprocess.run(
        [sys.executable, "-m", "vdf", *args], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert outputs_complete(out, "episode_00001")
    with np.load(out / "episode_00001.npz") as npz:
        assert npz["disparity"].shape == (6, 32, 48)
