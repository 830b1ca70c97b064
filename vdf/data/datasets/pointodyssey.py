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

from vdf.data.datasets._frames import FrameFolderDataset, FrameSequence, frame_number, read_png16


class PointOdyssey(FrameFolderDataset):
    """PointOdyssey: one item per sequence, named ``"<split>/<seq>"``.

    Args:
        root: folder holding the split folders (``train``, ``val``, ``test``).
        sequences: keep only these names.
        max_depth: training cap in metres.
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(self, root: str, sequences: list[str] | None = None, max_depth: float = 80.0,
                 size: tuple[int, int] | None = None, name: str = "pointodyssey"):
        super().__init__(root, sequences=sequences, max_depth=max_depth, size=size, name=name)

    def discover(self) -> list[FrameSequence]:
        out = []
        for rgb_dir in sorted(self.root.glob("*/*/rgbs")):
            seq_dir = rgb_dir.parent
            rgb = sorted(rgb_dir.glob("rgb_*.jpg"), key=frame_number)
            numbers = [frame_number(p) for p in rgb]
            depth = [seq_dir / "depths" / f"depth_{n:05d}.png" for n in numbers]
            for r, d in zip(rgb, depth):
                if not d.is_file():
                    raise FileNotFoundError(f"PointOdyssey: depth file {str(d)!r} missing for image {str(r)!r}")
            seq = FrameSequence(f"{seq_dir.parent.name}/{seq_dir.name}", rgb, depth, numbers)
            anno = seq_dir / "anno.npz"
            if anno.is_file() and numbers:
                try:
                    with np.load(anno, allow_pickle=False) as a:
                        keys = set(a.files)
                        if "intrinsics" in keys:
                            seq.intrinsics = self._rows(a["intrinsics"], numbers, anno, "intrinsics", (3, 3))
                        if "extrinsics" in keys:
                            w2c = self._rows(a["extrinsics"], numbers, anno, "extrinsics", (4, 4))
                            seq.cam_to_world = np.linalg.inv(w2c)
                except (OSError, ValueError) as error:
                    raise ValueError(f"PointOdyssey: cannot read {str(anno)!r}: {error}") from error
            out.append(seq)
        return out

    @staticmethod
    def _rows(array, numbers, path, key, shape) -> np.ndarray:
        array = np.asarray(array, dtype=np.float64)
        if array.ndim != 3 or array.shape[1:] != shape or len(array) <= max(numbers):
            raise ValueError(f"{str(path)!r} key {key!r} has shape {array.shape}, expected (N,{shape[0]},{shape[1]}) "
                             f"with N > {max(numbers)}")
        return array[numbers]

    def read_depth(self, seq: FrameSequence, k: int) -> np.ndarray:
        raw = read_png16(seq.depth[k])
        return raw.astype(np.float32) * np.float32(1000.0 / 65535.0)  # 0 stays 0 -> invalid
