"""`MVSSynth`: MVS-Synth (GTA V captures, Huang et al., CVPR'18), read from its released layout.

Layout (one item = one sequence ``NNNN``)::

    root/GTAV_1080/0000/images/0000.png
    root/GTAV_1080/0000/depths/0000.exr      float32 (1080,1920), +inf = sky
    root/GTAV_1080/0000/poses/0000.json      {"f_x", "f_y", "c_x", "c_y", "extrinsic": 4x4}

(``root`` may also be the ``GTAV_1080`` folder itself, or the ``GTAV_720`` release.)

Units: the EXR value is multiplied by ``depth_scale`` (default 1.0: the raw value is taken as
metres, as CUT3R does; FlashDepth divides by 10, "not sure about units" — pass 0.1 to match it).
+inf/NaN/<= 0 -> invalid. ``extrinsic`` is taken as the world -> camera matrix (the release's
README) and inverted to ``cam_to_world``; its translation is scaled by ``depth_scale`` too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.readers import read_exr


class MVSSynth(PerFrameDataset):
    """MVS-Synth: one item per sequence folder, named ``"NNNN"``.

    Args:
        root: folder holding ``GTAV_1080`` (or that folder itself).
        sequences: keep only these names.
        max_depth: training cap in metres (after ``depth_scale``).
        size: optional output ``(H, W)``.
        name: dataset name.
        depth_scale: factor from the stored EXR value to metres (see module doc).
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "mvs_synth",
        depth_scale: float = 1.0,
    ):
        self.depth_scale = float(depth_scale)
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        base = self.root
        for candidate in ("GTAV_1080", "GTAV_720"):
            if (self.root / candidate).is_dir():
                base = self.root / candidate
                break
        out = []
        for image_dir in sorted(base.glob("*/images")):
            seq_dir = image_dir.parent
            frames = numbered_frames(image_dir.glob("*.png"), lambda image, _: seq_dir / "depths" / f"{image.stem}.exr")
            poses = [seq_dir / "poses" / f"{f.rgb.stem}.json" for f in frames]
            if frames and all(p.is_file() for p in poses):
                cams = [self._read_pose(p) for p in poses]
                set_cameras(frames, intrinsics=[c[0] for c in cams], cam_to_world=[c[1] for c in cams])
            out.append(FrameSequence(seq_dir.name, frames))
        return out

    def _read_pose(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            data = json.loads(path.read_text())
            k = pinhole(float(data["f_x"]), float(data["f_y"]), float(data["c_x"]), float(data["c_y"]))
            w2c = np.asarray(data["extrinsic"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"MVSSynth: camera file {str(path)!r} must hold f_x, f_y, c_x, c_y and a 4x4 extrinsic: {error!r}"
            ) from error
        if w2c.shape != (4, 4):
            raise ValueError(f"MVSSynth: {str(path)!r} extrinsic has shape {w2c.shape}, expected 4x4")
        c2w = np.linalg.inv(w2c)
        c2w[:3, 3] *= self.depth_scale
        return k, c2w

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_exr(frame.depth) * np.float32(self.depth_scale)
