"""`FlashDepthTask`: FlashDepth trained with BPTT over short clips, run by streaming.

Training follows the paper's recipe: clips of 5 frames (the datamodule's ``num_frames``), the
recurrent state restarted at every clip and carried through its frames with full BPTT, L1
between the prediction and ``100/depth`` (the official target; or the scale-and-shift-invariant
loss), AdamW (0.9, 0.95) with one learning rate per module group and a warm-up from 1e-4x, then
constant. Stage 1 initialises S or L from the official Depth-Anything-V2 weights (the net's
``dav2_weights``); stage 2 trains the hybrid from a FlashDepth-S checkpoint
(``student_weights``) with the ViT-L teacher frozen (``teacher_weights``, a FlashDepth-L
checkpoint).

Frame sizes. The network sees the frames at their own size, as the official code: training clips
at the data's crop size, and at test and predict time the size of the config's ``resolution`` rule
(the official inference reader's: long side capped at 2044, then each side rounded up to a
multiple of 14, `vdf.inference.resolution.CapThenRoundToMultiple`). A side that is not a multiple
of 14 is rounded up (bicubic, clipped to [0,1]), as the official Depth-Anything preprocessing does
for every frame, and the prediction is resized back (bilinear, ``align_corners=True``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdf.inference.base import LongVideoStrategy
from vdf.inference.resolution import Resolution, RoundToMultiple
from vdf.inference.streaming import Streaming
from vdf.models.dav2 import normalize_imagenet, preprocess_frames
from vdf.models.flashdepth import FlashDepth
from vdf.tasks.base import VideoDepthTask
from vdf.tasks.losses import InverseDepthL1Loss

# The official Depth-Anything preprocessing of every frame: each side rounded up to a multiple of
# 14 (``Resize(lower_bound, ensure_multiple_of=14)`` at the frame's own size), bicubic, then
# clipped to [0,1]. A no-op on frames already at such a size (the paper's crops, and frames a
# `CapThenRoundToMultiple` rule has prepared).
_PATCH_MULTIPLE = RoundToMultiple(max_size=None, multiple=14, rounding="up", mode="bicubic", clip=True)


class FlashDepthTask(VideoDepthTask):
    """FlashDepth S, L or the hybrid (the ``net``'s variant).

    Args:
        net: the FlashDepth network; weights load through its ``weights`` (official FlashDepth),
            ``dav2_weights``, ``student_weights`` and ``teacher_weights`` arguments.
        input_size: vdf option, not the official pipeline: resize every frame so that its short
            side is ``input_size`` (Depth-Anything-V2's multiple-of-14 rule) before the network, in
            training, validation, test and predict alike. None (default, official): no resize
            beyond rounding the sides up to multiples of 14. Do not combine it with a
            ``resolution`` rule that resizes too.
        loss: default `InverseDepthL1Loss` (L1 between the prediction and ``100/depth``, the
            official target and loss); `ScaleShiftInvariantLoss` is the option.
        vit_lr, dpt_lr, mamba_lr, fusion_lr: learning rates of the module groups (the paper's).
        warmup_steps: warm-up from 1e-4x to 1x, then constant (``min_lr_ratio`` unused).
        freeze_vit: keep the student's ViT fixed.
        gradient_checkpointing: recompute ViT/DPT activations in backward (the paper's setting).
        strategy: long-video strategy; default `Streaming` (one frame at a time, carried state).
    """

    def __init__(
        self,
        net: FlashDepth,
        input_size: int | None = None,
        loss: nn.Module | None = None,
        vit_lr: float = 5e-6,
        dpt_lr: float = 5e-5,
        mamba_lr: float = 1e-4,
        fusion_lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        freeze_vit: bool = False,
        gradient_checkpointing: bool = False,
        eval_max_depth: float = 80.0,
        boundary_f1: bool = False,
        tae: bool = False,
        strategy: LongVideoStrategy | None = None,
        test_with_strategy: bool = True,
        resolution: Resolution | None = None,
    ):
        super().__init__(
            loss=loss if loss is not None else InverseDepthL1Loss(scale=100.0),
            lr=dpt_lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            eval_max_depth=eval_max_depth,
            boundary_f1=boundary_f1,
            tae=tae,
            strategy=strategy if strategy is not None else Streaming(),
            test_with_strategy=test_with_strategy,
            resolution=resolution,
        )
        self.save_hyperparameters(ignore=["net", "loss", "strategy", "resolution"])
        if gradient_checkpointing:
            net.set_grad_checkpointing(True)
        if freeze_vit:
            net.pretrained.requires_grad_(False)
        if input_size is not None and type(self.resolution) is not Resolution:
            raise ValueError(
                f"input_size={input_size} and resolution {type(self.resolution).__name__} would both resize the "
                "frames at test and predict time; set one of them"
            )
        self.net = net
        self.input_size = input_size
        self.group_lrs = {"vit": vit_lr, "dpt": dpt_lr, "mamba": mamba_lr, "fusion": fusion_lr}

    def _prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> ImageNet-normalised, sides multiples of 14."""
        if self.input_size is not None:
            return preprocess_frames(frames, self.input_size)
        size = _PATCH_MULTIPLE.size(*frames.shape[-2:])
        return normalize_imagenet(_PATCH_MULTIPLE.prepare(frames, size))

    @staticmethod
    def _back(disparity: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``(N,1,h',w')`` -> ``(N,1,h,w)``: bilinear, ``align_corners=True`` (the official evaluation's)."""
        if tuple(disparity.shape[-2:]) == (h, w):
            return disparity
        return F.interpolate(disparity, size=(h, w), mode="bilinear", align_corners=True)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = video.shape
        images = self._prepare(video.reshape(b * t, 3, h, w))
        disparity, _ = self.net(images.reshape(b, t, *images.shape[1:]))
        return self._back(disparity.flatten(0, 1), h, w).reshape(b, t, 1, h, w)

    @torch.no_grad()
    def stream_step(self, frame: torch.Tensor, state: Any | None) -> tuple[torch.Tensor, Any]:
        """The `Streaming` call: ``(1,3,H,W)`` in [0,1] + state -> ``(1,1,H,W)`` disparity + state."""
        frame = frame.to(self.device)
        h, w = frame.shape[-2:]
        if state is None:
            state = self.net.init_state(frame.shape[0], device=self.device)
        disparity, state = self.net.step(self._prepare(frame), state)
        return self._back(disparity, h, w).float(), state

    def param_groups(self) -> list[dict[str, Any]]:
        groups = self.net.param_groups_by_module()
        return [
            {"params": [p for p in groups.get(name, []) if p.requires_grad], "lr": lr, "name": name}
            for name, lr in self.group_lrs.items()
        ]

    def configure_optimizers(self):
        groups = [g for g in self.param_groups() if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95), weight_decay=self.weight_decay)
        warmup = self.warmup_steps

        def factor(step: int) -> float:
            # The paper's schedule: linear from 1e-4x to 1x over the warm-up, then constant.
            return 1.0 if warmup <= 0 or step >= warmup else 1e-4 + (1 - 1e-4) * step / warmup

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
