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

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_sort
from vdf.data.readers import read_scaled_png

#: DepthCrafter ``meta_bonn.csv``: the five evaluated sequences (folder names of the Bonn download).
BONN_SEQUENCES = [
    "rgbd_bonn_balloon2",
    "rgbd_bonn_crowd2",
    "rgbd_bonn_crowd3",
    "rgbd_bonn_person_tracking",
    "rgbd_bonn_synchronous",
]


class BonnRGBD(PerFrameDataset):
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
        self.check_range = check_range
        super().__init__(
            root,
            name,
            sequences,
            start=start,
            stride=stride,
            max_frames=max_frames,
            even_crop=even_crop,
            shift_intrinsics=shift_intrinsics,
        )

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"BonnRGBD: dataset root {str(self.root)!r} does not exist; expected "
                "root/<seq>/{rgb,depth}/*.png (Bonn RGB-D Dynamic)"
            )
        out = []
        for seq in names if names is not None else BONN_SEQUENCES:
            rgb_dir, depth_dir = self.root / seq / "rgb", self.root / seq / "depth"
            rgbs = frame_sort(rgb_dir.glob("*.png"))
            depths = frame_sort(depth_dir.glob("*.png"))
            if not depths:
                raise FileNotFoundError(f"BonnRGBD: no depth PNGs in {str(depth_dir)!r}")
            if len(rgbs) != len(depths):
                raise ValueError(
                    f"BonnRGBD: sequence {seq!r} has {len(rgbs)} RGB frames in {str(rgb_dir)!r} but "
                    f"{len(depths)} depth frames in {str(depth_dir)!r}; they are paired by position "
                    "(missing pair)"
                )
            out.append(FrameSequence(seq, [Frame(p, rgb, depth) for p, (rgb, depth) in enumerate(zip(rgbs, depths))]))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_scaled_png(frame.depth, 5000.0, self.check_range)
