"""`PerFrame`: every frame predicted alone (what a per-frame baseline does on video)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from vdf.inference.base import ClipModel, LongVideoStrategy, chunks


class PerFrame(LongVideoStrategy):
    """Each frame is its own clip of length 1.

    Args:
        batch_size: frames run together. For a per-frame network this only changes speed; a video
            network still sees each frame alone (clips of length 1 stacked along the batch).
    """

    def __init__(self, batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @property
    def window(self) -> int:
        return self.batch_size

    def __call__(self, model: ClipModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for chunk in chunks(frames, self.batch_size):
            # (b,1,3,H,W): b clips of one frame each.
            out = model.predict_clip(torch.stack(chunk).unsqueeze(1))
            yield from out[:, 0]


__all__ = ["PerFrame"]
