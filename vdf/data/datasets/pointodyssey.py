"""`PointOdyssey`: Stanford's PointOdyssey, read from its released layout.

Layout (one item = one sequence ``<split>/<seq>``)::

    root/<split>/<seq>/rgbs/rgb_00000.jpg
    root/<split>/<seq>/depths/depth_00000.png     uint16: metres = v / 65535 · 1000, 0 = invalid
    root/<split>/<seq>/anno.npz                   optional: intrinsics (N,3,3), extrinsics (N,4,4)

``anno.npz`` ``extrinsics`` are world -> camera (inverted to ``cam_to_world``); when the file or
a key is missing the corresponding sample key is left out.
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, set_cameras
from vdf.data.readers import read_png16


class PointOdyssey(PerFrameDataset):
    """PointOdyssey: one item per sequence, named ``"<split>/<seq>"``.

    Args:
        root: folder holding the split folders (``train``, ``val``, ``test``).
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
        name: str = "pointodyssey",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        for rgb_dir in sorted(self.root.glob("*/*/rgbs")):
            seq_dir = rgb_dir.parent
            frames = numbered_frames(rgb_dir.glob("rgb_*.jpg"), lambda _, n: seq_dir / "depths" / f"depth_{n:05d}.png")
            anno = seq_dir / "anno.npz"
            if anno.is_file() and frames:
                numbers = [f.index for f in frames]
                try:
                    with np.load(anno, allow_pickle=False) as a:
                        keys = set(a.files)
                        if "intrinsics" in keys:
                            k = self._rows(a["intrinsics"], numbers, anno, "intrinsics", (3, 3))
                            set_cameras(frames, intrinsics=k)
                        if "extrinsics" in keys:
                            w2c = self._rows(a["extrinsics"], numbers, anno, "extrinsics", (4, 4))
                            set_cameras(frames, cam_to_world=np.linalg.inv(w2c))
                except (OSError, ValueError) as error:
                    raise ValueError(f"PointOdyssey: cannot read {str(anno)!r}: {error}") from error
            out.append(FrameSequence(f"{seq_dir.parent.name}/{seq_dir.name}", frames))
        return out

    @staticmethod
    def _rows(array, numbers, path, key, shape) -> np.ndarray:
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 3 or array.shape[1:] != shape or len(array) <= max(numbers):
            raise ValueError(
                f"{str(path)!r} key {key!r} has shape {array.shape}, expected (N,{shape[0]},{shape[1]}) "
                f"with N > {max(numbers)}"
            )
        return array[numbers]

    def read_depth(self, frame: Frame) -> np.ndarray:
        raw = read_png16(frame.depth)
        return raw.astype(np.float32) * np.float32(1000.0 / 65535.0)  # 0 stays 0 -> invalid
