"""`TartanAir`: CMU's TartanAir, read from its released layout.

Layout (one item = one trajectory ``<env>/<Easy|Hard>/<P00X>``)::

    root/<env>/<Easy|Hard>/P000/image_left/000000_left.png
    root/<env>/<Easy|Hard>/P000/depth_left/000000_left_depth.npy   float32 (480,640) metres
    root/<env>/<Easy|Hard>/P000/pose_left.txt                       optional, one line per frame

(``<env>/<env>/<Easy|Hard>/P000`` — the archives' doubled environment folder — is found too.)
Depth is in metres; sky is stored as ~1e4 m and falls beyond ``max_depth`` -> invalid.
Intrinsics are the fixed K = [[320,0,320],[0,320,240],[0,0,1]] of the 640x480 release.

Poses: ``pose_left.txt`` rows are ``tx ty tz qx qy qz qw``, the camera-to-world pose in the NED
convention (x forward, y right, z down for both camera body and world). With ``M`` the axis
permutation taking OpenCV camera axes (x right, y down, z forward) to NED body axes
(``M = [[0,0,1],[1,0,0],[0,1,0]]``), ``cam_to_world = Mᵀ · T_ned · M``: an OpenCV camera in a world
frame whose axes are the NED world's, permuted the same way (so identity stays identity and a
NED +x move is a +z move).
"""

from __future__ import annotations

import numpy as np

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.readers import read_npy, read_table

TARTANAIR_K = pinhole(320.0, 320.0, 320.0, 240.0)
#: columns: OpenCV camera axes expressed in the NED body frame
NED_FROM_CV = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(N,4)`` quaternions ``(qx, qy, qz, qw)`` -> ``(N,3,3)`` rotation matrices (normalised)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def ned_poses_to_opencv(poses: np.ndarray) -> np.ndarray:
    """TartanAir ``(N,7)`` NED poses -> ``(N,4,4)`` OpenCV camera-to-world (see module doc)."""
    t = np.tile(np.eye(4), (len(poses), 1, 1))
    t[:, :3, :3] = quaternion_to_matrix(poses[:, 3:7])
    t[:, :3, 3] = poses[:, :3]
    return NED_FROM_CV.T @ t @ NED_FROM_CV


class TartanAir(PerFrameDataset):
    """TartanAir: one item per trajectory, named ``"<env>/<Easy|Hard>/<P00X>"``.

    Args:
        root: folder holding the environment folders.
        sequences: keep only these names.
        max_depth: training cap in metres (sky ~1e4 m is always beyond it).
        size: optional output ``(H, W)``.
        name: dataset name.
    """

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        max_depth: float = 80.0,
        size: tuple[int, int] | None = None,
        name: str = "tartanair",
    ):
        super().__init__(root, name, sequences, size=size, max_depth=max_depth)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        out = []
        dirs = sorted(set(self.root.glob("*/*/P*/image_left")) | set(self.root.glob("*/*/*/P*/image_left")))
        for image_dir in dirs:
            traj = image_dir.parent
            level, env = traj.parent.name, traj.parent.parent.name
            if level not in ("Easy", "Hard"):
                continue
            depth_dir = traj / "depth_left"
            frames = numbered_frames(image_dir.glob("*_left.png"), lambda _, n: depth_dir / f"{n:06d}_left_depth.npy")
            set_cameras(frames, intrinsics=TARTANAIR_K)
            pose_file = traj / "pose_left.txt"
            if pose_file.is_file() and frames:
                poses = read_table(pose_file)
                last = frames[-1].index
                if poses.shape[1] != 7 or len(poses) <= last:
                    raise ValueError(
                        f"TartanAir: {str(pose_file)!r} has shape {poses.shape}; expected one "
                        f"'tx ty tz qx qy qz qw' row per frame (>= {last + 1} rows)"
                    )
                set_cameras(frames, cam_to_world=ned_poses_to_opencv(poses[[f.index for f in frames]]))
            out.append(FrameSequence(f"{env}/{level}/{traj.name}", frames))
        return out

    def read_depth(self, frame: Frame) -> np.ndarray:
        return read_npy(frame.depth, ndim=2).astype(np.float32)
