"""`IRS`: the IRS indoor stereo dataset, read from its released layout.

Layout (one item = one folder of frames, e.g. ``Home/ArchVizInterior03Data``)::

    root/<category>/<scene>/l_1.png        left image (960x540)
    root/<category>/<scene>/d_1.exr        left disparity, OpenEXR float (G channel if RGB)

Frames are ordered by the number in their names. Depth: ``depth = 0.1 · 480 / disp`` (baseline
0.1 m, f = 480 px); non-finite, <= 0 or > 200 m -> invalid (on top of ``max_depth``).
Intrinsics: K = [[480,0,W//2],[0,480,H//2],[0,0,1]]. EXR files are decoded with PyAV.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.readers import image_size, read_exr

IRS_BASELINE = 0.1
IRS_FOCAL = 480.0
IRS_MAX_DEPTH = 200.0


class IRS(PerFrameDataset):
    """IRS: one item per folder holding ``l_*.png`` frames, named by its path under ``root``.

    Args:
        root: dataset root (any depth of category/scene folders below it).
        sequences: keep only these names.
        max_depth: training cap in metres (depth beyond 200 m is invalid regardless).
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "irs",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        for folder in sorted({p.parent for p in self.root.rglob("l_*.png")}):
            frames = numbered_frames(folder.glob("l_*.png"), lambda left, _: left.with_name(f"d_{left.stem[2:]}.exr"))
            h, w = image_size(frames[0].rgb)
            set_cameras(frames, intrinsics=pinhole(IRS_FOCAL, IRS_FOCAL, w // 2, h // 2))
            name = folder.relative_to(self.root).as_posix() if folder != self.root else folder.name
            out.append(FrameSequence(name, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        disp = read_exr(frame.depth)
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = IRS_BASELINE * IRS_FOCAL / disp
        bad = ~np.isfinite(depth) | (depth <= 0) | (depth > IRS_MAX_DEPTH)
        return np.where(bad, np.nan, depth).astype(np.float32)
