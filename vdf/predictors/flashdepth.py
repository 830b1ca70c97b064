"""`FlashDepthPredictor`: FlashDepth's streaming inference (one frame at a time, carried Mamba state).

Frame sizes: the network sees the frames at their own size, as the official code: training clips
at the data's crop size, and at test and predict time the size of the ``resolution`` rule (the
official inference reader's: long side capped at 2044, then each side rounded up to a multiple of
14, `vdf.predictors.resolution.CapThenRoundToMultiple`). A side that is not a multiple of 14 is
rounded up (bicubic, clipped to [0,1]), as the official Depth-Anything preprocessing does for
every frame, and the prediction is resized back (bilinear, ``align_corners=True``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vdf.inference.base import LongVideoStrategy
from vdf.models.dav2 import normalize_imagenet, preprocess_frames
from vdf.models.flashdepth import FlashDepth
from vdf.predictors import options as inference_options
from vdf.predictors.base import Predictor
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import Resolution, RoundToMultiple

# The official Depth-Anything preprocessing of every frame: each side rounded up to a multiple of
# 14 (``Resize(lower_bound, ensure_multiple_of=14)`` at the frame's own size), bicubic, then
# clipped to [0,1]. A no-op on frames already at such a size (the paper's crops, and frames a
# `CapThenRoundToMultiple` rule has prepared).
_PATCH_MULTIPLE = RoundToMultiple(max_size=None, multiple=14, rounding="up", mode="bicubic", clip=True)


class FlashDepthPredictor(Predictor):
    """FlashDepth S, L or the hybrid (the ``net``'s variant), streamed.

    Args:
        net: the FlashDepth network (official weights through its ``weights`` arguments).
        input_size: vdf option, not the official pipeline: resize every frame so that its short
            side is ``input_size`` (Depth-Anything-V2's multiple-of-14 rule) before the network,
            in training and inference alike. None (default, official): no resize beyond rounding
            the sides up to multiples of 14. Do not combine it with a resizing ``resolution``.
        strategy: default `Streaming` (one frame at a time, the state carried through the video).
        resolution: the official inference rule in the shipped configs (see the module doc).
        inference: test/predict-time options (dtype, channels-last, attention, compile;
            `vdf.predictors.InferenceOptions`); default: as built.
    """

    def __init__(
        self,
        net: FlashDepth,
        input_size: int | None = None,
        strategy: LongVideoStrategy | None = None,
        resolution: Resolution | None = None,
        inference: InferenceOptions | None = None,
    ):
        super().__init__(strategy, resolution, inference)
        if input_size is not None and type(self.resolution) is not Resolution:
            raise ValueError(
                f"input_size={input_size} and resolution {type(self.resolution).__name__} would both resize the "
                "frames at test and predict time; set one of them"
            )
        self.net = net
        self.input_size = input_size
        self._step = None  # the compiled streaming step (inference.compile)

    def default_strategy(self) -> LongVideoStrategy:
        from vdf.inference.streaming import Streaming

        return Streaming()

    def inference_networks(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def compile_networks(self) -> None:
        """The network for clips, and the one-frame step with the state as input and output, so
        that one compiled step serves every frame of a stream."""
        super().compile_networks()
        self._step = inference_options.compile_function(self.net.step, self.inference)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> ImageNet-normalised, sides multiples of 14."""
        if self.input_size is not None:
            return preprocess_frames(frames, self.input_size)
        size = _PATCH_MULTIPLE.size(*frames.shape[-2:])
        return normalize_imagenet(_PATCH_MULTIPLE.prepare(frames, size))

    @staticmethod
    def _back(disparity: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``(N,1,h',w')`` -> ``(N,1,h,w)``: bilinear, ``align_corners=True`` (the official evaluation's)."""
        if tuple(disparity.shape[-2:]) == (h, w):
            return disparity
        return F.interpolate(disparity, size=(h, w), mode="bilinear", align_corners=True)

    def clip(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` -> ``(B,T,1,H,W)`` (100/metres): the state restarted at the clip's first
        frame and carried through it (BPTT in training)."""
        b, t, _, h, w = video.shape
        images = self.prepare(video.reshape(b * t, 3, h, w))
        disparity, _ = self.net(images.reshape(b, t, *images.shape[1:]))
        return self._back(disparity.flatten(0, 1), h, w).reshape(b, t, 1, h, w)

    @torch.no_grad()
    def stream_step(self, frame: torch.Tensor, state: Any | None) -> tuple[torch.Tensor, Any]:
        """The `Streaming` call: ``(1,3,H,W)`` in [0,1] + state -> ``(1,1,H,W)`` disparity + state."""
        self.apply_inference_options()
        frame = frame.to(self.device)
        h, w = frame.shape[-2:]
        if state is None:
            state = self.net.init_state(frame.shape[0], device=self.device)
        step = self._step if self._step is not None else self.net.step
        disparity, state = step(self.prepare(frame).to(self.network_dtype), state)
        return self._back(disparity.float(), h, w), state
