"""Video depth metrics with the published zero-shot protocol (see ``docs/metrics.md``).

Plain functions (numpy or torch in, Python floats out) and a DDP-safe torchmetrics class:

- :func:`align_disparity`, :func:`aligned_depth`, :func:`evaluate_sequence`: the DepthCrafter/VDA
  protocol (one LSQ in disparity per sequence; AbsRel, δ1, RMSE per frame, mean over frames);
  :func:`fit_alignment` / :func:`apply_alignment`: its fit and its conversion to metres alone
  (what ``vdf predict`` aligns to known depth with);
- :func:`boundary_f1`: Depth Pro's scale-invariant boundary F1 of one frame;
- :func:`temporal_alignment_error`: Video-Depth-Anything's TAE of one sequence;
- :func:`multi_frame_consistency`, :class:`MultiFrameConsistency`: ChronoDepth's MFC;
- :class:`VideoDepthMetrics`: all of the above, averaged over sequences, for Lightning.
"""

from .boundary import boundary_f1, boundary_thresholds
from .consistency import MultiFrameConsistency, multi_frame_consistency, warp_depth
from .protocol import (
    EPS_CLIP,
    NoValidPixelsError,
    align_disparity,
    aligned_depth,
    apply_alignment,
    evaluate_sequence,
    fit_alignment,
    resize_prediction,
)
from .temporal import reprojection_abs_rel, temporal_alignment_error
from .video_depth import VideoDepthMetrics

__all__ = [
    "EPS_CLIP",
    "MultiFrameConsistency",
    "NoValidPixelsError",
    "VideoDepthMetrics",
    "align_disparity",
    "aligned_depth",
    "apply_alignment",
    "boundary_f1",
    "boundary_thresholds",
    "evaluate_sequence",
    "fit_alignment",
    "multi_frame_consistency",
    "reprojection_abs_rel",
    "resize_prediction",
    "temporal_alignment_error",
    "warp_depth",
]
