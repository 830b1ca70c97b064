"""`Spring`: the Spring benchmark (Mehl et al., CVPR'23), read from its released layout.

Layout (one item = one sequence folder, left camera)::

    root/<seq>/frame_left/frame_left_0001.png          (frames are numbered from 1)
    root/<seq>/disp1_left/disp1_left_0001.dsp5         HDF5, key "disparity", 2x the image size
    root/<seq>/cam_data/intrinsics.txt                 one "fx fy cx cy" row per frame

(Sequence folders may also sit under a split folder such as ``train/``.)
Depth: the disparity is subsampled ``[::2, ::2]`` to the image grid, then
``depth = fx · 0.065 / disp`` (baseline 6.5 cm) with ``fx`` from row ``frame − 1``;
disparity 0 (sky), NaN or inf -> invalid. ``frame_index`` holds the 1-based file numbers.
Extrinsics (``cam_data/extrinsics.txt``) are not read.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.readers import read_hdf5, read_table

SPRING_BASELINE = 0.065


class Spring(PerFrameDataset):
    """Spring: one item per sequence, named by its folder (``"<split>/<seq>"`` under a split).

    Args:
        root: folder holding the sequence folders (or split folders holding them).
        sequences: keep only these names.
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
        name: str = "spring",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        dirs = sorted(set(self.root.glob("*/frame_left")) | set(self.root.glob("*/*/frame_left")))
        for image_dir in dirs:
            seq_dir = image_dir.parent
            frames = numbered_frames(
                image_dir.glob("frame_left_*.png"), lambda _, n: seq_dir / "disp1_left" / f"disp1_left_{n:04d}.dsp5"
            )
            intr_file = seq_dir / "cam_data" / "intrinsics.txt"
            if not intr_file.is_file():
                raise FileNotFoundError(
                    f"Spring: missing {str(intr_file)!r} (needed for fx to turn disparity into depth)"
                )
            table = read_table(intr_file)
            if frames:
                numbers = [f.index for f in frames]
                if table.shape[1] != 4 or min(numbers) < 1 or len(table) < max(numbers):
                    raise ValueError(
                        f"Spring: {str(intr_file)!r} has shape {table.shape}; expected one 'fx fy cx cy' "
                        f"row per frame (>= {max(numbers)} rows)"
                    )
                set_cameras(frames, intrinsics=[pinhole(*table[n - 1]) for n in numbers])
            out.append(FrameSequence(seq_dir.relative_to(self.root).as_posix(), frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        disp = read_hdf5(frame.depth, "disparity", ndim=2)[::2, ::2]
        fx = float(frame.intrinsics[0, 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(np.isfinite(disp) & (disp > 0), fx * SPRING_BASELINE / disp, np.nan)
        return depth.astype(np.float32)
