"""Shared pieces of the benchmark readers (Sintel, KITTI, Bonn, ScanNet, NYUv2): frames listed from
each dataset's own layout, the published selection (`select_frames`) and crops (`crop_slices`),
16-bit PNG depth (`read_scaled_png`), and `BenchmarkFolderDataset`, which loads only the
requested frames and applies the crop to RGB, depth and intrinsics alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample


def frame_sort(paths: list[Path]) -> list[Path]:
    """The benchmark's frame order: stable sort by name, then by the last 4 digits of the stem."""

    def key(path: Path) -> int:
        try:
            return int(path.stem[-4:])
        except ValueError as error:
            raise ValueError(f"frame file {str(path)!r}: name does not end in a frame number") from error

    return sorted(sorted(paths), key=key)


def select_frames(count: int, start: int, stride: int, max_frames: int | None) -> list[int]:
    """Positions ``[start::stride][:max_frames]`` of a ``count``-frame list (= ``[start:stop:stride]``)."""
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(f"frame selection needs start >= 0, stride >= 1, max_frames >= 1 or None; got "
                         f"start={start}, stride={stride}, max_frames={max_frames}")
    chosen = list(range(start, count, stride))
    return chosen if max_frames is None else chosen[:max_frames]


def crop_slices(
    height: int, width: int, crop: Sequence[int] | None, even: bool = False
) -> tuple[slice, slice]:
    """Row/column slices of a crop ``[a:b, c:d]`` (Python slice bounds, negatives count from the end).

    ``even`` then trims to even height and width (``[:even(H), :even(W)]``, DepthCrafter KITTI/Bonn).
    """
    rows, cols = (0, height), (0, width)
    if crop is not None:
        a, b, c, d = (int(v) for v in crop)
        rows = slice(a, b).indices(height)[:2]
        cols = slice(c, d).indices(width)[:2]
    if even:
        rows = (rows[0], rows[0] + (rows[1] - rows[0]) // 2 * 2)
        cols = (cols[0], cols[0] + (cols[1] - cols[0]) // 2 * 2)
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        raise ValueError(f"crop {list(crop) if crop is not None else None} leaves nothing of a {height}x{width} frame")
    return slice(*rows), slice(*cols)


def read_png_uint16(path: Path, who: str) -> np.ndarray:
    """A single-channel 16-bit PNG as a uint16 (H,W) array; errors name the file and the problem."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mode = image.mode
            if not (mode.startswith("I;16") or (mode == "I" and image.format == "PNG")):
                raise ValueError(f"{who}: {str(path)!r} is not a 16-bit single-channel PNG (PIL mode {mode!r})")
            array = np.array(image)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{who}: depth file {str(path)!r} does not exist") from error
    except ValueError:
        raise
    except Exception as error:  # truncated / corrupt image
        raise ValueError(f"{who}: cannot read depth PNG {str(path)!r} (truncated or corrupt?): {error}") from error
    if array.ndim != 2 or array.min() < 0 or array.max() > 65535:
        raise ValueError(f"{who}: {str(path)!r} is not a 16-bit single-channel PNG (shape {array.shape})")
    return array.astype(np.uint16)


def read_rgb(path: Path, who: str) -> np.ndarray:
    """An 8-bit image as uint8 (H,W,3) RGB; errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{who}: RGB file {str(path)!r} does not exist") from error
    except Exception as error:
        raise ValueError(f"{who}: cannot read RGB image {str(path)!r} (truncated or corrupt?): {error}") from error


def image_size(path: Path, who: str) -> tuple[int, int]:
    """``(H, W)`` from an image header (nothing decoded)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{who}: file {str(path)!r} does not exist") from error
    except Exception as error:
        raise ValueError(f"{who}: cannot read image header of {str(path)!r}: {error}") from error
    return height, width


@dataclass
class Frame:
    """One frame on disk: its files and its index in the original sequence."""

    index: int
    rgb: Path
    depth: Path
    extra: dict = field(default_factory=dict)  # e.g. {"pose": Path} or {"cam": Path}


@dataclass
class FrameSequence:
    """The selected frames of one sequence."""

    name: str
    frames: list[Frame]
    intrinsics: np.ndarray | None = None  # (3,3) at full resolution, shared by every frame


class BenchmarkFolderDataset(VideoDepthDataset):
    """Base of the readers that hold one RGB image and one depth file per frame.

    Subclasses pass ``root``, ``name``, ``crop`` / ``even_crop`` / ``shift_intrinsics`` up, fill
    ``self.sequences`` (selected frames only) and implement `read_depth`; `read_camera` is optional. Crops apply to RGB
    and depth alike and (with ``shift_intrinsics``) move the principal point by the crop offset.
    """

    crop: Sequence[int] | None = None
    even_crop: bool = False
    shift_intrinsics: bool = True

    def __init__(
        self,
        root: str,
        name: str,
        crop: Sequence[int] | None = None,
        even_crop: bool = False,
        shift_intrinsics: bool = True,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.crop = tuple(crop) if crop is not None else None
        self.even_crop = even_crop
        self.shift_intrinsics = shift_intrinsics
        self.sequences: list[FrameSequence] = []
        self._sizes: dict[int, tuple[int, int]] = {}

    # -- per-format hooks ----------------------------------------------------------------------
    def read_depth(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """Depth float32 (H,W) metres (0 where unknown) and valid bool (H,W), full resolution."""
        raise NotImplementedError

    def depth_size(self, frame: Frame) -> tuple[int, int]:
        """``(H, W)`` of a depth file without decoding it."""
        return image_size(frame.depth, type(self).__name__)

    def read_camera(self, sequence: FrameSequence, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(K (3,3) full resolution or None, cam_to_world (4,4) or None)``."""
        return sequence.intrinsics, None

    # -- VideoDepthDataset ---------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_length(self, index: int) -> int:
        return len(self.sequences[index].frames)

    def frame_size(self, index: int) -> tuple[int, int]:
        if index not in self._sizes:
            height, width = self.depth_size(self.sequences[index].frames[0])
            rows, cols = crop_slices(height, width, self.crop, self.even_crop)
            self._sizes[index] = (rows.stop - rows.start, cols.stop - cols.start)
        return self._sizes[index]

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        who = type(self).__name__
        sequence = self.sequences[index]
        frames = [int(f) for f in frames]
        if not frames or min(frames) < 0 or max(frames) >= len(sequence.frames):
            raise IndexError(f"{who}: frames {frames} out of range for the {len(sequence.frames)} selected "
                             f"frames of sequence {sequence.name!r}")
        rgbs, depths, valids, ks, poses, paths = [], [], [], [], [], []
        for position in frames:
            frame = sequence.frames[position]
            rgb = read_rgb(frame.rgb, who)
            depth, valid = self.read_depth(frame)
            if rgb.shape[:2] != depth.shape:
                raise ValueError(
                    f"{who}: RGB {str(frame.rgb)!r} is {rgb.shape[0]}x{rgb.shape[1]} but its depth "
                    f"{str(frame.depth)!r} is {depth.shape[0]}x{depth.shape[1]}; they must match"
                )
            rows, cols = crop_slices(depth.shape[0], depth.shape[1], self.crop, self.even_crop)
            rgbs.append(rgb[rows, cols])
            depths.append(depth[rows, cols])
            valids.append(valid[rows, cols])
            k, pose = self.read_camera(sequence, frame)
            if k is not None:
                k = np.array(k, dtype=np.float64)
                if self.shift_intrinsics:
                    k[0, 2] -= cols.start
                    k[1, 2] -= rows.start
                ks.append(k)
            if pose is not None:
                poses.append(pose)
            paths += [str(frame.rgb), str(frame.depth), *(str(p) for p in frame.extra.values())]
        sample: Sample = {
            "video": torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0,
            "depth": torch.from_numpy(np.stack(depths).astype(np.float32)).unsqueeze(1),
            "valid": torch.from_numpy(np.stack(valids).astype(bool)).unsqueeze(1),
            "frame_index": torch.tensor([sequence.frames[p].index for p in frames], dtype=torch.int64),
            "meta": {"dataset": self.name, "sequence": sequence.name, "paths": paths},
        }
        if len(ks) == len(frames):
            sample["intrinsics"] = torch.from_numpy(np.stack(ks).astype(np.float32))
        if len(poses) == len(frames):
            sample["cam_to_world"] = torch.from_numpy(np.stack(poses).astype(np.float32))
        return sample


def read_scaled_png(path: Path, scale: float, who: str, require_over_255: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 16-bit depth PNG as (depth = png/scale float32 with 0 where png==0, valid = png>0)."""
    raw = read_png_uint16(path, who)
    if require_over_255 and raw.max() <= 255:
        # The benchmark asserts this: an 8-bit image saved as 16-bit would pass the mode check.
        raise ValueError(f"{who}: {str(path)!r} has maximum value {raw.max()} <= 255; expected 16-bit depth "
                         f"values (the published extraction asserts max > 255)")
    valid = raw > 0
    depth = (raw.astype(np.float64) / scale).astype(np.float32)
    return np.where(valid, depth, np.float32(0.0)), valid
