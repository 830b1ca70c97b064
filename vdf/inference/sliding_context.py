"""`SlidingWindowContext`: ChronoDepth's causal sliding window with clean context latents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from vdf.inference.base import LatentDiffusionModel, LongVideoStrategy, require_latent_model
from vdf.inference.segment_stitching import LatentDecoder, take


def window_schedule(length: int, window: int = 10, stride: int = 5) -> list[tuple[int, int, int]]:
    """The windows `SlidingWindowContext` runs on a video of ``length`` frames.

    Returns ``(start, cur, stop)`` per window: frames ``[start, cur)`` are clean context,
    ``[cur, stop)`` are denoised. The first window is ``(0, 0, min(length, window))``; each later
    one adds ``min(stride, frames left)`` frames and takes as context the previous frames that
    keep it at ``window`` frames (``start = max(0, stop - window)``), so on the last window the
    context may grow. ``length=23``: ``(0,0,10), (5,10,15), (10,15,20), (13,20,23)``.
    """
    if length <= 0:
        return []
    out = [(0, 0, min(length, window))]
    cur = out[0][2]
    while cur < length:
        stop = min(length, cur + stride)
        out.append((max(0, stop - window), cur, stop))
        cur = stop
    return out


class SlidingWindowContext(LongVideoStrategy):
    """ChronoDepth's long-video inference: windows of ``window`` frames advancing by ``stride``.

    The first window (``min(N, window)`` frames) is denoised entirely from noise. Every later
    window holds up to ``window - new`` previous frames as context and ``new`` (= ``stride``,
    fewer at the end) new frames. Context frames are the earlier windows' *final* clean latents:
    they are not re-noised, they stay fixed through the sampler (the ``fixed`` mask of
    `vdf.diffusion.EulerSampler`) and the network sees them at the objective's
    ``context_level`` (EDM's default σ = e⁻¹⁶, i.e. ChronoDepth's ``c_noise = -4``), each new
    frame at the current level — one noise level per frame, as ChronoDepth is trained. Only the
    new frames are kept. On the last window the context grows so that the window stays full
    (N = 23: ``[0,10), [5,15), [10,20), [13,23)``; see `window_schedule`).

    The strategy is causal and streaming: frames are read ``stride`` at a time, each frame's
    conditioning (video latents, image embedding) is computed once and carried while the frame
    can still be context: between windows the strategy holds the conditioning and latents of the
    last ``window - 1`` frames (the most the final window's context can need) and no pixels.
    Final latents are decoded in chunks of the VAE's ``chunk_size`` counted from the first frame
    (`LatentDecoder`) and leave as soon as their chunk is complete. There is no video-wide
    min-max: each frame is the model's own decode (``normalization.to_output``), as ChronoDepth
    outputs its decoded depth without re-normalisation.

    The sampler is the model's (``LatentDiffusionPredictor(sampler=...)``); ChronoDepth's config uses
    `vdf.diffusion.ScaledSampleEulerSampler`, the loop of its official pipeline (each Euler step
    starts from the ``c_in``-scaled state), and the textbook `vdf.diffusion.EulerSampler` is an
    option. With the official loop this strategy reproduces ChronoDepth's ``infer_mode="ours"``
    (golden fixtures in ``tests/test_fidelity_chronodepth.py``).

    Args:
        window: frames per window, context included (ChronoDepth: 10).
        stride: new frames per window after the first (5); ``1 <= stride <= window``.
        steps: sampling steps per window (None: the model's ``steps``; ChronoDepth: 5).
    """

    def __init__(self, window: int = 10, stride: int = 5, steps: int | None = None):
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self._window = window
        self.stride = stride
        self.steps = steps

    @property
    def window(self) -> int:
        return self._window

    @torch.no_grad()
    def __call__(self, model: LatentDiffusionModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        require_latent_model(model, type(self).__name__)
        frames = iter(frames)
        generator = model.generator()
        decoder = LatentDecoder(model, model.decode_chunk_size, normalize=False, spill_dir=None)

        new = take(frames, self._window)
        carry_cond = carry_latents = None  # the last (window - 1) frames: the next window's context
        while new:
            cond = model.condition(torch.stack(new)[None], generator)
            h, w = cond.video_latents.shape[-2:]
            x = model.objective.initial_latents(model.noise_like((1, len(new), 4, h, w), generator))
            n_context = 0 if carry_latents is None else min(self._window - len(new), carry_latents.shape[1])
            fixed = None
            if n_context:
                held = carry_latents.shape[1]
                cond = cond.cat([carry_cond.frames(held - n_context, held), cond])
                x = torch.cat([carry_latents[:, held - n_context :], x], dim=1)
                fixed = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
                fixed[:, :n_context] = True
            out = model.denoise(cond, x, fixed=fixed, fixed_latents=x if n_context else None, steps=self.steps)

            new = take(frames, self.stride)
            yield from decoder.push(out[0, n_context:], final=not new)
            if new:
                total = out.shape[1]
                first = max(0, total - (self._window - 1))
                carry_latents, carry_cond = out[:, first:], cond.frames(first, total)
