"""`VideoDepthTask`: the Lightning glue every vdf task shares (no architecture here).

A task owns a predictor (`vdf.predictors`: the network, its preprocessing and its long-video
strategy, usable without Lightning) and adds only what training and evaluation need: the loss,
the optimiser and its schedule (chosen in the config, LightningCLI's ``optimizer`` and
``lr_scheduler`` callables), and the evaluation of every validation/test dataset with the
published protocol (`vdf.metrics.VideoDepthMetrics`, one per dataset).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from vdf.io import VideoSource
from vdf.io.live import LiveSource
from vdf.metrics import VideoDepthMetrics
from vdf.metrics.protocol import check_space
from vdf.predictors.base import Predictor
from vdf.predictors.video import VideoPrediction


def _frozen_record(path: str) -> dict[str, Any] | None:
    """The lean-checkpoint record of a vdf run's checkpoint file (None for other weights files)."""
    from vdf.models.weights import FROZEN_RECORD, resolve_source

    file = resolve_source(path, "init_weights")
    if not file.is_file() or file.suffix not in (".ckpt", ".pt", ".pth"):
        return None
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, ValueError, pickle.UnpicklingError):
        return None  # not a zip-format checkpoint: read_weights has read it (or said what is wrong)
    return checkpoint.get(FROZEN_RECORD) if isinstance(checkpoint, dict) else None


