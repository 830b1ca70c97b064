"""`Unreal4K`: UnrealStereo4K left-camera sequences, as FlashDepth's test set reads them.

Layout (``root`` = FlashDepth's ``data_root``; ``folder`` = ``unrealstereo4k``)::

    root/unrealstereo4k/<scene>/Image0/<n>.png          RGB(A) 3840x2160, frame number n
    root/unrealstereo4k/<scene>/Disp0/<n>.npy           float disparity (pixels) of the left camera
    root/unrealstereo4k/<scene>/Extrinsics0/<n>.txt     line 1: 3x3 K (9 numbers), line 2: 3x4 world -> camera
    root/unrealstereo4k/<scene>/Extrinsics1/<n>.txt     the same for the right camera (for the baseline)

Every scene folder is a sequence, frames sorted by number (all of them: FlashDepth's test split
filters nothing). Depth in metres is ``baseline · fx / disparity`` with ``fx`` = ``K[0,0]`` of
``Extrinsics0`` and the baseline the distance between the two cameras' centres; pixels with a
non-finite or non-positive disparity are invalid. (FlashDepth evaluates the disparity as it is
after its scale-and-shift fit; the conversion only gives the metres vdf's protocol needs.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.flashdepth_sets import FlashDepthTestSet
from vdf.data.datasets.frames import Frame, FrameSequence, numbered_frames
from vdf.data.readers import read_npy


def read_unreal_camera(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(K (3,3), world_to_cam (4,4))`` of an UnrealStereo4K ``Extrinsics*/<n>.txt``."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Unreal4K: camera file {str(path)!r} does not exist") from error
    try:
        values = [np.array([float(v) for v in line.split()]) for line in lines]
    except ValueError as error:
        raise ValueError(f"Unreal4K: cannot parse the numbers of {str(path)!r}") from error
    if len(values) != 2 or values[0].size != 9 or values[1].size != 12:
        raise ValueError(
            f"Unreal4K: {str(path)!r} must hold 2 lines: 9 numbers (K) and 12 numbers (3x4 world -> camera)"
        )
    w2c = np.eye(4)
    w2c[:3] = values[1].reshape(3, 4)
    return values[0].reshape(3, 3), w2c


class Unreal4K(FlashDepthTestSet):
    """UnrealStereo4K (FlashDepth test set: every scene, every frame, inference 1148x2044).

    Args:
        root: FlashDepth's ``data_root`` (the folder holding ``folder``).
        sequences: scene names; None = every scene folder.
        folder: the dataset's folder under ``root``.
        start, stride, max_frames: frame positions ``[start::stride][:max_frames]``.
        inference_size: FlashDepth's evaluation size ``(H, W)`` ('2k': 1148x2044), used by models
            whose resolution rule honours protocol sizes.
        name: dataset name in logs and metric keys.
    """

    layout = "<scene>/{Image0/<n>.png, Disp0/<n>.npy, Extrinsics0/<n>.txt, Extrinsics1/<n>.txt}"

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        folder: str = "unrealstereo4k",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        inference_size: tuple[int, int] | None = (1148, 2044),
        name: str = "unreal4k",
    ):
        super().__init__(root, name, sequences, folder, start, stride, max_frames, inference_size)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        base = self.dataset_folder()
        names = names if names is not None else sorted(p.name for p in base.iterdir() if p.is_dir())
        out = []
        for scene in names:
            folder = base / scene
            frames = numbered_frames((folder / "Image0").glob("*.png"), lambda p, n: folder / "Disp0" / f"{p.stem}.npy")
            if not frames:
                raise FileNotFoundError(f"Unreal4K: no Image0/*.png in {str(folder)!r}")
            for frame in frames:
                frame.files = {
                    "cam0": folder / "Extrinsics0" / f"{frame.rgb.stem}.txt",
                    "cam1": folder / "Extrinsics1" / f"{frame.rgb.stem}.txt",
                }
            out.append(FrameSequence(scene, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        disparity = read_npy(frame.depth, ndim=2).astype(np.float64)
        k, w2c0 = read_unreal_camera(frame.files["cam0"])
        _, w2c1 = read_unreal_camera(frame.files["cam1"])
        baseline = float(np.linalg.norm((w2c0 @ np.linalg.inv(w2c1))[:3, 3]))
        if not baseline > 0:
            raise ValueError(f"Unreal4K: {str(frame.files['cam0'])!r} and its right camera give a zero baseline")
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(np.isfinite(disparity) & (disparity > 0), baseline * k[0, 0] / disparity, 0.0)
        return depth.astype(np.float32)

    def read_camera(self, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        return read_unreal_camera(frame.files["cam0"])[0], None
