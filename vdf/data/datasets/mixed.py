"""Several datasets seen as one, with per-dataset sampling weights; `TrainView` gives one of them
its own resize, crop and clip rules in a training mixture."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

import numpy as np
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.datasets.frames import resize_clip, scale_intrinsics
from vdf.data.types import Sample


class MixedVideoDataset(VideoDepthDataset):
    """Concatenation of datasets whose items carry sampling weights.

    ``weights[d]`` is the share of draws that go to dataset ``d`` (normalised); within a dataset
    items are equally likely, so ``item_weights()[i] = weights[d] / len(datasets[d])``. Without
    weights every dataset gets a share proportional to its size (plain concatenation).
    """

    name = "mixed"

    def __init__(self, datasets: Sequence[VideoDepthDataset], weights: Sequence[float] | None = None):
        if not datasets:
            raise ValueError("MixedVideoDataset needs at least one dataset")
        if weights is not None:
            if len(weights) != len(datasets):
                raise ValueError(
                    f"{len(weights)} weights given for {len(datasets)} datasets; give one weight per dataset"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"dataset weights must be non-negative with a positive sum, got {list(weights)}")
        empty = [d.name for d in datasets if len(d) == 0]
        if empty:
            raise ValueError(f"empty dataset(s) in the mix: {empty}")
        self.datasets = list(datasets)
        self.weights = None if weights is None else [float(w) for w in weights]
        self._offsets = [0]
        for d in self.datasets:
            self._offsets.append(self._offsets[-1] + len(d))

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global item index -> (dataset position, index inside that dataset)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        d = bisect.bisect_right(self._offsets, index) - 1
        return d, index - self._offsets[d]

    def sequence_length(self, index: int) -> int:
        d, i = self.locate(index)
        return self.datasets[d].sequence_length(i)

    def frame_size(self, index: int) -> tuple[int, int]:
        d, i = self.locate(index)
        return self.datasets[d].frame_size(i)

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        d, i = self.locate(index)
        return self.datasets[d].load(i, frames)

    def item_weights(self) -> list[float] | None:
        """Per-item draw probabilities (sum 1), or None for uniform over items."""
        if self.weights is None:
            return None
        total = sum(self.weights)
        out: list[float] = []
        for w, d in zip(self.weights, self.datasets):
            out.extend([w / total / len(d)] * len(d))
        return out

    def clip_options(self, index: int) -> tuple[list[int] | None, list[int] | None] | None:
        """``(num_frames, frame_stride)`` of the dataset holding ``index`` when it sets its own
        (a `TrainView`), else None: the sampler's lists apply."""
        d, i = self.locate(index)
        options = getattr(self.datasets[d], "clip_options", None)
        return options(i) if options is not None else None


#: Crop rules of `TrainView`.
CROP_MODES = ("center", "random")


def cover_size(height: int, width: int, crop: tuple[int, int], upscale_only: bool = False) -> tuple[int, int]:
    """Size ``(H', W')`` of a ``height x width`` frame scaled, aspect kept, to cover ``crop``.

    The scale is ``max(crop_h / H, crop_w / W)`` and each side is truncated to an integer
    (``int(H · s)``), at least the crop's side. ``upscale_only`` keeps a frame that already covers
    the crop as it is (scale ``max(s, 1)``: only a smaller frame is enlarged).
    """
    scale = max(crop[0] / height, crop[1] / width)
    if upscale_only and scale <= 1.0:
        return height, width
    return max(int(height * scale), crop[0]), max(int(width * scale), crop[1])


