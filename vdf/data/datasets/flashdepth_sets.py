"""What FlashDepth's test sets share (`ETH3D`, `Unreal4K`, `Waymo`, `UrbanSyn`): one folder each under
FlashDepth's ``data_root``, its evaluation (70 m cap, boundary F1, fit in disparity) and an
evaluation size at its '2k' setting."""

from __future__ import annotations

from pathlib import Path

from vdf.data.datasets.frames import PerFrameDataset


class FlashDepthTestSet(PerFrameDataset):
    """Base of FlashDepth's test sets; a subclass sets `layout` (its files under ``root/folder``,
    for the error when the folder is missing) and reads its scenes under `dataset_folder`."""

    max_depth = 70.0  # FlashDepth's compute_depth_metrics cap
    boundary_f1 = True
    eval_space = "disparity"  # FlashDepth fits in disparity
    layout = ""

    def __init__(
        self,
        root: str,
        name: str,
        sequences: list[str] | None,
        folder: str,
        start: int,
        stride: int,
        max_frames: int | None,
        inference_size: tuple[int, int] | None,
    ):
        self.folder = folder
        self.inference_size = tuple(inference_size) if inference_size is not None else None
        super().__init__(root, name, sequences, start=start, stride=stride, max_frames=max_frames)

    def dataset_folder(self) -> Path:
        """``root/folder``; an error naming it and the expected layout when it is missing."""
        base = self.root / self.folder
        if not base.is_dir():
            raise FileNotFoundError(
                f"{type(self).__name__}: {str(base)!r} does not exist; expected root/{self.folder}/{self.layout}"
            )
        return base
