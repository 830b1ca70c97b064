"""Resolution rules: the frame size each family's official inference runs at, and the way back.

Every published pipeline decides the size its network sees from the input's size, and each one
decides differently:

- DepthCrafter (``run.py``) and ChronoDepth (``run_infer.py``): each side rounded to the
  *nearest* multiple of 64 (upscaling allowed); when the long side then exceeds ``max_res`` the
  frame is first scaled so that its long side is ``max_res``, then rounded. DepthCrafter's
  benchmark instead runs each dataset at a fixed size (`VideoDepthDataset.inference_size`).
- Depth Any Video (``run_infer.py``): LANCZOS downscale so that the long side is at most 1024,
  then a centre *crop* to multiples of 32.
- FlashDepth: long side capped at 2044, sides resized to multiples of 14, values clipped to [0,1]
  after the bicubic resize.

A `Resolution` holds one such rule: ``size`` picks the processing size, ``prepare`` brings
frames there and ``restore`` maps a prediction back onto the input frame, so outputs and
metrics always live at the input's size. `run_at_resolution` wraps a long-video strategy with a
rule, frame by frame (nothing is held beyond what the strategy holds).

Frames are ``(N,3,H,W)`` float in [0,1]; predictions ``(N,1,h,w)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_ROUNDINGS = ("nearest", "down", "up")
_MODES = ("bilinear", "bicubic", "area", "nearest", "lanczos")


def _check(multiple: int = 1, rounding: str = "nearest", *modes: str) -> None:
    """Clear errors for the arguments every rule shares."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    for mode in modes:
        if mode not in _MODES:
            raise ValueError(f"resize modes must be among {_MODES}, got {mode!r}")


