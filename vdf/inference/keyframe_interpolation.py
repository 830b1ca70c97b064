"""`KeyframeInterpolation`: Depth Any Video's long-video inference, in its official layout.

Keyframes spread over the video are predicted jointly by the base model (with their true frame
indices as RoPE positions), then the frames between consecutive keyframes are filled by a
keyframe-conditioned interpolation network, window by window, with linear blending where
consecutive windows overlap. By default the frames that receive an output, the noise drawn and
the decoding are those of the official ``run_infer.py`` + ``DAVPipeline``; vdf's extension to
every frame is an option (``fill_dropped_frames``). See ``docs/strategies/keyframe_interpolation.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

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


def official_keyframes(frames: int, num_frames: int = 32, interp_frames: int = 16, overlap: int = 6) -> list[int]:
    """Depth Any Video's keyframes for a video of ``frames`` frames, as its pipeline lists them.

    Windows of ``interp_frames + 2`` frames start at ``i = 0, S, 2S, ...`` (``S = interp_frames
    + 2 - overlap``); each adds the pair ``(i, i + interp_frames + 1)``. The list stops before the
    first window whose end is not before the last frame (``i + interp_frames + 1 >= frames``) or
    once ``num_frames`` keyframes are listed. Empty when the video is one joint pass (``frames <=
    num_frames`` or ``frames <= S``). The order is the pipeline's (pairs, not sorted).
    """
    stride = interp_frames + 2 - overlap
    if frames <= num_frames or frames <= stride:
        return []
    keys: list[int] = []
    for start in range(0, frames, stride):
        if start + interp_frames + 1 >= frames or len(keys) >= num_frames:
            break
        keys += [start, start + interp_frames + 1]
    return keys


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

    Default: the official layout (``run_infer.py`` + ``DAVPipeline.__call__``), frame for frame.
    With ``I = interp_frames`` and ``S = I + 2 - overlap`` (DAV: 16 and 12):

    - only the first ``span = S · (num_frames // 2)`` frames are used (192 for DAV's defaults, the
      number of frames its run script reads); later frames get no output (``None``);
    - a video of ``N <= num_frames`` (or ``N <= S``) frames is one joint pass of the base model,
      positions ``arange(N)``, and every frame gets an output;
    - otherwise the keyframes are `official_keyframes` (pairs ``(i, i + I + 1)``, ``i = 0, S,
      2S, ...``). They are denoised jointly by the base model in sorted order with ``position_ids``
      = their frame indices (0, 12, 17, 24, 29, ...); then each pair's window of ``I + 2`` frames
      is denoised by the interpolator, conditioned on the two keyframe latents (extra input
      channels ``[keyframe latents, zeros elsewhere; mask ×4]``, positions ``arange(I + 2)``), and
      its middle ``I`` latents are kept; consecutive windows' kept latents overlap by ``overlap -
      2`` frames, blended ``prev·(1-r) + new·r``, ``r = linspace(0, 1, overlap - 2)``. Outputs
      exist for frames ``[keys[0] + 1, keys[-1])``: frame 0 and the frames from the last keyframe
      on get ``None``;
    - noise: one draw of the latents' shape per pass (the keyframe pass, then each window in
      order), through ``model.noise_like``; the final latents are decoded in chunks of
      ``model.decode_chunk_size`` counted from the first output frame.

    ``fill_dropped_frames`` (vdf's extension, off by default) gives an output to the frames the
    official layout drops, without changing any frame it outputs: frame 0 is decoded from its
    keyframe latent; from the last keyframe on (the end of the span, and every frame past it),
    windows continue every ``S`` frames starting at the last keyframe, their new keyframes are
    denoised jointly (at their true positions, with the last ``context_keyframes`` known
    keyframes held fixed and clean so the scale carries over), and a last window is placed flush
    with the end of the video; those windows blend among themselves only, and the tail is decoded
    in its own chunks.

    The interpolation network is the model's ``interpolator`` (a module of Depth Any Video's
    predictor, `vdf.predictors.LatentDiffusionPredictor`, whose UNet takes 16 channels). A model
    without one fills each window itself with the two keyframes held as fixed clean frames (an
    ablation; DAV's interpolation network is trained for this).

    ``ensemble_size`` (vdf's, off by default; it changes every frame) runs the whole procedure
    with that many independent noise draws (seeds ``sampling_seed + m``) and merges each output
    frame by `ensemble_median`.

    Args:
        num_frames: keyframe budget per joint pass and the longest one-pass video (DAV 32; even).
        interp_frames: frames interpolated between two keyframes (DAV 16).
        overlap: frames shared by consecutive windows including keyframes (DAV 6);
            ``2 <= overlap <= (interp_frames + 3) // 2`` as DAV's run script requires.
        steps: sampling steps of both networks; None = each model's own ``steps`` (DAV 3).
        fill_dropped_frames: give every input frame an output (see above).
        context_keyframes: with ``fill_dropped_frames``, known keyframes repeated, fixed, in each
            later joint keyframe pass.
        ensemble_size: ensemble members (DAV's paper evaluates with 20; 1 = none, as its code).
    """

    def __init__(
        self,
        num_frames: int = 32,
        interp_frames: int = 16,
        overlap: int = 6,
        steps: int | None = None,
        fill_dropped_frames: bool = False,
        context_keyframes: int = 2,
        ensemble_size: int = 1,
    ):
        if interp_frames < 1:
            raise ValueError(f"interp_frames must be >= 1, got {interp_frames}")
        if not 2 <= overlap <= (interp_frames + 3) // 2:
            raise ValueError(
                f"need 2 <= overlap <= (interp_frames + 3) // 2, got overlap={overlap}, interp_frames={interp_frames}"
            )
        if num_frames % 2:
            raise ValueError(f"num_frames must be even (keyframes come in pairs), got {num_frames}")
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
        self.num_frames = num_frames
        self.interp_frames = interp_frames
        self.overlap = overlap
        self.stride = interp_frames + 2 - overlap
        self.steps = steps
        self.fill_dropped_frames = fill_dropped_frames
        self.context_keyframes = context_keyframes
        self.ensemble_size = ensemble_size

    @property
    def span(self) -> int:
        """Frames the official layout uses: ``S · (num_frames // 2)`` (DAV: 192)."""
        return self.stride * (self.num_frames // 2)

    @property
    def window(self) -> int:
        if self.fill_dropped_frames:
            return max(self.span, self._group_frames + self.interp_frames + 2)
        return self.span

    @property
    def _group_frames(self) -> int:
        """Frames spanned by ``num_frames // 2`` consecutive windows."""
        return (self.num_frames // 2 - 1) * self.stride + self.interp_frames + 2

    # -- helpers ------------------------------------------------------------------------------
    def _interpolator(self, model: LatentDiffusionModel):
        interpolator = getattr(model, "interpolator", None)
        if interpolator is not None:
            require_latent_model(interpolator, type(self).__name__ + " (interpolator)")
        return interpolator

    @staticmethod
    def _emit(
        decoders: list[LatentDecoder], latents: list[torch.Tensor], final: bool = False
    ) -> Iterator[torch.Tensor]:
        outs = [list(decoder.push(lat, final=final)) for decoder, lat in zip(decoders, latents)]
        for frames in zip(*outs):
            yield ensemble_median(list(frames))

    def _keyframe_pass(self, model, cond, positions: list[int], generators, fixed_latents=None, fixed=None):
        """Joint denoising of keyframes (sorted) at their frame indices; one noise draw per member."""
        h, w = cond.video_latents.shape[-2:]
        pos = torch.tensor([positions], device=model.device)
        out = []
        for m, g in enumerate(generators):
            x = model.objective.initial_latents(model.noise_like((1, len(positions), 4, h, w), g))
            given = None if fixed_latents is None else fixed_latents[m]
            out.append(model.denoise(cond, x, fixed, given, position_ids=pos, steps=self.steps)[0])
        return out

    def _window(
        self, model, interp, frames: list[torch.Tensor], ends: list[tuple[torch.Tensor, torch.Tensor]], generators
    ) -> list[torch.Tensor]:
        """One window between two keyframes -> its middle latents ``(len - 2, 4, h, w)`` per member."""
        length = len(frames)
        window_model = interp if interp is not None else model
        cond = window_model.condition(torch.stack(frames)[None], generators[0])
        h, w = cond.video_latents.shape[-2:]
        mask = endpoint_mask(1, length, model.device)
        positions = torch.arange(length, device=model.device)[None]
        kept = []
        for g, (first, last) in zip(generators, ends):
            x = model.objective.initial_latents(model.noise_like((1, length, 4, h, w), g))
            keys = torch.zeros_like(x)
            keys[0, 0], keys[0, -1] = first, last
            if interp is not None:
                out = interp.denoise(
                    cond, x, position_ids=positions, extra=keyframe_extra(keys, mask), steps=self.steps
                )
            else:
                out = model.denoise(cond, x, mask, keys, position_ids=positions, steps=self.steps)
            kept.append(out[0, 1:-1])
        return kept

    # -- the strategy -------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, model: LatentDiffusionModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor | None]:
        require_latent_model(model, type(self).__name__)
        frames = iter(frames)
        head = take(frames, self.span)
        if not head:
            return
        n = len(head)
        interp = self._interpolator(model)
        generators = [model.generator(m) for m in range(self.ensemble_size)]
        decoders = [LatentDecoder(model, model.decode_chunk_size, False, None) for _ in generators]
        keys = official_keyframes(n, self.num_frames, self.interp_frames, self.overlap)

        if not keys:
            # One joint pass, positions arange(N) (what the UNet uses when given none).
            cond = model.condition(torch.stack(head)[None], generators[0])
            latents = self._keyframe_pass(model, cond, list(range(n)), generators)
            yield from self._emit(decoders, latents, final=True)
            known = [{n - 1: lat[n - 1]} for lat in latents]
            known_cond = {n - 1: cond.frames(n - 1, n)}
            tail = dict(out_start=n, pending=[lat[n:] for lat in latents], covered_end=n - 1)
        else:
            # 1. the keyframes, jointly, sorted, at their frame indices.
            sorted_keys, origin = torch.sort(torch.tensor(keys))
            order = sorted_keys.tolist()
            cond = model.condition(torch.stack([head[i] for i in order])[None], generators[0])
            by_sorted = self._keyframe_pass(model, cond, order, generators)
            key_latents = [lat[origin.to(lat.device)] for lat in by_sorted]  # in `keys` order
            if self.fill_dropped_frames:
                yield from self._emit(
                    [LatentDecoder(model, 1, False, None) for _ in generators],
                    [lat[:1] for lat in key_latents],
                    final=True,
                )
            else:
                yield None  # frame 0 (keys[0] + 1 == 1: the only frame before the first output)

            # 2. the windows between keyframe pairs, 3. blended where they overlap.
            blend = self.overlap - 2
            previous: list[torch.Tensor] | None = None
            for j in range(0, len(keys), 2):
                s, e = keys[j], keys[j + 1]
                kept = self._window(model, interp, head[s : e + 1], [(k[j], k[j + 1]) for k in key_latents], generators)
                if previous is not None:
                    r = torch.linspace(0, 1, blend, device=kept[0].device).view(blend, 1, 1, 1)
                    done = []
                    for prev, new in zip(previous, kept):
                        cut = len(prev) - blend
                        done.append(torch.cat([prev[:cut], prev[cut:] * (1 - r) + new[:blend] * r]))
                    yield from self._emit(decoders, done)
                previous = [new[blend if j > 0 else 0 :] for new in kept]
            yield from self._emit(decoders, previous, final=True)

            stop = keys[-1]
            known = [{} for _ in generators]
            for k, i in enumerate(order):
                for m, lat in enumerate(by_sorted):
                    known[m][i] = lat[k]
            known_cond = {i: cond.frames(k, k + 1) for k, i in enumerate(order)}
            tail = dict(out_start=stop, pending=[k[stop][None] for k in known], covered_end=stop)

        if not self.fill_dropped_frames:
            # The frames from the last keyframe to the end of the span, then every frame past it.
            for _ in range(keys[-1] if keys else n, n):
                yield None
            del head
            for _ in frames:
                yield None
            return
        # A window flush with the end can start up to I + 1 frames before the last keyframe.
        first_held = max(tail["covered_end"] - self.interp_frames - 1, 0)
        buffer = head[first_held:]
        del head
        yield from self._tail(model, interp, frames, buffer, first_held, known, known_cond, generators, **tail)

    def _tail(
        self, model, interp, frames, buffer, base, known, known_cond, generators, out_start, pending, covered_end
    ) -> Iterator[torch.Tensor]:
        """vdf's extension past the official layout: frames ``out_start`` to the end of the video.

        ``pending`` holds, per member, latents of frames ``[out_start, ...)`` not yet final;
        ``covered_end`` is the last frame whose keyframe latent is known and that windows start
        from; ``buffer`` holds the frames from ``base`` on. Frames before ``out_start`` are never
        changed (kept latents of windows reaching back there are cut off).
        """
        stride, length = self.stride, self.interp_frames + 2
        decoders = [LatentDecoder(model, model.decode_chunk_size, False, None) for _ in generators]
        ended = False
        next_start = covered_end
        latent_hw = tuple(pending[0].shape[-2:]) if pending[0].numel() else tuple(known[0][covered_end].shape[-2:])
        while True:
            need = next_start + self._group_frames + 1 - base
            if not ended and len(buffer) < need:
                more = take(frames, need - len(buffer))
                ended = len(more) < need - len(buffer)
                buffer = buffer + more
            n_read = base + len(buffer)
            if ended and covered_end >= n_read - 1:
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

            # Keyframes, jointly, at their true positions, the context held fixed.
            if new:
                new_idx = sorted(new)
                cond_new = model.condition(torch.stack([buffer[i - base] for i in new_idx])[None], generators[0])
                for k, i in enumerate(new_idx):
                    known_cond[i] = cond_new.frames(k, k + 1)
                ctx = [i for i in context if i not in new]
                idx = sorted(ctx + new_idx)
                cond = cond_new.cat([known_cond[i] for i in idx])
                fixed, fixed_latents = None, None
                if ctx:
                    fixed = torch.tensor([[i in ctx for i in idx]], device=model.device)
                    fixed_latents = []
                    for m in range(len(generators)):
                        given = torch.zeros(1, len(idx), 4, *latent_hw, device=model.device)
                        for k, i in enumerate(idx):
                            if i in ctx:
                                given[0, k] = known[m][i]
                        fixed_latents.append(given)
                out = self._keyframe_pass(model, cond, idx, generators, fixed_latents, fixed)
                for m, lat in enumerate(out):
                    for k, i in enumerate(idx):
                        known[m][i] = lat[k]

            # Windows; kept latents cut to frames not yet final, blended with what is pending.
            for s in chosen:
                e = s + length - 1
                kept = self._window(
                    model,
                    interp,
                    buffer[s - base : e + 1 - base],
                    [(known[m][s], known[m][e]) for m in range(len(generators))],
                    generators,
                )
                kept_start = s + 1
                cut = max(out_start - kept_start, 0)
                kept, kept_start = [k[cut:] for k in kept], kept_start + cut
                shared = out_start + len(pending[0]) - kept_start
                if shared < 0:
                    raise RuntimeError(f"window at {s} leaves a gap after frame {out_start + len(pending[0]) - 1}")
                done = kept_start - out_start
                yield from self._emit(decoders, [p[:done] for p in pending])
                r = torch.linspace(0, 1, shared, device=kept[0].device).view(shared, 1, 1, 1)
                pending = [torch.cat([p[done:] * (1 - r) + k[:shared] * r, k[shared:]]) for p, k in zip(pending, kept)]
                out_start = kept_start
                covered_end = e

            # Carry only what later passes need.
            next_start = chosen[-1] + stride
            keep = sorted(known[0])[-self.context_keyframes :] if self.context_keyframes else []
            keep = set(keep) | {i for i in known[0] if i >= next_start} | {covered_end}
            known = [{i: v for i, v in k.items() if i in keep} for k in known]
            known_cond = {i: c for i, c in known_cond.items() if i in keep}
            # Later windows start after this one (a window flush with the end included).
            drop = chosen[-1] + 1 - base
            buffer, base = buffer[drop:], chosen[-1] + 1

        # The last frame is the last window's end keyframe.
        if out_start + len(pending[0]) == covered_end:
            pending = [torch.cat([p, known[m][covered_end][None]]) for m, p in enumerate(pending)]
        yield from self._emit(decoders, pending, final=True)
