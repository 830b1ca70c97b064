"""`VideoDepthTask`: the Lightning glue every vdf task shares (no architecture here).

A task subclass provides ``forward(video) -> disparity`` and, for training, ``loss`` and
``param_groups``. This base class runs the loss, evaluates every validation/test dataset with
the published protocol (`vdf.metrics.VideoDepthMetrics`, one per dataset), returns predictions,
and builds AdamW with per-group learning rates, linear warm-up and cosine decay.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import nn

from vdf.inference.base import LongVideoStrategy
from vdf.inference.stream import VideoPrediction
from vdf.inference.per_frame import PerFrame
from vdf.inference.resolution import Resolution, run_at_resolution
from vdf.io import VideoSource
from vdf.metrics import VideoDepthMetrics


class VideoDepthTask(L.LightningModule):
    """Base of all tasks.

    Args:
        loss: training loss on ``(pred disparity, depth, valid)``, each ``(B,T,1,H,W)``.
        lr: base learning rate (groups scale it, see ``param_groups``).
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up length in optimizer steps.
        min_lr_ratio: final learning rate of the cosine decay, as a fraction of each group's.
        eval_max_depth: depth cap for evaluation when the datamodule does not say (metres).
        boundary_f1: also compute boundary F1 in validation/test (slower).
        tae: also compute TAE in validation/test when the dataset has poses.
        strategy: how long videos are run (`vdf.inference`); default `PerFrame` in batches of 8.
        test_with_strategy: run ``vdf test`` sequences through ``strategy`` (as ``vdf predict``
            does) rather than as one clip forward; validation always uses the clip forward.
        resolution: the size the network sees at test and predict time and the way back to the
            input's size (`vdf.inference.resolution`); default: the frames' own size.
    """

    def __init__(
        self,
        loss: nn.Module | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        eval_max_depth: float = 80.0,
        boundary_f1: bool = False,
        tae: bool = False,
        strategy: LongVideoStrategy | None = None,
        test_with_strategy: bool = True,
        resolution: Resolution | None = None,
    ):
        super().__init__()
        self.loss = loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.eval_max_depth = eval_max_depth
        self.compute_boundary_f1 = boundary_f1
        self.compute_tae = tae
        self.strategy = strategy if strategy is not None else PerFrame(batch_size=8)
        self.test_with_strategy = test_with_strategy
        self.resolution = resolution if resolution is not None else Resolution()
        self.eval_metrics = nn.ModuleDict()
        self._eval_names: list[str] = []
        self._eval_sizes: list[tuple[int, int] | None] = []

    # -- model side ---------------------------------------------------------------------------
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``video`` (B,T,3,H,W) in [0,1] -> relative disparity (B,T,1,H,W)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_clip(self, video: torch.Tensor) -> torch.Tensor:
        """The clip forward strategies call: ``(B,T,3,H,W)`` -> ``(B,T,1,H,W)`` float32, no grad."""
        return self(video.to(self.device)).float()

    def run_strategy(self, video: torch.Tensor, requested: tuple[int, int] | None = None) -> torch.Tensor:
        """One sequence ``(T,3,H,W)`` through ``strategy`` at ``resolution`` -> ``(T,1,H,W)``.

        ``requested`` is the dataset's protocol size (used when the resolution rule honours it).
        Frames the strategy gives no prediction are NaN (see `run_strategy_with_mask`).
        """
        return self.run_strategy_with_mask(video, requested)[0]

    def run_strategy_with_mask(self, video: torch.Tensor, requested: tuple[int, int] | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        """`run_strategy` plus bool ``(T,)``: which frames the strategy predicted."""
        h, w = video.shape[-2:]
        missing = torch.full((1, h, w), float("nan"), device=self.device)
        outputs = list(run_at_resolution(self.resolution, self.strategy, self, iter(video), requested))
        present = torch.tensor([out is not None for out in outputs], dtype=torch.bool)
        pred = torch.stack([missing if out is None else out.to(self.device) for out in outputs])
        return pred, present

    def predict_at_resolution(self, video: torch.Tensor, requested: tuple[int, int] | None = None) -> torch.Tensor:
        """The clip forward at ``resolution``: ``(B,T,3,H,W)`` -> ``(B,T,1,H,W)`` at the input size."""
        b, t, _, h, w = video.shape
        size = self.resolution.size(h, w, requested)
        frames = self.resolution.prepare(video.flatten(0, 1), size)
        pred = self(frames.reshape(b, t, *frames.shape[1:]))
        return self.resolution.restore(pred.flatten(0, 1).float(), h, w).reshape(b, t, 1, h, w)

    def precision_context(self):
        """The trainer's precision context (autocast under ``16-mixed``/``bf16-mixed``), for model
        calls made outside Lightning's own steps (the predict writer iterates strategies lazily)."""
        import contextlib

        trainer = self._trainer
        if trainer is None:
            return contextlib.nullcontext()
        return trainer.precision_plugin.forward_context()

    @property
    def output_space(self) -> str:
        """The space of this model's affine-invariant prediction: ``disparity`` or ``depth``."""
        return "disparity"

    def param_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; each may set ``lr``. Default: all trainable parameters."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": self.lr}]

    # -- training -----------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The scalar training loss of a batch; default: ``loss`` on the forward's prediction."""
        if self.loss is None:
            raise ValueError(f"{type(self).__name__} has no loss: set model.init_args.loss in the config")
        return self.loss(self(batch["video"]), batch["depth"], batch["valid"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
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
            depths = [getattr(d, "max_depth", self.eval_max_depth) for d in dm.datasets[split]]
            sizes = [getattr(d, "inference_size", None) for d in dm.datasets[split]]
            space = getattr(dm, "eval_space", "disparity")
        else:
            loaders = getattr(self.trainer, f"{split}_dataloaders") or []
            n = len(loaders) if isinstance(loaders, (list, tuple)) else 1
            names = [f"dataloader_{i}" for i in range(n)]
            depths = [self.eval_max_depth] * n
            sizes = [None] * n
            space = "disparity"
        self._eval_names = names
        self._eval_sizes = sizes
        self.eval_metrics = nn.ModuleDict(
            {
                name: VideoDepthMetrics(
                    max_depth=depth,
                    compute_boundary_f1=self.compute_boundary_f1,
                    compute_tae=self.compute_tae,
                    align_space=space,
                )
                for name, depth in zip(names, depths)
            }
        ).to(self.device)

    def _eval_step(self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False,
                   test: bool = False) -> dict[str, torch.Tensor]:
        """Predict a batch and update its dataset's metrics.

        Validation (``test=False``) runs the clip forward at the data's own size. Test runs at
        ``resolution`` (with the dataset's protocol size when the rule honours one), through the
        strategy when ``stream``; predictions come back at the ground truth's size.
        """
        present = None
        if test:
            requested = self._eval_sizes[dataloader_idx] if dataloader_idx < len(self._eval_sizes) else None
            if stream:
                runs = [self.run_strategy_with_mask(v, requested) for v in batch["video"]]
                pred = torch.stack([r[0] for r in runs])
                present = torch.stack([r[1] for r in runs])
            else:
                pred = self.predict_at_resolution(batch["video"], requested)
        else:
            pred = self(batch["video"])
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
        self._setup_metrics("test")

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        return self._eval_step(batch, dataloader_idx, stream=self.test_with_strategy, test=True)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: dict[str, Any] | VideoSource, batch_idx: int, dataloader_idx: int = 0) -> Any:
        if isinstance(batch, VideoSource):
            # A video from `vdf predict --input`: returned unread; the writer streams it.
            return VideoPrediction(batch, self, self.strategy, self.resolution, self.precision_context)
        disparity = torch.stack([self.run_strategy(v) for v in batch["video"]])
        return {"disparity": disparity, "frame_index": batch["frame_index"], "meta": batch["meta"]}

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        if not groups:
            raise ValueError(f"{type(self).__name__}: no trainable parameters (everything is frozen)")
        optimizer = torch.optim.AdamW(groups, lr=self.lr, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup, floor = self.warmup_steps, self.min_lr_ratio

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min((step - warmup) / max(total - warmup, 1), 1.0)
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
