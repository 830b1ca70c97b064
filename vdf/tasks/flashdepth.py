"""`FlashDepthTask`: FlashDepth trained with BPTT over short clips, run by streaming.

Training follows the paper's recipe: clips of 5 frames (the datamodule's ``num_frames``), the
recurrent state restarted at every clip and carried through its frames with full BPTT, L1
between the prediction and ``100/depth`` (the official target; or the scale-and-shift-invariant
loss), AdamW (0.9, 0.95) with one learning rate per module group and a warm-up from 1e-4x, then
constant (`vdf.tasks.schedules.WarmupConstant`, set in the configs). Stage 1 initialises S or L
from the official Depth-Anything-V2 weights (the net's ``dav2_weights``); stage 2 trains the
hybrid from a FlashDepth-S checkpoint (``student_weights``) with the ViT-L teacher frozen
(``teacher_weights``, a FlashDepth-L checkpoint). Inference (frame sizes, streaming) is the
predictor's: `vdf.predictors.FlashDepthPredictor`.
"""

from __future__ import annotations

from typing import Any

from vdf.predictors.flashdepth import FlashDepthPredictor
from vdf.tasks.base import VideoDepthTask
from vdf.tasks.losses import InverseDepthL1Loss


class FlashDepthTask(VideoDepthTask):
    """FlashDepth S, L or the hybrid (the predictor's network variant).

    Args:
        predictor: the FlashDepth predictor (`vdf.predictors.FlashDepthPredictor`).
        vit_lr, dpt_lr, mamba_lr, fusion_lr: learning rates of the module groups (the paper's).
        freeze_vit: keep the student's ViT fixed.
        gradient_checkpointing: recompute ViT/DPT activations in backward (the paper's setting).
        **kwargs: `VideoDepthTask`'s arguments; the default loss is `InverseDepthL1Loss` (L1
            between the prediction and ``100/depth``, the official target and loss).
    """

    def __init__(
        self,
        predictor: FlashDepthPredictor,
        vit_lr: float = 5e-6,
        dpt_lr: float = 5e-5,
        mamba_lr: float = 1e-4,
        fusion_lr: float = 1e-4,
        freeze_vit: bool = False,
        gradient_checkpointing: bool = False,
        **kwargs,
    ):
        kwargs.setdefault("loss", None)
        if kwargs["loss"] is None:
            kwargs["loss"] = InverseDepthL1Loss(scale=100.0)
        super().__init__(predictor=predictor, **kwargs)
        if gradient_checkpointing:
            predictor.net.set_grad_checkpointing(True)
        if freeze_vit:
            predictor.net.pretrained.requires_grad_(False)
        self.group_lrs = {"vit": vit_lr, "dpt": dpt_lr, "mamba": mamba_lr, "fusion": fusion_lr}

    def param_groups(self) -> list[dict[str, Any]]:
        groups = self.predictor.net.param_groups_by_module()
        return [
            {"params": [p for p in groups.get(name, []) if p.requires_grad], "lr": lr, "name": name}
            for name, lr in self.group_lrs.items()
        ]
