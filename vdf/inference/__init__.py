"""Long-video inference strategies: frames in as an iterator, per-frame disparity out as one."""

from vdf.inference.base import ClipModel, LongVideoStrategy
from vdf.inference.independent_windows import IndependentWindows
from vdf.inference.keyframe_aligned_windows import KeyframeAlignedWindows
from vdf.inference.keyframe_interpolation import KeyframeInterpolation
from vdf.inference.per_frame import PerFrame
from vdf.inference.segment_stitching import SegmentStitching
from vdf.inference.sliding_context import SlidingWindowContext
from vdf.inference.streaming import Streaming

__all__ = [
    "ClipModel",
    "IndependentWindows",
    "KeyframeAlignedWindows",
    "KeyframeInterpolation",
    "LongVideoStrategy",
    "PerFrame",
    "SegmentStitching",
    "SlidingWindowContext",
    "Streaming",
]
