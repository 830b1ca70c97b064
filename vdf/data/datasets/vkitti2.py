"""`VirtualKITTI2`: Naver's Virtual KITTI 2, read from its released layout.

Layout (one item = one ``(scene, variation, camera)``)::

    root/Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg
    root/Scene01/clone/frames/depth/Camera_0/depth_00000.png     16-bit, centimetres
    root/Scene01/clone/intrinsic.txt, extrinsic.txt              (textgt archive; optional,
                                                                  also looked up in clone/textgt/)

Depth: ``png / 100`` metres; 65535 (655.35 m) is sky -> invalid (and so is anything beyond
``max_depth``, 80 m by default as in Depth-Anything-V2).

Camera text files (space separated, one header line, one row per frame and camera)::

    intrinsic.txt: frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]
    extrinsic.txt: frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1

The extrinsic row is the 4x4 **world -> camera** matrix, row-major (the release's README); it is
inverted to give ``cam_to_world``. Rows are matched by ``(frame, cameraID)``; if a file is absent
the corresponding key is left out of the samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.readers import read_png16

VKITTI2_SKY = 65535


def _read_table(path: Path, n_values: int) -> dict[tuple[int, int], np.ndarray]:
    """``{(frame, camera): values}`` from a VKITTI2 camera text file."""
    try:
        lines = path.read_text().split("\n")
    except OSError as error:
        raise ValueError(f"VirtualKITTI2: cannot read {str(path)!r}: {error}") from error
    header = lines[0].split()
    if len(header) < 2 or header[0] != "frame" or header[1] != "cameraID":
        raise ValueError(
            f"VirtualKITTI2: {str(path)!r} must start with a 'frame cameraID ...' header line, found {lines[0][:80]!r}"
        )
    table = {}
    for row, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 + n_values:
            raise ValueError(
                f"VirtualKITTI2: {str(path)!r} line {row} has {len(parts)} values, expected {2 + n_values}"
            )
        try:
            table[(int(parts[0]), int(parts[1]))] = np.array([float(v) for v in parts[2:]], dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"VirtualKITTI2: {str(path)!r} line {row}: {error}") from error
    return table


class VirtualKITTI2(PerFrameDataset):
    """Virtual KITTI 2: one item per ``(scene, variation, camera)``, named
    ``"<Scene>/<variation>/Camera_X"``.

    Args:
        root: folder holding the ``SceneNN`` folders.
        sequences: keep only these names.
        max_depth: training cap in metres (sky is 655.35 m and always invalid).
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "vkitti2",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        for cam_dir in sorted(self.root.glob("Scene*/*/frames/rgb/Camera_*")):
            variation = cam_dir.parent.parent.parent
            camera = int(cam_dir.name.split("_")[-1])
            depth_dir = variation / "frames" / "depth" / cam_dir.name
            frames = numbered_frames(cam_dir.glob("rgb_*.jpg"), lambda _, n: depth_dir / f"depth_{n:05d}.png")
            intr = self._find(variation, "intrinsic.txt")
            if intr is not None and frames:
                table = _read_table(intr, 4)
                set_cameras(frames, intrinsics=[pinhole(*self._row(table, intr, f.index, camera)) for f in frames])
            extr = self._find(variation, "extrinsic.txt")
            if extr is not None and frames:
                table = _read_table(extr, 16)
                w2c = np.stack([self._row(table, extr, f.index, camera).reshape(4, 4) for f in frames])
                set_cameras(frames, cam_to_world=np.linalg.inv(w2c))
            out.append(FrameSequence(f"{variation.parent.name}/{variation.name}/{cam_dir.name}", frames))
        return out

    @staticmethod
    def _find(variation: Path, filename: str) -> Path | None:
        for candidate in (variation / filename, variation / "textgt" / filename):
            if candidate.is_file():
                return candidate
        return None

    @staticmethod
    def _row(table: dict, path: Path, frame: int, camera: int) -> np.ndarray:
        if (frame, camera) not in table:
            raise ValueError(f"VirtualKITTI2: {str(path)!r} has no row for frame {frame} camera {camera}")
        return table[(frame, camera)]

    def read_depth(self, frame: Frame) -> np.ndarray:
        raw = read_png16(frame.depth)
        depth = raw.astype(np.float32) / 100.0
        depth[raw == VKITTI2_SKY] = np.nan  # sky
        return depth
