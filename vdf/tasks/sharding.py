"""`FSDPStrategy`: Lightning's FSDP strategy as vdf's recipes use it (``configs/strategy/fsdp.yaml``).

Five differences from ``lightning.pytorch.strategies.FSDPStrategy``, all small:

- **original parameters are required** (``use_orig_params=True``, Lightning's default, which this
  class refuses to turn off): `vdf.callbacks.freezing.StagedFreezing`, the per-module learning
  rates of the tasks (`VideoDepthTask.param_groups`) and the spatial/temporal split address
  parameters by their original names after wrapping, and a unit may then mix frozen and
  trainable parameters;
- **frozen networks are replicated, not sharded**: the modules a model marks as never trained
  (`vdf.models.weights.mark_frozen`: the SVD families' VAE and CLIP image encoder, FlashDepth
  (Full)'s teacher) are FSDP's ``ignored_modules``. They hold no gradient or optimizer state, so
  sharding would save only their weights, and it would cost collectives whose number depends on
  each rank's data: the VAE and CLIP run once per chunk of frames, so ranks with clips of
  different lengths would call them a different number of times and deadlock;
- **gradient clipping by norm works** (the recipes clip at 1.0): Lightning's FSDP precision
  refuses it, because each rank holds only a shard of the gradients; vdf clips with FSDP's own
  ``clip_grad_norm_``, whose norm is over all shards;
- **lean checkpoints load**: Lightning's FSDP loads a full checkpoint's weights itself, before
  the task's ``on_load_checkpoint`` could put back the frozen modules a lean checkpoint leaves
  out (`vdf.models.weights.lean_state_dict`); this class completes the state dict as it is read
  (`vdf.models.weights.complete_state_dict`: rebuilt modules, fingerprints checked);
- **CPU is allowed** (gloo): Lightning's accelerator connector only accepts its own FSDP class on
  CUDA, and it gives FSDP no device on CPU, where PyTorch's FSDP then refuses to guess one;
  PyTorch's FSDP itself runs on a CPU process group when told ``device_id=cpu``. vdf uses this
  to test sharded training on a CPU (``tests/test_sharding.py``); on GPUs the class behaves
  exactly as Lightning's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy as _LightningFSDPStrategy
from lightning.pytorch.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing
from torch import nn


class FSDPStrategy(_LightningFSDPStrategy):
    """Lightning's FSDP with original parameters kept (see the module docstring); same arguments."""

    strategy_name = "vdf_fsdp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("use_orig_params") is False:
            raise ValueError(
                "vdf's FSDPStrategy needs use_orig_params=True: staged freezing and per-module learning rates "
                "address the original parameters after wrapping"
            )
        super().__init__(*args, **kwargs)
        self.kwargs["use_orig_params"] = True

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        from vdf.models.weights import frozen_modules

        frozen = [m for m in frozen_modules(model).values() if not any(p.requires_grad for p in m.parameters())]
        if frozen and "ignored_modules" not in self.kwargs and "ignored_states" not in self.kwargs:
            self.kwargs["ignored_modules"] = frozen
        for module in self.kwargs.get("ignored_modules") or []:
            module.to(self.root_device)  # FSDP moves only what it manages
        if self.root_device.type != "cpu":
            return self._clip_with(super()._setup_model(model))

        if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            raise ValueError("vdf's FSDPStrategy on CPU wraps the task itself; it is already wrapped in FSDP")
        # Lightning's wrapping with the one difference: the CPU named as FSDP's device.
        model = FullyShardedDataParallel(
            module=model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        _move_torchmetrics_to_device(model, self.root_device)
        _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        return self._clip_with(model)

    def _clip_with(self, model: nn.Module) -> nn.Module:
        def clip_grad_by_norm(optimizer: Any, clip_val: float) -> None:
            model.clip_grad_norm_(clip_val)

        self.precision_plugin.clip_grad_by_norm = clip_grad_by_norm
        return model

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        from lightning.pytorch.strategies import fsdp as lightning_fsdp

        from vdf.models.weights import FROZEN_RECORD, complete_state_dict

        read = lightning_fsdp._lazy_load
        task = self.lightning_module

        def read_completed(path: Any) -> dict[str, Any]:
            checkpoint = read(path)
            if checkpoint.get(FROZEN_RECORD) and "state_dict" in checkpoint:
                complete_state_dict(
                    checkpoint["state_dict"], checkpoint[FROZEN_RECORD], task, f"checkpoint {Path(path)}"
                )
            return checkpoint

        lightning_fsdp._lazy_load = read_completed
        try:
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        finally:
            lightning_fsdp._lazy_load = read
