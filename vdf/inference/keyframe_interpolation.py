"""`KeyframeInterpolation`: Depth Any Video's long-video inference, streamed.

Keyframes spread over the video are predicted jointly by the base model (with their true frame
indices as RoPE positions), then the frames between consecutive keyframes are filled by a
keyframe-conditioned interpolation network, window by window, with linear blending where
consecutive windows overlap. See ``docs/strategies/keyframe_interpolation.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from vdf.inference.base import LatentDiffusionModel, LongVideoStrategy, fit_scale_shift, require_latent_model
from vdf.inference.segment_stitching import LatentDecoder, take


def keyframe_extra(keyframe_latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The interpolation network's extra input channels.

    Args:
        keyframe_latents: ``(B,T,C,h,w)`` depth latents (only the keyframes' entries are used).
        mask: bool ``(B,T)``, True at keyframes.

    Returns:
        ``(B,T,2C,h,w)``: the keyframe latents with zeros at other frames, then the mask
        replicated to ``C`` channels (Depth Any Video's channel order after ``[noisy, video]``).
    """
    b, t = mask.shape
    m = mask.to(keyframe_latents.dtype).view(b, t, 1, 1, 1)
    return torch.cat([keyframe_latents * m, m.expand_as(keyframe_latents)], dim=2)


