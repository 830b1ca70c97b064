"""`FrameDepthTask`: a per-frame depth network trained and evaluated on clips, frame by frame.

This is the Depth-Anything-V2 baseline of every table: the network sees each frame alone, so its
predictions share no scale across frames. Training uses an affine-invariant loss per frame.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vdf.inference.base import LongVideoStrategy
from vdf.inference.resolution import Resolution
from vdf.models.dav2 import DepthAnythingV2, FrameWiseDepth
from vdf.tasks.base import VideoDepthTask
from vdf.tasks.losses import ScaleShiftInvariantLoss


class FrameDepthTask(VideoDepthTask):
    """Depth-Anything-V2 applied frame by frame.

    Args:
        net: the per-frame network (ImageNet-normalised ``(B,3,H,W)`` -> ``(B,1,H,W)`` disparity);
            official weights load through its ``weights`` argument.
        input_size: processing short side (rounded to multiples of 14, the official rule).
        antialias: antialias when downscaling to the processing size. The official pipeline
            resizes with OpenCV bicubic without antialiasing (False reproduces its numbers).
        frame_chunk: frames per forward pass (bounds activation memory on long clips).
        loss: training loss; default the per-frame scale-and-shift-invariant loss in disparity.
        lr: learning rate of the DPT head.
        encoder_lr: learning rate of the ViT encoder (DAv2 fine-tunes it 10x slower).
        freeze_encoder: keep the ViT fixed (only the head trains).
        strategy: long-video strategy for ``vdf test`` / ``vdf predict`` (default `PerFrame`).
        **kwargs: the rest of `VideoDepthTask`'s arguments (weight decay, warm-up, evaluation).
    """

    def __init__(
        self,
        net: DepthAnythingV2,
        input_size: int = 518,
        antialias: bool = False,
        frame_chunk: int = 32,
        loss: nn.Module | None = None,
        lr: float = 5e-5,
        encoder_lr: float = 5e-6,
        freeze_encoder: bool = False,
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
        super().__init__(
            loss=loss if loss is not None else ScaleShiftInvariantLoss(per="frame"),
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
            eval_max_depth=eval_max_depth,
            boundary_f1=boundary_f1,
            tae=tae,
            strategy=strategy,
            test_with_strategy=test_with_strategy,
            resolution=resolution,
        )
        self.save_hyperparameters(ignore=["net", "loss", "strategy", "resolution"])
        self.model = FrameWiseDepth(net, input_size=input_size, frame_chunk=frame_chunk, antialias=antialias)
        self.encoder_lr = encoder_lr
        if freeze_encoder:
            net.pretrained.requires_grad_(False)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.model(video)

    def param_groups(self) -> list[dict[str, Any]]:
        net = self.model.net
        return [
            {"params": [p for p in net.pretrained.parameters() if p.requires_grad], "lr": self.encoder_lr},
            {"params": [p for p in net.depth_head.parameters() if p.requires_grad], "lr": self.lr},
        ]
