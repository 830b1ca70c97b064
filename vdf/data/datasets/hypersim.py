"""`Hypersim`: Apple's photorealistic indoor scenes, read from their released layout.

Layout (one item = one ``(scene, camera)`` pair)::

    root/<scene>/images/scene_cam_XX_final_preview/frame.NNNN.color.jpg      (or .tonemap.jpg)
    root/<scene>/images/scene_cam_XX_geometry_hdf5/frame.NNNN.depth_meters.hdf5   key "dataset"

``depth_meters`` holds the **Euclidean distance** from the camera centre (metres, NaN where no
geometry); it is converted to planar depth with `distance_to_planar`. Camera poses are in asset
units (``_detail/``, scaled by ``metadata_scene.csv``) and are not read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_number, pinhole, set_cameras
from vdf.data.readers import image_size, read_hdf5

__all__ = ["HYPERSIM_FOCAL", "Hypersim", "distance_to_planar"]


# ----------------------------------------------------------------------------------------------
# Hypersim
# ----------------------------------------------------------------------------------------------

HYPERSIM_FOCAL = 886.81  # px at 1024x768: 60° horizontal field of view


def distance_to_planar(dist: np.ndarray, focal: float) -> np.ndarray:
    """Distance to the camera centre ``(H,W)`` -> planar depth (z) ``(H,W)``.

    Pixel ``(i, j)`` looks along ``(x_j, y_i, f)`` with ``x = linspace(−(W−1)/2, (W−1)/2, W)`` and
    ``y = linspace(−(H−1)/2, (H−1)/2, H)`` (the principal point at the image centre), so
    ``z = dist · f / ‖(x, y, f)‖``. NaN stays NaN.
    """
    dist = np.asarray(dist, dtype=np.float32)
    h, w = dist.shape
    x = np.linspace(-(w - 1) / 2, (w - 1) / 2, w, dtype=np.float64)[None, :]
    y = np.linspace(-(h - 1) / 2, (h - 1) / 2, h, dtype=np.float64)[:, None]
    norm = np.sqrt(x**2 + y**2 + float(focal) ** 2)
    return (dist * (float(focal) / norm)).astype(np.float32)


class Hypersim(PerFrameDataset):
    """Hypersim: one item per ``(scene, camera)`` pair, planar depth in metres.

    ``meta["sequence"]`` is ``"<scene>/cam_XX"``. Intrinsics are the fixed pinhole of the release
    (``f`` from a 60° horizontal field of view, principal point at the centre); poses are not read.

    Args:
        root: folder holding the ``ai_VVV_NNN`` scene folders.
        sequences: keep only these ``"<scene>/cam_XX"`` names.
        max_depth: training cap in metres.
        size: optional output ``(H, W)``.
        name: dataset name.
        focal: focal length in pixels of the stored resolution; None derives it from the 60°
            horizontal field of view (886.81 px at width 1024).
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "hypersim",
        focal: float | None = None,
    ):
        self.focal = focal
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def _focal(self, width: int) -> float:
        if self.focal is not None:
            return float(self.focal)
        return (width / 2) / math.tan(math.radians(30.0))

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        for image_dir in sorted(self.root.glob("*/images/scene_cam_*_final_preview")):
            scene = image_dir.parent.parent.name
            cam = image_dir.name[len("scene_") : -len("_final_preview")]
            geo = image_dir.parent / f"scene_{cam}_geometry_hdf5"
            rgbs: dict[int, Path] = {}
            for pattern in ("frame.*.color.jpg", "frame.*.tonemap.jpg"):
                for p in image_dir.glob(pattern):
                    rgbs.setdefault(frame_number(p.with_name(p.name.split(".")[1])), p)  # frame.NNNN.color.jpg
            frames = [Frame(n, rgbs[n], geo / f"frame.{n:04d}.depth_meters.hdf5") for n in sorted(rgbs)]
            if frames:
                h, w = image_size(frames[0].rgb)
                f = self._focal(w)
                set_cameras(frames, intrinsics=pinhole(f, f, (w - 1) / 2, (h - 1) / 2))
            out.append(FrameSequence(f"{scene}/{cam}", frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        dist = read_hdf5(frame.depth, "dataset", ndim=2)
        return distance_to_planar(dist, self._focal(dist.shape[1]))
