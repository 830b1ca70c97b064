"""`VideoPrediction`: one input video run through a predictor, lazily, frame by frame (``vdf predict``)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from vdf.io import VideoSource


@dataclass
class VideoPrediction:
    """Nothing is decoded or predicted until iterated.

    Iterating yields ``(frame_index, prediction (H,W) float32, rgb (3,H,W) float32 in [0,1])`` in
    frame order, the prediction at the frame's size (the predictor runs at its resolution rule's
    size, under its ``precision``). Only the frames inside the strategy's window (plus the ones it
    has not yet answered) are held at once. Frames the strategy gives no prediction (``None``)
    are left out; ``skipped`` counts them.
    """

    source: VideoSource
    predictor: Any  # vdf.predictors.Predictor
    skipped: int = 0

    @property
    def strategy(self) -> Any:
        return self.predictor.strategy

    @property
    def resolution(self) -> Any:
        return self.predictor.resolution

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        pending: deque[tuple[int, torch.Tensor]] = deque()

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in self.source.frames():
                pending.append((index, frame))
                yield frame

        self.skipped = 0
        name = type(self.strategy).__name__
        for disparity in self.predictor.stream(frames()):
            if not pending:
                raise RuntimeError(f"{name} yielded more outputs than frames it read")
            index, rgb = pending.popleft()
            if disparity is None:
                self.skipped += 1
                continue
            yield index, disparity.reshape(disparity.shape[-2:]).float(), rgb
        if pending:
            raise RuntimeError(f"{name} yielded {len(pending)} fewer outputs than frames it read")
