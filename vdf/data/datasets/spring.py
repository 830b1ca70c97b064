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

from vdf.data.datasets._frames import FrameFolderDataset, FrameSequence, frame_number, pinhole, read_hdf5

SPRING_BASELINE = 0.065


class Spring(FrameFolderDataset):
    """Spring: one item per sequence, named by its folder (``"<split>/<seq>"`` under a split).

    Args:
        root: folder holding the sequence folders (or split folders holding them).
        sequences: keep only these names.
        max_depth: training cap in metres.
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(self, root: str, sequences: list[str] | None = None, max_depth: float = 80.0,
                 size: tuple[int, int] | None = None, name: str = "spring"):
        super().__init__(root, sequences=sequences, max_depth=max_depth, size=size, name=name)

    def discover(self) -> list[FrameSequence]:
        out = []
        dirs = sorted(set(self.root.glob("*/frame_left")) | set(self.root.glob("*/*/frame_left")))
        for image_dir in dirs:
            seq_dir = image_dir.parent
            rgb = sorted(image_dir.glob("frame_left_*.png"), key=frame_number)
            numbers = [frame_number(p) for p in rgb]
            depth = [seq_dir / "disp1_left" / f"disp1_left_{n:04d}.dsp5" for n in numbers]
            for r, d in zip(rgb, depth):
                if not d.is_file():
                    raise FileNotFoundError(f"Spring: disparity file {str(d)!r} missing for image {str(r)!r}")
            intr_file = seq_dir / "cam_data" / "intrinsics.txt"
            if not intr_file.is_file():
                raise FileNotFoundError(f"Spring: missing {str(intr_file)!r} (needed for fx to turn disparity into depth)")
            try:
                table = np.loadtxt(intr_file, dtype=np.float64, ndmin=2)
            except ValueError as error:
                raise ValueError(f"Spring: cannot parse {str(intr_file)!r}: {error}") from error
            if numbers and (table.shape[1] != 4 or min(numbers) < 1 or len(table) < max(numbers)):
                raise ValueError(f"Spring: {str(intr_file)!r} has shape {table.shape}; expected one 'fx fy cx cy' "
                                 f"row per frame (>= {max(numbers)} rows)")
            seq = FrameSequence(seq_dir.relative_to(self.root).as_posix(), rgb, depth, numbers)
            seq.intrinsics = np.stack([pinhole(*table[n - 1]) for n in numbers]) if numbers else None
            out.append(seq)
        return out

    def read_depth(self, seq: FrameSequence, k: int) -> np.ndarray:
        disp = read_hdf5(seq.depth[k], "disparity")
        if disp.ndim != 2:
            raise ValueError(f"Spring: {str(seq.depth[k])!r} key 'disparity' has shape {disp.shape}, expected (H,W)")
        disp = disp[::2, ::2]
        fx = float(seq.intrinsics[k, 0, 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = np.where(np.isfinite(disp) & (disp > 0), fx * SPRING_BASELINE / disp, np.nan)
        return depth.astype(np.float32)
