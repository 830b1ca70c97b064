"""`KeyframeAlignedWindows`: Video-Depth-Anything's offline long-video inference.

Windows of ``window`` = 32 frames start every ``window - overlap`` = 22 frames. In every window
after the first, the first ``overlap`` = 10 input slots are refilled with the previous window's
inputs at ``keyframes`` = ``[0, 12, 24, ..., 31]``:

- slot 0 <- previous slot 0, which is recursively frame 0 of the video: a global anchor;
- slot 1 <- previous slot 12 (the frame 10 before the window's start);
- slots 2..9 <- previous slots 24..31: the frames the two windows really share;
- slots 10..31: the 22 new frames.

Each window's prediction is mapped by one least-squares scale and shift, fitted on slots 0 and 1
against the reference predictions of those frames (frame 0 from the first window, never updated;
the previous window's aligned slot 12), clipped at 0; then the 8 shared frames are cross-faded
(weight of the new window 0, 1/7, ..., 1) and the new frames appended. The video is padded by
repeating its last frame to ``22 * ceil(N / 22) + 10`` frames and the output cut back to N.
Every constant is the official ``infer_video_depth``'s (``INFER_LEN``, ``OVERLAP``,
``KEYFRAMES``, ``INTERP_LEN``); they are arguments so that other clip models can use the scheme.

The strategy needs only the clip forward (`predict_clip`), so any clip or frame-wise model runs
with it. It holds one window of frames and predictions, the held cross-fade frames and the
reference frames: memory does not grow with the video.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import torch

from vdf.inference.base import ClipModel, LongVideoStrategy, fit_scale_shift, run_clip

VDA_KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)


class KeyframeAlignedWindows(LongVideoStrategy):
    """Overlapping windows with refilled keyframe slots, scale/shift alignment and a cross-fade.

    Args:
        window: frames per clip forward (32).
        overlap: leading slots of each later window refilled from the previous window (10).
        keyframes: the previous window's slots that refill them, in order (``overlap`` of them);
            the last ``crossfade`` must be the previous window's last ``crossfade`` slots (the
            frames both windows see), the ones before are the alignment references.
        crossfade: shared frames blended linearly between the two windows (8).
        align: fit the scale and shift of each window (False for metric models, whose windows
            share one scale already: the official code then uses scale 1 and shift 0).
    """

    def __init__(
        self,
        window: int = 32,
        overlap: int = 10,
        keyframes: Sequence[int] = VDA_KEYFRAMES,
        crossfade: int = 8,
        align: bool = True,
    ):
        keyframes = [int(k) for k in keyframes]
        if not 0 < overlap < window:
            raise ValueError(f"need 0 < overlap < window, got overlap={overlap}, window={window}")
        if len(keyframes) != overlap or any(not 0 <= k < window for k in keyframes):
            raise ValueError(f"keyframes must be {overlap} slots of a {window}-frame window, got {keyframes}")
        if not 2 <= crossfade < overlap:
            raise ValueError(f"need 2 <= crossfade < overlap (one alignment slot at least), got {crossfade}")
        if keyframes[overlap - crossfade :] != list(range(window - crossfade, window)):
            raise ValueError(
                f"the last {crossfade} keyframes must be the previous window's last {crossfade} slots "
                f"{list(range(window - crossfade, window))} (the frames both windows see), got {keyframes}"
            )
        self._window = window
        self.overlap = overlap
        self.keyframes = keyframes
        self.crossfade = crossfade
        self.align = align

    @property
    def window(self) -> int:
        return self._window

    @property
    def stride(self) -> int:
        """Frames between window starts (22)."""
        return self._window - self.overlap

    def __call__(self, model: ClipModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        w, o, c = self._window, self.overlap, self.crossfade
        refs_len = o - c  # alignment slots (2): 0 and 1
        it = iter(frames)
        inputs = list(islice(it, w))
        if not inputs:
            return
        total: int | None = None  # the video's length, once the iterator is exhausted
        if len(inputs) < w:
            total = len(inputs)
            inputs += [inputs[-1]] * (w - len(inputs))
        last = inputs[-1]  # the latest real frame (padding repeats it)
        pred = run_clip(model, inputs)  # (W,1,H,W)
        refs = [pred[k] for k in self.keyframes[:refs_len]]
        emitted = 0

        def emit(values: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
            nonlocal emitted
            for value in values:
                if total is None or emitted < total:
                    yield value
                emitted += 1

        yield from emit(pred[: w - c])
        held = pred[w - c :]  # the last frames, blended with the next window
        post = torch.arange(c, dtype=torch.float64) / (c - 1)  # the new window's weight
        start = 0
        while True:
            start += self.stride
            if total is not None and start >= total:
                break
            new = list(islice(it, w - o)) if total is None else []
            if total is None and len(new) < w - o:
                total = start + o + len(new)
            if new:
                last = new[-1]
            new += [last] * (w - o - len(new))
            inputs = [inputs[k] for k in self.keyframes] + new
            pred = run_clip(model, inputs)
            if self.align:
                scale, shift = fit_scale_shift(pred[:refs_len], torch.stack(refs))
                aligned = (pred.double() * scale + shift).clamp_min(0).to(pred.dtype)
            else:
                aligned = pred.clamp_min(0)
            weight = post.to(pred.device).view(-1, 1, 1, 1)
            blended = (held.double() * (1 - weight) + aligned[refs_len:o].double() * weight).to(pred.dtype)
            yield from emit(blended)
            yield from emit(aligned[o : w - c])
            held = aligned[w - c :]
            refs = refs[:1] + [aligned[k] for k in self.keyframes[1:refs_len]]
        yield from emit(held)


__all__ = ["VDA_KEYFRAMES", "KeyframeAlignedWindows"]
