"""`FrameDepthTask`: a per-frame depth network trained and evaluated on clips, frame by frame.

This is the Depth-Anything-V2 baseline of every table: the network sees each frame alone, so its
predictions share no scale across frames. Training uses an affine-invariant loss per frame.
"""

from __future__ import annotations

from typing import Any

from vdf.predictors.frame import FramePredictor
from vdf.tasks.base import VideoDepthTask
from vdf.tasks.losses import ScaleShiftInvariantLoss


class FrameDepthTask(VideoDepthTask):
    """Depth-Anything-V2 applied frame by frame.

    Args:
        predictor: the per-frame predictor (`vdf.predictors.FramePredictor`).
        encoder_lr: learning rate of the ViT encoder (DAv2 fine-tunes it 10x slower than the
            head, which takes the optimiser's learning rate).
        freeze_encoder: keep the ViT fixed (only the head trains).
        **kwargs: `VideoDepthTask`'s arguments; the default loss is the per-frame
            scale-and-shift-invariant loss in disparity.
    """

    def __init__(self, predictor: FramePredictor, encoder_lr: float = 5e-6, freeze_encoder: bool = False, **kwargs):
        kwargs.setdefault("loss", None)
        if kwargs["loss"] is None:
            kwargs["loss"] = ScaleShiftInvariantLoss(per="frame")
        super().__init__(predictor=predictor, **kwargs)
        self.encoder_lr = encoder_lr
        if freeze_encoder:
            predictor.net.pretrained.requires_grad_(False)

    def param_groups(self) -> list[dict[str, Any]]:
        net = self.predictor.net
        return [
            {"params": [p for p in net.pretrained.parameters() if p.requires_grad], "lr": self.encoder_lr},
            {"params": [p for p in net.depth_head.parameters() if p.requires_grad]},
        ]
