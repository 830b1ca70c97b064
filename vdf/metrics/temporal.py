"""Temporal alignment error (TAE), Video-Depth-Anything's definition (``reference/eval_protocol.md`` §2.3).

For each pair of consecutive frames ``(k, k+1)`` the aligned depth of one frame is lifted to 3-D,
moved into the other camera with the GT relative pose, projected with rounding to the nearest
pixel, and compared (AbsRel) with the other frame's own aligned depth; both directions are used:

    TAE = 100 · Σ_k (e(k→k+1) + e(k+1→k)) / (2 (N − 1))

The GT is only used for the alignment (done before, see :func:`vdf.metrics.aligned_depth`); TAE
compares the prediction with itself.
"""

from __future__ import annotations

from typing import Any

import torch

from .protocol import as_bool, as_float64, check_finite, squeeze_channel

__all__ = ["reprojection_abs_rel", "temporal_alignment_error"]


def reprojection_abs_rel(
    depth_src: torch.Tensor,
    depth_dst: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    intrinsics: torch.Tensor,
    mask_dst: torch.Tensor | None = None,
) -> float:
    """VDA's ``tae_torch``: AbsRel of ``depth_src`` warped into the destination view vs ``depth_dst``.

    Args:
        depth_src, depth_dst: ``(H,W)`` float64 depths of the source and destination frames.
        rotation, translation: ``(3,3)``, ``(3,)``: source-camera → destination-camera
            (``X_dst = R X_src + t``).
        intrinsics: ``(3,3)`` or ``(4,4)``; only ``fx, fy, cx, cy`` are read. Pixel ``(x, y)`` is
            the column/row index (no +0.5), as in VDA.
        mask_dst: optional bool ``(H,W)`` restricting the compared destination pixels.

    Returns:
        mean over compared pixels of ``|d_dst − z_warp| / d_dst``; 0.0 when no pixel is compared
        (VDA still counts such a pair in the denominator of the sequence mean).

    Two deliberate, documented deviations from VDA, both only for points VDA itself handles
    arbitrarily: (1) points at or behind the destination camera (``z ≤ 0``) are discarded instead
    of projected (VDA divides by ``z`` and may write a negative or infinite value that a nearer
    point then cannot replace); (2) when several points round to the same pixel, the nearest one
    (smallest ``z``) is kept. VDA's plain scatter keeps an arbitrary one (nondeterministic on CUDA);
    a z-buffer is deterministic and is what a renderer would show.
    """
    h, w = depth_src.shape
    dev, dt = depth_src.device, torch.float64
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dt), torch.arange(w, device=dev, dtype=dt), indexing="ij")
    z = depth_src
    pts = torch.stack(((xs - cx) * z / fx, (ys - cy) * z / fy, z), dim=-1).reshape(-1, 3)
    pts = pts @ rotation.T + translation
    front = pts[:, 2] > 0
    pts = pts[front]
    zw = pts[:, 2]
    # torch.round is half-to-even, like VDA's.
    u = torch.round(pts[:, 0] * fx / zw + cx)
    v = torch.round(pts[:, 1] * fy / zw + cy)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    if not bool(inside.any()):
        return 0.0
    idx = (v[inside] * w + u[inside]).to(torch.int64)
    proj = torch.full((h * w,), float("inf"), device=dev, dtype=dt)
    # "amin" is order-independent, so the result is deterministic on every device.
    proj.scatter_reduce_(0, idx, zw[inside], reduce="amin", include_self=True)
    proj = torch.where(torch.isinf(proj), torch.zeros_like(proj), proj).reshape(h, w)
    m = (proj > 0) & (depth_dst > 0)
    if mask_dst is not None:
        m = m & mask_dst
    if not bool(m.any()):
        return 0.0
    return float(((depth_dst[m] - proj[m]).abs() / depth_dst[m]).mean())


def posed_sequence(
    metric: str,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    cam_to_world: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The checked float64 inputs of a pose-based consistency metric (TAE, MFC): depth ``(T,H,W)``,
    intrinsics ``(T,3,3)`` or ``(T,4,4)``, ``cam_to_world`` ``(T,4,4)`` and the mask ``(T,H,W)`` or
    None. Errors name ``metric`` and the argument at fault."""
    d = squeeze_channel(as_float64(depth, "depth"), "depth")
    dev = d.device
    n = d.shape[0]
    if n < 2:
        raise ValueError(f"{metric} needs at least 2 frames, got {n}")
    check_finite(d, "depth")
    k = as_float64(intrinsics, "intrinsics", dev)
    if k.ndim == 2:
        k = k.expand(n, *k.shape)
    if k.ndim != 3 or k.shape[0] != n or tuple(k.shape[1:]) not in ((3, 3), (4, 4)):
        raise ValueError(f"intrinsics: expected (3,3), (4,4), (T,3,3) or (T,4,4) with T={n}, got {tuple(k.shape)}")
    poses = as_float64(cam_to_world, "cam_to_world", dev)
    if tuple(poses.shape) != (n, 4, 4):
        raise ValueError(f"cam_to_world: expected ({n},4,4), got {tuple(poses.shape)}")
    check_finite(poses, "cam_to_world")
    check_finite(k, "intrinsics")
    m = None
    if mask is not None:
        m = squeeze_channel(as_bool(mask, "mask", dev), "mask")
        if m.shape != d.shape:
            raise ValueError(f"mask has shape {tuple(m.shape)}, expected {tuple(d.shape)}")
    return d, k, poses, m


def temporal_alignment_error(depth: Any, intrinsics: Any, cam_to_world: Any, mask: Any | None = None) -> float:
    """TAE of one sequence of aligned metric depth (VDA ``eval_tae.py``), ×100.

    Args:
        depth: ``(T,H,W)`` or ``(T,1,H,W)`` aligned predicted depth, positive everywhere it matters
            (e.g. :func:`vdf.metrics.aligned_depth`, which is in ``[1e-3, max_depth]``).
        intrinsics: ``(3,3)`` / ``(4,4)`` shared, or ``(T,3,3)`` / ``(T,4,4)`` per frame, in pixels of
            ``(H,W)``. Like VDA, the pair ``(k, k+1)`` uses frame ``k``'s intrinsics both ways.
        cam_to_world: ``(T,4,4)`` camera-to-world poses (OpenCV axes: x right, y down, z forward).
        mask: optional bool ``(T,H,W)`` / ``(T,1,H,W)``; only destination pixels inside it are
            compared (VDA: all pixels on ScanNet, rigidity masks on Sintel).

    Returns:
        ``100 · Σ_k (e(k→k+1) + e(k+1→k)) / (2 (T − 1))`` as a float (a percentage).

    Raises:
        ValueError: fewer than 2 frames, non-finite depth or poses, bad shapes.
    """
    d, k, poses, m = posed_sequence("TAE", depth, intrinsics, cam_to_world, mask)
    n = d.shape[0]

    world_to_cam = torch.linalg.inv(poses)
    total = 0.0
    for i in range(n - 1):
        fwd = world_to_cam[i + 1] @ poses[i]  # camera i -> camera i+1
        bwd = torch.linalg.inv(fwd)
        total += reprojection_abs_rel(d[i], d[i + 1], fwd[:3, :3], fwd[:3, 3], k[i], None if m is None else m[i + 1])
        total += reprojection_abs_rel(d[i + 1], d[i], bwd[:3, :3], bwd[:3, 3], k[i], None if m is None else m[i])
    return 100.0 * total / (2 * (n - 1))
