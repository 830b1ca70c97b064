"""`Streaming`: one frame at a time with the model's carried state (FlashDepth, Video-Depth-Anything)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch

from vdf.inference.base import LongVideoStrategy


class RecurrentModel(Protocol):
    def stream_step(self, frame: torch.Tensor, state: Any | None) -> tuple[torch.Tensor, Any]:
        """``(1,3,H,W)`` in [0,1] and the state (None at the first frame) -> ``(1,1,H,W)``, new state."""


class Streaming(LongVideoStrategy):
    """Frames in, disparity out, one by one: O(1) memory in the video's length.

    The model carries its state from frame to frame (FlashDepth's Mamba state, Video-Depth-Anything's
    bounded cache of hidden states) and never restarts it inside a video (scene cuts are not
    detected). ``reset_every`` restarts the state every
    that many frames, an ablation of how far the recurrence carries useful context.
    """

    def __init__(self, reset_every: int | None = None):
        if reset_every is not None and reset_every < 1:
            raise ValueError(f"reset_every must be >= 1 or None, got {reset_every}")
        self.reset_every = reset_every

    def __call__(self, model: RecurrentModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        if not hasattr(model, "stream_step"):
            raise TypeError(
                f"{type(model).__name__} has no recurrent state (stream_step): Streaming needs a recurrent "
                "model such as FlashDepth or Video-Depth-Anything; use PerFrame or IndependentWindows instead"
            )
        state = None
        for t, frame in enumerate(frames):
            if self.reset_every is not None and t % self.reset_every == 0:
                state = None
            disparity, state = model.stream_step(frame.unsqueeze(0), state)
            yield disparity[0]
