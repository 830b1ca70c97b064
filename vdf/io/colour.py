"""Colourised depth: a matplotlib colormap as a lookup table, and one colour range per video.

The colourised videos of ``vdf predict`` map the video-wide 2nd and 98th percentiles of the
disparity (`robust_range`) to the two ends of the colormap, so that a few extreme pixels do not
wash out the picture and every frame of a video shares one scale.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

__all__ = ["DEPTH_VIDEO_PERCENTILES", "colorize_disparity", "lookup_table", "robust_range"]

DEPTH_VIDEO_PERCENTILES = (2.0, 98.0)
# The percentiles come from at most this many frames, spread over the video, and this many values in
# all: enough for a stable 2nd / 98th percentile, small enough to keep the pass in constant memory.
_RANGE_FRAMES = 64
_RANGE_VALUES = 1 << 18


@functools.lru_cache(maxsize=16)
def lookup_table(colormap: str) -> np.ndarray:
    """``(256,3)`` uint8 colours of a matplotlib colormap; ValueError naming it if unknown."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {colormap!r}; use a matplotlib name such as 'Spectral_r', 'turbo' or 'inferno'"
        ) from None
    lut = cmap(np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(lut * 255).astype(np.uint8)


def colorize_disparity(
    disparity: np.ndarray | torch.Tensor, lo: float, hi: float, colormap: str = "Spectral_r"
) -> np.ndarray:
    """Colour a disparity map: ``(H,W)`` float -> ``(H,W,3)`` uint8 RGB.

    ``lo`` maps to the first colour of ``colormap``, ``hi`` to the last (256 levels), values outside
    are clipped; ``hi <= lo`` (a constant video) gives the first colour everywhere. NaN is drawn as ``lo``.
    """
    if isinstance(disparity, torch.Tensor):
        disparity = disparity.detach().cpu().numpy()
    d = np.asarray(disparity, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"disparity must be (H,W), got shape {d.shape}")
    lut = lookup_table(colormap)
    if hi > lo:
        x = (d - lo) * (255.0 / (hi - lo))
    else:
        x = np.zeros_like(d)
    index = np.clip(np.rint(np.nan_to_num(x, nan=0.0)), 0, 255).astype(np.intp)
    return lut[index]


def robust_range(disparity: Any) -> tuple[float, float]:
    """2nd / 98th percentiles of a regular subsample of ``(T,H,W)`` ``disparity``.

    ``disparity`` is an array or any object with ``.shape`` and numpy indexing ``x[t, ::s, ::s]``
    (such as a file read frame by frame): only the subsample is read.
    """
    T, H, W = disparity.shape
    frames = np.unique(np.linspace(0, T - 1, min(T, _RANGE_FRAMES)).round().astype(np.int64))
    per_frame = max(1, _RANGE_VALUES // len(frames))
    stride = max(1, math.ceil(math.sqrt(H * W / per_frame)))
    sample = np.concatenate([np.asarray(disparity[t, ::stride, ::stride], dtype=np.float64).ravel() for t in frames])
    lo, hi = np.percentile(sample, DEPTH_VIDEO_PERCENTILES)
    return float(lo), float(hi)