class TrainView(VideoDepthDataset):
    """One dataset as an entry of a training mixture, with its own resize, crop and clip rules.

    Frames of ``dataset`` (after its own crop/size, if any) go through, in this order:

    1. **pre-resize**: each side scaled by ``resize_factor`` and truncated (``int(H · f)``);
    2. **crop** to ``crop`` ``(H, W)``:

       - ``center``: resized, aspect kept, to cover the crop (`cover_size`), then the centre crop
         (offsets ``(H' − h) // 2``, ``(W' − w) // 2``);
       - ``random``: enlarged, aspect kept, only when smaller than the crop (`cover_size` with
         ``upscale_only``), then a crop at a uniform random offset. The offset is a function of
         ``(seed, item, frames)`` and is the same for every frame of the clip, so runs are
         reproducible with any number of workers;

    RGB is resized bilinearly with antialias, depth and validity with the same nearest sampling
    (`resize_clip`); intrinsics are scaled and shifted with the frames. One resize takes the frame
    from its stored size straight to the final size (the two-step sizes are kept).

    ``num_frames`` and ``frame_stride`` replace the datamodule's lists for this entry's clips
    (`MixedVideoDataset.clip_options`), e.g. single frames of an image set beside clips of video
    sets, or a per-dataset stride.

    Args:
        dataset: the reader.
        resize_factor: pre-resize factor (1 = none).
        crop: final ``(H, W)``; None keeps the pre-resized frames.
        crop_mode: ``center`` or ``random``.
        num_frames: clip lengths of this entry (one drawn per clip); None = the datamodule's.
        frame_stride: strides of this entry; None = the datamodule's.
        seed: seed of the random crop offsets.
    """

    def __init__(
        self,
        dataset: VideoDepthDataset,
        resize_factor: float = 1.0,
        crop: tuple[int, int] | None = None,
        crop_mode: str = "center",
        num_frames: list[int] | None = None,
        frame_stride: list[int] | None = None,
        seed: int = 0,
    ):
        if resize_factor <= 0:
            raise ValueError(f"TrainView({dataset.name}): resize_factor must be > 0, got {resize_factor}")
        if crop_mode not in CROP_MODES:
            raise ValueError(f"TrainView({dataset.name}): crop_mode must be one of {CROP_MODES}, got {crop_mode!r}")
        if crop is not None and (len(crop) != 2 or min(crop) < 1):
            raise ValueError(f"TrainView({dataset.name}): crop must be (H, W) of positive ints, got {crop}")
        for key, values in (("num_frames", num_frames), ("frame_stride", frame_stride)):
            if values is not None and (not values or min(values) < 1):
                raise ValueError(f"TrainView({dataset.name}): {key} must be a non-empty list of positive ints")
        self.dataset = dataset
        self.name = dataset.name
        self.max_depth = dataset.max_depth
        self.resize_factor = float(resize_factor)
        self.crop = (int(crop[0]), int(crop[1])) if crop is not None else None
        self.crop_mode = crop_mode
        self.num_frames = [int(t) for t in num_frames] if num_frames is not None else None
        self.frame_stride = [int(s) for s in frame_stride] if frame_stride is not None else None
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def sequence_length(self, index: int) -> int:
        return self.dataset.sequence_length(index)

    def clip_options(self, index: int) -> tuple[list[int] | None, list[int] | None] | None:
        if self.num_frames is None and self.frame_stride is None:
            return None
        return self.num_frames, self.frame_stride

    def resized_size(self, index: int) -> tuple[int, int]:
        """``(H', W')`` the frames of item ``index`` are resized to before the crop."""
        height, width = self.dataset.frame_size(index)
        if self.resize_factor != 1.0:
            height, width = int(height * self.resize_factor), int(width * self.resize_factor)
            if min(height, width) < 1:
                raise ValueError(f"{self.name}: resize_factor {self.resize_factor} leaves an empty frame")
        if self.crop is None:
            return height, width
        return cover_size(height, width, self.crop, upscale_only=self.crop_mode == "random")

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.crop if self.crop is not None else self.resized_size(index)

    def crop_offset(self, index: int, frames: Sequence[int]) -> tuple[int, int]:
        """Top-left ``(y, x)`` of the crop in the resized frames of the clip ``(index, frames)``."""
        height, width = self.resized_size(index)
        if self.crop is None:
            return 0, 0
        room_y, room_x = height - self.crop[0], width - self.crop[1]
        if self.crop_mode == "center":
            return room_y // 2, room_x // 2
        rng = np.random.default_rng([self.seed, int(index), *(int(f) for f in frames)])
        return int(rng.integers(room_y + 1)), int(rng.integers(room_x + 1))

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        sample = dict(self.dataset.load(index, frames))
        stored = tuple(sample["video"].shape[-2:])
        resized = self.resized_size(index)
        if resized != stored:
            sample["video"], sample["depth"], sample["valid"] = resize_clip(
                sample["video"], sample["depth"], sample["valid"], resized
            )
            if "intrinsics" in sample:
                k = scale_intrinsics(sample["intrinsics"].double().numpy(), stored, resized)
                sample["intrinsics"] = torch.from_numpy(k.astype(np.float32))
        if self.crop is not None:
            y, x = self.crop_offset(index, frames)
            h, w = self.crop
            for key in ("video", "depth", "valid"):
                sample[key] = sample[key][..., y : y + h, x : x + w].contiguous()
            if "intrinsics" in sample:
                k = sample["intrinsics"].clone()
                k[:, 0, 2] -= x
                k[:, 1, 2] -= y
                sample["intrinsics"] = k
        return sample  # type: ignore[return-value]
