"""Point clouds from metric depth: back-projection through pinhole intrinsics, and binary PLY files.

Pixel ``(u, v)`` (column, row; integer coordinates are pixel centres) with depth ``z`` (planar
z-depth, metres) is the camera-frame point ``z K^-1 [u, v, 1]`` (OpenCV camera axes: x right,
y down, z forward); with a ``cam_to_world`` pose (4,4) it is moved to ``R p + t``.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

__all__ = ["depth_to_points", "intrinsics_from_fov", "ply_bytes", "read_ply", "scale_intrinsics", "write_ply"]


def intrinsics_from_fov(fov_degrees: float, height: int, width: int) -> np.ndarray:
    """(3,3) K with the horizontal field of view spanning the full width, square pixels and the
    principal point at the image centre (``(W-1)/2``, ``(H-1)/2``)."""
    if not 0 < fov_degrees < 180:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_degrees}")
    f = (width / 2) / math.tan(math.radians(fov_degrees) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """K of an image resized from ``from_hw`` to ``to_hw`` (pixel centres map to pixel centres)."""
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    K = np.array(K, dtype=np.float64)
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def depth_to_points(
    depth: np.ndarray,
    K: np.ndarray,
    cam_to_world: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    stride: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a depth map.

    Args:
        depth: ``(H,W)`` planar depth in metres.
        K: ``(3,3)`` pixel intrinsics of this ``H×W`` image.
        cam_to_world: optional ``(4,4)``: points in world coordinates instead of the camera's.
        mask: optional bool ``(H,W)``: pixels to keep (besides finite, positive depth).
        stride: keep every ``stride``-th pixel along both axes.

    Returns:
        ``xyz`` float32 ``(N,3)`` and the kept pixels' flat indices ``(N,)`` (row-major in ``H×W``).
    """
    depth = np.asarray(depth, dtype=np.float64)
    W = depth.shape[1]
    keep = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        keep &= mask
    if stride > 1:
        grid = np.zeros_like(keep)
        grid[::stride, ::stride] = True
        keep &= grid
    index = np.flatnonzero(keep)
    v, u = np.divmod(index, W)
    z = depth.reshape(-1)[index]
    K = np.asarray(K, dtype=np.float64)
    x = (u - K[0, 2]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    points = np.stack([x, y, z], axis=1)
    if cam_to_world is not None:
        pose = np.asarray(cam_to_world, dtype=np.float64)
        points = points @ pose[:3, :3].T + pose[:3, 3]
    return points.astype(np.float32), index


_PLY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_bytes(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    """A binary little-endian PLY of coloured points: ``xyz`` float32 (N,3), ``rgb`` uint8 (N,3)."""
    if xyz.shape[0] != rgb.shape[0]:
        raise ValueError(f"{xyz.shape[0]} points but {rgb.shape[0]} colours")
    vertices = np.empty(xyz.shape[0], dtype=_PLY_DTYPE)
    for i, key in enumerate("xyz"):
        vertices[key] = xyz[:, i]
    for i, key in enumerate(("red", "green", "blue")):
        vertices[key] = rgb[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment vdf point cloud (metres)\n"
        f"element vertex {xyz.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    return header.encode("ascii") + vertices.tobytes()


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write `ply_bytes` to ``path`` (not atomically; `vdf.io.DepthVideoWriter` renames whole folders)."""
    with open(path, "wb") as f:
        f.write(ply_bytes(xyz, rgb))


def read_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(xyz float32 (N,3), rgb uint8 (N,3))`` of a PLY written by `write_ply`."""
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii")
    if "binary_little_endian" not in header:
        raise ValueError(f"{path}: only binary little-endian PLY files are read")
    count = int(re.search(r"element vertex (\d+)", header).group(1))
    vertices = np.frombuffer(data[end:], dtype=_PLY_DTYPE, count=count)
    xyz = np.stack([vertices[k] for k in "xyz"], axis=1)
    rgb = np.stack([vertices[k] for k in ("red", "green", "blue")], axis=1)
    return xyz, rgb
