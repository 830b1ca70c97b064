"""`vdf fit` killed after a mid-epoch checkpoint and resumed ends bitwise where an uninterrupted run ends.

Both runs are real `vdf fit` subprocesses of the tiny DAv2 recipe on CPU: 8 batches per epoch,
12 optimizer steps (so training crosses an epoch boundary with its validation), a checkpoint every
2 steps. One run goes through; the other is SIGKILLed once its step-6 checkpoint (6 of 8 batches
into epoch 0) exists, and is resumed with the documented command: the run's saved resolved
``config.yaml`` plus ``--ckpt_path`` on that checkpoint. A second resume, from the step-8
checkpoint (the last batch of epoch 0), covers the epoch-boundary case.

Why bitwise holds: every source of randomness in training is a function of saved state.
The synthetic world draws from its own generators seeded by (seed, index); the sampler's plan is
a function of (seed, epoch) and the checkpoint stores the epoch and the number of batches the
training loop consumed (`ResumableDataLoader`); the tiny models have no dropout / drop-path, so
the global torch RNG (which Lightning does *not* store in checkpoints) is only used for the
initial weights (re-drawn from `seed_everything` and then overwritten by the checkpoint) and for
DataLoader base seeds (unused with ``num_workers=0``); optimizer moments, LR scheduler and loop
counters are restored by Lightning. CPU kernels are deterministic for a fixed thread count, which
both runs share (same environment, ``OMP_NUM_THREADS`` pinned below).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.loader import ResumableDataLoader
from vdf.data.sampler import MixedLengthBatchSampler
from vdf.data.types import ClipRequest

REPO = Path(__file__).resolve().parents[1]
CONFIG = ["--config", str(REPO / "configs" / "dav2.yaml"), "--config", str(REPO / "configs" / "tiny" / "dav2.yaml")]

# 10 planned batches per epoch cut to 8 by Lightning: the sampler has batches left over at the
# epoch's end, which a wrong resume at the boundary would train on.
RUN_ARGS = [
    "--trainer.max_epochs=-1",
    "--trainer.max_steps=12",
    "--trainer.limit_train_batches=8",
    "--trainer.enable_progress_bar=false",
    "--data.batches_per_epoch=10",
    "--trainer.callbacks+=ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps=2",
    "--trainer.callbacks.save_top_k=-1",
]
KILL_AFTER = "epoch=0-step=6.ckpt"  # mid-epoch: 6 of the 8 batches of epoch 0
EPOCH_END = "epoch=0-step=8.ckpt"  # the last batch of epoch 0
FINAL = "epoch=1-step=12.ckpt"


class _Clips(VideoDepthDataset):
    """Items are their own clip requests, so a batch says which clips the sampler planned."""

    name = "clips"

    def __len__(self) -> int:
        return 24

    def sequence_length(self, index: int) -> int:
        return 6

    def frame_size(self, index: int) -> tuple[int, int]:
        return (4, 4)

    def load(self, index, frames):  # pragma: no cover - __getitem__ is overridden
        raise NotImplementedError

    def __getitem__(self, item: ClipRequest) -> tuple[int, tuple[int, ...]]:
        return (item.index, tuple(item.frames))


def _loader(num_workers: int = 0) -> ResumableDataLoader:
    sampler = MixedLengthBatchSampler(_Clips(), num_frames=[2, 3], batch_size=2, shuffle=True, seed=3)
    prefetch = 4 if num_workers else None
    return ResumableDataLoader(
        sampler.dataset, batch_sampler=sampler, collate_fn=list, num_workers=num_workers, prefetch_factor=prefetch
    )


def test_loader_state_counts_consumed_batches_not_worker_prefetch():
    loader = _loader(num_workers=2)
    loader.batch_sampler.set_epoch(1)
    reference = list(_loader().batch_sampler.plan_epoch(1))
    iterator = iter(loader)
    consumed = [next(iterator) for _ in range(3)]
    # The workers have fetched ahead, so the sampler's own counter is past the training loop.
    assert loader.batch_sampler.state_dict()["batches_yielded"] > 3
    state = loader.state_dict()
    assert (state["epoch"], state["batches_yielded"]) == (1, 3)
    del iterator

    resumed = _loader()
    resumed.load_state_dict(state)
    assert resumed.state_dict()["batches_yielded"] == 3  # a checkpoint before the first batch keeps it
    resumed.batch_sampler.set_epoch(1)  # Lightning sets the same epoch again on resume
    rest = list(resumed)
    assert [[(c.index, c.frames) for c in b] for b in reference] == consumed + rest
    assert resumed.state_dict()["batches_yielded"] == len(reference)
    # The position is used once: the next iteration is the whole epoch again.
    assert len(list(resumed)) == len(reference)


def test_loader_plans_the_epoch_set_after_iter():
    # Lightning creates the iterator on resume before it calls set_epoch; a position saved at
    # the end of epoch 0 must give the whole of epoch 1, not epoch 0's remaining batches.
    loader = _loader()
    loader.load_state_dict({"epoch": 0, "batches_yielded": 5, "seed": 3, "num_replicas": 1})
    iterator = iter(loader)
    loader.batch_sampler.set_epoch(1)
    expected = [[(c.index, c.frames) for c in b] for b in loader.batch_sampler.plan_epoch(1)]
    assert list(iterator) == expected


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    return env


def _fit(cwd: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "vdf", "fit", *args]
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen, timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def _assert_bitwise(expected: Path, actual: Path) -> None:
    a, b = torch.load(expected, weights_only=False), torch.load(actual, weights_only=False)
    assert a["global_step"] == b["global_step"] == 12
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differing = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:5]}"
    # Optimizer moments too: a resume that only matched weights by luck would diverge later.
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def _resume(run_dir: Path, checkpoint: str) -> subprocess.Popen:
    """The documented command, with paths relative to the folder the run was started in."""
    cwd = run_dir.parents[2]
    rel = run_dir.relative_to(cwd)
    return _fit(cwd, "--config", str(rel / "config.yaml"), "--ckpt_path", str(rel / "checkpoints" / checkpoint))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    full_dir = tmp_path_factory.mktemp("full") / "runs" / "dav2" / "version_0"
    killed_dir = tmp_path_factory.mktemp("killed") / "runs" / "dav2" / "version_0"
    # Both first runs at once (2 cores); the uninterrupted one is the reference.
    full = _fit(full_dir.parents[2], *CONFIG, *RUN_ARGS)
    killed = _fit(killed_dir.parents[2], *CONFIG, *RUN_ARGS)
    target = killed_dir / "checkpoints" / KILL_AFTER
    deadline = time.monotonic() + 120
    # Lightning writes checkpoints atomically (temp file + move), so the file is complete once seen.
    while not target.exists():
        if killed.poll() is not None or time.monotonic() > deadline:
            killed.kill()
            pytest.fail(f"no {KILL_AFTER} before the run ended:\n{killed.communicate()[0][-4000:]}")
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    killed_reached_end = (killed_dir / "checkpoints" / FINAL).exists()
    # Resume the killed run, and (once the reference run is done) the reference from its epoch end.
    resumed = _resume(killed_dir, KILL_AFTER)
    _finish(full)
    resumed_epoch_end = _resume(full_dir, EPOCH_END)
    _finish(resumed)
    _finish(resumed_epoch_end)
    return {
        "full": full_dir,
        "killed": killed_dir,
        "killed_returncode": killed.returncode,
        "killed_reached_end": killed_reached_end,
    }


def _loader_positions(checkpoint: Path) -> list[tuple[int, int]]:
    states = torch.load(checkpoint, weights_only=False)["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    return [(s["epoch"], s["batches_yielded"]) for s in states]


def test_killed_run_resumes_bitwise_from_mid_epoch_checkpoint(runs):
    run_dir = runs["killed"]
    assert runs["killed_returncode"] == -signal.SIGKILL
    assert not runs["killed_reached_end"], "the killed run got to the end before the kill: the test proves nothing"
    # The checkpoint holds the sampler's position: epoch 0, 6 batches consumed by the training loop.
    assert _loader_positions(run_dir / "checkpoints" / KILL_AFTER) == [(0, 6)]
    # The logger opens a new version next to the interrupted one (which is left as it was).
    resumed_dir = run_dir.parent / "version_1"
    assert (resumed_dir / "config.yaml").exists()
    _assert_bitwise(runs["full"] / "checkpoints" / FINAL, resumed_dir / "checkpoints" / FINAL)


def test_resume_from_epoch_end_checkpoint_is_bitwise(runs):
    # The step-8 checkpoint has consumed all 8 batches of epoch 0 while the sampler planned 10:
    # the resumed run must start epoch 1 from its beginning, not with epoch 0's leftovers.
    assert _loader_positions(runs["full"] / "checkpoints" / EPOCH_END) == [(0, 8)]
    _assert_bitwise(runs["full"] / "checkpoints" / FINAL, runs["full"].parent / "version_1" / "checkpoints" / FINAL)
