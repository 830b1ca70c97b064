"""`KITTI360`: KITTI-360 drives with sparse LiDAR depth, ChronoDepth's evaluation selection.

Layout (``root`` = the KITTI-360 folder, as its downloads unpack)::

    root/data_2d_raw/<drive>/image_00/data_rect/<frame:010d>.png         rectified left RGB (376x1408)
    root/data_3d_raw/<drive>/velodyne_points/data/<frame:010d>.bin       LiDAR scan, float32 (N,4): x y z reflectance
    root/calibration/calib_cam_to_velo.txt                               3x4 camera 0 -> Velodyne (12 numbers)
    root/calibration/perspective.txt                                     ``P_rect_00: ...`` (3x4), ``R_rect_00: ...`` (3x3)
    root/data_poses/<drive>/cam0_to_world.txt                            per line: frame number, 4x4 rectified camera 0 -> world

Depth is the LiDAR scan of the same frame projected into the rectified camera 0 (KITTI-360 ships
no depth maps): ``X_rect = R_rect_00 · inv(T_cam_to_velo) · X_velo``, pixel
``(round(u/w), round(v/w))`` of ``P_rect_00 · X_rect``; points with ``z <= 0`` or outside the image
are dropped (the KITTI-360 devkit's ``TrVeloToRect`` and ``cam2image``), and where several points
fall on one pixel the nearest is kept (the devkit's plain assignment keeps the last). Pixels without a
point are invalid (sparse ground truth). Intrinsics are ``P_rect_00[:, :3]``; poses come from
``cam0_to_world.txt`` (frames absent from it have no pose, and a clip with such a frame carries no
``cam_to_world``).

ChronoDepth evaluates 8 sequences, frames 300-500 (200 frames). The paper does not name the
drives; vdf's default takes the first ``num_sequences`` (8) sorted drives that have poses, and
``sequences`` names them explicitly. ``frame_index`` is the KITTI-360 frame number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_number, set_cameras
from vdf.data.readers import image_size, read_table


def read_velodyne(path: Path) -> np.ndarray:
    """A KITTI Velodyne scan as float32 ``(N,4)`` (x, y, z, reflectance); errors name the file."""
    try:
        data = np.fromfile(path, dtype="<f4")
    except FileNotFoundError as error:
        raise FileNotFoundError(f"KITTI360: LiDAR scan {str(path)!r} does not exist") from error
    if data.size % 4:
        raise ValueError(
            f"KITTI360: {str(path)!r} holds {data.size} float32 values, not a multiple of 4 "
            "(x, y, z, reflectance per point): truncated or not a Velodyne scan"
        )
    return data.reshape(-1, 4)


def read_perspective(path: Path) -> dict[str, np.ndarray]:
    """The ``KEY: numbers`` lines of KITTI-360's ``perspective.txt``."""
    if not path.is_file():
        raise FileNotFoundError(f"KITTI360: calibration file {str(path)!r} does not exist")
    out = {}
    for line in path.read_text().splitlines():
        key, _, values = line.partition(":")
        try:
            out[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as error:
            raise ValueError(f"KITTI360: cannot parse line {line!r} of {str(path)!r}") from error
    for key, size in (("P_rect_00", 12), ("R_rect_00", 9)):
        if key not in out or out[key].size != size:
            raise ValueError(f"KITTI360: {str(path)!r} needs a line '{key}:' with {size} numbers")
    return out


def project_lidar(
    points: np.ndarray, velo_to_rect: np.ndarray, projection: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """Sparse depth ``(H,W)`` float32 of LiDAR ``points`` ``(N,>=3)``: 0 where no point lands.

    ``velo_to_rect`` ``(4,4)`` maps Velodyne to rectified camera coordinates, ``projection`` is the
    ``(3,4)`` rectified projection; pixels are rounded to the nearest, the nearest point per pixel wins.
    """
    height, width = size
    xyz1 = np.concatenate([points[:, :3].astype(np.float64), np.ones((len(points), 1))], axis=1)
    cam = xyz1 @ velo_to_rect.T
    cam = cam[cam[:, 2] > 0]
    uvw = cam @ projection.T
    u = np.round(uvw[:, 0] / uvw[:, 2])
    v = np.round(uvw[:, 1] / uvw[:, 2])
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    u, v, z = u[inside].astype(np.int64), v[inside].astype(np.int64), cam[inside, 2]
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, v * width + u, z)
    depth[np.isinf(depth)] = 0.0
    return depth.reshape(height, width).astype(np.float32)


class KITTI360(PerFrameDataset):
    """KITTI-360 drives with projected LiDAR depth (ChronoDepth: 8 drives, frames 300-500).

    Args:
        root: the KITTI-360 folder (``data_2d_raw``, ``data_3d_raw``, ``calibration``, ``data_poses``).
        sequences: drive names (``2013_05_28_drive_0000_sync``, ...); None = the first
            ``num_sequences`` sorted drives of ``data_2d_raw`` that have ``cam0_to_world.txt``.
        num_sequences: how many drives the default keeps (ChronoDepth: 8); None = all.
        first_frame, last_frame: keep frame numbers in ``[first_frame, last_frame)`` (300, 500).
        start, stride, max_frames: then positions ``[start::stride][:max_frames]`` of those.
        eval_space: space of the evaluation fit (ChronoDepth: ``depth``); None = the datamodule's.
        inference_size: fixed ``(H, W)`` for models that honour protocol sizes; None = none.
        name: dataset name in logs and metric keys.
    """

    max_depth = 80.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        num_sequences: int | None = 8,
        first_frame: int = 300,
        last_frame: int | None = 500,
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = None,
        eval_space: str | None = "depth",
        inference_size: tuple[int, int] | None = None,
        name: str = "kitti360",
    ):
        self.num_sequences, self.first_frame, self.last_frame = num_sequences, first_frame, last_frame
        self.eval_space = eval_space
        self.inference_size = tuple(inference_size) if inference_size is not None else None
        self._velo_to_rect: np.ndarray | None = None
        super().__init__(root, name, sequences, start=start, stride=stride, max_frames=max_frames)

    def _calibration(self) -> tuple[np.ndarray, np.ndarray]:
        calib = self.root / "calibration"
        persp = read_perspective(calib / "perspective.txt")
        cam_to_velo = read_table(calib / "calib_cam_to_velo.txt").reshape(-1)
        if cam_to_velo.size != 12:
            raise ValueError(
                f"KITTI360: {str(calib / 'calib_cam_to_velo.txt')!r} holds {cam_to_velo.size} numbers; expected 12 (3x4)"
            )
        t = np.eye(4)
        t[:3] = cam_to_velo.reshape(3, 4)
        r = np.eye(4)
        r[:3, :3] = persp["R_rect_00"].reshape(3, 3)
        return r @ np.linalg.inv(t), persp["P_rect_00"].reshape(3, 4)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        images_root = self.root / "data_2d_raw"
        if not images_root.is_dir():
            raise FileNotFoundError(
                f"KITTI360: {str(images_root)!r} does not exist; expected root/data_2d_raw/<drive>/image_00/data_rect/*.png, "
                "root/data_3d_raw/<drive>/velodyne_points/data/*.bin, root/calibration/ and root/data_poses/"
            )
        self._velo_to_rect, self._projection = self._calibration()
        if names is None:
            names = sorted(
                p.name
                for p in images_root.iterdir()
                if (self.root / "data_poses" / p.name / "cam0_to_world.txt").is_file()
            )
            names = names if self.num_sequences is None else names[: self.num_sequences]
            if not names:
                raise FileNotFoundError(
                    f"KITTI360: no drive of {str(images_root)!r} has data_poses/<drive>/cam0_to_world.txt"
                )
        out = []
        for drive in names:
            folder = images_root / drive / "image_00" / "data_rect"
            images = sorted((frame_number(p), p) for p in folder.glob("*.png"))
            images = [
                (n, p) for n, p in images if n >= self.first_frame and (self.last_frame is None or n < self.last_frame)
            ]
            if not images:
                raise FileNotFoundError(
                    f"KITTI360: no frames numbered [{self.first_frame}, {self.last_frame}) in {str(folder)!r}"
                )
            scans = self.root / "data_3d_raw" / drive / "velodyne_points" / "data"
            frames = [Frame(n, p, scans / f"{p.stem}.bin") for n, p in images]
            set_cameras(frames, intrinsics=self._projection[:, :3])
            poses = self._read_poses(self.root / "data_poses" / drive / "cam0_to_world.txt")
            for frame in frames:
                frame.cam_to_world = poses.get(frame.index)
            out.append(FrameSequence(drive, frames))
        return out

    @staticmethod
    def _read_poses(path: Path) -> dict[int, np.ndarray]:
        if not path.is_file():
            return {}
        table = read_table(path)
        if table.shape[1] != 17:
            raise ValueError(
                f"KITTI360: {str(path)!r} has {table.shape[1]} columns; expected 17 (frame number + 4x4 pose)"
            )
        return {int(row[0]): row[1:].reshape(4, 4) for row in table}

    def read_depth(self, frame: Frame) -> np.ndarray:
        points = read_velodyne(frame.depth)
        return project_lidar(points, self._velo_to_rect, self._projection, image_size(frame.rgb))
