"""`KITTIDepth`: the KITTI depth-completion ``val`` drives, read from the raw KITTI layout.

Layout (``root`` = the folder holding both downloads)::

    root/raw_data/<date>/<drive>/image_02/data/<frame:010d>.png                    RGB (KITTI raw)
    root/data_depth_annotated/val/<drive>/proj_depth/groundtruth/image_02/<frame:010d>.png
                                                                                   16-bit depth * 256

The GT file list selects the frames (the annotated GT skips the first and last 5 raw frames, so a
drive starts at ``0000000005``); ``frame_index`` is the raw frame number. Depth is ``png / 256`` m,
0 = no LiDAR point (``valid`` False). DepthCrafter keeps the first 110 GT frames of each of the 13
``val`` drives and crops every frame to even height and width (odd sizes lose their last row/column).
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_sort
from vdf.data.readers import read_scaled_png

#: The 13 drives of KITTI's depth-completion ``val`` split (DepthCrafter ``meta_kitti_val.csv``).
KITTI_VAL_DRIVES = [
    "2011_09_26_drive_0002_sync",
    "2011_09_26_drive_0005_sync",
    "2011_09_26_drive_0013_sync",
    "2011_09_26_drive_0020_sync",
    "2011_09_26_drive_0023_sync",
    "2011_09_26_drive_0036_sync",
    "2011_09_26_drive_0079_sync",
    "2011_09_26_drive_0095_sync",
    "2011_09_26_drive_0113_sync",
    "2011_09_28_drive_0037_sync",
    "2011_09_29_drive_0026_sync",
    "2011_09_30_drive_0016_sync",
    "2011_10_03_drive_0047_sync",
]


class KITTIDepth(PerFrameDataset):
    """KITTI depth-completion ``val`` drives with the DepthCrafter benchmark selection.

    Args:
        root: folder holding ``raw_data/`` and ``data_depth_annotated/``.
        sequences: drive names (``2011_09_26_drive_0002_sync``, ...); None = the 13 ``val`` drives.
        split: the ``data_depth_annotated`` split folder holding the GT.
        start: first GT frame kept (a position in the sorted GT file list).
        stride: keep every ``stride``-th GT frame.
        max_frames: keep at most this many frames per drive (published: 110); None = all.
        even_crop: crop frames to even height and width (published: True).
        check_range: reproduce the published assertion that every GT PNG has a value > 255.
        shift_intrinsics: unused (no intrinsics are read; the even crop keeps the origin anyway).
        name: dataset name in logs and metric keys.
    """

    inference_size = (384, 1280)  # DepthCrafter's benchmark size for this dataset

    max_depth = 80.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        split: str = "val",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = 110,
        even_crop: bool = True,
        check_range: bool = True,
        shift_intrinsics: bool = True,
        name: str = "kitti",
    ):
        self.split, self.check_range = split, check_range
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
        gt_root = self.root / "data_depth_annotated" / self.split
        if not gt_root.is_dir():
            raise FileNotFoundError(
                f"KITTIDepth: {str(gt_root)!r} does not exist; expected root/data_depth_annotated/{self.split}/<drive>/"
                "proj_depth/groundtruth/image_02/*.png (KITTI depth completion) beside root/raw_data/"
            )
        out = []
        for drive in names if names is not None else KITTI_VAL_DRIVES:
            gt_dir = gt_root / drive / "proj_depth" / "groundtruth" / "image_02"
            gts = frame_sort(gt_dir.glob("*.png"))
            if not gts:
                raise FileNotFoundError(f"KITTIDepth: no ground-truth PNGs in {str(gt_dir)!r}")
            rgb_dir = self.root / "raw_data" / drive[:10] / drive / "image_02" / "data"
            out.append(FrameSequence(drive, [Frame(int(gt.stem), rgb_dir / gt.name, gt) for gt in gts]))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_scaled_png(frame.depth, 256.0, self.check_range)
