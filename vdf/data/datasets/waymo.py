"""`Waymo`: Waymo Open Dataset front-camera segments with LiDAR points, as FlashDepth's test set reads them.

Layout (``root`` = FlashDepth's ``data_root``; ``folder`` = ``waymo/val``; frames exported from
the validation TFRecords)::

    root/waymo/val/<segment>/FRONT/rgb/original/<n>.jpg    RGB (1920x1280)
    root/waymo/val/<segment>/FRONT/depth/<n>.npy           float (N,3) LiDAR points in the image: x (column), y (row), depth m

FlashDepth tests on 30 segments drawn from the validation split (`WAYMO_TEST_SEGMENTS`), frames
sorted by number, all of them. The depth map is built as FlashDepth does: ``x`` and ``y`` are
truncated to integers, points outside the image are dropped, each point writes its depth into its
pixel (a later point overwrites an earlier one); pixels without a point, or with depth <= 0, are
invalid.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.flashdepth_sets import FlashDepthTestSet
from vdf.data.datasets.frames import Frame, FrameSequence, numbered_frames
from vdf.data.readers import image_size, read_npy

#: FlashDepth's 30 Waymo test segments (``dataloaders/waymo_dataset.py``), in its order.
WAYMO_TEST_SEGMENTS = [
    "segment-12831741023324393102_2673_230_2693_230",
    "segment-10837554759555844344_6525_000_6545_000",
    "segment-11450298750351730790_1431_750_1451_750",
    "segment-11434627589960744626_4829_660_4849_660",
    "segment-14127943473592757944_2068_000_2088_000",
    "segment-12940710315541930162_2660_000_2680_000",
    "segment-12306251798468767010_560_000_580_000",
    "segment-11616035176233595745_3548_820_3568_820",
    "segment-14165166478774180053_1786_000_1806_000",
    "segment-1071392229495085036_1844_790_1864_790",
    "segment-12374656037744638388_1412_711_1432_711",
    "segment-13469905891836363794_4429_660_4449_660",
    "segment-1405149198253600237_160_000_180_000",
    "segment-10289507859301986274_4200_000_4220_000",
    "segment-12102100359426069856_3931_470_3951_470",
    "segment-14081240615915270380_4399_000_4419_000",
    "segment-11048712972908676520_545_000_565_000",
    "segment-13573359675885893802_1985_970_2005_970",
    "segment-10689101165701914459_2072_300_2092_300",
    "segment-12496433400137459534_120_000_140_000",
    "segment-11356601648124485814_409_000_429_000",
    "segment-11406166561185637285_1753_750_1773_750",
    "segment-10868756386479184868_3000_000_3020_000",
    "segment-1024360143612057520_3580_000_3600_000",
    "segment-13299463771883949918_4240_000_4260_000",
    "segment-12820461091157089924_5202_916_5222_916",
    "segment-10203656353524179475_7625_000_7645_000",
    "segment-13178092897340078601_5118_604_5138_604",
    "segment-12134738431513647889_3118_000_3138_000",
    "segment-13356997604177841771_3360_000_3380_000",
]


def rasterize_points(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sparse depth ``(H,W)`` float32 from ``(N,3)`` ``x, y, depth`` (FlashDepth's rule; 0 = no point)."""
    height, width = size
    x = points[:, 0].astype(np.int32)
    y = points[:, 1].astype(np.int32)
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    depth = np.zeros((height, width), dtype=np.float32)
    depth[y[inside], x[inside]] = points[inside, 2]
    return depth


class Waymo(FlashDepthTestSet):
    """Waymo front camera (FlashDepth test set: 30 validation segments, inference 1274x1918).

    Args:
        root: FlashDepth's ``data_root`` (the folder holding ``folder``).
        sequences: segment names; None = `WAYMO_TEST_SEGMENTS`.
        folder: the dataset's folder under ``root``.
        start, stride, max_frames: frame positions ``[start::stride][:max_frames]``.
        inference_size: FlashDepth's evaluation size ``(H, W)`` ('2k': 1274x1918).
        name: dataset name in logs and metric keys.
    """

    layout = "<segment>/FRONT/{rgb/original/<n>.jpg, depth/<n>.npy}"

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        folder: str = "waymo/val",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        inference_size: tuple[int, int] | None = (1274, 1918),
        name: str = "waymo",
    ):
        super().__init__(root, name, sequences, folder, start, stride, max_frames, inference_size)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        base = self.dataset_folder()
        out = []
        for segment in names if names is not None else WAYMO_TEST_SEGMENTS:
            folder = base / segment / "FRONT"
            frames = numbered_frames(
                (folder / "rgb" / "original").glob("*.jpg"), lambda p, n: folder / "depth" / f"{p.stem}.npy"
            )
            if not frames:
                raise FileNotFoundError(f"Waymo: no rgb/original/*.jpg in {str(folder)!r}")
            out.append(FrameSequence(segment, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        points = read_npy(frame.depth, ndim=2)
        if points.shape[1] != 3:
            raise ValueError(f"Waymo: {str(frame.depth)!r} has shape {points.shape}; expected (N,3): x, y, depth")
        return rasterize_points(points, image_size(frame.rgb))
