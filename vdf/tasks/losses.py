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


def _lstsq_scale_shift(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row least-squares ``(s, b)`` of ``s*pred + b ~ target`` on ``mask``; rows ``(N, P)``.

    Normal equations with ``1e-6`` added to the determinant, and ``(0, 0)`` for a singular row,
    as Video-Depth-Anything's loss solves them.
    """
    m = mask.to(pred.dtype)
    a00, a01, a11 = (m * pred * pred).sum(-1), (m * pred).sum(-1), m.sum(-1)
    b0, b1 = (m * pred * target).sum(-1), (m * target).sum(-1)
    det = a00 * a11 - a01 * a01
    ok = det != 0
    den = torch.where(ok, det + 1e-6, torch.ones_like(det))
    scale = torch.where(ok, (a11 * b0 - a01 * b1) / den, torch.zeros_like(det))
    shift = torch.where(ok, (-a01 * b0 + a00 * b1) / den, torch.zeros_like(det))
    return scale, shift


class VideoDepthAnythingLoss(nn.Module):
    """Video-Depth-Anything's released training loss (``loss/loss.py``, ``VideoDepthLoss``), in disparity.

    ``spatial + stable_scale * temporal``:

    - spatial, per frame (trimmed Procrustes): prediction and target each minus their median and
      divided by their mean absolute deviation over the valid pixels, then the mean absolute
      difference over the valid pixels of the whole batch (the largest ``trim`` fraction of
      residuals dropped; 0 in the released settings) plus ``alpha`` x a gradient-matching term at
      ``scales`` scales (pixel strides 1, 2, 4, 8: the masked x/y differences of the residual,
      summed, divided by the batch's valid pixels at that scale). As the released code, the
      median is taken over all pixels with the invalid ones set to 0.
    - temporal gradient matching: the prediction is mapped onto the target by one least-squares
      scale and shift per clip; then the mean absolute difference between the frame-to-frame
      differences of prediction and target, on pixels valid in both frames where the target
      changes by less than ``5%`` of the later frame's valid range (motion and occlusion edges
      are not asked to be smooth).

    Inputs ``(B,T,1,H,W)`` (prediction, depth in metres, valid); the target is ``1/depth``.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        scales: int = 4,
        trim: float = 0.0,
        stable_scale: float = 10.0,
        change_threshold: float = 0.05,
    ):
        super().__init__()
        if not 0.0 <= trim < 1.0:
            raise ValueError(f"trim must be in [0, 1), got {trim}")
        self.alpha = alpha
        self.scales = scales
        self.trim = trim
        self.stable_scale = stable_scale
        self.change_threshold = change_threshold

    def _trimmed_mae(self, residual: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not mask.any():
            return residual.sum() * 0.0
        values = residual[mask].abs()
        keep = int(values.numel() * (1.0 - self.trim))
        if keep < values.numel():
            values = values.sort().values[:keep]
        return values.sum() / mask.sum()

    @staticmethod
    def _normalise(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(N,H,W)``: minus the median of ``mask * x`` (all pixels), over the mean |.| on ``mask``."""
        m = mask.to(x.dtype)
        count = m.sum((1, 2))
        median = (m * x).flatten(1).median(dim=1).values
        median = torch.where(count > 0, median, torch.zeros_like(median))
        centred = x - median.view(-1, 1, 1)
        spread = torch.where(count > 0, ((m * centred.abs()).sum((1, 2)) / count.clamp_min(1)).clamp_min(1e-6), 1.0)
        return centred / spread.view(-1, 1, 1)

    def _gradient(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = pred.new_zeros(())
        for scale in range(self.scales):
            step = 2**scale
            p, t, m = pred[:, ::step, ::step], target[:, ::step, ::step], mask[:, ::step, ::step].to(pred.dtype)
            diff = m * (p - t)
            gx = (diff[:, :, 1:] - diff[:, :, :-1]).abs() * m[:, :, 1:] * m[:, :, :-1]
            gy = (diff[:, 1:] - diff[:, :-1]).abs() * m[:, 1:] * m[:, :-1]
            count = m.sum()
            total = total + (gx.sum() + gy.sum()) / count if count > 0 else total
        return total

    def spatial(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Trimmed Procrustes over frames ``(N,H,W)``."""
        p, t = self._normalise(pred, mask), self._normalise(target, mask)
        loss = self._trimmed_mae(p - t, mask)
        return loss + self.alpha * self._gradient(p, t, mask) if self.alpha > 0 else loss

    def temporal(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Temporal gradient matching on clips ``(B,T,H,W)``, the prediction aligned per clip."""
        b = pred.shape[0]
        scale, shift = _lstsq_scale_shift(pred.reshape(b, -1), target.reshape(b, -1), mask.reshape(b, -1))
        pred = scale.view(-1, 1, 1, 1) * pred + shift.view(-1, 1, 1, 1)
        if pred.shape[1] < 2:
            return pred.sum() * 0.0
        low = torch.where(mask, target, torch.inf).amin((-2, -1))
        high = torch.where(mask, target, -torch.inf).amax((-2, -1))
        threshold = (high - low) * self.change_threshold  # (B,T)
        dp, dt = pred.diff(dim=1), target.diff(dim=1)
        keep = mask[:, 1:] & mask[:, :-1] & (dt.abs() < threshold[:, 1:, None, None])
        return self._trimmed_mae((dp - dt).flatten(0, 1), keep.flatten(0, 1))

    def forward(self, pred: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = (valid & (depth > 0))[:, :, 0]
        target = gt_disparity(depth, valid)[:, :, 0].float()
        pred = pred[:, :, 0].float()
        spatial = self.spatial(pred.flatten(0, 1), target.flatten(0, 1), mask.flatten(0, 1))
        return spatial + self.stable_scale * self.temporal(pred, target, mask)
