"""`VideoPrediction`: one input video run through a strategy, lazily, frame by frame."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch

from vdf.inference.base import ClipModel, LongVideoStrategy
from vdf.inference.resolution import Resolution, run_at_resolution
from vdf.io.video import VideoSource


@dataclass
class VideoPrediction:
    """Nothing is decoded or predicted until iterated.

    Iterating yields ``(frame_index, prediction (H,W) float32, rgb (3,H,W) float32 in [0,1])`` in
    frame order, the prediction at the frame's size (the model runs at ``resolution``'s size).
    Frames the strategy gives no prediction (``None``) are left out; ``skipped`` counts them.
    Only the frames inside the strategy's window (plus the ones it has not yet answered) are held
    at once. Every step of the strategy runs inside ``context()`` (the trainer's precision:
    autocast for ``16-mixed`` / ``bf16-mixed``), also when the writer iterates outside
    Lightning's predict step.
    """

    source: VideoSource
    model: ClipModel
    strategy: LongVideoStrategy
    resolution: Resolution = field(default_factory=Resolution)
    context: Callable[[], AbstractContextManager] = contextlib.nullcontext
    skipped: int = 0

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        pending: deque[tuple[int, torch.Tensor]] = deque()

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in self.source.frames():
                pending.append((index, frame))
                yield frame

        self.skipped = 0
        outputs = run_at_resolution(self.resolution, self.strategy, self.model, frames())
        end = object()
        while True:
            with self.context():
                disparity = next(outputs, end)
            if disparity is end:
                break
            if not pending:
                raise RuntimeError(f"{type(self.strategy).__name__} yielded more outputs than frames it read")
            index, rgb = pending.popleft()
            if disparity is None:
                self.skipped += 1
                continue
            yield index, disparity.reshape(disparity.shape[-2:]).float(), rgb
        if pending:
            raise RuntimeError(
                f"{type(self.strategy).__name__} yielded {len(pending)} fewer outputs than frames it read"
            )
