"""Predictors: each family's inference in pure torch (network, preprocessing, strategy); what `vdf.load` returns."""

from vdf.predictors.base import PredictedFrame, Predictor
from vdf.predictors.flashdepth import FlashDepthPredictor
from vdf.predictors.frame import FramePredictor
from vdf.predictors.latent import LatentDiffusionPredictor
from vdf.predictors.options import InferenceOptions
from vdf.predictors.vda import VideoDepthAnythingPredictor

__all__ = [
    "FlashDepthPredictor",
    "FramePredictor",
    "InferenceOptions",
    "LatentDiffusionPredictor",
    "PredictedFrame",
    "Predictor",
    "VideoDepthAnythingPredictor",
]
