"""`VideoDepthAnythingPredictor`: Video-Depth-Anything's preprocessing around its network.

Frames are resized as Depth-Anything-V2's (short side to ``input_size``, sides multiples of 14,
bicubic; `vdf.models.dav2.preprocess_frames`), except that a frame wider than 16:9 gets a smaller
``input_size`` (``round(int(input_size * 1.777 / ratio) / 14) * 14``, the official memory
guard). Predictions go back to the frame's size (bilinear, ``align_corners=True``).

Two ways to run a video, chosen by the strategy:

- offline, `vdf.inference.KeyframeAlignedWindows` (the default and the official ``run.py``):
  32-frame clip forwards (`predict_clip`), stitched by keyframes and scale/shift alignment;
- streaming, `vdf.inference.Streaming` (the official ``run_streaming.py``): one frame at a time
  through `stream_step`, the temporal attentions reading a bounded cache of earlier frames.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vdf.inference.base import LongVideoStrategy
from vdf.models.dav2 import preprocess_frames
from vdf.models.vda import VDAStreamState, VideoDepthAnything
from vdf.predictors import options as inference_options
from vdf.predictors.base import Predictor
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import Resolution

#: Frames wider (or taller) than this aspect ratio are processed at a smaller short side.
MAX_RATIO = 1.78


def vda_input_size(height: int, width: int, input_size: int = 518) -> int:
    """The official short-side target for a ``height x width`` video (smaller beyond 16:9)."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        return round(int(input_size * 1.777 / ratio) / 14) * 14
    return input_size


class VideoDepthAnythingPredictor(Predictor):
    """Video-Depth-Anything S, B or L (relative or metric), offline or streamed.

    Args:
        net: the network (`vdf.models.VideoDepthAnything`; official weights through its
            ``weights``).
        input_size: processing short side (518, as the official scripts), reduced beyond 16:9.
        antialias: antialias the bicubic resize when downscaling (the official OpenCV
            ``INTER_CUBIC`` does not: False reproduces it).
        strategy: default `KeyframeAlignedWindows` (the official offline inference; for a metric
            net, without the scale/shift alignment).
        resolution: default the frames' own size (the predictor resizes to ``input_size``).
        inference: test/predict-time options (dtype, channels-last, attention, compile;
            `vdf.predictors.InferenceOptions`); default: as built.
    """

    def __init__(
        self,
        net: VideoDepthAnything,
        input_size: int = 518,
        antialias: bool = False,
        strategy: LongVideoStrategy | None = None,
        resolution: Resolution | None = None,
        inference: InferenceOptions | None = None,
    ):
        self._metric = bool(getattr(net, "metric", False))
        super().__init__(strategy, resolution, inference)
        self.net = net
        self.input_size = input_size
        self.antialias = antialias
        self._step = None  # the compiled streaming step (inference.compile)

    @property
    def output_space(self) -> str:  # type: ignore[override]
        """Relative disparity, or metric depth for a metric net."""
        return "depth" if self.net.metric else "disparity"

    def default_strategy(self) -> LongVideoStrategy:
        from vdf.inference.keyframe_aligned_windows import KeyframeAlignedWindows

        return KeyframeAlignedWindows(align=not self._metric)

    def inference_networks(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net}

    def compile_networks(self) -> None:
        """The network for clips, and the one-frame step with its cache as input and output."""
        super().compile_networks()
        self._step = inference_options.compile_function(self.net.step, self.inference)

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> ImageNet-normalised at the processing size."""
        size = vda_input_size(*frames.shape[-2:], self.input_size)
        return preprocess_frames(frames, size, self.antialias)

    def clip(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [0,1], T <= 32 -> ``(B,T,1,H,W)`` at the input size; the frames of a
        clip attend to each other (``frame_index`` is not used: positions are the slots 0..T-1)."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"expected video of shape (B,T,3,H,W), got {tuple(video.shape)}")
        b, t, _, h, w = video.shape
        images = self.prepare(video.reshape(b * t, 3, h, w))
        out = self.net(images.reshape(b, t, *images.shape[1:])).flatten(0, 1)
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return out.reshape(b, t, 1, h, w)

    @torch.no_grad()
    def stream_step(self, frame: torch.Tensor, state: Any | None) -> tuple[torch.Tensor, VDAStreamState]:
        """The `Streaming` call: ``(1,3,H,W)`` in [0,1] + state -> ``(1,1,H,W)`` + state."""
        self.apply_inference_options()
        frame = frame.to(self.device)
        h, w = frame.shape[-2:]
        step = self._step if self._step is not None else self.net.step
        out, state = step(self.prepare(frame).to(self.network_dtype), state)
        return F.interpolate(out.float(), size=(h, w), mode="bilinear", align_corners=True), state
