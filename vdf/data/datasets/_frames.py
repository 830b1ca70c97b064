"""Shared machinery of the readers that store a video as one RGB file and one depth file per frame.

`FrameFolderDataset` lists each sequence's frames once and loads only the requested ones; the
helpers read the file formats the training sets use (16-bit PNG, HDF5, OpenEXR through PyAV) and
resize clips and intrinsics consistently.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample


_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def frame_number(path: Path) -> int:
    """The last run of digits in a file name (``frame.0012.color.jpg`` -> 12)."""
    match = _NUMBER.search(path.name)
    if match is None:
        raise ValueError(f"cannot read a frame number from the file name {str(path)!r}")
    return int(match.group(1))


def read_hdf5(path: Path, key: str) -> np.ndarray:
    """One dataset of an HDF5 file as float32, with errors naming the file."""
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - h5py is a dependency
        raise ImportError(f"reading {str(path)!r} needs h5py (pip install h5py)") from error
    if not path.is_file():
        raise FileNotFoundError(f"missing file {str(path)!r}")
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise KeyError(f"HDF5 file {str(path)!r} has no key {key!r} (keys: {sorted(f.keys())})")
            return np.asarray(f[key], dtype=np.float32)
    except KeyError:
        raise
    except Exception as error:
        raise ValueError(f"cannot read HDF5 file {str(path)!r}: {error}") from error


def read_exr(path: Path) -> np.ndarray:
    """The single channel of an OpenEXR file (the G channel of an RGB(A) one) as float32 (H,W).

    Decoded with PyAV's ``exr`` decoder, which outputs ``grayf32le`` for one-channel files and
    ``gbrpf32le`` / ``gbrapf32le`` (plane 0 = G) for RGB(A) files, half or float alike.
    """
    import av

    if not path.is_file():
        raise FileNotFoundError(f"missing file {str(path)!r}")
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration) as error:
        raise ValueError(f"cannot decode OpenEXR file {str(path)!r}: {error}") from error
    name = frame.format.name
    if name not in ("grayf32le", "gbrpf32le", "gbrapf32le"):
        raise ValueError(f"OpenEXR file {str(path)!r} decoded to unsupported pixel format {name!r}")
    plane = frame.planes[0]  # grey, or G of GBR(A)
    h, w = frame.height, frame.width
    data = np.frombuffer(bytes(plane), dtype="<f4").reshape(h, plane.line_size // 4)[:, :w]
    return data.astype(np.float32)


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H,W,3)."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {str(path)!r}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except Exception as error:
        raise ValueError(f"cannot read image {str(path)!r}: {error}") from error


def read_png16(path: Path) -> np.ndarray:
    """A 16-bit greyscale PNG as uint16 (H,W); errors if it is not 16-bit."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {str(path)!r}")
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.array(img)
    except Exception as error:
        raise ValueError(f"cannot read PNG {str(path)!r}: {error}") from error
    if mode not in ("I;16", "I;16B", "I;16L", "I") or array.ndim != 2:
        raise ValueError(f"{str(path)!r} must be a 16-bit greyscale PNG, found mode {mode!r}")
    if array.dtype != np.uint16:
        if array.min() < 0 or array.max() > 65535:
            raise ValueError(f"{str(path)!r}: values outside the 16-bit range")
        array = array.astype(np.uint16)
    return array


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from an image header, without decoding pixels."""
    if not path.is_file():
        raise FileNotFoundError(f"missing file {str(path)!r}")
    try:
        with Image.open(path) as img:
            w, h = img.size
    except Exception as error:
        raise ValueError(f"cannot read image {str(path)!r}: {error}") from error
    return h, w


def pinhole(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


@dataclass
class FrameSequence:
    """One video stored as per-frame files.

    ``intrinsics`` ``(N,3,3)`` / ``cam_to_world`` ``(N,4,4)`` are at the native resolution, one per
    frame (or None when the dataset has none); ``extra`` holds per-dataset data for `read_depth`.
    """

    name: str
    rgb: list[Path]
    depth: list[Path]
    numbers: list[int]
    intrinsics: np.ndarray | None = None
    cam_to_world: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


class FrameFolderDataset(VideoDepthDataset):
    """Base of the readers whose videos are folders of per-frame RGB and depth files.

    Subclasses implement `discover` (find the sequences) and `read_depth` (one depth map in metres,
    with NaN, inf or values <= 0 wherever it is unknown). This class applies the cap, the mask,
    the optional resize and builds the `Sample`.

    Args:
        root: dataset root folder.
        sequences: keep only these sequence names (as in ``meta["sequence"]``); None keeps all.
        max_depth: depth cap in metres; pixels beyond it are invalid.
        size: optional ``(H, W)`` every frame is resized to (RGB bilinear with antialias, depth
            and mask nearest); intrinsics are scaled to match.
        name: dataset name used in logs and metric keys.
    """

    def __init__(self, root: str, sequences: list[str] | None = None, max_depth: float = 80.0,
                 size: tuple[int, int] | None = None, name: str = "dataset"):
        self.name = name
        self.root = Path(root)
        cls = type(self).__name__
        if not self.root.is_dir():
            raise FileNotFoundError(f"{cls}: dataset root {str(self.root)!r} does not exist or is not a folder")
        found = self.discover()
        if sequences is not None:
            known = {s.name for s in found}
            unknown = [s for s in sequences if s not in known]
            if unknown:
                raise ValueError(f"{cls}: sequence(s) {unknown} not found under {str(self.root)!r} "
                                 f"(found {sorted(known)[:10]}{' ...' if len(known) > 10 else ''})")
            found = [s for s in found if s.name in set(sequences)]
        found = [s for s in found if s.rgb]
        if not found:
            raise FileNotFoundError(f"{cls}: no sequences found under {str(self.root)!r} "
                                    f"(expected layout: see the docstring of {type(self).__module__})")
        for seq in found:
            if len(seq.rgb) != len(seq.depth):
                raise ValueError(f"{cls}: sequence {seq.name!r} has {len(seq.rgb)} RGB and {len(seq.depth)} depth files")
        self.seqs = found
        self.max_depth = float(max_depth)
        if size is not None:
            size = (int(size[0]), int(size[1]))
        self.size = size
        self._native = [image_size(s.rgb[0]) for s in self.seqs]

    # -- to implement ----------------------------------------------------------------------
    def discover(self) -> list[FrameSequence]:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_depth(self, seq: FrameSequence, k: int) -> np.ndarray:  # pragma: no cover - abstract
        """Depth of frame ``k`` of ``seq`` in metres, float32 (H,W); NaN/inf/<=0 where unknown."""
        raise NotImplementedError

    # -- VideoDepthDataset -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.seqs)

    def sequence_length(self, index: int) -> int:
        return len(self.seqs[index].rgb)

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.size if self.size is not None else self._native[index]

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        seq = self.seqs[index]
        frames = [int(f) for f in frames]
        n = len(seq.rgb)
        if not frames or min(frames) < 0 or max(frames) >= n:
            raise IndexError(f"{self.name}: frames {frames} out of range for {n} frames of sequence {seq.name!r}")
        h, w = self._native[index]
        rgbs, depths = [], []
        for k in frames:
            rgb = read_rgb(seq.rgb[k])
            depth = np.asarray(self.read_depth(seq, k), dtype=np.float32)
            if rgb.shape[:2] != (h, w):
                raise ValueError(f"{self.name}: {str(seq.rgb[k])!r} is {rgb.shape[0]}x{rgb.shape[1]}, "
                                 f"the sequence's first frame is {h}x{w}")
            if depth.shape != (h, w):
                raise ValueError(f"{self.name}: depth {str(seq.depth[k])!r} is {'x'.join(map(str, depth.shape))}, "
                                 f"its image {str(seq.rgb[k])!r} is {h}x{w}")
            rgbs.append(rgb)
            depths.append(depth)
        depth = np.stack(depths)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth > 0) & (depth <= self.max_depth)
        depth = np.where(valid, depth, np.float32(0.0)).astype(np.float32)
        video = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0
        depth_t = torch.from_numpy(depth).unsqueeze(1)
        valid_t = torch.from_numpy(valid).unsqueeze(1)
        intrinsics = None if seq.intrinsics is None else seq.intrinsics[frames].astype(np.float64)
        if self.size is not None and self.size != (h, w):
            video, depth_t, valid_t = resize_clip(video, depth_t, valid_t, self.size)
            if intrinsics is not None:
                intrinsics = scale_intrinsics(intrinsics, (h, w), self.size)
        sample: Sample = {
            "video": video.clamp_(0.0, 1.0),
            "depth": depth_t,
            "valid": valid_t,
            "frame_index": torch.tensor([seq.numbers[k] for k in frames], dtype=torch.int64),
            "meta": {
                "dataset": self.name,
                "sequence": seq.name,
                "paths": [str(p) for k in frames for p in (seq.rgb[k], seq.depth[k])],
            },
        }
        if intrinsics is not None:
            sample["intrinsics"] = torch.from_numpy(intrinsics.astype(np.float32))
        if seq.cam_to_world is not None:
            sample["cam_to_world"] = torch.from_numpy(seq.cam_to_world[frames].astype(np.float32))
        return sample


def resize_clip(video: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB bilinear with antialias; depth and mask nearest with the same sampling, so a pixel is
    valid after the resize exactly when its source pixel was."""
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
