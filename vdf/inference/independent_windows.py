"""`IndependentWindows`: fixed windows predicted independently, the naive long-video baseline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from vdf.inference.base import ClipModel, LongVideoStrategy, fit_scale_shift, run_clip


class IndependentWindows(LongVideoStrategy):
    """Windows of ``window`` frames, consecutive windows sharing ``overlap`` frames.

    Each window is a separate clip forward, so nothing carries scale from one window to the next:
    this is the baseline the video-depth papers compare their stitching against. On the shared
    frames the two windows' predictions are blended linearly (weight of the new window rising
    from ``1/(overlap+1)`` to ``overlap/(overlap+1)``). With ``align=True`` each new window is first
    mapped by one least-squares scale and shift, fitted on the overlap, onto the previous window's
    (already aligned) predictions: a cheap fix that makes the seams continuous but cannot undo drift.

    Holds at most ``window`` frames and ``overlap`` predictions.

    Args:
        window: frames per clip forward.
        overlap: frames shared by consecutive windows (``0 <= overlap < window``).
        align: align each window to the previous one on the overlap (needs ``overlap > 0``).
    """

    def __init__(self, window: int = 32, overlap: int = 0, align: bool = False):
        if window < 1 or not 0 <= overlap < window:
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
        if align and overlap == 0:
            raise ValueError("align=True fits the scale on the overlap: set overlap > 0")
        self._window = window
        self.overlap = overlap
        self.align = align

    @property
    def window(self) -> int:
        return self._window

    def __call__(self, model: ClipModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        buffer: list[torch.Tensor] = []  # frames of the current window
        held: torch.Tensor | None = None  # previous window's predictions on the frames shared with this one
        weights = torch.arange(1, self.overlap + 1, dtype=torch.float32) / (self.overlap + 1)

        def flush(final: bool) -> Iterator[torch.Tensor]:
            nonlocal held, buffer
            pred = run_clip(model, buffer)  # (T,1,H,W)
            shared = 0 if held is None else min(len(held), len(pred))
            if shared:
                if self.align:
                    scale, shift = fit_scale_shift(pred[:shared], held[:shared])
                    pred = (pred.double() * scale + shift).to(pred.dtype)
                w = weights[:shared].to(pred.device, pred.dtype).view(-1, 1, 1, 1)
                pred = torch.cat([(1 - w) * held[:shared] + w * pred[:shared], pred[shared:]])
            keep = 0 if final else self.overlap
            yield from pred[: len(pred) - keep]
            held = pred[len(pred) - keep :] if keep else None
            buffer = buffer[len(buffer) - keep :] if keep else []

        for frame in frames:
            buffer.append(frame)
            if len(buffer) == self._window:
                yield from flush(final=False)
        # A last partial window; after a full window only the held overlap frames remain, and
        # they have been predicted already.
        if held is not None and len(buffer) == len(held):
            yield from held
        elif buffer:
            yield from flush(final=True)
