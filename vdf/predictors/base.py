"""`Predictor`: one family's inference in pure torch — network, preprocessing, strategy.

A predictor is what `vdf.load` returns and what every task owns. It holds

- the network (and, for the latent families, the objective, normalisation, sampler, steps and
  seed: `vdf.predictors.LatentDiffusionPredictor`);
- the resolution rule (`vdf.predictors.resolution`): the size the network sees at test and
  predict time, and the way back to the input frame;
- the long-video strategy (`vdf.inference`): how frames are grouped into network calls.

Strategies talk to it through the few calls of their protocol (`predict_clip` for every
predictor, `stream_step` for recurrent ones, ``condition``/``denoise``/``decode``... for latent
diffusion). Calling a predictor runs a whole video::

    predictor = vdf.load("configs/dav2.yaml")
    for frame in predictor("clip.mp4"):          # or frames, a (T,H,W,3) uint8 array, a tensor
        frame.index, frame.value                 # value: (H,W) float32, the model's output space

Nothing here imports Lightning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vdf.inference.base import LongVideoStrategy
from vdf.predictors import options as inference_options
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import Resolution, run_at_resolution


class PredictedFrame(NamedTuple):
    """One frame of a predicted video."""

    index: int  #: the frame's index in its video
    value: torch.Tensor  #: ``(H,W)`` float32 on the CPU, in the predictor's ``output_space``


def _frame_tensor(frame: Any) -> torch.Tensor:
    """A frame as ``(3,H,W)`` float32 in [0,1]: a float tensor ``(3,H,W)`` in [0,1] or an 8-bit
    ``(H,W,3)`` array / tensor."""
    t = torch.as_tensor(np.asarray(frame)) if not isinstance(frame, torch.Tensor) else frame
    if t.dtype == torch.uint8:
        if t.dim() != 3 or t.shape[-1] != 3:
            raise ValueError(f"an 8-bit frame must be (H,W,3), got {tuple(t.shape)}")
        return t.permute(2, 0, 1).float() / 255
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"a float frame must be (3,H,W) in [0,1], got {tuple(t.shape)}")
    return t.float()


def video_frames(video: Any) -> Iterator[tuple[int, torch.Tensor]]:
    """``(index, (3,H,W) float32 in [0,1])`` of a video given as a path (a video file or a folder
    of images, streamed), a ``(T,H,W,3)`` uint8 array or tensor, a ``(T,3,H,W)`` float tensor in
    [0,1], or an iterable of frames (each ``(3,H,W)`` float or ``(H,W,3)`` uint8)."""
    if isinstance(video, (str, Path)):
        from vdf.io.video import VideoSource

        yield from VideoSource(video).frames()
        return
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim != 4:
        raise ValueError(f"a video array must be (T,H,W,3) uint8 or (T,3,H,W) float, got shape {tuple(video.shape)}")
    for index, frame in enumerate(video):
        yield index, _frame_tensor(frame)


class Predictor(nn.Module):
    """Base of the per-family predictors.

    Args:
        strategy: how long videos are run (`vdf.inference`); default: the family's.
        resolution: the size the network sees at test and predict time and the way back to the
            input's size; default: the frames' own size.
        inference: how the networks run at test and predict time (`InferenceOptions`: dtype,
            channels-last, attention backends, ``torch.compile``); default: as built, the
            official numerics.
    """

    #: The space of the affine-invariant prediction: ``disparity`` (larger is nearer) or ``depth``.
    output_space: str = "disparity"

    def __init__(
        self,
        strategy: LongVideoStrategy | None = None,
        resolution: Resolution | None = None,
        inference: InferenceOptions | None = None,
    ):
        super().__init__()
        self.strategy = strategy if strategy is not None else self.default_strategy()
        self.resolution = resolution if resolution is not None else Resolution()
        self.inference = inference if inference is not None else InferenceOptions()
        #: Whether `apply_inference_options` has run (it runs once).
        self.inference_applied = False
        #: Context of every network call a whole-video run makes (autocast for reduced precision;
        #: `vdf.load` sets it from the config's ``trainer.precision``, tasks from their trainer).
        self.precision: Callable[[], AbstractContextManager] = contextlib.nullcontext

    def default_strategy(self) -> LongVideoStrategy:
        from vdf.inference.per_frame import PerFrame

        return PerFrame(batch_size=8)

    @property
    def device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    # -- inference options ------------------------------------------------------------------------
    def inference_networks(self) -> dict[str, nn.Module]:
        """The networks `inference` applies to, by name (each called as a module: ``net(...)``)."""
        return {}

    def cast_networks(self, dtype: torch.dtype) -> None:
        """``inference.dtype``: each network's weights in ``dtype``, inputs cast on entry, outputs
        back to float32 (`vdf.predictors.options.cast_network`)."""
        for net in self.inference_networks().values():
            inference_options.cast_network(net, dtype)

    def compile_networks(self) -> None:
        """``inference.compile``: `torch.compile` each network in place."""
        for net in self.inference_networks().values():
            inference_options.compile_module(net, self.inference)

    def apply_inference_options(self) -> None:
        """Apply `inference` to the networks (once; `stream` calls it): fused attention processors,
        then channels-last, 2-D temporal convolutions, dtype and compilation as chosen."""
        if self.inference_applied:
            return
        options = self.inference
        if not options.exact and self.training:
            raise RuntimeError(
                f"inference dtype {options.dtype} casts the weights: it is for test and predict, not for a "
                "predictor in training mode"
            )
        for net in self.inference_networks().values():
            inference_options.use_fused_attention(net)
            if options.channels_last:
                inference_options.to_channels_last(net)
            if options.temporal_conv_2d:
                inference_options.temporal_convs_as_2d(net)
        if options.torch_dtype not in (None, torch.float32):
            self.cast_networks(options.torch_dtype)
        if options.compile:
            self.compile_networks()
        self.inference_applied = True

    @property
    def network_dtype(self) -> torch.dtype:
        """The dtype inputs are cast to for the networks (``inference.dtype``, float32 by default)."""
        return self.inference.torch_dtype or torch.float32

    # -- the clip forward -------------------------------------------------------------------------
    def clip(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [0,1] -> ``(B,T,1,H,W)`` at the frames' own size (differentiable
        where the family trains through it); ``frame_index`` ``(B,T)`` where positions matter."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_clip(self, video: torch.Tensor) -> torch.Tensor:
        """The clip call of the strategies: ``(B,T,3,H,W)`` -> ``(B,T,1,H,W)`` float32, no grad."""
        self.apply_inference_options()
        return self.clip(video.to(self.device)).float()

    def predict_at_resolution(self, video: torch.Tensor, requested: tuple[int, int] | None = None) -> torch.Tensor:
        """The clip forward at ``resolution``: ``(B,T,3,H,W)`` -> ``(B,T,1,H,W)`` at the input size."""
        b, t, _, h, w = video.shape
        size = self.resolution.size(h, w, requested)
        frames = self.resolution.prepare(video.flatten(0, 1), size)
        pred = self.predict_clip(frames.reshape(b, t, *frames.shape[1:]))
        return self.resolution.restore(pred.flatten(0, 1), h, w).reshape(b, t, 1, h, w)

    # -- whole videos -----------------------------------------------------------------------------
    def stream(
        self, frames: Iterable[torch.Tensor], requested: tuple[int, int] | None = None
    ) -> Iterator[torch.Tensor | None]:
        """Frames ``(3,H,W)`` through ``resolution`` and ``strategy``: one ``(1,H,W)`` (or ``None``
        for a frame the strategy does not predict) per frame, each step under ``precision`` and the
        ``inference`` options (applied at the first call)."""
        self.apply_inference_options()
        outputs = run_at_resolution(self.resolution, self.strategy, self, frames, requested)
        end = object()
        while True:
            with self.precision(), self.inference.attention_context():
                out = next(outputs, end)
            if out is end:
                return
            yield out

    def run(self, video: torch.Tensor, requested: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One sequence ``(T,3,H,W)`` -> ``(T,1,H,W)`` (NaN where not predicted) and bool ``(T,)``:
        which frames the strategy predicted. ``requested`` is a dataset's protocol size."""
        h, w = video.shape[-2:]
        missing = torch.full((1, h, w), float("nan"), device=self.device)
        outputs = list(self.stream(iter(video), requested))
        present = torch.tensor([out is not None for out in outputs], dtype=torch.bool)
        pred = torch.stack([missing if out is None else out.to(self.device) for out in outputs])
        return pred, present

    def forward(self, video: Any) -> Iterator[PredictedFrame]:
        """Predict a whole video (a path, frames, an array or a tensor; see `video_frames`).

        Yields a `PredictedFrame` per predicted frame, in order, at the input's size. Frames are
        read lazily: a long video is never held whole.
        """
        pending: list[int] = []

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in video_frames(video):
                pending.append(index)
                yield frame.to(self.device)

        with torch.inference_mode():
            for out in self.stream(frames()):
                index = pending.pop(0)
                if out is not None:
                    yield PredictedFrame(index, out.reshape(out.shape[-2:]).float().cpu())

    def predict(self, video: Any) -> torch.Tensor:
        """The whole video at once: ``(T,H,W)`` float32 on the CPU, NaN for frames without a prediction."""
        values: list[torch.Tensor | None] = []
        with torch.inference_mode():
            for out in self.stream(frame.to(self.device) for _, frame in video_frames(video)):
                values.append(None if out is None else out.reshape(out.shape[-2:]).float().cpu())
        shape = next((v.shape for v in values if v is not None), None)
        if shape is None:
            raise ValueError("no frame of the video has a prediction")
        return torch.stack([torch.full(shape, float("nan")) if v is None else v for v in values])
