"""`VideoDepthAnythingTask`: Video-Depth-Anything trained on clips with its released loss.

The network sees clips of up to 32 frames (the length of its temporal position table) in one
forward; the loss is the released one (`vdf.tasks.losses.VideoDepthAnythingLoss`: per-frame
trimmed Procrustes with multi-scale gradient matching, plus temporal gradient matching on the
clip-aligned prediction). The training recipe itself (data mix, schedules, which parts train) is
not released; the configs' choices are vdf's and say so. Inference (offline windows or streaming)
is the predictor's: `vdf.predictors.VideoDepthAnythingPredictor`.
"""

from __future__ import annotations

from typing import Any

from vdf.predictors.vda import VideoDepthAnythingPredictor
from vdf.tasks.base import VideoDepthTask
from vdf.tasks.losses import VideoDepthAnythingLoss


class VideoDepthAnythingTask(VideoDepthTask):
    """Video-Depth-Anything S, B or L.

    Args:
        predictor: the predictor (`vdf.predictors.VideoDepthAnythingPredictor`).
        encoder_lr: learning rate of the ViT encoder; the DPT and the temporal modules take the
            optimiser's.
        freeze_encoder: keep the ViT fixed (the temporal head trains on top of DAv2's features).
        freeze_spatial_head: keep the DPT's own layers fixed too, so that only the temporal
            modules train (they start as the identity: the network starts as DAv2).
        **kwargs: `VideoDepthTask`'s arguments; the default loss is `VideoDepthAnythingLoss`.
    """

    def __init__(
        self,
        predictor: VideoDepthAnythingPredictor,
        encoder_lr: float = 5e-6,
        freeze_encoder: bool = False,
        freeze_spatial_head: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("loss", None)
        if kwargs["loss"] is None:
            kwargs["loss"] = VideoDepthAnythingLoss()
        super().__init__(predictor=predictor, **kwargs)
        self.encoder_lr = encoder_lr
        net = predictor.net
        if freeze_encoder:
            net.pretrained.requires_grad_(False)
        if freeze_spatial_head:
            for name, module in net.head.named_children():
                if name != "motion_modules":
                    module.requires_grad_(False)

    def param_groups(self) -> list[dict[str, Any]]:
        net = self.predictor.net
        return [
            {"params": [p for p in net.pretrained.parameters() if p.requires_grad], "lr": self.encoder_lr},
            {"params": [p for p in net.head.parameters() if p.requires_grad]},
        ]
