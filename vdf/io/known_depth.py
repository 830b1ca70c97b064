"""Known metric depth and cameras of a video, read per frame: what ``vdf predict`` aligns its
prediction to (sparse depth such as LiDAR, or dense depth) and places its point clouds with.

A **known-depth source** of one video is one of:

- a folder of per-frame depth maps named by frame index (the last number in the file name:
  ``000012.png``, ``frame_12.npy``): 16-bit PNG (``value * png_scale`` metres, e.g. 0.001 for
  millimetres, 1/256 for KITTI) or ``.npy`` float metres;
- an ``.npz`` holding ``depth`` (T,H,W) or (T,1,H,W) metres, with ``frame_index`` (T,) naming the
  frames (else row ``i`` is frame ``i``) and an optional bool ``valid`` (the layout of
  ``vdf.io.write_episodes``' ``<name>_gt.npz``).

Zero, negative and non-finite values are unknown. A **camera source** is an ``.npz`` with
``cam_to_world`` (T,4,4) and/or ``intrinsics`` (T,3,3) (or (3,3)), rows matched to frames the same
way (``<name>_gt.npz`` has both). Paths may hold ``{name}``, replaced by the video's name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

__all__ = ["CameraSource", "KnownDepth", "known_path"]

_NUMBER = re.compile(r"(\d+)")


def known_path(pattern: str, name: str) -> Path:
    """``pattern`` with ``{name}`` replaced by the video's name."""
    return Path(pattern.replace("{name}", name))


def _frame_number(path: Path) -> int | None:
    numbers = _NUMBER.findall(path.stem)
    return int(numbers[-1]) if numbers else None


def _rows(data, key: str, path: Path) -> dict[int, int]:
    """frame index -> row of ``data[key]``."""
    count = data[key].shape[0]
    if "frame_index" in data.files:
        frames = np.asarray(data["frame_index"]).reshape(-1).tolist()
        if len(frames) != count:
            raise ValueError(f"{path}: frame_index has {len(frames)} entries for {count} rows of {key}")
        return {int(f): i for i, f in enumerate(frames)}
    return {i: i for i in range(count)}


class KnownDepth:
    """Per-frame known depth of one video (see the module doc).

    Args:
        path: a folder of depth maps or an ``.npz``.
        png_scale: metres per unit of 16-bit PNG values.
    """

    def __init__(self, path: str | os.PathLike, png_scale: float = 0.001):
        self.path = Path(path)
        self.png_scale = float(png_scale)
        if not self.path.exists():
            raise FileNotFoundError(f"known depth {self.path} does not exist")
        self._npz = None
        self._files: dict[int, Path] = {}
        if self.path.is_dir():
            for f in sorted(self.path.iterdir()):
                number = _frame_number(f)
                if f.suffix.lower() in (".png", ".npy") and number is not None and not f.name.startswith("."):
                    self._files[number] = f
            if not self._files:
                raise ValueError(f"known depth folder {self.path} holds no .png / .npy maps named by frame index")
        elif self.path.suffix == ".npz":
            self._npz = np.load(self.path)
            if "depth" not in self._npz.files:
                raise ValueError(f"{self.path} has no 'depth' array (it has {self._npz.files})")
            self._rows = _rows(self._npz, "depth", self.path)
        else:
            raise ValueError(f"known depth {self.path} is neither a folder of maps nor an .npz")

    def __call__(self, frame_index: int) -> np.ndarray | None:
        """Metres ``(H,W)`` float32 of frame ``frame_index`` (0 where unknown), or None when the
        source has nothing for it."""
        if self._npz is not None:
            row = self._rows.get(int(frame_index))
            if row is None:
                return None
            depth = np.asarray(self._npz["depth"][row], dtype=np.float32).reshape(self._npz["depth"].shape[-2:])
            if "valid" in self._npz.files:
                depth = np.where(np.asarray(self._npz["valid"][row]).reshape(depth.shape), depth, 0.0)
        else:
            f = self._files.get(int(frame_index))
            if f is None:
                return None
            depth = self._read_map(f)
        return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)

    def _read_map(self, f: Path) -> np.ndarray:
        if f.suffix.lower() == ".npy":
            depth = np.load(f).astype(np.float32)
        else:
            import av

            with av.open(str(f)) as container:
                frame = next(container.decode(video=0))
                if frame.format.name not in ("gray16be", "gray16le"):
                    raise ValueError(f"{f}: a depth PNG must be 16-bit greyscale, got {frame.format.name}")
                depth = frame.to_ndarray().astype(np.float32) * self.png_scale
        depth = np.squeeze(depth)
        if depth.ndim != 2:
            raise ValueError(f"{f}: a depth map must be (H,W), got shape {depth.shape}")
        return depth

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()


class CameraSource:
    """Per-frame ``intrinsics`` (3,3) and ``cam_to_world`` (4,4) of one video from an ``.npz``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"camera file {self.path} does not exist")
        with np.load(self.path) as data:
            self.arrays = {
                k: np.asarray(data[k], np.float64) for k in ("intrinsics", "cam_to_world") if k in data.files
            }
            if not self.arrays:
                raise ValueError(f"{self.path} has neither 'intrinsics' nor 'cam_to_world' (it has {data.files})")
            self._rows = {}
            for key, value in self.arrays.items():
                if value.ndim == 3:
                    self._rows[key] = _rows(data, key, self.path)

    def get(self, key: str, frame_index: int) -> np.ndarray | None:
        """The frame's matrix, None when the file has no ``key``; KeyError naming the frame when the
        file has the key but no row for the frame."""
        value = self.arrays.get(key)
        if value is None:
            return None
        if value.ndim == 2:
            return value
        row = self._rows[key].get(int(frame_index))
        if row is None:
            raise KeyError(f"{self.path} has no {key} for frame {frame_index}")
        return value[row]
