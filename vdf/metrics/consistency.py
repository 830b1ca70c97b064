"""Multi-frame consistency (MFC), ChronoDepth's temporal metric (``reference/svd_methods.md`` §3.3).

For each pair of adjacent frames ``(m, n = m + 1)`` of a sequence, the aligned predicted depth of
frame ``m`` is lifted to 3-D with the intrinsics, moved into camera ``n`` with the ground-truth
relative pose, and projected into frame ``n`` (``D_{m→n}``); MFC is the L1 difference, in metres,
between ``D_{m→n}`` and frame ``n``'s own aligned prediction ``D_n`` on the valid pixels:

    e(m→n) = mean over compared pixels p of |D_{m→n}(p) − D_n(p)|
    MFC    = mean over the pairs that compare at least one pixel of e(m→n)

A pixel ``p`` of frame ``n`` is compared when a point of frame ``m`` lands on it (in front of the
camera, rounded to the nearest pixel; when several land on it the nearest one is kept: a
z-buffer) and ``p`` is valid in frame ``n`` (the ground truth's valid mask: ``1e-3 < gt <
max_depth`` and the dataset's mask). The ground truth is used for the alignment, the poses and the
mask only: MFC compares the prediction with itself, so a model that reproduces the ground truth
scores 0 on a static scene. The paper names the steps but publishes no code; the choices vdf makes
where the text is silent (nearest-pixel rounding with a z-buffer, pixel centres at integer
coordinates, the target frame's mask, forward pairs only, pairs without a compared pixel left
out, the plain mean over pairs and then over sequences) are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric

from .temporal import posed_sequence

__all__ = ["MultiFrameConsistency", "multi_frame_consistency", "warp_depth"]


def warp_depth(
    depth_src: torch.Tensor,
    rotation: torch.Tensor,
    translation: torch.Tensor,
    k_src: torch.Tensor,
    k_dst: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """``D_{src→dst}``: the depth of ``depth_src``'s points seen from the destination camera.

    Args:
        depth_src: ``(H,W)`` float64 depth (metres) of the source frame.
        rotation, translation: ``(3,3)``, ``(3,)``: source camera → destination camera
            (``X_dst = R X_src + t``).
        k_src, k_dst: ``(3,3)`` (or ``(4,4)``) intrinsics; pixel ``(x, y)`` is the column/row index.
        size: ``(H,W)`` of the destination frame (default: the source's).

    Returns:
        ``(H,W)`` float64: the ``z`` of the nearest point that rounds to each pixel, 0 where none does.
    """
    h, w = depth_src.shape
    hd, wd = size if size is not None else (h, w)
    dev, dt = depth_src.device, torch.float64
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dt), torch.arange(w, device=dev, dtype=dt), indexing="ij")
    z = depth_src
    pts = torch.stack(((xs - k_src[0, 2]) * z / k_src[0, 0], (ys - k_src[1, 2]) * z / k_src[1, 1], z), dim=-1)
    pts = pts.reshape(-1, 3)[(z > 0).reshape(-1)] @ rotation.T + translation
    pts = pts[pts[:, 2] > 0]
    zw = pts[:, 2]
    u = torch.round(pts[:, 0] * k_dst[0, 0] / zw + k_dst[0, 2])
    v = torch.round(pts[:, 1] * k_dst[1, 1] / zw + k_dst[1, 2])
    inside = (u >= 0) & (u < wd) & (v >= 0) & (v < hd)
    out = torch.full((hd * wd,), float("inf"), device=dev, dtype=dt)
    idx = (v[inside] * wd + u[inside]).to(torch.int64)
    out.scatter_reduce_(0, idx, zw[inside], reduce="amin", include_self=True)
    return torch.where(torch.isinf(out), torch.zeros_like(out), out).reshape(hd, wd)


def multi_frame_consistency(
    depth: Any, intrinsics: Any, cam_to_world: Any, mask: Any | None = None
) -> tuple[float, int]:
    """MFC of one sequence of aligned depth.

    Args:
        depth: ``(T,H,W)`` or ``(T,1,H,W)`` aligned predicted depth in metres (e.g.
            :func:`vdf.metrics.aligned_depth`).
        intrinsics: ``(3,3)`` shared or ``(T,3,3)`` per frame, in pixels of ``(H,W)``.
        cam_to_world: ``(T,4,4)`` camera-to-world poses (OpenCV axes: x right, y down, z forward).
        mask: optional bool ``(T,H,W)`` / ``(T,1,H,W)``: the pixels of each frame that may be
            compared when it is the target (the ground truth's valid mask).

    Returns:
        ``(mfc, pairs)``: the mean over adjacent pairs that compare at least one pixel of their
        mean absolute difference (metres), and the number of such pairs; ``(nan, 0)`` when none does.

    Raises:
        ValueError: fewer than 2 frames, non-finite depth or cameras, bad shapes.
    """
    d, k, poses, m = posed_sequence("MFC", depth, intrinsics, cam_to_world, mask)
    n = d.shape[0]
    world_to_cam = torch.linalg.inv(poses)
    errors = []
    for i in range(n - 1):
        rel = world_to_cam[i + 1] @ poses[i]  # camera i -> camera i+1
        warped = warp_depth(d[i], rel[:3, :3], rel[:3, 3], k[i], k[i + 1])
        compared = (warped > 0) & (d[i + 1] > 0)
        if m is not None:
            compared &= m[i + 1]
        if bool(compared.any()):
            errors.append(float((warped[compared] - d[i + 1][compared]).abs().mean()))
    if not errors:
        return float("nan"), 0
    return sum(errors) / len(errors), len(errors)


class MultiFrameConsistency(Metric):
    """MFC over sequences of aligned depth (mean over sequences), DDP-safe.

    ``update(depth, intrinsics, cam_to_world, mask=None)`` takes a batch ``(B,T,[1,]H,W)`` of
    aligned metric depth with ``(B,T,3,3)`` intrinsics and ``(B,T,4,4)`` poses; each clip is one
    sequence (:func:`multi_frame_consistency`). States are float64 sums and counts reduced with
    ``sum``, so the value after synchronisation equals the single-process one. A sequence without
    any compared pixel adds to ``skipped`` only. `vdf.metrics.VideoDepthMetrics` computes the same
    value on the protocol's aligned prediction (``compute_mfc``).
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        zero = torch.tensor(0.0, dtype=torch.float64)
        self.add_state("mfc_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("num_sequences", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("skipped", default=zero.clone(), dist_reduce_fx="sum")

    def update(
        self,
        depth: torch.Tensor,
        intrinsics: torch.Tensor,
        cam_to_world: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:
        for b in range(depth.shape[0]):
            value, pairs = multi_frame_consistency(
                depth[b], intrinsics[b], cam_to_world[b], None if mask is None else mask[b]
            )
            if pairs == 0:
                self.skipped += 1
                continue
            self.mfc_sum += value
            self.num_sequences += 1

    def compute(self) -> torch.Tensor:
        if float(self.num_sequences) == 0:
            raise ValueError(f"MultiFrameConsistency: no sequence had a compared pixel ({int(self.skipped)} skipped)")
        return self.mfc_sum / self.num_sequences
