"""Depth targets of the latent diffusion models: metric depth in, values in [-1, 1] out, and back.

The VAE sees the target replicated to three channels in [-1, 1]. Each method normalises
differently, and the choice decides what the prediction means:

- `DisparityMinMax` (DepthCrafter): disparity, one min-max over the whole clip — the prediction
  is relative disparity with one scale and shift per clip.
- `PercentileDisparity` (Depth Any Video): disparity between its 2 % and 98 % percentiles, per
  frame by default.
- `DepthMinMax` (ChronoDepth): depth, one min-max per clip (per frame optional).

``to_output`` maps a decoded prediction in [-1, 1] to the model's affine-invariant prediction
in its native ``space``: relative disparity in [0, 1] (larger is nearer) for the disparity
targets, relative depth in [0, 1] (larger is farther) for `DepthMinMax`, exactly as each official
pipeline post-processes (``(x + 1) / 2`` after the clamp). Evaluation then aligns the prediction
in the space the protocol names (`vdf.metrics`), knowing which space it is in.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


def _masked_extrema(x: torch.Tensor, valid: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    big = torch.finfo(x.dtype).max
    lo = torch.where(valid, x, torch.full_like(x, big)).amin(dim=dims, keepdim=True)
    hi = torch.where(valid, x, torch.full_like(x, -big)).amax(dim=dims, keepdim=True)
    # Frames or clips without a valid pixel get the identity range.
    empty = ~valid.any(dim=dims, keepdim=True) if dims else ~valid
    return torch.where(empty, torch.zeros_like(lo), lo), torch.where(empty, torch.ones_like(hi), hi)


def _to_unit_range(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1) * 2 - 1


class DepthNormalization(ABC):
    """``(depth (B,T,1,H,W) metres, valid bool)`` -> target in [-1, 1]; invalid pixels get the far end."""

    #: The space of ``to_output``'s prediction: ``"disparity"`` or ``"depth"``.
    space: str = "disparity"

    @abstractmethod
    def __call__(self, depth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor: ...

    def to_output(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded prediction in [-1, 1] -> the prediction in ``space``, in [0, 1]."""
        return (x.clamp(-1, 1) + 1) / 2


def _disparity(depth: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    valid = valid & (depth > 0)
    return torch.where(valid, 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth)), valid


class DisparityMinMax(DepthNormalization):
    """Disparity scaled by one min and max over the whole clip (``per_frame=False``) or each frame."""

    def __init__(self, per_frame: bool = False):
        self.per_frame = per_frame

    def __call__(self, depth, valid):
        disparity, valid = _disparity(depth, valid)
        dims = (2, 3, 4) if self.per_frame else (1, 2, 3, 4)
        lo, hi = _masked_extrema(disparity, valid, dims)
        return torch.where(valid, _to_unit_range(disparity, lo, hi), torch.full_like(depth, -1.0))


class PercentileDisparity(DepthNormalization):
    """Disparity between its ``low`` and ``high`` quantiles (clipped), per frame or per clip."""

    def __init__(self, low: float = 0.02, high: float = 0.98, per_frame: bool = True):
        if not 0 <= low < high <= 1:
            raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
        self.low, self.high = low, high
        self.per_frame = per_frame

    def __call__(self, depth, valid):
        disparity, valid = _disparity(depth, valid)
        b, t = depth.shape[:2]
        groups = disparity.reshape(b * t, -1) if self.per_frame else disparity.reshape(b, -1)
        masks = valid.reshape(groups.shape)
        lo = torch.zeros(groups.shape[0], dtype=depth.dtype, device=depth.device)
        hi = torch.ones_like(lo)
        for i in range(groups.shape[0]):
            values = groups[i][masks[i]]
            if values.numel():
                q = torch.quantile(values.float(), torch.tensor([self.low, self.high], device=values.device))
                lo[i], hi[i] = q[0], q[1]
        shape = (b, t, 1, 1, 1) if self.per_frame else (b, 1, 1, 1, 1)
        target = _to_unit_range(disparity, lo.view(shape), hi.view(shape))
        return torch.where(valid, target, torch.full_like(depth, -1.0))


class DepthMinMax(DepthNormalization):
    """Depth scaled by one min and max over the whole clip (or each frame): near is -1, far is +1.

    The prediction is relative *depth* (``space = "depth"``): ``(x + 1) / 2``, ChronoDepth's output.
    """

    space = "depth"

    def __init__(self, per_frame: bool = False):
        self.per_frame = per_frame

    def __call__(self, depth, valid):
        valid = valid & (depth > 0)
        dims = (2, 3, 4) if self.per_frame else (1, 2, 3, 4)
        lo, hi = _masked_extrema(depth, valid, dims)
        return torch.where(valid, _to_unit_range(depth, lo, hi), torch.ones_like(depth))
