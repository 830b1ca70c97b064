"""Callbacks for ``tests/test_sharding.py`` (``--trainer.callbacks+=sharding_helpers.X``, ``tests/`` on
``PYTHONPATH``): they run inside ``python -m vdf fit`` subprocesses, one per rank."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist

from vdf.models.svd import parameter_group


def _clean(name: str) -> str:
    return name.replace("_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


class RecordSharding(L.Callback):
    """Writes ``sharding_record/rank<r>.pt``: what each optimizer step saw after the backward pass.

    Per step (``on_before_optimizer_step``: gradients reduced, before the update): the names of
    the parameters in the optimizer, the UNet's temporal (trainable) and spatial (frozen) names,
    the frozen parameters holding a ``.grad``, and under FSDP the number of gradient elements
    reduce-scattered since the previous step together with the padded sizes of the flat
    parameters that require a gradient and of those that do not.
    """

    def __init__(self, out_dir: str = "sharding_record") -> None:
        self.out_dir = out_dir
        self.steps: list[dict[str, Any]] = []
        self.reduced = 0
        self.frames = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self.frames = int(batch["video"].shape[1])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1:  # the unsharded run: its UNet's initial weights
            self.initial = {k: v.detach().clone() for k, v in pl_module.state_dict().items() if ".unet." in k}
        name = "reduce_scatter_single" if hasattr(dist, "reduce_scatter_single") else "reduce_scatter_tensor"
        original = getattr(dist, name)

        def counting(output, input, *args, **kwargs):
            self.reduced += input.numel()
            return original(output, input, *args, **kwargs)

        setattr(dist, name, counting)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        names = {id(p): _clean(n) for n, p in pl_module.named_parameters()}
        in_optimizer = sorted(names[id(p)] for g in optimizer.param_groups for p in g["params"])
        unet = [(n, p) for n, p in pl_module.named_parameters() if ".denoiser.unet." in _clean(n)]
        temporal = sorted(_clean(n) for n, _ in unet if parameter_group(_clean(n)) == "temporal")
        spatial = sorted(_clean(n) for n, _ in unet if parameter_group(_clean(n)) == "spatial")
        frozen_with_grad = sorted(
            _clean(n) for n, p in pl_module.named_parameters() if not p.requires_grad and p.grad is not None
        )
        world = trainer.world_size
        flat = [m._flat_param for m in trainer.strategy.model.modules() if getattr(m, "_flat_param", None) is not None]

        def padded(p: torch.Tensor) -> int:  # FSDP pads a flat parameter to a multiple of the world size
            return math.ceil(p._unpadded_unsharded_size.numel() / world) * world

        self.steps.append(
            {
                "frames": self.frames,
                "in_optimizer": in_optimizer,
                "temporal": temporal,
                "spatial": spatial,
                "frozen_with_grad": frozen_with_grad,
                "reduced": self.reduced,
                "trainable_flat": sum(padded(p) for p in flat if p.requires_grad),
                "frozen_flat": sum(padded(p) for p in flat if not p.requires_grad),
                "num_flat": len(flat),
            }
        )
        self.reduced = 0

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(self.out_dir)
        path.mkdir(parents=True, exist_ok=True)
        record = {"steps": self.steps, "world_size": trainer.world_size, "initial": getattr(self, "initial", None)}
        torch.save(record, path / f"rank{trainer.global_rank}.pt")
