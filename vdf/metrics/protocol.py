"""The zero-shot video depth protocol of the DepthCrafter / Video-Depth-Anything benchmarks.

One sequence is scored as follows (``reference/eval_protocol.md`` §1.4–1.5; every model in vdf is
scored this way, once, here):

1. the prediction (relative disparity) is resized bilinearly to the GT size if sizes differ;
2. ``valid = (gt > 1e-3) & (gt < max_depth)`` (AND an optional caller mask);
3. ``pred = max(pred, 1e-3)`` *before* the fit;
4. one least-squares ``(scale, shift)`` in disparity over all valid pixels of all frames, float64,
   target ``1 / (gt + 1e-8)``;
5. ``aligned = max(scale * pred + shift, 1e-3)`` on every pixel; ``depth = 1 / aligned``;
   ``depth = clip(depth, 1e-3, max_depth)``;
6. frames without a valid pixel are dropped; AbsRel, δ1 (strict ``< 1.25``) and RMSE per frame,
   then the mean over frames. A data set's score is the mean over sequences (done by the caller or
   by :class:`vdf.metrics.VideoDepthMetrics`).

Everything is computed with torch in float64 on the input's device (CPU for numpy inputs).

**Spaces.** A prediction is affine-invariant in its model's native space (``pred_space``):
relative disparity (most families) or relative depth (ChronoDepth). The fit of steps 4-5 runs in
the space the protocol names (``align_space``): ``disparity`` is the protocol above (DepthCrafter's
benchmark, the default for cross-model tables); ``depth`` fits ``scale * pred + shift ≈ gt``
directly (ChronoDepth's paper) and clips the result to ``[1e-3, max_depth]``. A prediction enters
the other space only once it is metric, where the conversion ``depth = 1 / disparity`` is exact:
it is first aligned in its own space, inverted, and then aligned again in ``align_space``. When
the two spaces agree there is one fit, exactly as above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "EPS_CLIP",
    "NoValidPixelsError",
    "align_disparity",
    "aligned_depth",
    "apply_alignment",
    "evaluate_sequence",
    "fit_alignment",
    "resize_prediction",
]

#: The protocol's clip value: prediction floor before the fit, aligned-disparity floor, depth floor.
EPS_CLIP = 1e-3
#: Added to GT depth before inverting it into the fit's target (as in the reference script).
_GT_INV_EPS = 1e-8
#: The spaces a prediction can be in and the spaces an alignment can run in.
SPACES = ("disparity", "depth")


def check_space(space: str, name: str) -> str:
    if space not in SPACES:
        raise ValueError(f"{name} must be one of {SPACES}, got {space!r}")
    return space


class NoValidPixelsError(ValueError):
    """Raised when a sequence has no pixel inside ``(1e-3, max_depth)`` and the caller's mask."""


