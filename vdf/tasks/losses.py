"""Depth losses on relative disparity, shared by the tasks.

All losses take ``pred`` disparity, ground-truth ``depth`` in metres and a ``valid`` mask, each
``(B,T,1,H,W)``, and return a scalar. Ground truth enters as disparity ``1/depth`` on valid pixels.
"""

from __future__ import annotations

import torch
from torch import nn


def gt_disparity(depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``1/depth`` where ``valid`` (and depth > 0), 0 elsewhere."""
    ok = valid & (depth > 0)
    return torch.where(ok, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))


def _masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median over the last dim of ``x`` restricted to ``mask`` (lower median); rows (N,P)."""
    big = torch.finfo(x.dtype).max
    counts = mask.sum(-1)
    ordered = torch.where(mask, x, torch.full_like(x, big)).sort(-1).values
    k = ((counts - 1).clamp_min(0) // 2).unsqueeze(-1)
    return ordered.gather(-1, k).squeeze(-1)


class ScaleShiftInvariantLoss(nn.Module):
    """Affine-invariant L1 in disparity (MiDaS-style normalisation).

    Prediction and target are each shifted by their median and divided by their mean absolute
    deviation over the valid pixels of a group, then compared with L1. A group is one frame
    (``per="frame"``, what a per-frame model such as Depth-Anything-V2 is trained with) or one
    whole clip (``per="clip"``, which also penalises flicker of scale across frames).
    Groups with fewer than ``min_valid`` valid pixels are ignored.
    """

    def __init__(self, per: str = "frame", min_valid: int = 16):
        super().__init__()
        if per not in ("frame", "clip"):
            raise ValueError(f"per must be 'frame' or 'clip', got {per!r}")
        self.per = per
        self.min_valid = min_valid

    def _normalise(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n = mask.sum(-1).clamp_min(1)
        med = _masked_median(x, mask).unsqueeze(-1)
        centred = (x - med) * mask
        scale = centred.abs().sum(-1, keepdim=True) / n.unsqueeze(-1)
        return centred / scale.clamp_min(1e-6)

    def forward(self, pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        target = gt_disparity(depth, valid)
        mask = valid & (depth > 0)
        groups = pred.shape[0] * (pred.shape[1] if self.per == "frame" else 1)
        p = pred.reshape(groups, -1).float()
        t = target.reshape(groups, -1).float()
        m = mask.reshape(groups, -1)
        keep = m.sum(-1) >= self.min_valid
        if not keep.any():
            # Nothing to supervise: a zero that still depends on pred keeps DDP's graph intact.
            return pred.sum() * 0.0
        p, t, m = p[keep], t[keep], m[keep]
        err = (self._normalise(p, m) - self._normalise(t, m)).abs() * m
        return (err.sum(-1) / m.sum(-1)).mean()


class InverseDepthL1Loss(nn.Module):
    """L1 between the predicted disparity and ``scale / depth`` (FlashDepth's training loss).

    FlashDepth regresses disparity in units of ``100 / metres`` (``scale=100``; the official
    training multiplies the ground-truth inverse depth by 100, the range of Depth-Anything-V2's
    outputs). The loss is the mean absolute difference over the valid pixels (``valid`` and
    ``depth > 0``; an infinite depth is a valid target of 0) of the whole batch, all frames
    pooled, as ``F.l1_loss(pred[valid], target[valid])`` in the official code. A batch without a
    valid pixel gives 0 (with a graph).
    """

    def __init__(self, scale: float = 100.0):
        super().__init__()
        self.scale = scale

    def forward(self, pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid & (depth > 0)
        if not mask.any():
            return pred.sum() * 0.0
        target = self.scale * gt_disparity(depth, valid)
        return (pred.float() - target.float())[mask].abs().mean()
