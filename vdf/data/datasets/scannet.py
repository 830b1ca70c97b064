"""`ScanNet`: ScanNet v2 test scenes exported with the SensReader.

Layout (``root`` = the ScanNet folder)::

    root/scans_test/<scene>/color/<i>.jpg                 RGB, exported at the depth resolution (640x480)
    root/scans_test/<scene>/depth/<i>.png                 16-bit depth in millimetres, 0 = invalid
    root/scans_test/<scene>/pose/<i>.txt                  4x4 camera -> world (optional)
    root/scans_test/<scene>/intrinsic/intrinsic_depth.txt 4x4 (or 3x3) K of the depth camera (optional)

Frames are sorted by ``int(stem)``; ``frame_index`` is that number. DepthCrafter evaluates the first
100 scenes of ``sorted(os.listdir(scans_test))`` (scene0707_00 ... scene0806_00), frames ``[:270:3]``
(90 frames), crops ``[8:-8, 11:-11]`` (480x640 -> 464x618), caps depth at 10 m.

Intrinsics: the crop moves the principal point by (-11, -8) when ``shift_intrinsics`` (default).
The published VDA TAE code uses the uncropped ``K`` on cropped maps; ``shift_intrinsics=False``
reproduces it. ScanNet marks lost tracking with ``-inf`` poses; they are returned as read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, set_cameras
from vdf.data.readers import read_scaled_png, read_table


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """The top-left ``shape`` block of a whitespace-separated matrix file (K may be stored 4x4)."""
    matrix = read_table(path)
    if matrix.shape[0] < shape[0] or matrix.shape[1] < shape[1]:
        raise ValueError(
            f"ScanNet: {str(path)!r} holds a {matrix.shape[0]}x{matrix.shape[1]} matrix; "
            f"expected at least {shape[0]}x{shape[1]}"
        )
    return matrix[: shape[0], : shape[1]]


class ScanNet(PerFrameDataset):
    """ScanNet v2 scenes with the DepthCrafter benchmark selection.

    Args:
        root: folder holding ``split/``.
        sequences: scene names; None = the first ``num_scenes`` of the sorted ``split`` folder.
        num_scenes: how many sorted scenes to keep when ``sequences`` is None (published: 100); None = all.
        split: the folder of scenes (``scans_test``).
        start: first frame kept (a position in the sorted frame list).
        stride: keep every ``stride``-th frame (published: 3).
        max_frames: keep at most this many frames (published: 90, i.e. ``[:270:3]``); None = all.
        crop: ``[a, b, c, d]`` = ``[a:b, c:d]`` on RGB and depth (published ``[8, -8, 11, -11]``); None = no crop.
        shift_intrinsics: move the principal point by the crop offset (False = published TAE code).
        name: dataset name in logs and metric keys.
    """

    inference_size = (640, 832)  # DepthCrafter's benchmark size for this dataset

    max_depth = 10.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        num_scenes: int | None = 100,
        split: str = "scans_test",
        start: int = 0,
        stride: int = 3,
        max_frames: int | None = 90,
        crop: tuple[int, int, int, int] | None = (8, -8, 11, -11),
        shift_intrinsics: bool = True,
        name: str = "scannet",
    ):
        self.num_scenes, self.split = num_scenes, split
        super().__init__(
            root,
            name,
            sequences,
            start=start,
            stride=stride,
            max_frames=max_frames,
            crop=crop,
            shift_intrinsics=shift_intrinsics,
        )

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        scenes_root = self.root / self.split
        if not scenes_root.is_dir():
            raise FileNotFoundError(
                f"ScanNet: {str(scenes_root)!r} does not exist; expected root/{self.split}/<scene>/"
                "{color/*.jpg, depth/*.png, pose/*.txt, intrinsic/intrinsic_depth.txt}"
            )
        if names is None:
            names = sorted(p.name for p in scenes_root.iterdir() if p.is_dir())
            names = names if self.num_scenes is None else names[: self.num_scenes]
            if not names:
                raise FileNotFoundError(f"ScanNet: no scene folders in {str(scenes_root)!r}")
        out = []
        for scene in names:
            folder = scenes_root / scene
            colors = list((folder / "color").glob("*.jpg"))
            try:
                colors = sorted(colors, key=lambda p: int(p.stem))
            except ValueError as error:
                raise ValueError(f"ScanNet: {str(folder / 'color')!r} holds a file not named <int>.jpg") from error
            if not colors:
                raise FileNotFoundError(f"ScanNet: no color/*.jpg in {str(folder)!r}")
            has_poses = (folder / "pose").is_dir()
            frames = [
                Frame(
                    int(color.stem),
                    color,
                    folder / "depth" / f"{color.stem}.png",
                    {"pose": folder / "pose" / f"{color.stem}.txt"} if has_poses else {},
                )
                for color in colors
            ]
            k_path = folder / "intrinsic" / "intrinsic_depth.txt"
            if k_path.is_file():
                set_cameras(frames, intrinsics=read_matrix(k_path, (3, 3)))
            out.append(FrameSequence(scene, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_scaled_png(frame.depth, 1000.0)

    def read_camera(self, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        pose = read_matrix(frame.files["pose"], (4, 4)) if "pose" in frame.files else None
        return frame.intrinsics, pose