class VideoDepthTask(L.LightningModule):
    """Base of all tasks.

    Args:
        predictor: the family's predictor (network, preprocessing, strategy); its weights are
            the task's (``predictor.*`` in checkpoints).
        loss: training loss on ``(prediction, depth, valid)``, each ``(B,T,1,H,W)``.
        optimizer: the optimiser, built on `param_groups` (groups may carry their own ``lr``);
            default AdamW (lr 1e-4, weight decay 0.01).
        lr_scheduler: the schedule, stepped every optimiser step
            (`vdf.tasks.schedules.WarmupCosine`, `WarmupConstant`, or any torch scheduler);
            default none (constant).
        eval_max_depth: depth cap for evaluation when the datamodule does not say (metres).
        boundary_f1: also compute boundary F1 in validation/test (slower).
        tae: also compute TAE in validation/test when the dataset has poses.
        mfc: also compute ChronoDepth's multi-frame consistency (MFC) in validation/test when the
            dataset has poses.
        test_with_strategy: run ``vdf test`` sequences through the predictor's strategy (as
            ``vdf predict`` does) rather than as one clip forward; validation always uses the
            clip forward at the data's size.
        init_weights: a checkpoint of an earlier vdf run (``runs/<name>/version_N/checkpoints/*.ckpt``,
            or a state dict of this task) whose weights start this one: fine-tuning from a run, or
            the previous training stage. Weights only, loaded strictly; the step count, optimiser
            and schedule start afresh (``--ckpt_path`` instead resumes that run where it stopped).
    """

    def __init__(
        self,
        predictor: Predictor,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        eval_max_depth: float = 80.0,
        boundary_f1: bool = False,
        tae: bool = False,
        test_with_strategy: bool = True,
        init_weights: str | None = None,
        mfc: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["predictor", "loss", "optimizer", "lr_scheduler"])
        self.predictor = predictor
        self.loss = loss
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.eval_max_depth = eval_max_depth
        self.compute_boundary_f1 = boundary_f1
        self.compute_tae = tae
        self.compute_mfc = mfc
        self.test_with_strategy = test_with_strategy
        self.eval_metrics = nn.ModuleDict()
        self._eval_names: list[str] = []
        self._eval_sizes: list[tuple[int, int] | None] = []
        if init_weights is not None:
            self.load_weights(init_weights)

    def load_weights(self, path: str) -> None:
        """Initialise from the weights of a vdf run's checkpoint (strict; errors name the file).

        A lean checkpoint's left-out frozen modules are this task's own rebuilt ones, accepted
        only if their fingerprints match those the checkpoint was trained with."""
        from vdf.models.weights import StateDictMismatchError, complete_state_dict, load_state_dict_strict, read_weights

        where = (
            f"A checkpoint of an earlier vdf run of {type(self).__name__} (runs/<name>/version_N/checkpoints/last.ckpt)"
        )
        state = read_weights(path, "init_weights", where)
        record = _frozen_record(path)
        if record:
            complete_state_dict(state, record, self, f"init_weights {path}")
        try:
            load_state_dict_strict(self, state, source=f"init_weights {path}")
        except StateDictMismatchError as error:
            raise StateDictMismatchError(f"{error}\n({where})") from None

    # -- model side ---------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``video`` (B,T,3,H,W) in [0,1] -> the prediction (B,T,1,H,W): the predictor's clip forward."""
        return self.predictor.clip(video, frame_index)

    @property
    def output_space(self) -> str:
        """The space of the predictor's affine-invariant prediction: ``disparity`` or ``depth``."""
        return self.predictor.output_space

    def _use_trainer_precision(self) -> None:
        # Whole-video runs happen outside Lightning's steps too (the predict writer iterates
        # lazily): the predictor wraps each of its steps in the trainer's precision context.
        plugin = self.trainer.precision_plugin
        self.predictor.precision = plugin.forward_context

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; each may set its own ``lr``. Default: all trainable parameters."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    # -- training -----------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar training loss of a batch; default: ``loss`` on the forward's prediction."""
        if self.loss is None:
            raise ValueError(f"{type(self).__name__} has no loss: set model.init_args.loss in the config")
        return self.loss(self(batch["video"]), batch["depth"], batch["valid"])

    @contextmanager
    def _clip_seeded_randomness(self, batch: dict[str, Any]) -> Iterator[None]:
        """Draws inside a training step (noise levels, noise, posterior samples) from torch's RNG
        seeded by the run's seed, the optimizer step and the batch's clips.

        A seeded run's training noise is then a function of what is trained on and when: a resumed
        run draws what the uninterrupted one drew (Lightning does not checkpoint the global RNG),
        and N ranks draw what one process accumulating the same clips draws. The global RNG is
        left as it was. Runs without a seed (no ``seed_everything``) draw from the global RNG."""
        seed = os.environ.get("PL_GLOBAL_SEED")
        if seed is None or "meta" not in batch or "frame_index" not in batch:
            yield
            return
        clips = [(m.get("dataset"), m.get("sequence"), f.tolist()) for m, f in zip(batch["meta"], batch["frame_index"])]
        key = repr((int(seed), self.global_step, clips)).encode()
        value = int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else [], device_type="cuda"):
            torch.default_generator.manual_seed(value)
            if cuda:
                torch.cuda.manual_seed(value)
            yield

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        with self._clip_seeded_randomness(batch):
            loss = self.training_loss(batch)
        bad = not bool(torch.isfinite(loss))
        if self._trainer is not None:
            # Every rank must stop together, or the others would wait for it forever.
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            self._stop_on_nonfinite(loss, batch, batch_idx)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def _stop_on_nonfinite(self, loss: torch.Tensor, batch: dict[str, Any], batch_idx: int) -> None:
        """Save the last good state (no update has used this loss yet) and stop with the culprit."""
        sequences = [f"{m.get('dataset')}/{m.get('sequence')}" for m in batch["meta"]]
        frames = batch["frame_index"].tolist()
        saved = ""
        if self._trainer is not None:
            ckpt_dir = self.trainer.checkpoint_callback.dirpath if self.trainer.checkpoint_callback else None
            directory = ckpt_dir or self.trainer.default_root_dir
            path = f"{directory}/last-good-step{self.global_step}.ckpt"
            self.trainer.save_checkpoint(path)
            saved = f"; the last good state is saved in {path} (resume with --ckpt_path)"
        raise FloatingPointError(
            f"non-finite training loss ({loss.item()}) at global step {self.global_step}, batch {batch_idx}: "
            f"sequences {sequences}, frames {frames}{saved}"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lean checkpoints: frozen modules loaded from weights files (VAE, CLIP, a teacher) are
        # rebuilt by the constructor on load, so only their sources and fingerprint are stored.
        from vdf.models.weights import FROZEN_RECORD, lean_state_dict

        if "state_dict" in checkpoint:
            checkpoint[FROZEN_RECORD] = lean_state_dict(checkpoint["state_dict"], self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from vdf.models.weights import FROZEN_RECORD, complete_state_dict

        if "state_dict" not in checkpoint:
            return  # an engine restores the weights itself (DeepSpeed)
        if checkpoint.get(FROZEN_RECORD):
            complete_state_dict(checkpoint["state_dict"], checkpoint[FROZEN_RECORD], self, "the checkpoint")
        # A checkpoint of another architecture would otherwise fail deep in load_state_dict with
        # hundreds of key names; say what is wrong and how to fix it in one line.
        theirs = set(checkpoint.get("state_dict", {}))
        ours = set(self.state_dict())
        missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
        if missing or unexpected:
            raise ValueError(
                f"the checkpoint does not fit {type(self).__name__} as configured: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). Use the config the "
                "checkpoint was trained with: runs/<name>/version_N/config.yaml beside it"
            )

    # -- evaluation ---------------------------------------------------------------------------
    def _setup_metrics(self, split: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "dataset_names"):
            names = dm.dataset_names(split)
            datasets = dm.datasets[split]
            depths = [getattr(d, "max_depth", self.eval_max_depth) for d in datasets]
            sizes = [getattr(d, "inference_size", None) for d in datasets]
            default = getattr(dm, "eval_space", "disparity")
            # A dataset may fix its own protocol (space of the fit, boundary F1); else the defaults.
            spaces = [
                check_space(getattr(d, "eval_space", None) or default, f"eval_space of {split} dataset {name!r}")
                for d, name in zip(datasets, names)
            ]
            boundary = [bool(getattr(d, "boundary_f1", False)) for d in datasets]
        else:
            loaders = getattr(self.trainer, f"{split}_dataloaders") or []
            n = len(loaders) if isinstance(loaders, (list, tuple)) else 1
            names = [f"dataloader_{i}" for i in range(n)]
            depths = [self.eval_max_depth] * n
            sizes = [None] * n
            spaces = ["disparity"] * n
            boundary = [False] * n
        self._eval_names = names
        self._eval_sizes = sizes
        self.eval_metrics = nn.ModuleDict(
            {
                name: VideoDepthMetrics(
                    max_depth=depth,
                    compute_boundary_f1=self.compute_boundary_f1 or with_boundary,
                    compute_tae=self.compute_tae,
                    align_space=space,
                    compute_mfc=self.compute_mfc,
                )
                for name, depth, space, with_boundary in zip(names, depths, spaces, boundary)
            }
        ).to(self.device)

    def _eval_step(
        self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False, test: bool = False
    ) -> dict[str, torch.Tensor]:
        """Predict a batch and update its dataset's metrics.

        Validation (``test=False``) runs the clip forward at the data's own size. Test runs at
        ``resolution`` (with the dataset's protocol size when the rule honours one), through the
        strategy when ``stream``; predictions come back at the ground truth's size.
        """
        present = None
        if test:
            requested = self._eval_sizes[dataloader_idx] if dataloader_idx < len(self._eval_sizes) else None
            if stream:
                runs = [self.predictor.run(v, requested) for v in batch["video"]]
                pred = torch.stack([r[0] for r in runs])
                present = torch.stack([r[1] for r in runs])
            else:
                pred = self.predictor.predict_at_resolution(batch["video"], requested)
        else:
            pred = self.predictor.predict_clip(batch["video"])
        pred, valid = pred.float(), batch["valid"]
        if present is not None and not present.all():
            # Frames the strategy's algorithm does not predict are not scored (the others are
            # aligned and scored as usual); a NaN anywhere else still fails the metric.
            keep = present.to(valid.device).view(*present.shape, 1, 1, 1)
            valid = valid & keep
            pred = torch.where(keep.to(pred.device), pred, torch.ones_like(pred))
        self.eval_metrics[self._eval_names[dataloader_idx]].update(
            pred,
            batch["depth"],
            valid,
            intrinsics=batch.get("intrinsics"),
            cam_to_world=batch.get("cam_to_world"),
            pred_space=self.output_space,
        )
        return {"disparity": pred}

    def _log_metrics(self, split: str) -> None:
        per_metric: dict[str, list[torch.Tensor]] = {}
        for name in self._eval_names:
            values = self.eval_metrics[name].compute()
            for key, value in values.items():
                # Metric states are already reduced over ranks, so no sync_dist here.
                self.log(f"{split}/{name}/{key}", value.float())
                if key not in ("num_sequences", "skipped"):
                    per_metric.setdefault(key, []).append(value.float())
            self.eval_metrics[name].reset()
        # Mean over datasets, the number checkpoints and tables select on.
        for key, values in per_metric.items():
            self.log(f"{split}/{key}", torch.stack(values).mean(), prog_bar=key == "abs_rel")

    def on_validation_epoch_start(self) -> None:
        self._setup_metrics("val")

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_start(self) -> None:
        self._use_trainer_precision()
        self._setup_metrics("test")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, dataloader_idx, stream=self.test_with_strategy, test=True)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def on_predict_start(self) -> None:
        self._use_trainer_precision()

    def predict_step(self, batch: dict[str, Any] | VideoSource, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if isinstance(batch, (VideoSource, LiveSource)):
            # A video (or live input) from `vdf predict --input`: returned unread; the writer streams it.
            return VideoPrediction(batch, self.predictor)
        disparity = torch.stack([self.predictor.run(v)[0] for v in batch["video"]])
        return {"disparity": disparity, "frame_index": batch["frame_index"], "meta": batch["meta"]}

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        if not groups:
            raise ValueError(f"{type(self).__name__}: no trainable parameters (everything is frozen)")
        if self.optimizer is None:
            optimizer = torch.optim.AdamW(groups, lr=1e-4, weight_decay=0.01)
        else:
            optimizer = self.optimizer(groups)
        if self.lr_scheduler is None:
            return optimizer
        scheduler = self.lr_scheduler(optimizer)
        if getattr(scheduler, "total_steps", 0) is None:
            scheduler.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
