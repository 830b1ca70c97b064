"""`DynamicReplica`: Meta's Dynamic Replica, read from its released layout.

Layout (one item = one sequence folder)::

    root/<seq>/images/<seq>_0000.png
    root/<seq>/depths/<seq>_0000.geometric.png    16-bit PNG whose raw bits are float16 metres

(Sequence folders may also sit one level down, under a split folder such as ``train/``.)
Depth: ``np.frombuffer(uint16 pixels, float16)`` in metres; inf, NaN, 0 and negative -> invalid.
Camera annotations (``frame_annotations_*.jgz``, PyTorch3D NDC conventions) are not read.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames
from vdf.data.readers import read_png16


def decode_float16_png(pixels: np.ndarray) -> np.ndarray:
    """uint16 ``(H,W)`` whose bits are float16 -> float32 ``(H,W)``."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint16)
    return np.frombuffer(pixels.tobytes(), dtype=np.float16).reshape(pixels.shape).astype(np.float32)


class DynamicReplica(PerFrameDataset):
    """Dynamic Replica: one item per sequence folder, named by it (``"<split>/<seq>"`` when
    found under a split folder).

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
        name: str = "dynamic_replica",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        dirs = sorted(set(self.root.glob("*/images")) | set(self.root.glob("*/*/images")))
        for image_dir in dirs:
            seq_dir = image_dir.parent
            images = [p for p in image_dir.glob("*.png") if p.stem.startswith(seq_dir.name)] or image_dir.glob("*.png")
            frames = numbered_frames(images, lambda image, _: seq_dir / "depths" / f"{image.stem}.geometric.png")
            out.append(FrameSequence(seq_dir.relative_to(self.root).as_posix(), frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return decode_float16_png(read_png16(frame.depth))
