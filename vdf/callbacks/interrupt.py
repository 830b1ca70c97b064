"""`GracefulInterrupt`: SIGTERM and Ctrl-C stop a run within seconds, keeping what is done.

Lightning notes a SIGTERM and acts on it after the current training step; a diffusion step (or a
whole test video) can take minutes, long past a scheduler's grace period. This callback turns
SIGTERM into the same interruption as Ctrl-C, raised where the program is (between two tensor
operations), except inside the optimiser's parameter update, which it lets finish so that the
weights are never half-updated. Lightning then shuts down as for Ctrl-C (exit status 1), and:

- ``fit`` saves ``last.ckpt`` in the run's checkpoint folder (resume with ``--ckpt_path``), with
  the weights, optimiser, schedule and data position of the last completed step (the
  interrupted step's batch is trained on after the resume);
- ``predict`` leaves every finished video complete; the interrupted one's temporary files are
  removed and the next run redoes it (the prediction writer's own guarantee);
- ``validate`` / ``test`` stop without writing results.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L


class Interrupted(KeyboardInterrupt):
    """Raised by `GracefulInterrupt` on SIGTERM (a KeyboardInterrupt, so Lightning shuts down as for Ctrl-C)."""


class GracefulInterrupt(L.Callback):
    """Stops ``fit``/``validate``/``test``/``predict`` within seconds of SIGTERM or Ctrl-C.

    Args:
        save_checkpoint: on an interrupted ``fit``, save ``last.ckpt`` (resumable) first.
    """

    def __init__(self, save_checkpoint: bool = True):
        self.save_checkpoint = save_checkpoint
        self._previous: dict[int, Any] = {}
        self._updating = False
        self._pending: int | None = None
        self.saved: str | None = None

    # -- handlers -----------------------------------------------------------------------------
    def _handle(self, signum, frame) -> None:
        if self._updating:
            self._pending = signum  # raised when the parameter update is complete
            return
        self._raise(signum)

    def _raise(self, signum: int) -> None:
        # A second signal during the shutdown must not interrupt the checkpoint being written.
        signal.signal(signum, signal.SIG_IGN)
        raise Interrupted(f"{signal.Signals(signum).name} received")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            try:
                signal.signal(signum, handler)
            except (TypeError, ValueError):
                pass
        self._previous = {}

    # -- the parameter update is not interrupted -------------------------------------------------
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        self._updating = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self._updating = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            self._raise(signum)

    # -- shutdown ---------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt):
            return
        self._updating = False
        if not (self.save_checkpoint and trainer.state.fn == "fit" and trainer.global_step > 0):
            print(f"vdf: interrupted ({exception or 'Ctrl-C'}); stopping", file=sys.stderr, flush=True)
            return
        callback = trainer.checkpoint_callback
        folder = getattr(callback, "dirpath", None) or str(Path(trainer.default_root_dir) / "checkpoints")
        path = str(Path(folder) / "last.ckpt")
        # The batch of the interrupted step was handed out but not trained on: resume redoes it.
        completed = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        loaders = trainer.train_dataloader
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            if callable(getattr(loader, "rewind", None)):
                loader.rewind(completed)
        trainer.save_checkpoint(path)
        self.saved = path
        print(
            f"vdf: interrupted ({exception or 'Ctrl-C'}) at step {trainer.global_step}; saved {path} "
            "(resume with --ckpt_path)",
            file=sys.stderr,
            flush=True,
        )


__all__ = ["GracefulInterrupt", "Interrupted"]
