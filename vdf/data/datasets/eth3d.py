"""`ETH3D`: ETH3D high-resolution multi-view scenes as image sequences, as FlashDepth's test set reads them.

Layout (``root`` = FlashDepth's ``data_root``; ``folder`` = ``eth3d``; ETH3D's "high-res multi-view"
undistorted JPG and depth downloads)::

    root/eth3d/<scene>/images/dslr_images/DSC_<n>.JPG               RGB (6048x4032)
    root/eth3d/<scene>/ground_truth_depth/dslr_images/DSC_<n>.JPG   depth: raw little-endian float32, H*W values, no header

Every scene folder is a sequence, its images sorted by the number after ``DSC_`` (FlashDepth's test
split filters nothing). The depth file has the image's own name and holds exactly ``H·W`` float32
metres (H, W from the image); ``inf`` (no laser point) is invalid.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.flashdepth_sets import FlashDepthTestSet
from vdf.data.datasets.frames import Frame, FrameSequence, numbered_frames
from vdf.data.readers import image_size


def read_eth3d_depth(path, size: tuple[int, int]) -> np.ndarray:
    """An ETH3D raw float32 depth map of ``size`` ``(H,W)``; errors name the file."""
    try:
        data = np.fromfile(path, dtype="<f4")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"ETH3D: depth file {str(path)!r} does not exist") from error
    if data.size != size[0] * size[1]:
        raise ValueError(
            f"ETH3D: {str(path)!r} holds {data.size} float32 values; its image is {size[0]}x{size[1]} = "
            f"{size[0] * size[1]} (truncated, or not the depth of that image)"
        )
    return data.reshape(size)


class ETH3D(FlashDepthTestSet):
    """ETH3D high-res scenes (FlashDepth test set: every scene, inference 1274x1918).

    Args:
        root: FlashDepth's ``data_root`` (the folder holding ``folder``).
        sequences: scene names; None = every scene folder.
        folder: the dataset's folder under ``root``.
        start, stride, max_frames: frame positions ``[start::stride][:max_frames]``.
        inference_size: FlashDepth's evaluation size ``(H, W)`` ('2k': 1274x1918).
        name: dataset name in logs and metric keys.
    """

    layout = "<scene>/{images,ground_truth_depth}/dslr_images/DSC_<n>.JPG"

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        folder: str = "eth3d",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        inference_size: tuple[int, int] | None = (1274, 1918),
        name: str = "eth3d",
    ):
        super().__init__(root, name, sequences, folder, start, stride, max_frames, inference_size)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        base = self.dataset_folder()
        names = names if names is not None else sorted(p.name for p in base.iterdir() if p.is_dir())
        out = []
        for scene in names:
            folder = base / scene
            depth_dir = folder / "ground_truth_depth" / "dslr_images"
            frames = numbered_frames(
                (folder / "images" / "dslr_images").glob("DSC_*.JPG"), lambda p, n: depth_dir / p.name
            )
            if not frames:
                raise FileNotFoundError(f"ETH3D: no images/dslr_images/DSC_*.JPG in {str(folder)!r}")
            out.append(FrameSequence(scene, frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_eth3d_depth(frame.depth, image_size(frame.rgb))
