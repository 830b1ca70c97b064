"""Callback for ``tests/test_ddp.py``: what each rank of a ``vdf`` run trained on and ended with.

The DDP test runs ``python -m vdf ...`` in subprocesses (Lightning re-launches the command for the
second rank), so the per-rank facts are written to files: add it with
``--trainer.callbacks+=ddp_helpers.RecordRun`` and ``tests/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RecordRun(L.Callback):
    """Writes ``<out_dir>/<fn>_rank<r>.pt`` per rank, ``fn`` being ``fit`` or ``validate``.

    ``fit``: ``state_dict`` (final parameters, CPU copies), ``initial_state_dict`` (at train start,
    after DDP's broadcast), ``clips`` (one
    ``(dataset, sequence, frame_index tuple)`` per clip, per training batch, in order),
    ``num_batches``, ``global_step``, ``world_size``, ``metrics`` (last validation's logged values).
    ``validate``: ``metrics``, ``world_size``.

    Args:
        out_dir: folder of the files, relative to the working directory.
    """

    def __init__(self, out_dir: str = "ddp_record") -> None:
        self.out_dir = out_dir
        self.batches: list[list[tuple[str, str, tuple[int, ...]]]] = []
        self.metrics: dict[str, float] = {}
        self.initial: dict[str, torch.Tensor] = {}

    def _path(self, trainer: L.Trainer, fn: str) -> Path:
        path = Path(self.out_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path / f"{fn}_rank{trainer.global_rank}.pt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.initial = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append(
            [
                (str(meta.get("dataset")), str(meta.get("sequence")), tuple(int(i) for i in frames))
                for meta, frames in zip(batch["meta"], batch["frame_index"])
            ]
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if trainer.state.fn == "validate":
            torch.save({"metrics": self.metrics, "world_size": trainer.world_size}, self._path(trainer, "validate"))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        record = {
            "state_dict": state,
            "initial_state_dict": self.initial,
            "clips": self.batches,
            "num_batches": len(self.batches),
            "global_step": trainer.global_step,
            "world_size": trainer.world_size,
            "metrics": self.metrics,
        }
        torch.save(record, self._path(trainer, "fit"))


def run_vdf(args: list[str], cwd: Path, root: Path) -> None:
    """``python -m vdf ARGS`` in ``cwd`` with ``root`` and ``root/tests`` on the path, one thread per
    process and no launcher variables inherited (Lightning's launcher starts the other ranks)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (
            k.startswith(("PL_", "MASTER_", "LOCAL_", "GROUP_", "ROLE_", "TORCHELASTIC_"))
            or k in ("RANK", "WORLD_SIZE", "NODE_RANK")
        )
    }
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(root / "tests"), str(root), env.get("PYTHONPATH", "")])
    cwd.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "vdf", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    if done.returncode != 0:
        raise AssertionError(
            f"vdf {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        )
