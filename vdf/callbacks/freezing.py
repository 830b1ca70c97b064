"""`StagedFreezing`: train all, only the spatial or only the temporal layers of a video UNet, by stage.

DepthCrafter trains in three stages (all layers on 1–25 frames; temporal layers only on 1–110
frames; spatial layers only on 45 frames), ChronoDepth in two (spatial on single frames, then
temporal on 1–5 frames). The split is `vdf.models.svd.parameter_group`.

Freezing happens in ``setup``, before Lightning's strategy wraps the model: frozen parameters get
``requires_grad=False``, so DDP neither synchronises nor allocates gradient buckets for them, they
never hold a ``.grad``, and the optimizer only sees the trainable ones.

Sharded strategies (``configs/strategy/``) see the same flags, because they too wrap the model
after ``setup``:

- **FSDP** (`vdf.tasks.sharding.FSDPStrategy`) must keep the original parameters
  (``use_orig_params=True``, checked here): the spatial/temporal names stay addressable after
  wrapping, the optimizer gets exactly the trainable original parameters, frozen ones never get a
  ``.grad``; and `vdf.models.sharding.VDFWrapPolicy` makes every FSDP unit all-spatial or
  all-temporal, so a frozen group's units require no gradient and FSDP reduces nothing for them.
- **DeepSpeed** (ZeRO-2/3) builds its engine over the optimizer's parameters, which are the
  trainable ones only: frozen parameters are neither partitioned into gradient buckets nor reduced.

A schedule with several stages switches at the given global steps. On one process the switch
re-freezes and rebuilds the optimizer (its state and the learning-rate schedule restart, as at a
new stage). Under DDP and FSDP the set of synchronised parameters is fixed when the model is
wrapped, and DeepSpeed's engine owns its optimizer, so there a switch cannot keep ranks identical
(or rebuild the optimizer): the callback refuses such a schedule at setup and asks for one run per
stage (``init_weights`` carries the weights across).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn

from vdf.models.svd import parameter_group

Trainable = Literal["all", "spatial", "temporal"]


@dataclass
class FreezeStage:
    """From ``start_step`` (global optimizer step) on, train ``trainable`` layers."""

    trainable: Trainable = "all"
    start_step: int = 0


def apply_trainable(module: nn.Module, trainable: Trainable) -> tuple[int, int]:
    """Set ``requires_grad`` of ``module``'s parameters; frozen ones lose their ``.grad``.

    Returns the number of trainable and frozen parameter tensors.
    """
    if trainable not in ("all", "spatial", "temporal"):
        raise ValueError(f"trainable must be 'all', 'spatial' or 'temporal', got {trainable!r}")
    counts = [0, 0]
    for name, param in module.named_parameters():
        train = trainable == "all" or parameter_group(name) == trainable
        param.requires_grad_(train)
        if not train:
            param.grad = None
        counts[0 if train else 1] += 1
    return counts[0], counts[1]


class StagedFreezing(Callback):
    """Freeze the video UNet's layers by stage (see the module docstring).

    Args:
        trainable: the layers trained in a single-stage run (``all``, ``spatial``, ``temporal``).
        stages: a schedule of stages instead (``[{trainable: all}, {trainable: temporal, start_step: 1000}]``).
        module: attribute path of the network inside the task.
    """

    def __init__(
        self,
        trainable: Trainable = "all",
        stages: list[FreezeStage] | None = None,
        module: str = "predictor.denoiser.unet",
    ):
        stages = list(stages) if stages else [FreezeStage(trainable, 0)]
        stages = [s if isinstance(s, FreezeStage) else FreezeStage(**s) for s in stages]
        starts = [s.start_step for s in stages]
        if starts[0] != 0 or starts != sorted(set(starts)):
            raise ValueError(f"stage start steps must begin at 0 and increase strictly, got {starts}")
        for s in stages:
            if s.trainable not in ("all", "spatial", "temporal"):
                raise ValueError(f"trainable must be 'all', 'spatial' or 'temporal', got {s.trainable!r}")
        self.stages = stages
        self.module = module
        self.current: int | None = None

    def _network(self, pl_module: L.LightningModule) -> nn.Module:
        target = pl_module
        for part in self.module.split("."):
            if not hasattr(target, part):
                raise AttributeError(f"StagedFreezing: {type(pl_module).__name__} has no {self.module!r}")
            target = getattr(target, part)
        return target

    def stage_at(self, step: int) -> int:
        return max(i for i, s in enumerate(self.stages) if s.start_step <= step)

    def _apply(self, pl_module: L.LightningModule, index: int) -> None:
        apply_trainable(self._network(pl_module), self.stages[index].trainable)
        self.current = index

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

        strategy = getattr(trainer, "strategy", None)
        if isinstance(strategy, FSDPStrategy) and not strategy.kwargs.get("use_orig_params", False):
            raise RuntimeError(
                "StagedFreezing under FSDP needs use_orig_params=True (the spatial/temporal parameters must stay "
                "addressable after wrapping): use configs/strategy/fsdp.yaml (vdf.tasks.sharding.FSDPStrategy)"
            )
        if len(self.stages) > 1 and isinstance(strategy, DeepSpeedStrategy):
            raise RuntimeError(
                "StagedFreezing: a stage switch during a run is not possible under DeepSpeed (its engine owns the "
                "optimizer built at setup). Run each stage as its own `vdf fit` with one `trainable` and pass the "
                "previous stage's checkpoint as model.init_args.init_weights"
            )
        if len(self.stages) > 1 and trainer.world_size > 1:
            raise RuntimeError(
                f"StagedFreezing: a stage switch during a run is not possible with {trainer.world_size} processes "
                "(DDP fixes the synchronised parameters when it wraps the model, so ranks would drift apart). "
                "Run each stage as its own `vdf fit` with one `trainable` and pass the previous stage's "
                "checkpoint as model.init_args.init_weights"
            )
        # Before the strategy wraps the model: DDP only registers what requires grad.
        self._apply(pl_module, 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A resumed run may start inside a later stage.
        self._maybe_switch(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self._maybe_switch(trainer, pl_module)

    def _maybe_switch(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        index = self.stage_at(trainer.global_step)
        if index == self.current:
            return
        self._apply(pl_module, index)
        if trainer.optimizers:
            # A fresh optimizer over this stage's parameters; its schedule restarts with it.
            trainer.strategy.setup_optimizers(trainer)
