"""`FramePredictor`: a per-image depth network (Depth-Anything-V2) run on every frame alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vdf.inference.base import LongVideoStrategy
from vdf.models.dav2 import preprocess_frames
from vdf.predictors.base import Predictor
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import Resolution


class FramePredictor(Predictor):
    """Depth-Anything-V2 (or any image network) applied frame by frame.

    The network sees each frame alone, so its predictions share no scale across frames: the
    baseline every video model is compared with.

    Args:
        net: the image network, ImageNet-normalised ``(N,3,h,w)`` -> ``(N,1,h,w)`` relative
            disparity (`vdf.models.DepthAnythingV2`; official weights through its ``weights``).
        input_size: processing short side, sides rounded to multiples of 14 (the official
            ``keep_aspect_ratio``/``lower_bound`` rule; 518 as DAv2).
        antialias: antialias the bicubic resize when downscaling. The official pipeline resizes
            with OpenCV ``INTER_CUBIC``, which never antialiases: False reproduces its numbers.
        frame_chunk: frames per network call (bounds activation memory; the result does not
            depend on it).
        strategy: default `PerFrame` in batches of 8.
        resolution: default the frames' own size (the network resizes to ``input_size`` itself).
        inference: test/predict-time options (dtype, channels-last, attention, compile;
            `vdf.predictors.InferenceOptions`); default: as built.
    """

    def __init__(
        self,
        net: nn.Module,
        input_size: int = 518,
        antialias: bool = False,
        frame_chunk: int = 32,
        strategy: LongVideoStrategy | None = None,
        resolution: Resolution | None = None,
        inference: InferenceOptions | None = None,
    ):
        super().__init__(strategy, resolution, inference)
        if frame_chunk < 1:
            raise ValueError(f"frame_chunk must be >= 1, got {frame_chunk}")
        self.net = net
        self.input_size = input_size
        self.antialias = antialias
        self.frame_chunk = frame_chunk

    def inference_networks(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def clip(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [0,1] -> ``(B,T,1,H,W)`` non-negative relative disparity at the
        input size (bilinear, ``align_corners=True``, as the official ``infer_image``)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video of shape (B,T,3,H,W), got {tuple(video.shape)}")
        b, t, _, h, w = video.shape
        outs = []
        for chunk in video.reshape(b * t, 3, h, w).split(self.frame_chunk):
            disparity = self.net(preprocess_frames(chunk, self.input_size, self.antialias))
            outs.append(F.interpolate(disparity, size=(h, w), mode="bilinear", align_corners=True))
        return torch.cat(outs).reshape(b, t, 1, h, w)
