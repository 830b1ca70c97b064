"""`SegmentStitching`: DepthCrafter's overlapping segments with noise-initialised overlaps and latent blending."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from vdf.inference.base import LatentDiffusionModel, LongVideoStrategy, require_latent_model


def take(frames: Iterator[torch.Tensor], n: int) -> list[torch.Tensor]:
    out = []
    for frame in frames:
        out.append(frame)
        if len(out) == n:
            break
    return out


class LatentDecoder:
    """Decodes final latents in chunks aligned to the first frame, optionally holding the decoded
    frames on disk for one video-wide min-max normalisation (constant memory in the video length)."""

    def __init__(self, model: LatentDiffusionModel, chunk: int, normalize: bool, spill_dir: str | None):
        self.model = model
        self.chunk = chunk
        self.normalize = normalize
        self.spill_dir = spill_dir
        self.pending: list[torch.Tensor] = []  # latents (4,h,w) waiting for a full chunk
        self.count = 0
        self.lo, self.hi = float("inf"), float("-inf")
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._file = None
        self._shape: tuple[int, ...] | None = None

    def push(self, latents: torch.Tensor, final: bool = False) -> Iterator[torch.Tensor]:
        """Add final latents ``(T,4,h,w)``; yield decoded frames (when not normalising)."""
        self.pending.extend(latents)
        while len(self.pending) >= self.chunk or (final and self.pending):
            part, self.pending = self.pending[: self.chunk], self.pending[self.chunk :]
            decoded = self.model.decode(torch.stack(part)[None])[0].float()  # (n,1,H,W)
            if self.normalize:
                self._spill(decoded)
            else:
                yield from decoded

    def _spill(self, decoded: torch.Tensor) -> None:
        self.lo = min(self.lo, float(decoded.min()))
        self.hi = max(self.hi, float(decoded.max()))
        if self._file is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="vdf-stitch-", dir=self.spill_dir)
            self._file = open(Path(self._tmp.name) / "frames.f32", "w+b")
            self._shape = tuple(decoded.shape[1:])
        self._file.write(decoded.cpu().numpy().astype(np.float32).tobytes())
        self.count += len(decoded)

    def normalized(self, device: torch.device) -> Iterator[torch.Tensor]:
        """The spilled frames mapped to [0,1] by the video-wide min and max, one by one.

        Frames are read back one at a time with ``readinto`` (not a memory map, whose pages would
        count towards the process's resident memory as the video is read).
        """
        if self._file is None:
            return
        try:
            self._file.flush()
            span = max(self.hi - self.lo, 1e-8)
            frame = np.empty(self._shape, dtype=np.float32)
            self._file.seek(0)
            for _ in range(self.count):
                self._file.readinto(memoryview(frame).cast("B"))
                yield ((torch.from_numpy(frame.copy()) - self.lo) / span).to(device)
        finally:
            self._file.close()
            self._tmp.cleanup()
            self._file = None


class SegmentStitching(LongVideoStrategy):
    """DepthCrafter's long-video inference: segments of ``window`` frames overlapping by ``overlap``.

    For every segment after the first:

    - the overlap frames start from the previous segment's denoised latents plus noise at the
      first sampling level (σ_max for EDM) rather than from pure noise — each frame keeps the
      noise it had in the previous segment;
    - after denoising, the overlap latents are blended linearly with the previous segment's,
      the new segment's weight rising from 0 to 1 across the overlap (``linspace(0,1,overlap)``).

    **Noise**, as DepthCrafter's pipeline draws it: one window of unit noise is drawn for the
    first segment (after that segment's noise augmentation: the first draws of a seeded run are
    the official ones for a video of at most ``window`` frames); each later segment's noise is
    the previous segment's rotated by ``overlap`` frames (``cat([prev[-overlap:],
    prev[:window-overlap]])``: the overlap frames keep their noise, the new frames take the
    previous segment's leading noise) and a short last segment takes its first frames.
    ``fresh_noise=True`` draws independent noise for every new frame instead.

    The conditioning (video latents, image embeddings) of each frame is computed once, when its
    segment first reads it (the noise augmentation of later frames is therefore drawn segment by
    segment, after the first segment's noise, where the official pipeline draws it for the whole
    video first). Final latents are decoded in chunks of the VAE's ``chunk_size`` counted from
    the first frame, and the decoded video gets one min-max normalisation to [0,1]
    (``normalize``): decoded frames wait on disk (float32, in ``spill_dir`` or the system temp
    dir) until the video's range is known, so memory stays that of one segment whatever the
    video's length. A video no longer than ``window`` is one segment.

    Args:
        window: frames per segment (DepthCrafter: 110).
        overlap: frames shared by consecutive segments (25); ``0 <= overlap < window``.
        renoise_overlap: start the overlap from the previous latents (off: pure noise, an ablation).
        blend: blend the overlap latents (off: the new segment's latents replace the old).
        normalize: one video-wide min-max to [0,1] at the end (off: frames stream out at once).
        spill_dir: where decoded frames wait for the normalisation (default: the temp dir).
        fresh_noise: new frames of later segments get freshly drawn noise instead of the
            rotated noise of the official pipeline (no noise pattern repeats along the video).
    """

    def __init__(
        self,
        window: int = 110,
        overlap: int = 25,
        renoise_overlap: bool = True,
        blend: bool = True,
        normalize: bool = True,
        spill_dir: str | None = None,
        fresh_noise: bool = False,
    ):
        if window < 1 or not 0 <= overlap < window:
            raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
        self._window = window
        self.overlap = overlap
        self.renoise_overlap = renoise_overlap
        self.blend = blend
        self.normalize = normalize
        self.spill_dir = spill_dir
        self.fresh_noise = fresh_noise

    @property
    def window(self) -> int:
        return self._window

    @torch.no_grad()
    def __call__(self, model: LatentDiffusionModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        require_latent_model(model, type(self).__name__)
        frames = iter(frames)
        generator = model.generator()
        decoder = LatentDecoder(model, model.decode_chunk_size, self.normalize, self.spill_dir)
        first_level = model.objective.schedule(model.steps)[0]
        ov = self.overlap
        weights = torch.linspace(0, 1, ov, device=model.device).view(1, ov, 1, 1, 1) if ov else None

        new = take(frames, self._window)
        cond_carry = noise_carry = tail = None
        rotating = None  # (1,window,4,h,w): the official noise of the current segment's positions
        while new:
            cond = model.condition(torch.stack(new)[None], generator)
            if cond_carry is not None:
                cond = cond_carry.cat([cond_carry, cond])
            length = cond.video_latents.shape[1]
            h, w = cond.video_latents.shape[-2:]
            if rotating is None:
                noise = rotating = model.noise_like((1, len(new), 4, h, w), generator)
            elif self.fresh_noise:
                fresh = model.noise_like((1, len(new), 4, h, w), generator)
                noise = fresh if noise_carry is None else torch.cat([noise_carry, fresh], dim=1)
            else:
                noise = rotating[:, :length]
            x = model.objective.initial_latents(noise)
            if tail is not None and self.renoise_overlap:
                x[:, :ov] = model.objective.renoise(tail, noise[:, :ov], first_level)
            latents = model.denoise(cond, x)
            if tail is not None:
                head = latents[:, :ov] * weights + tail * (1 - weights) if self.blend else latents[:, :ov]
                latents = torch.cat([head, latents[:, ov:]], dim=1)

            new = take(frames, self._window - ov)
            # The next segment's noise: this one's, rotated by the overlap (the identity for 0).
            rotating = torch.cat([rotating[:, self._window - ov :], rotating[:, : self._window - ov]], dim=1)
            if not new or ov == 0:
                tail = cond_carry = noise_carry = None
                yield from decoder.push(latents[0], final=not new)
                continue
            yield from decoder.push(latents[0, : length - ov])
            tail = latents[:, length - ov :]
            cond_carry = cond.frames(length - ov, length)
            noise_carry = noise[:, length - ov :]
        if self.normalize:
            yield from decoder.normalized(model.device)
