"""`PerFrameDataset`: the one base of the readers whose videos are stored as files per frame.

A reader lists its layout (`PerFrameDataset.discover`) and decodes one depth map
(`PerFrameDataset.read_depth`); the base does the rest, in this order:

1. **sequences**: keep the named ones (an unknown name is an error);
2. **selection** (optional): positions ``[start::stride][:max_frames]`` of each sequence's frames
   (`select_frames`); ``frame_index`` keeps the frames' own numbers;
3. **pairs**: every kept frame must have both its RGB and its depth file;
4. on `load`, only the requested frames are read, then:

   - **valid mask**: finite and > 0, and ``<= max_depth`` when the reader caps depth (the training
     sets; the benchmarks leave the cap to the metric); depth is 0 wherever it is invalid;
   - **crop** (optional): a fixed box ``[a:b, c:d]`` and/or an even crop (`crop_slices`) on RGB,
     depth and mask alike; the principal point moves with the crop (``shift_intrinsics``);
   - **resize** (optional): to a fixed ``(H, W)``, RGB bilinear with antialias, depth and mask
     nearest (`resize_clip`); intrinsics are scaled to match (`scale_intrinsics`);
   - **cameras**: intrinsics ``(T,3,3)`` and ``cam_to_world`` ``(T,4,4)`` when every frame has them.

Files are decoded with `vdf.data.readers`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.readers import image_size, read_rgb
from vdf.data.types import Sample

__all__ = [
    "Frame",
    "FrameSequence",
    "PerFrameDataset",
    "crop_slices",
    "frame_number",
    "frame_sort",
    "numbered_frames",
    "pinhole",
    "resize_clip",
    "scale_intrinsics",
    "select_frames",
    "set_cameras",
]


# -- one video on disk -------------------------------------------------------------------------


@dataclass
class Frame:
    """One frame on disk.

    ``index`` is its number in the original video (``frame_index``); ``files`` are further
    per-frame files (cameras) that `PerFrameDataset.read_camera` reads and ``meta["paths"]``
    lists; ``intrinsics`` ``(3,3)`` (at the native resolution) and ``cam_to_world`` ``(4,4)`` are
    cameras known when the layout is listed.
    """

    index: int
    rgb: Path
    depth: Path
    files: dict[str, Path] = field(default_factory=dict)
    intrinsics: np.ndarray | None = None
    cam_to_world: np.ndarray | None = None


@dataclass
class FrameSequence:
    """One video: its name (``meta["sequence"]``) and its frames in order."""

    name: str
    frames: list[Frame]


_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_number(path: Path) -> int:
    """The last run of digits in a file name (``frame.0012.color.jpg`` -> 12)."""
    match = _NUMBER.search(path.name)
    if match is None:
        raise ValueError(f"cannot read a frame number from the file name {str(path)!r}")
    return int(match.group(1))


def numbered_frames(images: Iterable[Path], depth_of: Callable[[Path, int], Path]) -> list[Frame]:
    """Frames of ``images`` sorted by the number in their names (`frame_number`), that number as
    ``index``, each paired with the depth file ``depth_of(image, number)``."""
    ordered = sorted((frame_number(p), p) for p in images)
    return [Frame(number, image, depth_of(image, number)) for number, image in ordered]


def frame_sort(paths: Iterable[Path]) -> list[Path]:
    """The benchmarks' frame order: sorted by name, then (stable) by the last 4 digits of the stem."""

    def key(path: Path) -> int:
        try:
            return int(path.stem[-4:])
        except ValueError as error:
            raise ValueError(f"frame file {str(path)!r}: name does not end in a frame number") from error

    return sorted(sorted(paths), key=key)


def pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The float64 ``(3,3)`` pinhole matrix K."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def set_cameras(
    frames: Sequence[Frame], intrinsics: np.ndarray | None = None, cam_to_world: np.ndarray | None = None
) -> None:
    """Give each frame its camera: ``intrinsics`` ``(N,3,3)`` and ``cam_to_world`` ``(N,4,4)``, one
    per frame in order, or a single ``(3,3)`` / ``(4,4)`` shared by every frame; None leaves it."""
    for key, value in (("intrinsics", intrinsics), ("cam_to_world", cam_to_world)):
        if value is None:
            continue
        value = np.asarray(value)
        rows = [value] * len(frames) if value.ndim == 2 else list(value)
        if len(rows) != len(frames):
            raise ValueError(f"{len(rows)} {key} for {len(frames)} frames")
        for frame, row in zip(frames, rows):
            setattr(frame, key, row)


# -- the optional steps ------------------------------------------------------------------------


def select_frames(count: int, start: int, stride: int, max_frames: int | None) -> list[int]:
    """Positions ``[start::stride][:max_frames]`` of a ``count``-frame list (= ``[start:stop:stride]``)."""
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 1):
        raise ValueError(
            f"frame selection needs start >= 0, stride >= 1, max_frames >= 1 or None; got "
            f"start={start}, stride={stride}, max_frames={max_frames}"
        )
    chosen = list(range(start, count, stride))
    return chosen if max_frames is None else chosen[:max_frames]


