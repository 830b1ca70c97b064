"""`MatrixCity`: the city-scale synthetic dataset of Li et al. (ICCV'23), read from its public layout.

Layout (the Hugging Face release ``BoDai/MatrixCity`` unpacked in place; one item = one block)::

    root/small_city/<aerial|street>/<train|test>/<block>/NNNN.png              RGB (from <block>.tar)
    root/small_city_depth/<aerial|street>/<train|test>/<block>_depth/NNNN.exr  depth (from <block>_depth.tar)
    root/small_city/<aerial|street>/<train|test>/<block>/transforms.json       optional cameras

(``big_city`` / ``big_city_depth`` alike.) A block folder holding ``depth/`` beside its frames
(``<block>/NNNN.png`` or ``<block>/rgb/NNNN.png`` with ``<block>/depth/NNNN.exr``, the layout
several conversion scripts produce) works too. Items are named by the block's path relative to
``root`` (``small_city/street/train/small_city_road_down``).

Depth: the EXR value is planar depth in centimetres (the release's ``load_data.py`` divides by
100 for metres); 65504, the largest float16, marks pixels without geometry (sky) → invalid.

Cameras (when ``transforms.json`` is there): ``fl_x, fl_y, cx, cy`` or, without them,
``camera_angle_x`` (``f = W / 2 / tan(angle / 2)``, principal point at the centre); per frame a
``transform_matrix``: camera→world in NeRF axes (x right, y up, z backward) whose rotation is
scaled by 100 in the release. The rotation columns are normalised, the translation is kept (metres
in the release), and the axes are flipped to OpenCV's (``cam_to_world · diag(1, −1, −1, 1)``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_number, pinhole
from vdf.data.readers import image_size, read_exr

__all__ = ["MATRIXCITY_SKY", "MatrixCity"]

#: The EXR value of pixels without geometry (the largest float16).
MATRIXCITY_SKY = 65504.0
_NERF_TO_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


class MatrixCity(PerFrameDataset):
    """MatrixCity: one item per block folder, planar depth in metres.

    Args:
        root: folder holding ``small_city`` / ``small_city_depth`` (and/or the ``big_city`` pair),
            or any folder above block folders.
        sequences: keep only these block paths.
        max_depth: training cap in metres.
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "matrixcity",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def _depth_dir(self, block: Path) -> Path:
        """The depth folder of a block: ``<block>/depth`` or the mirrored ``<city>_depth/.../<block>_depth``."""
        if (block / "depth").is_dir():
            return block / "depth"
        rel = block.relative_to(self.root).parts
        if block.name == "rgb":  # <block>/rgb/NNNN.png
            return block.parent / "depth"
        return self.root.joinpath(f"{rel[0]}_depth", *rel[1:-1], f"{rel[-1]}_depth")

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        blocks = sorted({p.parent for p in self.root.rglob("*.png")})
        out = []
        for folder in blocks:
            block = folder.parent if folder.name == "rgb" else folder
            depth_dir = self._depth_dir(folder)
            if not depth_dir.is_dir():
                continue  # not a MatrixCity block (no depth anywhere for it)
            frames = [
                Frame(frame_number(p), p, depth_dir / f"{p.stem}.exr")
                for p in sorted(folder.glob("*.png"), key=frame_number)
            ]
            name = block.relative_to(self.root).as_posix()
            transforms = block / "transforms.json"
            if frames and transforms.is_file():
                self._set_cameras(frames, transforms)
            out.append(FrameSequence(name, frames))
        return out

    def _set_cameras(self, frames: list[Frame], path: Path) -> None:
        try:
            meta = json.loads(path.read_text())
            by_name = {Path(f["file_path"]).stem: np.asarray(f["transform_matrix"], np.float64) for f in meta["frames"]}
            h, w = image_size(frames[0].rgb)
            if "fl_x" in meta:
                k = pinhole(
                    float(meta["fl_x"]), float(meta.get("fl_y", meta["fl_x"])), float(meta["cx"]), float(meta["cy"])
                )
            else:
                f = (w / 2) / math.tan(float(meta["camera_angle_x"]) / 2)
                k = pinhole(f, f, (w - 1) / 2, (h - 1) / 2)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"MatrixCity: camera file {str(path)!r} must hold 'frames' (file_path, transform_matrix) and "
                f"fl_x/fl_y/cx/cy or camera_angle_x: {error!r}"
            ) from error
        for frame in frames:
            c2w = by_name.get(frame.rgb.stem)
            if c2w is None:
                continue
            if c2w.shape != (4, 4):
                raise ValueError(f"MatrixCity: {str(path)!r}: transform_matrix of {frame.rgb.stem} is not 4x4")
            c2w = c2w.copy()
            c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
            c2w[3] = [0.0, 0.0, 0.0, 1.0]
            frame.intrinsics = k
            frame.cam_to_world = c2w @ _NERF_TO_OPENCV

    def read_depth(self, frame: Frame) -> np.ndarray:
        raw = read_exr(frame.depth)
        return np.where(raw >= MATRIXCITY_SKY, np.float32(np.nan), raw / np.float32(100.0)).astype(np.float32)