def _round(value: float, multiple: int, rounding: str) -> int:
    if rounding == "nearest":
        # Python's round (half to even), as the official scripts call it.
        out = round(value / multiple) * multiple
    elif rounding == "down":
        out = int(value // multiple) * multiple
    else:
        out = -int(-value // multiple) * multiple
    return max(multiple, int(out))


def resize_frames(
    frames: torch.Tensor,
    size: tuple[int, int],
    mode: str = "bilinear",
    antialias: bool = False,
    align_corners: bool | None = None,
) -> torch.Tensor:
    """``(N,C,H,W)`` -> ``(N,C,*size)``; ``mode="lanczos"`` goes through PIL on 8-bit images
    (PIL's LANCZOS takes uint8 RGB; the frames are quantised to 1/255 first, as decoded video is)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    if mode == "lanczos":
        from PIL import Image

        out = []
        for frame in frames:
            array = (frame.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            image = Image.fromarray(array if array.shape[-1] != 1 else array[..., 0])
            resized = np.asarray(image.resize((size[1], size[0]), Image.LANCZOS))
            tensor = torch.from_numpy(resized.copy()).float().div(255)
            out.append(tensor.permute(2, 0, 1) if tensor.dim() == 3 else tensor[None])
        return torch.stack(out).to(frames.device, frames.dtype)
    kwargs: dict[str, Any] = {}
    if mode in ("bilinear", "bicubic"):
        kwargs["align_corners"] = bool(align_corners)
        kwargs["antialias"] = antialias
    return F.interpolate(frames, size=size, mode=mode, **kwargs)


class Resolution:
    """The identity rule: the network sees the frames at their own size.

    Subclasses override ``size`` (and ``prepare``/``restore`` when the mapping is not a plain
    resize). ``requested`` is a dataset's protocol size (DepthCrafter's benchmark); a rule uses
    it only when it says so (``protocol_sizes``).
    """

    #: bilinear resize of predictions back to the input size (align_corners=False).
    restore_mode: str = "bilinear"

    def size(self, height: int, width: int, requested: tuple[int, int] | None = None) -> tuple[int, int]:
        """The processing ``(h, w)`` for an input of ``height x width``."""
        return height, width

    def prepare(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(N,3,H,W)`` -> ``(N,3,*size)``."""
        return resize_frames(frames, size)

    def restore(self, pred: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``(N,1,h,w)`` at the processing size -> ``(N,1,height,width)``."""
        return resize_frames(pred, (height, width), self.restore_mode)

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (manifests, results)."""
        return {"rule": type(self).__name__, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class RoundToMultiple(Resolution):
    """Sides rounded to a multiple, the long side capped first (DepthCrafter, ChronoDepth, FlashDepth).

    The size: each side rounded to ``multiple`` (``rounding``: ``nearest`` as DepthCrafter and
    ChronoDepth, ``down`` or ``up``). If the rounded long side exceeds ``max_size``, the input is
    first scaled so its long side is ``max_size`` and then rounded (DepthCrafter's ``max_res``
    rule: the cap is checked after rounding, and applied to the input's own size). Rounding can
    upscale.

    Args:
        max_size: cap of the long side (None: no cap).
        multiple: each processed side is a multiple of this.
        rounding: ``nearest`` (half to even, as Python's ``round``), ``down`` or ``up``.
        mode: resize filter (``bilinear``, ``bicubic``, ``area``, ``lanczos``).
        antialias: antialias when downscaling (bilinear/bicubic).
        clip: clamp resized frames to [0,1] (FlashDepth clips after its bicubic resize).
        protocol_sizes: use a dataset's fixed inference size when it declares one (DepthCrafter's
            benchmark sizes, `VideoDepthDataset.inference_size`).
        restore_mode: filter of the way back to the input size (bilinear).
    """

    def __init__(
        self,
        max_size: int | None = 1024,
        multiple: int = 64,
        rounding: str = "nearest",
        mode: str = "bilinear",
        antialias: bool = False,
        clip: bool = False,
        protocol_sizes: bool = False,
        restore_mode: str = "bilinear",
    ):
        _check(multiple, rounding, mode, restore_mode)
        if max_size is not None and max_size < multiple:
            raise ValueError(f"max_size ({max_size}) must be at least multiple ({multiple})")
        self.max_size = max_size
        self.multiple = multiple
        self.rounding = rounding
        self.mode = mode
        self.antialias = antialias
        self.clip = clip
        self.protocol_sizes = protocol_sizes
        self.restore_mode = restore_mode

    def size(self, height, width, requested=None):
        if requested is not None and self.protocol_sizes:
            return int(requested[0]), int(requested[1])
        h = _round(height, self.multiple, self.rounding)
        w = _round(width, self.multiple, self.rounding)
        if self.max_size is not None and max(h, w) > self.max_size:
            scale = self.max_size / max(height, width)
            h = _round(height * scale, self.multiple, self.rounding)
            w = _round(width * scale, self.multiple, self.rounding)
        return h, w

    def prepare(self, frames, size):
        out = resize_frames(frames, size, self.mode, self.antialias)
        return out.clamp(0, 1) if self.clip else out


class CapThenRoundToMultiple(Resolution):
    """The long side capped by one resize, then each side rounded to a multiple by a second (FlashDepth).

    FlashDepth's video reader scales a frame whose long side exceeds ``max_size`` so that its
    long side is ``max_size``, each scaled side truncated to an integer, and resizes it there;
    the network's preprocessing then rounds each side of that frame to ``multiple`` and resizes
    again. Each resize is ``mode`` followed, with ``clip``, by a clamp to [0,1]; a resize to the
    frame's own size is skipped. Examples (``max_size=2044, multiple=14, rounding="up"``):
    1080 x 1920 -> 1092 x 1932 (one resize); 2160 x 3840 -> 1149 x 2044 -> 1162 x 2044.
    ``restore`` goes back to the input size in one bilinear resize with ``align_corners=True``,
    as FlashDepth's evaluation maps a prediction onto its ground truth.

    Args:
        max_size: cap of the long side (None: no cap, one resize).
        multiple: each processed side is a multiple of this.
        rounding: ``up`` (FlashDepth's), ``nearest`` or ``down``.
        mode: resize filter of both resizes.
        antialias: antialias when downscaling (bilinear/bicubic).
        clip: clamp to [0,1] after each resize.
        restore_mode, restore_align_corners: filter of the way back to the input size.
    """

    def __init__(
        self,
        max_size: int | None = 2044,
        multiple: int = 14,
        rounding: str = "up",
        mode: str = "bicubic",
        antialias: bool = False,
        clip: bool = True,
        restore_mode: str = "bilinear",
        restore_align_corners: bool = True,
    ):
        _check(multiple, rounding, mode, restore_mode)
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be positive, got {max_size}")
        self.max_size = max_size
        self.multiple = multiple
        self.rounding = rounding
        self.mode = mode
        self.antialias = antialias
        self.clip = clip
        self.restore_mode = restore_mode
        self.restore_align_corners = restore_align_corners

    def capped(self, height: int, width: int) -> tuple[int, int]:
        """The size after the first resize (the input's own size when within the cap)."""
        if self.max_size is None or max(height, width) <= self.max_size:
            return height, width
        scale = self.max_size / max(height, width)
        return int(height * scale), int(width * scale)

    def size(self, height, width, requested=None):
        h, w = self.capped(height, width)
        return _round(h, self.multiple, self.rounding), _round(w, self.multiple, self.rounding)

    def _resize(self, frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(frames.shape[-2:]) == tuple(size):
            return frames
        out = resize_frames(frames, size, self.mode, self.antialias)
        return out.clamp(0, 1) if self.clip else out

    def prepare(self, frames, size):
        height, width = frames.shape[-2:]
        if tuple(size) != self.size(height, width):
            raise ValueError(
                f"{type(self).__name__} brings {height}x{width} frames to {self.size(height, width)}, not {tuple(size)}"
            )
        return self._resize(self._resize(frames, self.capped(height, width)), size)

    def restore(self, pred, height, width):
        return resize_frames(pred, (height, width), self.restore_mode, align_corners=self.restore_align_corners)


class CenterCropToMultiple(Resolution):
    """Downscale so the long side is at most ``max_size``, then centre-crop to multiples (Depth Any Video).

    The downscaled size is ``int(side · min(max_size / long side, 1))`` (never upscaled); the
    crop keeps ``side // multiple * multiple`` pixels starting at ``(side - kept) // 2``.
    ``restore`` maps the prediction back onto the whole input frame: it is placed in its crop
    window at the downscaled size, the cropped margins (fewer than ``multiple`` pixels per axis)
    take the nearest predicted row or column (edge replication), and the result is resized to
    the input size.

    Args:
        max_size: cap of the long side (downscale only).
        multiple: crop each side down to a multiple of this.
        mode: downscale filter (Depth Any Video: PIL's ``lanczos`` on 8-bit frames).
    """

    def __init__(self, max_size: int | None = 1024, multiple: int = 32, mode: str = "lanczos"):
        _check(multiple, "nearest", mode)
        self.max_size = max_size
        self.multiple = multiple
        self.mode = mode

    def scaled(self, height: int, width: int) -> tuple[int, int]:
        """The size after the downscale, before the crop."""
        if self.max_size is None:
            return height, width
        factor = min(self.max_size / max(height, width), 1.0)
        return int(height * factor), int(width * factor)

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, h, w)`` of the crop in the downscaled frame."""
        sh, sw = self.scaled(height, width)
        h, w = sh // self.multiple * self.multiple, sw // self.multiple * self.multiple
        if h == 0 or w == 0:
            raise ValueError(
                f"a {height}x{width} frame downscaled to {sh}x{sw} is smaller than one {self.multiple}-pixel crop"
            )
        return (sh - h) // 2, (sw - w) // 2, h, w

    def size(self, height, width, requested=None):
        return self.crop_box(height, width)[2:]

    def prepare(self, frames, size):
        height, width = frames.shape[-2:]
        top, left, h, w = self.crop_box(height, width)
        if (h, w) != tuple(size):
            raise ValueError(f"{type(self).__name__} crops {height}x{width} frames to {h}x{w}, not {size}")
        scaled = resize_frames(frames, self.scaled(height, width), self.mode)
        return scaled[..., top : top + h, left : left + w]

    def restore(self, pred, height, width):
        top, left, h, w = self.crop_box(height, width)
        sh, sw = self.scaled(height, width)
        full = F.pad(pred, (left, sw - w - left, top, sh - h - top), mode="replicate")
        return resize_frames(full, (height, width), self.restore_mode)


class FixedSize(Resolution):
    """Every video at one size (e.g. a benchmark's), resized back afterwards.

    Args:
        height, width: the processing size.
        mode: resize filter.
        antialias: antialias when downscaling.
    """

    def __init__(self, height: int, width: int, mode: str = "bilinear", antialias: bool = False):
        if height < 1 or width < 1:
            raise ValueError(f"need a positive size, got {height}x{width}")
        _check(1, "nearest", mode)
        self.height, self.width = height, width
        self.mode = mode
        self.antialias = antialias

    def size(self, height, width, requested=None):
        return self.height, self.width

    def prepare(self, frames, size):
        return resize_frames(frames, size, self.mode, self.antialias)


def run_at_resolution(
    rule: Resolution,
    strategy: Any,
    model: Any,
    frames: Iterable[torch.Tensor],
    requested: tuple[int, int] | None = None,
) -> Iterator[torch.Tensor]:
    """``strategy(model, frames)`` with every frame brought to ``rule``'s size and every output
    brought back to the input's size, one frame at a time.

    ``frames`` are ``(3,H,W)`` of one size; outputs are ``(1,H,W)`` (``None`` passes through: a
    frame the strategy gives no prediction).
    """
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        return
    height, width = first.shape[-2:]
    size = rule.size(height, width, requested)

    def prepared() -> Iterator[torch.Tensor]:
        yield rule.prepare(first[None], size)[0]
        for frame in frames:
            if tuple(frame.shape[-2:]) != (height, width):
                raise ValueError(
                    f"frames of one video must share one size: {tuple(frame.shape[-2:])} after {height}x{width}"
                )
            yield rule.prepare(frame[None], size)[0]

    for out in strategy(model, prepared()):
        yield None if out is None else rule.restore(out[None].float(), height, width)[0]