def crop_slices(height: int, width: int, crop: Sequence[int] | None, even: bool = False) -> tuple[slice, slice]:
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


def resize_clip(
    video: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize ``(T,3,H,W)`` RGB bilinear with antialias, ``(T,1,H,W)`` depth and mask nearest.

    Depth and mask share one sampling, so a pixel is valid after the resize exactly when its source
    pixel was.
    """
    video = F.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    depth = F.interpolate(depth, size=size, mode="nearest-exact")
    valid = F.interpolate(valid.float(), size=size, mode="nearest-exact") > 0.5
    depth = torch.where(valid, depth, torch.zeros((), dtype=depth.dtype))
    return video, depth, valid


def scale_intrinsics(k: np.ndarray, old: tuple[int, int], new: tuple[int, int]) -> np.ndarray:
    """Scale pinhole K ``(...,3,3)`` from ``old`` to ``new`` ``(H,W)``, pixel centres at integers
    (``c' = (c + 0.5)·s − 0.5``)."""
    sy, sx = new[0] / old[0], new[1] / old[1]
    k = k.copy()
    k[..., 0, 0] *= sx
    k[..., 1, 1] *= sy
    k[..., 0, 2] = (k[..., 0, 2] + 0.5) * sx - 0.5
    k[..., 1, 2] = (k[..., 1, 2] + 0.5) * sy - 0.5
    return k


# -- the base ----------------------------------------------------------------------------------


class PerFrameDataset(VideoDepthDataset):
    """Base of the readers whose videos are one RGB image and one depth file per frame.

    Subclasses implement `discover` and `read_depth`; `read_camera` (cameras read from per-frame
    files) and `native_size` are optional. Each reader exposes the arguments below that its dataset
    uses, under the same names (they are its YAML schema); the module docstring gives the order of
    the steps.

    Args:
        root: dataset root folder.
        name: dataset name in logs and metric keys.
        sequences: keep only these sequence names (as in ``meta["sequence"]``); None keeps what
            `discover` returns.
        start: first frame kept (a position in the sequence's frame list).
        stride: keep every ``stride``-th frame.
        max_frames: keep at most this many frames per sequence; None = all.
        crop: ``[a, b, c, d]`` = ``[a:b, c:d]`` on RGB and depth (Python slice bounds); None = no crop.
        even_crop: then trim frames to even height and width.
        shift_intrinsics: move the principal point by the crop offset.
        size: resize every frame to ``(H, W)`` after the crop; None = keep the size.
        max_depth: depth cap in metres: pixels beyond it are invalid, and it is the dataset's
            `max_depth`. None: every finite depth > 0 stays valid and the class's `max_depth`
            applies (the benchmarks: the metric masks at it).
    """

    def __init__(
        self,
        root: str,
        name: str,
        sequences: list[str] | None = None,
        *,
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        crop: Sequence[int] | None = None,
        even_crop: bool = False,
        shift_intrinsics: bool = True,
        size: tuple[int, int] | None = None,
        max_depth: float | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.crop = tuple(int(v) for v in crop) if crop is not None else None
        self.even_crop = even_crop
        self.shift_intrinsics = shift_intrinsics
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.cap_depth = max_depth is not None
        if max_depth is not None:
            self.max_depth = float(max_depth)
        self._native: dict[int, tuple[int, int]] = {}
        self.sequences = self._select(self.discover(sequences), sequences, start, stride, max_frames)

    # -- to implement ------------------------------------------------------------------------
    def discover(self, names: list[str] | None) -> list[FrameSequence]:  # pragma: no cover - abstract
        """The sequences under ``self.root`` with all their frames.

        ``names`` is the ``sequences`` argument: a reader whose sequences are a fixed list (or
        folders named by it) reads those; a reader that lists its layout may return every
        sequence, and the base keeps the named ones. Errors name the file or folder that is missing.
        """
        raise NotImplementedError

    def read_depth(self, frame: Frame) -> np.ndarray:  # pragma: no cover - abstract
        """Depth of ``frame`` in metres, float32 ``(H,W)`` at the native resolution; NaN, ±inf or
        <= 0 where it is unknown."""
        raise NotImplementedError

    def read_image(self, frame: Frame) -> np.ndarray:
        """RGB of ``frame``, uint8 ``(H,W,3)`` (default: the image file ``frame.rgb``); override when
        the dataset stores it differently (another size than the depth map, a packed format)."""
        return read_rgb(frame.rgb)

    def read_camera(self, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(K (3,3) at the native resolution or None, cam_to_world (4,4) or None)`` of ``frame``."""
        return frame.intrinsics, frame.cam_to_world

    def native_size(self, sequence: FrameSequence) -> tuple[int, int]:
        """``(H, W)`` of the sequence's files, from its first image's header."""
        return image_size(sequence.frames[0].rgb)

    # -- steps at construction ---------------------------------------------------------------
    def _select(
        self, found: list[FrameSequence], names: list[str] | None, start: int, stride: int, max_frames: int | None
    ) -> list[FrameSequence]:
        cls = type(self).__name__
        if names is not None:
            known = {s.name for s in found}
            unknown = [s for s in names if s not in known]
            if unknown:
                raise ValueError(
                    f"{cls}: sequence(s) {unknown} not found under {str(self.root)!r} "
                    f"(found {sorted(known)[:10]}{' ...' if len(known) > 10 else ''})"
                )
            found = [s for s in found if s.name in set(names)]
        found = [s for s in found if s.frames]
        if not found and not self.root.is_dir():
            raise FileNotFoundError(f"{cls}: dataset root {str(self.root)!r} does not exist or is not a folder")
        if not found:
            raise FileNotFoundError(
                f"{cls}: no sequences found under {str(self.root)!r} "
                f"(expected layout: see the docstring of {type(self).__module__})"
            )
        for sequence in found:
            positions = select_frames(len(sequence.frames), start, stride, max_frames)
            if not positions:
                raise ValueError(
                    f"{cls}: sequence {sequence.name!r} has {len(sequence.frames)} frames; none left "
                    f"after start={start}"
                )
            sequence.frames = [sequence.frames[p] for p in positions]
            for frame in sequence.frames:
                if not frame.depth.is_file():
                    raise FileNotFoundError(f"{cls}: {str(frame.rgb)!r} has no depth pair {str(frame.depth)!r}")
                if not frame.rgb.is_file():
                    raise FileNotFoundError(f"{cls}: {str(frame.depth)!r} has no RGB pair {str(frame.rgb)!r}")
        return found

    # -- VideoDepthDataset -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sequences)

    def sequence_length(self, index: int) -> int:
        return len(self.sequences[index].frames)

    def _native_size(self, index: int) -> tuple[int, int]:
        if index not in self._native:
            self._native[index] = self.native_size(self.sequences[index])
        return self._native[index]

    def frame_size(self, index: int) -> tuple[int, int]:
        if self.size is not None:
            return self.size
        rows, cols = crop_slices(*self._native_size(index), self.crop, self.even_crop)
        return rows.stop - rows.start, cols.stop - cols.start

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        cls = type(self).__name__
        sequence = self.sequences[index]
        frames = [int(f) for f in frames]
        if not frames or min(frames) < 0 or max(frames) >= len(sequence.frames):
            raise IndexError(
                f"{cls}: frames {frames} out of range for the {len(sequence.frames)} frames of "
                f"sequence {sequence.name!r}"
            )
        height, width = self._native_size(index)
        rows, cols = crop_slices(height, width, self.crop, self.even_crop)
        rgbs, depths, ks, poses, paths = [], [], [], [], []
        for position in frames:
            frame = sequence.frames[position]
            rgb = self.read_image(frame)
            depth = np.asarray(self.read_depth(frame), dtype=np.float32)
            if rgb.shape[:2] != depth.shape:
                raise ValueError(
                    f"{cls}: RGB {str(frame.rgb)!r} is {rgb.shape[0]}x{rgb.shape[1]} but its depth "
                    f"{str(frame.depth)!r} is {'x'.join(map(str, depth.shape))}; they must match"
                )
            if depth.shape != (height, width):
                raise ValueError(
                    f"{cls}: {str(frame.rgb)!r} is {rgb.shape[0]}x{rgb.shape[1]}, the sequence's "
                    f"first frame is {height}x{width}"
                )
            rgbs.append(rgb[rows, cols])
            depths.append(depth[rows, cols])
            k, pose = self.read_camera(frame)
            if k is not None:
                k = np.array(k, dtype=np.float64)
                if self.shift_intrinsics:
                    k[0, 2] -= cols.start
                    k[1, 2] -= rows.start
                ks.append(k)
            if pose is not None:
                poses.append(pose)
            paths += [str(frame.rgb), str(frame.depth), *(str(p) for p in frame.files.values())]
        depth = np.stack(depths)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > 0)
            if self.cap_depth:
                valid &= depth <= self.max_depth
        video = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0
        depth_t = torch.from_numpy(np.where(valid, depth, np.float32(0.0)).astype(np.float32)).unsqueeze(1)
        valid_t = torch.from_numpy(valid).unsqueeze(1)
        intrinsics = np.stack(ks) if len(ks) == len(frames) else None
        cropped = (rows.stop - rows.start, cols.stop - cols.start)
        if self.size is not None and self.size != cropped:
            video, depth_t, valid_t = resize_clip(video, depth_t, valid_t, self.size)
            if intrinsics is not None:
                intrinsics = scale_intrinsics(intrinsics, cropped, self.size)
        sample: Sample = {
            "video": video.clamp_(0.0, 1.0),
            "depth": depth_t,
            "valid": valid_t,
            "frame_index": torch.tensor([sequence.frames[p].index for p in frames], dtype=torch.int64),
            "meta": {"dataset": self.name, "sequence": sequence.name, "paths": paths},
        }
        if intrinsics is not None:
            sample["intrinsics"] = torch.from_numpy(intrinsics.astype(np.float32))
        if len(poses) == len(frames):
            sample["cam_to_world"] = torch.from_numpy(np.stack(poses).astype(np.float32))
        return sample