def as_float64(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """numpy array / tensor / nested list -> float64 tensor (on ``device``, else its own device).

    MPS has no float64, so such tensors are moved to the CPU.
    """
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    if device is not None:
        t = t.to(device)
    if t.device.type == "mps":
        t = t.cpu()
    if not (t.is_floating_point() or t.dtype in (torch.bool, torch.uint8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"{name}: expected a real-valued array, got dtype {t.dtype}")
    return t.to(torch.float64)


def as_bool(x: Any, name: str, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x.detach()
    if t.dtype != torch.bool:
        raise TypeError(f"{name}: expected a bool mask, got dtype {t.dtype}")
    return t.to(device)


def squeeze_channel(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(T,H,W)`` or ``(T,1,H,W)`` -> ``(T,H,W)``."""
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name}: expected (T,H,W) or (T,1,H,W), got {tuple(x.shape)}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"{name}: expected (T,H,W) or (T,1,H,W), got {tuple(x.shape)}")
    return x


def check_finite(x: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf); "
            "a prediction must be finite everywhere to be scored"
        )


def check_max_depth(max_depth: float) -> float:
    max_depth = float(max_depth)
    if not (np.isfinite(max_depth) and max_depth > EPS_CLIP):
        raise ValueError(f"max_depth must be finite and > {EPS_CLIP}, got {max_depth}")
    return max_depth


def resize_prediction(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(T,h,w)`` to ``(T,*size)`` (``align_corners=False``, no antialias).

    The reference resizes with ``cv2.resize(..., INTER_LINEAR)``. Both use half-pixel centres,
    replicate the border and do not antialias, so they agree for up- *and* down-sampling (checked
    against cv2 in ``tests/test_metrics.py``, factors 2, 2.4, 1/2, 1/1.5...). Note that neither
    antialiases: a large downscale aliases in both, which is the reference's behaviour. We
    interpolate in float64; cv2 works in float32, so values differ by float32 rounding (~1e-7).
    """
    if tuple(pred.shape[-2:]) == tuple(size):
        return pred
    return F.interpolate(pred.to(torch.float64)[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _prepare(pred_disparity: Any, gt_depth: Any, max_depth: float, valid: Any | None):
    """Shared input handling: returns float64 ``pred`` (already clipped at 1e-3), ``gt``, ``mask``."""
    max_depth = check_max_depth(max_depth)
    gt_native = torch.as_tensor(gt_depth) if not isinstance(gt_depth, torch.Tensor) else gt_depth.detach()
    gt_native = squeeze_channel(gt_native.cpu() if gt_native.device.type == "mps" else gt_native, "gt_depth")
    # The range test runs in the GT's own dtype, as the reference's numpy comparison does
    # (float32 GT, e.g. Sintel: 1e-3 becomes float32(1e-3)). NaN / inf GT fails it: such pixels
    # are simply invalid.
    mask = (gt_native > EPS_CLIP) & (gt_native < max_depth)
    gt = as_float64(gt_native, "gt_depth")
    pred = squeeze_channel(as_float64(pred_disparity, "pred_disparity", gt.device), "pred_disparity")
    if pred.shape[0] != gt.shape[0]:
        raise ValueError(f"pred_disparity has {pred.shape[0]} frames but gt_depth has {gt.shape[0]}")
    check_finite(pred, "pred_disparity")
    pred = resize_prediction(pred, tuple(gt.shape[-2:]))
    if valid is not None:
        v = squeeze_channel(as_bool(valid, "valid", gt.device), "valid")
        if v.shape != gt.shape:
            raise ValueError(f"valid has shape {tuple(v.shape)}, expected {tuple(gt.shape)}")
        mask = mask & v
    # Step 3 of the protocol: the floor is applied before the fit and the clipped values are the
    # ones that get aligned (the reference overwrites `pred` in place).
    pred = pred.clamp_min(EPS_CLIP)
    return pred, gt, mask, max_depth


def _lstsq_affine(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares ``(s, b)`` minimising ``||s x + b - y||``, float64, same result as ``np.linalg.lstsq``.

    ``x > 0`` (the prediction is clipped at 1e-3 before the fit). Why not the normal equations of
    ``[x, 1]``: their Gram matrix squares the condition number (``x`` is far from centred), losing
    ~half the digits. Centring first makes the two columns orthogonal, so ``s = Σ dx dy / Σ dx²``,
    ``b = ȳ - s x̄`` is as accurate as a QR solve, runs on any device (``torch.linalg.lstsq`` on CUDA
    only has ``gels``, which breaks on rank-deficient systems) and is deterministic. Means get a
    second refining pass, and ``x`` is divided by ``c = max(1, max x)`` first so that no square
    can overflow for huge predictions (``s`` is divided by ``c`` at the end).

    Rank deficiency (all ``x`` equal, or a single pixel) is decided like LAPACK ``gelsd`` with
    numpy's default ``rcond = eps * max(M, N)``; then, like numpy, the minimum-norm solution is
    returned: ``s x₀ + b = ȳ`` with ``(s, b) ∝ (x₀, 1)``.
    """
    n = x.numel()
    c = max(1.0, float(x.max()))
    xs = x / c

    def _mean(v: torch.Tensor) -> torch.Tensor:
        m = v.mean()
        return m + (v - m).mean()

    xm, ym = _mean(xs), _mean(y)
    dx = xs - xm
    sxx = (dx * dx).sum()
    # Rank test on B = A / c = [x/c, 1/c] (same singular-value ratio as A, no overflow):
    # σ_max² = λ_max(BᵀB), σ_min σ_max = sqrt(det BᵀB) = sqrt(n Sxx) / c.
    inv_c = 1.0 / c
    trace = (xs * xs).sum() + n * inv_c * inv_c
    det = n * sxx * inv_c * inv_c
    sigma_max = torch.sqrt(0.5 * (trace + torch.sqrt((trace * trace - 4.0 * det).clamp_min(0.0))))
    sigma_min = torch.sqrt(det) / sigma_max
    rcond = float(np.finfo(np.float64).eps) * max(n, 2)
    if n < 2 or bool(sigma_min <= rcond * sigma_max):
        x0 = xm * c
        # ȳ (x₀, 1) / (x₀² + 1), written so that a huge x₀ cannot overflow.
        scale = ym / (x0 + 1.0 / x0)
        return float(scale), float(scale / x0)
    scale = (dx * (y - ym)).sum() / sxx
    shift = ym - scale * xm
    return float(scale / c), float(shift)


def align_disparity(
    pred_disparity: Any, gt_depth: Any, max_depth: float, valid: Any | None = None
) -> tuple[float, float]:
    """The protocol's single least-squares fit for one sequence.

    Args:
        pred_disparity: ``(T,h,w)`` or ``(T,1,h,w)`` relative disparity (resized to the GT size if
            needed), numpy or torch.
        gt_depth: ``(T,H,W)`` or ``(T,1,H,W)`` metric depth; anything outside ``(1e-3, max_depth)``
            (0, -1, NaN, inf, sky) is ignored.
        max_depth: upper bound of the valid range (exclusive), e.g. 70 Sintel, 80 KITTI, 10 indoor.
        valid: optional bool mask of the GT shape, ANDed with the range mask.

    Returns:
        ``(scale, shift)`` as Python floats (float64) with ``scale * max(pred, 1e-3) + shift``
        ≈ ``1 / gt``.

    Raises:
        NoValidPixelsError: no pixel is valid. ValueError: non-finite prediction, bad shapes.
    """
    pred, gt, mask, _ = _prepare(pred_disparity, gt_depth, max_depth, valid)
    if not bool(mask.any()):
        raise NoValidPixelsError(
            f"no valid ground-truth pixel in the sequence (need {EPS_CLIP} < gt < {max_depth} "
            "and valid=True); cannot align the prediction"
        )
    return _lstsq_affine(pred[mask], 1.0 / (gt[mask] + _GT_INV_EPS))


def _apply_alignment(pred_clipped: torch.Tensor, scale: float, shift: float, max_depth: float) -> torch.Tensor:
    aligned = (scale * pred_clipped + shift).clamp_min(EPS_CLIP)
    return (1.0 / aligned).clamp(EPS_CLIP, max_depth)


def aligned_depth(pred_disparity: Any, gt_depth: Any, max_depth: float, valid: Any | None = None) -> torch.Tensor:
    """Prediction turned into metric depth with the protocol's alignment, for every pixel.

    Args: as :func:`align_disparity`.

    Returns:
        float64 tensor ``(T,H,W)`` (GT size) in ``[1e-3, max_depth]`` on the GT's device: the
        input of TAE and boundary F1.
    """
    pred, gt, mask, max_depth = _prepare(pred_disparity, gt_depth, max_depth, valid)
    if not bool(mask.any()):
        raise NoValidPixelsError(
            f"no valid ground-truth pixel in the sequence (need {EPS_CLIP} < gt < {max_depth} "
            "and valid=True); cannot align the prediction"
        )
    scale, shift = _lstsq_affine(pred[mask], 1.0 / (gt[mask] + _GT_INV_EPS))
    return _apply_alignment(pred, scale, shift, max_depth)


def fit_alignment(
    pred: Any, gt_depth: Any, max_depth: float, valid: Any | None = None, space: str = "disparity"
) -> tuple[float, float]:
    """The protocol's least-squares fit (steps 1-4) of a prediction to known metric depth, in the
    prediction's own ``space``: `align_disparity` for ``disparity``; ``scale * pred + shift ≈ gt``
    for ``depth``. What ``vdf predict`` aligns with (to sparse known depth, e.g. LiDAR).

    Args:
        pred: ``(T,h,w)`` or ``(T,1,h,w)`` affine-invariant prediction in ``space``.
        gt_depth: ``(T,H,W)`` or ``(T,1,H,W)`` known metric depth; outside ``(1e-3, max_depth)`` is unknown.
        max_depth, valid: as `align_disparity`.
        space: ``disparity`` or ``depth``.

    Returns:
        ``(scale, shift)`` of ``scale * max(pred, 1e-3) + shift`` ≈ metric ``space``.
    """
    check_space(space, "space")
    pred, gt, mask, _ = _prepare(pred, gt_depth, max_depth, valid)
    if not bool(mask.any()):
        raise NoValidPixelsError(f"no known depth inside ({EPS_CLIP}, {max_depth}) m to align the prediction to")
    return _fit(pred, gt, mask, space)


def apply_alignment(pred: Any, scale: float, shift: float, max_depth: float, space: str = "disparity") -> torch.Tensor:
    """Metric depth (float64, in ``[1e-3, max_depth]``) of a prediction in ``space`` under a fit,
    exactly as the metrics turn an aligned prediction into depth (steps 3 and 5)."""
    check_space(space, "space")
    pred = as_float64(pred, "pred").clamp_min(EPS_CLIP)
    return _to_metric(pred, scale, shift, check_max_depth(max_depth), space)


def _fit(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, space: str) -> tuple[float, float]:
    """The least-squares fit of ``pred`` to the GT in ``space`` over ``mask``."""
    target = 1.0 / (gt[mask] + _GT_INV_EPS) if space == "disparity" else gt[mask]
    return _lstsq_affine(pred[mask], target)


def _to_metric(pred: torch.Tensor, scale: float, shift: float, max_depth: float, space: str) -> torch.Tensor:
    if space == "disparity":
        return _apply_alignment(pred, scale, shift, max_depth)
    return (scale * pred + shift).clamp(EPS_CLIP, max_depth)


def _align(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, max_depth: float, pred_space: str, align_space: str
) -> tuple[torch.Tensor, float, float]:
    """Metric depth of ``pred`` (clipped at 1e-3) and the fit made in ``align_space`` (see the module doc)."""
    scale, shift = _fit(pred, gt, mask, pred_space)
    depth = _to_metric(pred, scale, shift, max_depth, pred_space)
    if align_space != pred_space:
        # Metric now, so the change of space is exact; the final fit is the named space's.
        moved = 1.0 / depth if align_space == "disparity" else depth
        scale, shift = _fit(moved, gt, mask, align_space)
        depth = _to_metric(moved, scale, shift, max_depth, align_space)
    return depth, scale, shift


def frame_metrics(depth: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-frame AbsRel, δ1, RMSE of aligned ``depth`` against ``gt`` on ``mask``; all ``(T,)``.

    Every frame must have at least one pixel in ``mask``. δ1 is float32 on purpose: the reference
    builds its 0/1 map with ``torch.ones`` (float32), so ``count / n`` and the frame mean are
    float32; we reproduce that (the count itself is exact). AbsRel and RMSE are float64.
    """
    n = mask.sum(dim=(-1, -2))
    # torch.where, not multiplication, so inf/NaN at invalid GT pixels cannot leak in.
    g = torch.where(mask, gt, torch.ones_like(gt))
    diff = torch.where(mask, depth - g, torch.zeros_like(gt))
    abs_rel = (diff.abs() / g).sum(dim=(-1, -2)) / n
    rmse = torch.sqrt((diff * diff).sum(dim=(-1, -2)) / n)
    ratio = torch.maximum(depth / g, g / depth)
    hits = ((ratio < 1.25) & mask).sum(dim=(-1, -2))
    delta1 = hits.to(torch.float32) / n.to(torch.float32)
    return {"abs_rel": abs_rel, "delta1": delta1, "rmse": rmse, "num_valid": n}


def evaluate_sequence(
    pred_disparity: Any,
    gt_depth: Any,
    max_depth: float,
    valid: Any | None = None,
    *,
    intrinsics: Any | None = None,
    cam_to_world: Any | None = None,
    tae_mask: Any | None = None,
    boundary: bool = False,
    pred_space: str = "disparity",
    align_space: str = "disparity",
    tae: bool = True,
    mfc: bool = False,
) -> dict[str, float]:
    """Score one sequence with the DepthCrafter / VDA protocol.

    Args:
        pred_disparity: ``(T,h,w)`` or ``(T,1,h,w)`` affine-invariant prediction in ``pred_space``
            (relative disparity by default: larger = nearer), numpy or torch, any scale/shift;
            resized bilinearly to the GT size if ``(h,w) != (H,W)``.
        gt_depth: ``(T,H,W)`` or ``(T,1,H,W)`` metric depth in metres.
        max_depth: valid range upper bound and depth clip (70 Sintel, 80 KITTI, 10 ScanNet/Bonn/NYU).
        valid: optional bool ``(T,H,W)`` / ``(T,1,H,W)`` mask ANDed with ``1e-3 < gt < max_depth``.
        intrinsics, cam_to_world: optional ``(T,3,3)`` / ``(3,3)`` and ``(T,4,4)``; when both are
            given, ``tae`` (:func:`vdf.metrics.temporal_alignment_error` on the aligned depth of
            *all* T frames, as VDA does) is added.
        tae_mask: optional bool mask for TAE (VDA: all pixels on ScanNet, rigidity masks on Sintel).
        pred_space: ``disparity`` or ``depth``, the space the prediction is affine-invariant in.
        align_space: ``disparity`` (DepthCrafter's protocol) or ``depth`` (ChronoDepth's): where the
            least-squares fit runs (see the module doc for a prediction in the other space).
        tae: with cameras, return ``tae`` (default True; False skips it, e.g. when only MFC is wanted).
        mfc: with cameras, also return ``mfc``: ChronoDepth's multi-frame consistency
            (:func:`vdf.metrics.multi_frame_consistency` on the aligned depth, the valid mask as the
            compared pixels) and ``mfc_pairs``, the adjacent pairs it averages (``mfc`` is NaN and
            ``mfc_pairs`` 0 when no pair compares a pixel).
        boundary: also return ``boundary_f1``, the mean over kept frames of
            :func:`vdf.metrics.boundary_f1` between the aligned depth and the GT, where GT pixels
            outside the valid mask are set to ``max_depth`` (FlashDepth's convention: invalid/sky
            become the far clip).

    Returns:
        dict of floats: ``abs_rel``, ``delta1``, ``rmse`` (means over kept frames), ``scale``,
        ``shift`` (the fit in ``align_space``), ``num_frames`` (kept frames), ``num_valid`` (valid pixels), and
        ``tae`` / ``boundary_f1`` when requested.

    Raises:
        NoValidPixelsError (a ValueError): no frame has a valid pixel.
        ValueError: non-finite values in the prediction, mismatched shapes, bad ``max_depth``.
    """
    check_space(pred_space, "pred_space")
    check_space(align_space, "align_space")
    pred, gt, mask, max_depth = _prepare(pred_disparity, gt_depth, max_depth, valid)
    if not bool(mask.any()):
        raise NoValidPixelsError(
            f"no frame of the sequence has a valid ground-truth pixel (need {EPS_CLIP} < gt < "
            f"{max_depth} and valid=True); the sequence cannot be scored"
        )
    depth, scale, shift = _align(pred, gt, mask, max_depth, pred_space, align_space)

    keep = mask.any(dim=(-1, -2))
    per_frame = frame_metrics(depth[keep], gt[keep], mask[keep])
    out = {
        "abs_rel": float(per_frame["abs_rel"].mean()),
        "delta1": float(per_frame["delta1"].mean()),
        "rmse": float(per_frame["rmse"].mean()),
        "scale": scale,
        "shift": shift,
        "num_frames": int(keep.sum()),
        "num_valid": int(per_frame["num_valid"].sum()),
    }
    if boundary:
        from .boundary import boundary_f1  # local import: boundary.py imports helpers from here

        gt_b = torch.where(mask, gt, torch.full_like(gt, max_depth)).clamp(EPS_CLIP, max_depth)
        kept = torch.nonzero(keep).flatten().tolist()
        out["boundary_f1"] = float(np.mean([boundary_f1(depth[t], gt_b[t]) for t in kept]))
    if (intrinsics is None) != (cam_to_world is None):
        raise ValueError("TAE needs both intrinsics and cam_to_world (got only one)")
    if intrinsics is not None and tae:
        from .temporal import temporal_alignment_error

        out["tae"] = temporal_alignment_error(depth, intrinsics, cam_to_world, mask=tae_mask)
    if intrinsics is not None and mfc:
        from .consistency import multi_frame_consistency

        out["mfc"], out["mfc_pairs"] = multi_frame_consistency(depth, intrinsics, cam_to_world, mask=mask)
    return out
