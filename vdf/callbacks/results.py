"""`TestResultsWriter`: every ``vdf test`` run leaves a results file set beside its logs.

``<log_dir>/results.json`` (run info + one row per dataset), ``results.csv`` and ``results.md``
(a markdown table: dataset, AbsRel, δ1, RMSE, TAE and MFC where poses exist, boundary F1, frames/s).
``python -m vdf.results`` collects several runs into one comparison table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L

from vdf.io import write_json_atomic
from vdf.results import METRIC_COLUMNS, rows_to_csv, rows_to_markdown


class TestResultsWriter(L.Callback):
    """Writes ``results.{json,csv,md}`` into the run's log directory at the end of ``vdf test``.

    Frames/s counts the frames of each dataset over the wall time of its test steps (model and
    strategy, not data loading or metric computation).
    """

    def __init__(self, filename: str = "results"):
        self.filename = filename
        self._frames: dict[int, int] = {}
        self._seconds: dict[int, float] = {}
        self._start = 0.0

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._frames, self._seconds = {}, {}

    def on_test_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._start = time.perf_counter()

    def on_test_batch_end(
        self, trainer, pl_module, outputs, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._seconds[dataloader_idx] = self._seconds.get(dataloader_idx, 0.0) + time.perf_counter() - self._start
        video = batch["video"]
        self._frames[dataloader_idx] = self._frames.get(dataloader_idx, 0) + video.shape[0] * video.shape[1]

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.log_dir is None:
            return
        names = getattr(pl_module, "_eval_names", [])
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        rows = []
        for i, name in enumerate(names):
            logged = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith(f"test/{name}/")}
            row: dict[str, Any] = {"dataset": name, **{k: logged[k] for k in METRIC_COLUMNS if k in logged}}
            if "num_sequences" in logged:
                row["sequences"] = int(logged["num_sequences"])
            seconds = self._seconds.get(i, 0.0)
            row["frames_per_second"] = self._frames.get(i, 0) / seconds if seconds > 0 else None
            rows.append(row)
        strategy = getattr(getattr(pl_module, "predictor", None), "strategy", None)
        run = {
            "model": type(pl_module).__name__,
            "strategy": type(strategy).__name__ if strategy is not None else None,
            "checkpoint": getattr(trainer, "ckpt_path", None),
            "config": str(Path(trainer.log_dir) / "config.yaml"),
            "log_dir": trainer.log_dir,
            "rows": rows,
        }
        out = Path(trainer.log_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / f"{self.filename}.json", run)
        (out / f"{self.filename}.csv").write_text(rows_to_csv(rows, run))
        (out / f"{self.filename}.md").write_text(rows_to_markdown(rows, run))