def endpoint_mask(batch: int, frames: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """bool ``(B,T)`` marking the first and the last frame (the keyframes of a window or clip)."""
    mask = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    mask[:, 0] = True
    mask[:, -1] = True
    return mask


def ensemble_median(members: list[torch.Tensor]) -> torch.Tensor:
    """Merge ensemble predictions of one frame: each member is mapped onto the first by a
    least-squares scale and shift in disparity (float64, over all pixels of the frame), then
    the per-pixel median of the aligned members is taken (the mean of the two middle values
    for an even count). ``members``: tensors of equal shape (e.g. ``(1,H,W)``)."""
    if len(members) == 1:
        return members[0]
    reference = members[0]
    aligned = [reference.double()]
    for member in members[1:]:
        scale, shift = fit_scale_shift(member, reference)
        aligned.append(member.double() * scale.to(member.device) + shift.to(member.device))
    return torch.stack(aligned).quantile(0.5, dim=0).to(reference.dtype)


class KeyframeInterpolation(LongVideoStrategy):
    """Depth Any Video's keyframes-then-interpolation inference over a stream of frames.

    Windows of ``interp_frames + 2`` frames start every ``stride = interp_frames + 2 - overlap``
    frames (DAV: 18 frames every 12); each window's first and last frames are keyframes. For a
    group of consecutive windows whose keyframes fit the budget (``num_frames``, DAV: 32 keyframes
    = 16 windows = 192 frames):

    1. the group's keyframes are denoised jointly by the base model, ``position_ids`` = their
       frame indices in the video (sparse: 0, 12, 17, 24, 29, ...). From the second group on,
       the last ``context_keyframes`` keyframes of the previous group join the pass as fixed,
       clean frames (the sampler's ``fixed`` mask) so the scale carries over (vdf's extension:
       DAV handles one group only);
    2. each window is denoised by the interpolator, conditioned on its two keyframes' latents
       (extra channels ``[keyframe latents, zeros elsewhere; mask ×4]``), positions ``arange``;
       its middle ``interp_frames`` latents are kept;
    3. where kept latents of consecutive windows overlap (``overlap - 2`` frames), they are
       blended ``prev·(1-r) + new·r``, ``r = linspace(0, 1, n)``.

    Every input frame gets an output (DAV drops frame 0 and the frames from the last keyframe
    on): frame 0 is a keyframe and takes its keyframe prediction; when the regular windows stop
    before the last frame, one more window is placed flush with the end (``[N-interp_frames-2,
    N-1]``) so frame ``N-1`` is a keyframe and the tail is interpolated, blended with the
    previous window over their (larger) overlap. A video of at most ``num_frames`` frames is one
    joint pass of the base model (positions ``arange(N)``).

    Without an ``interpolator`` the base model fills each window itself with the two keyframes
    held as fixed clean frames (an ablation; DAV's interpolation network is trained for this).

    Ensembles: ``ensemble_size`` members run the whole procedure with different noise (seeds
    ``sampling_seed + m``); each output frame merges the decoded members by `ensemble_median`
    (each member aligned to member 0 by least squares in disparity, then per-pixel median).

    Memory: at most one group's frames (``(num_frames/2 - 1)·stride + interp_frames + 3``), one
    group of keyframe latents and the carried context per member.

    Args:
        interpolator: the keyframe-conditioned interpolation model (a `LatentDiffusionTask`
            whose UNet takes 16 channels, e.g. `vdf.tasks.KeyframeInterpolationTask`); moved to
            the base model's device when used. None: the base model interpolates (see above).
        num_frames: keyframe budget per joint pass (DAV 32); also the longest video done in one
            pass.
        interp_frames: frames interpolated between two keyframes (DAV 16).
        overlap: frames shared by consecutive windows including keyframes (DAV 6); the kept
            latents overlap by ``overlap - 2``. ``2 <= overlap <= interp_frames + 1``.
        steps: sampling steps of both networks; None = each model's own ``steps`` (DAV 3).
        context_keyframes: keyframes of the previous group repeated, fixed, in the next group's
            joint pass.
        ensemble_size: ensemble members (DAV's paper evaluates with 20; 1 = no ensemble).
    """

    def __init__(
        self,
        interpolator: nn.Module | None = None,
        num_frames: int = 32,
        interp_frames: int = 16,
        overlap: int = 6,
        steps: int | None = None,
        context_keyframes: int = 2,
        ensemble_size: int = 1,
    ):
        if interp_frames < 1:
            raise ValueError(f"interp_frames must be >= 1, got {interp_frames}")
        if not 2 <= overlap <= interp_frames + 1:
            raise ValueError(f"need 2 <= overlap <= interp_frames + 1, got overlap={overlap}, interp_frames={interp_frames}")
        if context_keyframes < 0:
            raise ValueError(f"context_keyframes must be >= 0, got {context_keyframes}")
        if num_frames < max(interp_frames + 1, context_keyframes + 2):
            raise ValueError(
                f"num_frames={num_frames} must be >= interp_frames + 1 ({interp_frames + 1}) and >= "
                f"context_keyframes + 2 ({context_keyframes + 2})"
            )
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        if steps is not None and steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.interpolator = interpolator
        self.num_frames = num_frames
        self.interp_frames = interp_frames
        self.overlap = overlap
        self.stride = interp_frames + 2 - overlap
        self.steps = steps
        self.context_keyframes = context_keyframes
        self.ensemble_size = ensemble_size

    @property
    def window(self) -> int:
        return max(self.num_frames + 1, self._group_frames + 1)

    @property
    def _group_frames(self) -> int:
        """Frames spanned by ``num_frames // 2`` consecutive windows."""
        return (self.num_frames // 2 - 1) * self.stride + self.interp_frames + 2

    # -- helpers ------------------------------------------------------------------------------
    def _interpolator(self, model: LatentDiffusionModel):
        if self.interpolator is None:
            return None
        require_latent_model(self.interpolator, type(self).__name__ + " (interpolator)")
        if isinstance(self.interpolator, nn.Module):
            self.interpolator.to(model.device).eval()
        return self.interpolator

    @staticmethod
    def _emit(decoders: list[LatentDecoder], latents: list[torch.Tensor], final: bool = False) -> Iterator[torch.Tensor]:
        outs = [list(decoder.push(lat, final=final)) for decoder, lat in zip(decoders, latents)]
        for frames in zip(*outs):
            yield ensemble_median(list(frames))

    # -- the strategy -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, model: LatentDiffusionModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        require_latent_model(model, type(self).__name__)
        frames = iter(frames)
        members = range(self.ensemble_size)
        generators = [model.generator(m) for m in members]
        decoders = [LatentDecoder(model, model.decode_chunk_size, False, None) for _ in members]
        head = take(frames, self.num_frames + 1)
        if not head:
            return
        if len(head) <= self.num_frames:
            video = torch.stack(head)[None]
            cond = model.condition(video, generators[0])
            n, (h, w) = len(head), cond.video_latents.shape[-2:]
            positions = torch.arange(n, device=model.device)[None]
            latents = []
            for g in generators:
                x = model.objective.initial_latents(model.noise_like((1, n, 4, h, w), g))
                latents.append(model.denoise(cond, x, position_ids=positions, steps=self.steps)[0])
            yield from self._emit(decoders, latents, final=True)
            return
        yield from self._long(model, frames, head, generators, decoders)

    def _long(self, model, frames, buffer, generators, decoders) -> Iterator[torch.Tensor]:
        interp = self._interpolator(model)
        window_model = interp if interp is not None else model
        members = range(len(generators))
        size, stride, length = self.interp_frames, self.stride, self.interp_frames + 2
        base = 0  # video index of buffer[0]
        ended = False
        next_start = 0  # start of the next regular window
        covered_end = -1  # last frame of the last window done
        known: list[dict[int, torch.Tensor]] = [{} for _ in members]  # keyframe latents (4,h,w)
        known_cond: dict[int, object] = {}  # keyframe conditions (one frame each)
        pending: list[torch.Tensor | None] = [None for _ in members]  # kept latents not yet final
        pending_start = 0
        latent_hw = None

        while True:
            need = next_start + self._group_frames + 1 - base
            if not ended and len(buffer) < need:
                more = take(frames, need - len(buffer))
                ended = len(more) < need - len(buffer)
                buffer = buffer + more
            n_read = base + len(buffer)
            if ended and covered_end == n_read - 1:
                break

            # The windows visible now: regular ones whose last frame is read, then (at the end of
            # the video) one flush with the last frame if the regular ones stop short of it.
            starts = list(range(next_start, n_read - length + 1, stride))
            if ended:
                last_end = starts[-1] + length - 1 if starts else covered_end
                if last_end < n_read - 1:
                    starts.append(n_read - length)

            # As many windows as the keyframe budget allows (at least one).
            known_idx = sorted(known[0])
            context = known_idx[max(len(known_idx) - self.context_keyframes, 0) :] if self.context_keyframes else []
            chosen: list[int] = []
            new: set[int] = set()
            for s in starts:
                ends = {s, s + length - 1} - set(known_idx)
                if chosen and len(new | ends) + len(context) > self.num_frames:
                    break
                chosen.append(s)
                new |= ends

            # 1. the keyframes, jointly, at their true positions.
            if new:
                new_idx = sorted(new)
                cond_new = model.condition(torch.stack([buffer[i - base] for i in new_idx])[None], generators[0])
                for k, i in enumerate(new_idx):
                    known_cond[i] = cond_new.frames(k, k + 1)
                latent_hw = tuple(cond_new.video_latents.shape[-2:])
                ctx = [i for i in context if i not in new]
                idx = sorted(ctx + new_idx)
                cond = cond_new.cat([known_cond[i] for i in idx])
                positions = torch.tensor([idx], device=model.device)
                fixed = torch.tensor([[i in ctx for i in idx]], device=model.device) if ctx else None
                for m in members:
                    x = model.objective.initial_latents(model.noise_like((1, len(idx), 4, *latent_hw), generators[m]))
                    fixed_latents = None
                    if fixed is not None:
                        fixed_latents = torch.zeros_like(x)
                        for k, i in enumerate(idx):
                            if i in ctx:
                                fixed_latents[0, k] = known[m][i]
                    out = model.denoise(cond, x, fixed, fixed_latents, position_ids=positions, steps=self.steps)
                    for k, i in enumerate(idx):
                        known[m][i] = out[0, k]
                if covered_end < 0:  # frame 0 is a keyframe: its prediction is its output
                    yield from self._emit(decoders, [known[m][0][None] for m in members])

            # 2. the windows between keyframes, 3. blended where they overlap.
            for s in chosen:
                e = s + length - 1
                wcond = window_model.condition(torch.stack(buffer[s - base : e + 1 - base])[None], generators[0])
                mask = torch.zeros(1, length, dtype=torch.bool, device=model.device)
                mask[:, [0, -1]] = True
                positions = torch.arange(length, device=model.device)[None]
                kept = []
                for m in members:
                    x = model.objective.initial_latents(model.noise_like((1, length, 4, *latent_hw), generators[m]))
                    keys = torch.zeros_like(x)
                    keys[0, 0], keys[0, -1] = known[m][s], known[m][e]
                    if interp is not None:
                        out = interp.denoise(wcond, x, position_ids=positions, extra=keyframe_extra(keys, mask),
                                             steps=self.steps)
                    else:
                        out = model.denoise(wcond, x, mask, keys, position_ids=positions, steps=self.steps)
                    kept.append(out[0, 1 : 1 + size])
                if pending[0] is None:
                    pending, pending_start = kept, s + 1
                else:
                    shared = pending_start + len(pending[0]) - (s + 1)
                    if shared < 0:
                        raise RuntimeError(f"window at {s} leaves a gap after frame {pending_start + len(pending[0]) - 1}")
                    done = len(pending[0]) - shared
                    r = torch.linspace(0, 1, shared, device=model.device).view(shared, 1, 1, 1)
                    yield from self._emit(decoders, [p[:done] for p in pending])
                    pending = [torch.cat([p[done:] * (1 - r) + k[:shared] * r, k[shared:]]) for p, k in zip(pending, kept)]
                    pending_start = s + 1
                covered_end = e

            # Carry only what later groups need.
            last = chosen[-1]
            next_start = last + stride
            keep = sorted(known[0])[-self.context_keyframes :] if self.context_keyframes else []
            keep = set(keep) | {i for i in known[0] if i >= next_start} | {covered_end}
            for m in members:
                known[m] = {i: v for i, v in known[m].items() if i in keep}
            known_cond = {i: c for i, c in known_cond.items() if i in keep}
            drop = last + 1 - base
            buffer, base = buffer[drop:], last + 1

        # The last frame is the last window's end keyframe.
        yield from self._emit(decoders, [torch.cat([pending[m], known[m][covered_end][None]]) for m in members],
                              final=True)
