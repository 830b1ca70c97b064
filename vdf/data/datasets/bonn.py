"""`BonnRGBD`: the Bonn RGB-D Dynamic dataset (TUM-style folders).

Layout (``root`` = the folder of extracted sequences, e.g. ``rgbd_bonn_dataset/``)::

    root/<seq>/rgb/<timestamp>.png     RGB
    root/<seq>/depth/<timestamp>.png   16-bit depth * 5000 (TUM convention), 0 = invalid

RGB and depth timestamps differ, so, as the benchmark does, the two lists are sorted separately
(by name, then by the last 4 digits of the stem) and paired **by position**; ``frame_index`` is that
position. DepthCrafter evaluates 5 sequences (balloon2, crowd2, crowd3, person_tracking,
synchronous), frames ``[30:140]`` (110 frames), even-crops (480x640 is unchanged), caps depth at 10 m.
"""

from __future__ import annotations


import numpy as np

from vdf.data.datasets._benchmark import (
    Frame,
    BenchmarkFolderDataset,
    FrameSequence,
    frame_sort,
    read_scaled_png,
    select_frames,
)

#: DepthCrafter ``meta_bonn.csv``: the five evaluated sequences (folder names of the Bonn download).
BONN_SEQUENCES = [
    "rgbd_bonn_balloon2",
    "rgbd_bonn_crowd2",
    "rgbd_bonn_crowd3",
    "rgbd_bonn_person_tracking",
    "rgbd_bonn_synchronous",
]


class BonnRGBD(BenchmarkFolderDataset):
    """Bonn RGB-D Dynamic sequences with the DepthCrafter benchmark selection.

    Args:
        root: folder holding the ``<seq>/`` folders.
        sequences: folder names; None = the five published ones (`BONN_SEQUENCES`).
        start: first frame kept (published: 30).
        stride: keep every ``stride``-th frame.
        max_frames: keep at most this many frames (published: 110, i.e. ``[30:140]``); None = all.
        even_crop: crop frames to even height and width (published: True).
        check_range: reproduce the published assertion that every depth PNG has a value > 255.
        shift_intrinsics: unused (no intrinsics are read; the even crop keeps the origin anyway).
        name: dataset name in logs and metric keys.
    """

    inference_size = (512, 640)  # DepthCrafter's benchmark size for this dataset

    max_depth = 10.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        start: int = 30,
        stride: int = 1,
        max_frames: int | None = 110,
        even_crop: bool = True,
        check_range: bool = True,
        shift_intrinsics: bool = True,
        name: str = "bonn",
    ):
        super().__init__(root, name, even_crop=even_crop, shift_intrinsics=shift_intrinsics)
        self.check_range = check_range
        if not self.root.is_dir():
            raise FileNotFoundError(f"BonnRGBD: dataset root {str(self.root)!r} does not exist; expected "
                                    "root/<seq>/{rgb,depth}/*.png (Bonn RGB-D Dynamic)")
        for seq in sequences if sequences is not None else BONN_SEQUENCES:
            rgb_dir, depth_dir = self.root / seq / "rgb", self.root / seq / "depth"
            rgbs = frame_sort(list(rgb_dir.glob("*.png")))
            depths = frame_sort(list(depth_dir.glob("*.png")))
            if not depths:
                raise FileNotFoundError(f"BonnRGBD: no depth PNGs in {str(depth_dir)!r}")
            if len(rgbs) != len(depths):
                raise ValueError(f"BonnRGBD: sequence {seq!r} has {len(rgbs)} RGB frames in {str(rgb_dir)!r} but "
                                 f"{len(depths)} depth frames in {str(depth_dir)!r}; they are paired by position "
                                 "(missing pair)")
            positions = select_frames(len(depths), start, stride, max_frames)
            if not positions:
                raise ValueError(f"BonnRGBD: sequence {seq!r} has {len(depths)} frames; none left after start={start}")
            frames = [Frame(index=p, rgb=rgbs[p], depth=depths[p]) for p in positions]
            self.sequences.append(FrameSequence(seq, frames))

    def read_depth(self, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        return read_scaled_png(frame.depth, 5000.0, "BonnRGBD", self.check_range)
