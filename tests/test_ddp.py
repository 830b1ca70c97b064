"""DDP on CPU (gloo, 2 processes) agrees with one process.

One module-scoped fixture runs three ``python -m vdf`` subprocesses on the tiny DAv2 (``configs/dav2.yaml`` + ``configs/tiny/dav2.yaml``)
(Lightning's subprocess launcher re-runs the command line for rank 1, so the runs cannot be
in-process ``main([...])`` calls):

1. ``fit`` with ``--trainer.strategy ddp --trainer.devices 2`` and 1 clip per batch;
2. ``fit`` on one process, 1 clip per batch, ``accumulate_grad_batches=2``;
3. ``validate`` with 2 DDP processes on run 2's ``last.ckpt``.

Why these settings make DDP and one process *exactly* comparable:

* The sampler's global batch list depends only on ``(seed, epoch)`` and the batch size, never on
  the world size; rank ``r`` takes batches ``r::2``. With ``batch_size=1`` both runs plan the same
  global list ``[c0, c1, c2, ...]``: DDP step ``k`` trains rank 0 on ``c_2k`` and rank 1 on
  ``c_2k+1``; the single process with ``accumulate_grad_batches=2`` trains step ``k`` on
  ``c_2k`` then ``c_2k+1``. (A single process with ``batch_size=2`` would *not* do: its plan
  bins and shuffles batches of 2, a different grouping, and a per-batch mean over two clips of
  different ``T`` is not the mean of the two per-clip losses.)
* DDP's gradient is ``(g0 + g1) / 2`` (allreduce of ``g / world_size``); accumulation backprops
  ``loss / 2`` per micro-batch and sums: ``g0 / 2 + g1 / 2``. Halving is exact in floating point,
  so both are the same number. Each micro-batch holds one clip, so the loss needs no batch mean
  for this to hold, and clips of different ``T`` (``num_frames: [2, 4]``) may meet in one step.
* The model (ViT + DPT) has no dropout, drop-path or batch norm; both runs seed 0 and DDP
  broadcasts rank 0's initial weights, which equal the single process's.
* Lightning's DDP on CPU sets ``torch.set_num_threads(cpu_count // 2)`` per process unless
  ``OMP_NUM_THREADS`` is set; a 2-thread single process could split float32 matmul reductions
  differently. ``OMP_NUM_THREADS=1`` in every run removes that, so the runs are expected to be
  bitwise equal; the assertion still allows ``rtol=1e-5`` (a few float32 ulps per step, amplified
  by 4 AdamW steps) for platforms whose kernels are not run-to-run deterministic.

Validation: the val set has 2 sequences and ``eval_batch_size=1``, so each rank scores exactly one
(no padding repeats, which would weigh a sequence twice); `VideoDepthMetrics` sums are reduced
over ranks on ``compute``, so the DDP value must equal the one-process value over the same
weights up to float64 summation order (``1e-6`` asked, ~1e-16 expected).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vdf.data.datamodule import VideoDepthDataModule
from vdf.data.datasets.synthetic import SyntheticWorld

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [ROOT / "configs" / "dav2.yaml", ROOT / "configs" / "tiny" / "dav2.yaml"]
COMMON = [
    "--config",
    str(CONFIGS[0]),
    "--config",
    str(CONFIGS[1]),
    "--trainer.accelerator",
    "cpu",
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.callbacks+=ddp_helpers.RecordRun",
    "--data.batch_size",
    "1",
]
DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
# The whole epoch (8 clips -> 8 global batches), so the per-rank count comes from the sampler,
# not from Lightning's limit_train_batches.
FIT = ["--trainer.limit_train_batches", "1.0"]


def _vdf(args: list[str], cwd: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not (
            k.startswith(("PL_", "MASTER_", "LOCAL_", "GROUP_", "ROLE_", "TORCHELASTIC_"))
            or k in ("RANK", "WORLD_SIZE", "NODE_RANK")
        )
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH", "")])
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "vdf", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise AssertionError(
            f"vdf {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    _vdf(["fit", *COMMON, *FIT, *DDP], base / "ddp")
    _vdf(["fit", *COMMON, *FIT, "--trainer.accumulate_grad_batches", "2"], base / "single")
    ckpt = base / "single" / "runs" / "dav2" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), f"single-process fit wrote no {ckpt}"
    _vdf(["validate", *COMMON, *DDP, "--ckpt_path", str(ckpt)], base / "validate")
    return {
        "ddp": [_load(base / "ddp" / "ddp_record" / f"fit_rank{r}.pt") for r in range(2)],
        "single": _load(base / "single" / "ddp_record" / "fit_rank0.pt"),
        "validate": [_load(base / "validate" / "ddp_record" / f"validate_rank{r}.pt") for r in range(2)],
    }


def _max_rel_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for key in a:
        x, y = a[key].double(), b[key].double()
        worst = max(worst, ((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item() if x.numel() else 0.0)
    return worst


def test_ranks_end_with_identical_parameters(runs):
    r0, r1 = runs["ddp"]
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["state_dict"].keys() == r1["state_dict"].keys()
    for key, value in r0["state_dict"].items():
        assert torch.equal(value, r1["state_dict"][key]), f"{key} differs between rank 0 and rank 1"


def test_ddp_matches_single_process_with_same_global_batch(runs):
    r0, _ = runs["ddp"]
    single = runs["single"]
    assert single["world_size"] == 1
    assert r0["global_step"] == single["global_step"] == 4  # 8 clips: 4 per rank / 4 accumulated steps
    assert r0["state_dict"].keys() == single["state_dict"].keys()
    # Training moved every parameter group: a comparison of untrained weights would prove nothing.
    moved = [k for k, v in r0["state_dict"].items() if not torch.equal(v, r0["initial_state_dict"][k])]
    assert any("pretrained" in k for k in moved) and any("depth_head" in k for k in moved), moved
    for key, value in r0["initial_state_dict"].items():
        assert torch.equal(value, single["initial_state_dict"][key]), f"{key}: runs started from different weights"
    for key, value in r0["state_dict"].items():
        torch.testing.assert_close(
            value, single["state_dict"][key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}"
        )
    # Measured on the dev machine: 0.0 (bitwise equal); kept visible for `pytest -s`.
    worst = _max_rel_diff(r0["state_dict"], single["state_dict"])
    print(f"max relative parameter difference DDP vs 1 process: {worst:.3g}")


def test_sampler_gives_ranks_equal_disjoint_shares_of_the_single_process_plan(runs):
    r0, r1 = runs["ddp"]
    single = runs["single"]
    # Same number of batches on both ranks (else the allreduce of the extra step would hang).
    assert r0["num_batches"] == r1["num_batches"] == 4
    assert single["num_batches"] == 8
    assert all(len(batch) == 1 for run in (r0, r1, single) for batch in run["clips"])
    clips0 = [batch[0] for batch in r0["clips"]]
    clips1 = [batch[0] for batch in r1["clips"]]
    # Disjoint shares (the val set and this epoch have no padding repeats).
    assert not {c[:2] for c in clips0} & {c[:2] for c in clips1}
    # Single-process micro-batches 2k, 2k+1 == rank 0's and rank 1's batch k: the same global batch.
    interleaved = [clip for pair in zip(clips0, clips1) for clip in pair]
    assert [batch[0] for batch in single["clips"]] == interleaved
    # ... which is the sampler's own global plan (the config's train set, rebuilt here).
    # One train dataset, so the plan's item index is the episode number in the sequence name.
    world = SyntheticWorld(num_episodes=8, num_frames=8, height=32, width=48, seed=0)
    sampler = VideoDepthDataModule(train=[world], num_frames=[2, 4], batch_size=1).train_dataloader().batch_sampler
    plan = [(batch[0].index, tuple(batch[0].frames)) for batch in sampler.plan_epoch(0)]
    assert [(int(seq.rsplit("_", 1)[-1]), frames) for _, seq, frames in interleaved] == plan
    # Mixed lengths really met in one step (rank 0 and rank 1 clips of different T).
    assert {len(c[2]) for c in interleaved} == {2, 4}


def test_validation_metrics_are_synchronised_over_ranks(runs):
    single = runs["single"]["metrics"]  # the one-process fit's validation of its final weights
    for rank, record in enumerate(runs["validate"]):
        assert record["world_size"] == 2
        metrics = record["metrics"]
        # Each rank scored 1 of the 2 sequences; the synced count proves the reduction happened.
        assert metrics["val/synthetic_world/num_sequences"] == 2.0, f"rank {rank}: {metrics}"
        for key in ("val/abs_rel", "val/delta1", "val/rmse"):
            assert metrics[key] == pytest.approx(single[key], rel=1e-6, abs=1e-6), f"rank {rank} {key}"
    assert runs["validate"][0]["metrics"] == runs["validate"][1]["metrics"]


def test_predict_on_two_ranks_writes_each_video_once_as_one_rank_does(tmp_path):
    """Multi-GPU predict (gloo, 2 CPU processes): videos are sharded over ranks, each written once,
    one merged run manifest, and the outputs are those of one process."""
    import json

    import numpy as np

    from vdf.io import outputs_complete, write_episodes

    inputs = tmp_path / "videos"
    write_episodes(SyntheticWorld(num_episodes=3, num_frames=4, height=32, width=48, seed=11), inputs)
    args = ["predict", *COMMON, "--input", str(inputs)]
    _vdf([*args, "--output", str(tmp_path / "one")], tmp_path / "run_one")
    _vdf([*args, *DDP, "--output", str(tmp_path / "two")], tmp_path / "run_two")
    names = [f"episode_{i:05d}" for i in range(3)]
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert sorted(v["name"] for v in manifest["videos"]) == names
    assert {v["status"] for v in manifest["videos"]} == {"ok"}
    # Rank 0 took videos 0 and 2, rank 1 video 1: each video was written by one process.
    assert {v["name"]: v["rank"] for v in manifest["videos"]} == dict(zip(names, [0, 1, 0]))
    assert not any(p.name.startswith(".") for p in (tmp_path / "two").iterdir()), "rank records are merged away"
    for name in names:
        assert outputs_complete(tmp_path / "two", name)
        with np.load(tmp_path / "one" / f"{name}.npz") as a, np.load(tmp_path / "two" / f"{name}.npz") as b:
            assert np.array_equal(a["disparity"], b["disparity"])
