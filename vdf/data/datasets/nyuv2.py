"""`NYUv2`: the 654 NYU Depth v2 test images in the Marigold layout, each a 1-frame video.

Layout (``root`` = the extracted Marigold ``nyuv2`` tar)::

    root/filename_list_test.txt     one line per image: ``<rgb> <depth> <filled>`` paths relative to root
    root/test/<scene>/rgb_XXXX.png, depth_XXXX.png, filled_XXXX.png
                                    depth PNGs are 16-bit millimetres, 0 = invalid

DepthCrafter evaluates the ``filled`` column (index 2; Marigold itself uses the raw ``depth`` column,
index 1), the Eigen crop ``[45:471, 41:601]`` (480x640 -> 426x560), depth ``png / 1000``, cap 10 m.
No intrinsics are returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset
from vdf.data.readers import read_scaled_png


class NYUv2(PerFrameDataset):
    """NYU Depth v2 test split (Marigold file list), one item per image.

    Args:
        root: folder holding ``list_file`` and the paths it lists.
        list_file: the file list relative to root.
        depth_column: which column of the list is the GT (2 = ``filled``, DepthCrafter; 1 = raw ``depth``).
        max_images: keep only the first images of the list; None = all (654).
        crop: ``[a, b, c, d]`` = ``[a:b, c:d]`` (published Eigen crop ``[45, 471, 41, 601]``); None = no crop.
        shift_intrinsics: kept for a uniform interface (no intrinsics are read).
        name: dataset name in logs and metric keys.
    """

    inference_size = (448, 640)  # DepthCrafter's benchmark size for this dataset

    max_depth = 10.0

    def __init__(
        self,
        root: str,
        list_file: str = "filename_list_test.txt",
        depth_column: int = 2,
        max_images: int | None = None,
        crop: tuple[int, int, int, int] | None = (45, 471, 41, 601),
        shift_intrinsics: bool = True,
        name: str = "nyuv2",
    ):
        self.list_file, self.depth_column, self.max_images = list_file, depth_column, max_images
        super().__init__(root, name, crop=crop, shift_intrinsics=shift_intrinsics)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        list_path = self.root / self.list_file
        if not list_path.is_file():
            raise FileNotFoundError(
                f"NYUv2: file list {str(list_path)!r} does not exist; expected the Marigold "
                "NYUv2 test layout (root/filename_list_test.txt + the listed PNGs)"
            )
        lines = [line.split() for line in list_path.read_text().splitlines() if line.strip()]
        out = []
        for number, columns in enumerate(lines, start=1):
            if len(columns) <= self.depth_column or self.depth_column < 1:
                raise ValueError(
                    f"NYUv2: {str(list_path)!r} line {number} has {len(columns)} columns; "
                    f"depth_column={self.depth_column} needs '<rgb> <depth> <filled>' (missing pair)"
                )
            rgb, depth = self.root / columns[0], self.root / columns[self.depth_column]
            for path in (rgb, depth):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"NYUv2: {str(path)!r} (listed in {str(list_path)!r} line {number}) does not exist"
                    )
            out.append(FrameSequence(str(Path(columns[0]).with_suffix("")), [Frame(0, rgb, depth)]))
        out = out if self.max_images is None else out[: self.max_images]
        if not out:
            raise ValueError(f"NYUv2: {str(list_path)!r} lists no images")
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_scaled_png(frame.depth, 1000.0)
