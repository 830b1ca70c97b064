"""`VideoPrediction`: one input video run through a strategy, lazily, frame by frame."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vdf.data.video_io import VideoSource
from vdf.inference.base import ClipModel, LongVideoStrategy


@dataclass
class VideoPrediction:
    """Nothing is decoded or predicted until iterated.

    Iterating yields ``(frame_index, disparity (H,W) float32, rgb (3,H,W) float32 in [0,1])`` in
    frame order. Only the frames inside the strategy's window (plus the ones it has not yet
    answered) are held at once.
    """

    source: VideoSource
    model: ClipModel
    strategy: LongVideoStrategy

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        pending: deque[tuple[int, torch.Tensor]] = deque()

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in self.source.frames():
                pending.append((index, frame))
                yield frame

        for disparity in self.strategy(self.model, frames()):
            if not pending:
                raise RuntimeError(f"{type(self.strategy).__name__} yielded more outputs than frames it read")
            index, rgb = pending.popleft()
            yield index, disparity.reshape(disparity.shape[-2:]).float(), rgb
        if pending:
            raise RuntimeError(
                f"{type(self.strategy).__name__} yielded {len(pending)} fewer outputs than frames it read"
            )
