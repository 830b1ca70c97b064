"""Scale-invariant boundary F1 (Depth Pro's ``SI_boundary_F1``; ``reference/eval_protocol.md`` §3.1).

An occluding boundary between two 4-neighbours exists at threshold ``t`` where the disparity of one
is more than ``t`` times the other's. Precision and recall are computed per direction (left, top,
right, bottom), averaged over the four directions, turned into F1 (0 when ``P + R == 0``), and the
F1s at ``t = linspace(1.05, 1.25, 10)`` are averaged with weights ``t / Σt``.
"""

from __future__ import annotations

from typing import Any

import torch

from .protocol import as_float64, check_finite

__all__ = ["boundary_f1", "boundary_thresholds"]

_T_MIN, _T_MAX, _N_T = 1.05, 1.25, 10
_DEPTH_FLOOR = 1e-6  # Depth Pro clips depth here before inverting


def boundary_thresholds(
    dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(thresholds, weights)``, both ``(10,)``: ``linspace(1.05, 1.25, 10)`` and ``t / Σt``."""
    t = torch.linspace(_T_MIN, _T_MAX, _N_T, dtype=dtype, device=device)
    return t, t / t.sum()


def _neighbour_edges(disp: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    """Edge maps for the four directions at every threshold.

    ``disp`` is ``(H,W)``, ``t`` is ``(N,)``; returns ``[left, top, right, bottom]`` of shapes
    ``(N,H,W-1)``, ``(N,H-1,W)``, ``(N,H,W-1)``, ``(N,H-1,W)``. Strict ``>`` as in Depth Pro.
    """
    tt = t[:, None, None]
    right = disp[:, 1:] / disp[:, :-1]
    bottom = disp[1:, :] / disp[:-1, :]
    left = disp[:, :-1] / disp[:, 1:]
    top = disp[:-1, :] / disp[1:, :]
    return [left[None] > tt, top[None] > tt, right[None] > tt, bottom[None] > tt]


def boundary_f1(pred: Any, gt: Any) -> float:
    """Scale-invariant boundary F1 of one frame.

    Args:
        pred: ``(H,W)`` (or ``(1,H,W)``) predicted **depth** (already aligned or not: the metric is
            invariant to a positive scale, not to a shift), numpy or torch.
        gt: ``(H,W)`` ground-truth **depth**; there is no valid mask (as in Depth Pro): give invalid
            pixels a value yourself (``evaluate_sequence(boundary=True)`` uses ``max_depth``).

    Returns:
        float in ``[0, 1]``.

    Both maps are clipped at ``1e-6`` and inverted, as Depth Pro does. We compute in float64 even
    for float32 inputs (Depth Pro's numpy code would stay in float32); this only matters for
    ratios within float32 rounding of a threshold.
    """
    p = as_float64(pred, "pred")
    g = as_float64(gt, "gt", p.device)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if g.ndim == 3 and g.shape[0] == 1:
        g = g[0]
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"boundary_f1 expects two (H,W) maps of equal size, got {tuple(p.shape)} and {tuple(g.shape)}")
    check_finite(p, "pred")
    if bool(torch.isnan(g).any()):
        raise ValueError("gt contains NaN; replace invalid pixels with a depth (e.g. max_depth) first")
    t, w = boundary_thresholds(device=p.device)
    p_edges = _neighbour_edges(1.0 / p.clamp_min(_DEPTH_FLOOR), t)
    g_edges = _neighbour_edges(1.0 / g.clamp_min(_DEPTH_FLOOR), t)
    recall = torch.zeros_like(t)
    precision = torch.zeros_like(t)
    for pe, ge in zip(p_edges, g_edges):
        hit = (pe & ge).sum(dim=(-1, -2)).to(t.dtype)
        recall += hit / ge.sum(dim=(-1, -2)).clamp_min(1).to(t.dtype)
        precision += hit / pe.sum(dim=(-1, -2)).clamp_min(1).to(t.dtype)
    recall = recall / 4
    precision = precision / 4
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / torch.where(denom > 0, denom, 1.0), 0.0)
    return float((w * f1).sum())
