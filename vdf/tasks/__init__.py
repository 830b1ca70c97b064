"""LightningModules: training and evaluation glue around the torch models of `vdf.models`."""

from vdf.tasks.base import VideoDepthTask
from vdf.tasks.flashdepth import FlashDepthTask
from vdf.tasks.frame_depth import FrameDepthTask
from vdf.tasks.keyframe import KeyframeInterpolationTask
from vdf.tasks.latent_diffusion import LatentDiffusionTask
from vdf.tasks.losses import InverseDepthL1Loss, ScaleShiftInvariantLoss, VideoDepthAnythingLoss
from vdf.tasks.vda import VideoDepthAnythingTask

__all__ = [
    "FlashDepthTask",
    "FrameDepthTask",
    "InverseDepthL1Loss",
    "KeyframeInterpolationTask",
    "LatentDiffusionTask",
    "ScaleShiftInvariantLoss",
    "VideoDepthAnythingLoss",
    "VideoDepthAnythingTask",
    "VideoDepthTask",
]
