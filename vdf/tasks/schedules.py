"""Learning-rate schedules the recipes use, as LightningCLI scheduler callables.

In a config (``model.init_args.lr_scheduler``)::

    lr_scheduler:
      class_path: vdf.tasks.schedules.WarmupCosine
      init_args: {warmup_steps: 1000, min_lr_ratio: 0.1}

The task builds them on its optimizer; ``total_steps`` left to None is the trainer's estimated
number of optimizer steps. Both are `LambdaLR` factors stepped every optimizer step.
"""

from __future__ import annotations

import math

import torch


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up to each group's learning rate, then a cosine decay to ``min_lr_ratio`` of it.

    Args:
        optimizer: the optimizer (given by the task).
        warmup_steps: linear warm-up length, ``(step + 1) / warmup_steps``.
        min_lr_ratio: the final factor of the decay (1.0: constant after the warm-up).
        total_steps: steps of warm-up plus decay; None: the trainer's estimate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        total_steps: int | None = None,
    ):
        if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got {warmup_steps}, {min_lr_ratio}")
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio
        self.total_steps = total_steps
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        total = max(self.total_steps or 1, 1)
        progress = min((step - self.warmup_steps) / max(total - self.warmup_steps, 1), 1.0)
        floor = self.min_lr_ratio
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupConstant(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up from ``start_factor`` to 1, then constant (FlashDepth's schedule).

    Args:
        optimizer: the optimizer (given by the task).
        warmup_steps: warm-up length in optimizer steps (0: constant from the start).
        start_factor: the factor at step 0 (FlashDepth: 1e-4).
    """

    total_steps = None  # not used: the schedule does not depend on the run's length

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int = 1000, start_factor: float = 1e-4):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        if self.warmup_steps <= 0 or step >= self.warmup_steps:
            return 1.0
        return self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
