"""torchmetrics wrapper: per-sequence protocol scores accumulated as DDP-safe sums."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from .protocol import NoValidPixelsError, check_max_depth, check_space, evaluate_sequence

__all__ = ["VideoDepthMetrics"]


class VideoDepthMetrics(Metric):
    """AbsRel, δ1, RMSE (+ boundary F1, TAE, MFC) with the DepthCrafter/VDA protocol, averaged over sequences.

    Every clip of a batch is one sequence: it gets its own scale/shift fit
    (:func:`vdf.metrics.evaluate_sequence`), and each sequence weighs the same in the result, as in
    the published benchmarks. States are float64 sums plus counts reduced with ``sum``, so the
    value after DDP synchronisation equals the single-process value over the same sequences.

    Args:
        max_depth: valid range upper bound and depth clip (70 Sintel, 80 KITTI, 10 indoor).
        compute_boundary_f1: also accumulate ``boundary_f1`` (mean over frames, then sequences).
        compute_tae: also accumulate ``tae`` for batches that carry ``intrinsics`` and ``cam_to_world``.
        compute_mfc: also accumulate ``mfc`` (ChronoDepth's multi-frame consistency, metres) for
            batches that carry ``intrinsics`` and ``cam_to_world``; a sequence where no adjacent
            pair compares a pixel does not count towards it.
        align_space: where the per-sequence fit runs: ``disparity`` (DepthCrafter's benchmark, the
            default) or ``depth`` (ChronoDepth's paper); see `vdf.metrics.protocol`.
        **kwargs: forwarded to :class:`torchmetrics.Metric` (e.g. ``sync_on_compute``).
    """

    is_differentiable = False
    higher_is_better = None  # mixed: δ1 and boundary F1 up, the others down
    full_state_update = False

    _SUM_STATES = ("abs_rel", "delta1", "rmse", "boundary_f1", "tae", "mfc")

    def __init__(
        self,
        max_depth: float,
        compute_boundary_f1: bool = False,
        compute_tae: bool = False,
        align_space: str = "disparity",
        compute_mfc: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.max_depth = check_max_depth(max_depth)
        self.align_space = check_space(align_space, "align_space")
        self.compute_boundary_f1 = compute_boundary_f1
        self.compute_tae = compute_tae
        self.compute_mfc = compute_mfc
        zero = torch.tensor(0.0, dtype=torch.float64)
        for name in self._SUM_STATES:
            self.add_state(f"{name}_sum", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("num_sequences", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("num_tae", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("num_mfc", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("skipped", default=zero.clone(), dist_reduce_fx="sum")

    def update(
        self,
        pred: torch.Tensor,
        depth: torch.Tensor,
        valid: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        cam_to_world: torch.Tensor | None = None,
        tae_mask: torch.Tensor | None = None,
        pred_space: str = "disparity",
    ) -> None:
        """Score every clip of a batch.

        Args:
            pred: ``(B,T,1,h,w)`` or ``(B,T,h,w)`` affine-invariant prediction in ``pred_space``
                (relative disparity by default); resized bilinearly to the GT size when
                ``(h,w) != (H,W)``.
            depth: ``(B,T,1,H,W)`` or ``(B,T,H,W)`` GT metric depth (0 where unknown).
            valid: optional bool of the depth's shape, ANDed with ``1e-3 < depth < max_depth``.
            intrinsics: optional ``(B,T,3,3)`` (or ``(B,3,3)``); cam_to_world: optional ``(B,T,4,4)``.
            tae_mask: optional bool of the depth's shape restricting TAE's compared pixels.
            pred_space: ``disparity`` or ``depth`` (the model's ``output_space``).

        A clip without any valid pixel adds 1 to ``skipped`` and nothing else; a non-finite
        prediction raises ``ValueError`` (a diverged model must not score silently).
        """
        if pred.shape[0] != depth.shape[0]:
            raise ValueError(f"pred has batch size {pred.shape[0]} but depth has {depth.shape[0]}")
        cameras = intrinsics is not None and cam_to_world is not None
        with_tae = self.compute_tae and cameras
        with_mfc = self.compute_mfc and cameras
        for b in range(depth.shape[0]):
            try:
                scores = evaluate_sequence(
                    pred[b],
                    depth[b],
                    self.max_depth,
                    None if valid is None else valid[b],
                    intrinsics=intrinsics[b] if (with_tae or with_mfc) else None,
                    cam_to_world=cam_to_world[b] if (with_tae or with_mfc) else None,
                    tae_mask=None if (tae_mask is None or not with_tae) else tae_mask[b],
                    boundary=self.compute_boundary_f1,
                    pred_space=pred_space,
                    align_space=self.align_space,
                    tae=with_tae,
                    mfc=with_mfc,
                )
            except NoValidPixelsError:
                self.skipped += 1
                continue
            self.abs_rel_sum += scores["abs_rel"]
            self.delta1_sum += scores["delta1"]
            self.rmse_sum += scores["rmse"]
            self.num_sequences += 1
            if self.compute_boundary_f1:
                self.boundary_f1_sum += scores["boundary_f1"]
            if with_tae:
                self.tae_sum += scores["tae"]
                self.num_tae += 1
            if with_mfc and scores["mfc_pairs"] > 0:
                self.mfc_sum += scores["mfc"]
                self.num_mfc += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """Means over sequences: ``abs_rel``, ``delta1``, ``rmse`` (+ ``boundary_f1``; ``tae`` if any
        sequence had poses; ``mfc`` likewise), and the counts ``num_sequences``, ``skipped`` (float64 scalars).

        Raises:
            ValueError: no sequence with a valid pixel was seen (all skipped, or no update).
        """
        if float(self.num_sequences) == 0:
            raise ValueError(
                f"VideoDepthMetrics: no sequence with a valid pixel was scored "
                f"({int(self.skipped)} skipped for lack of valid ground truth)"
            )
        n = self.num_sequences
        out = {"abs_rel": self.abs_rel_sum / n, "delta1": self.delta1_sum / n, "rmse": self.rmse_sum / n}
        if self.compute_boundary_f1:
            out["boundary_f1"] = self.boundary_f1_sum / n
        if self.compute_tae and float(self.num_tae) > 0:
            out["tae"] = self.tae_sum / self.num_tae
        if self.compute_mfc and float(self.num_mfc) > 0:
            out["mfc"] = self.mfc_sum / self.num_mfc
        out["num_sequences"] = n.clone()
        out["skipped"] = self.skipped.clone()
        return out
