"""Tiny fakes of the papers' evaluation sets, each in its dataset's exact on-disk layout.

Each writer returns what the reader must give back (depth in metres, masks, cameras), so tests
compare against values computed here, independently of the readers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def rgb(path: Path, h: int, w: int, fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return array


def png16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, dtype=np.uint16)
    Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes()).save(path)


def exr(path: Path, array: np.ndarray) -> None:
    """A one-channel float32 OpenEXR written with PyAV's ``exr`` encoder."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array, dtype=np.float32)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("exr")
        stream.width, stream.height, stream.pix_fmt = array.shape[1], array.shape[0], "grayf32le"
        for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="grayf32le")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# -- KITTI-360 ---------------------------------------------------------------------------------

KITTI360_DRIVE = "2013_05_28_drive_0000_sync"
#: Rectified projection of the fakes: f = 20, principal point (7.5, 5.5) for 12x16 frames.
KITTI360_P = np.array([[20.0, 0, 7.5, 0], [0, 20.0, 5.5, 0], [0, 0, 1, 0]])
#: camera 0 -> Velodyne (KITTI-like axes: velo x forward = cam z, y left = -cam x, z up = -cam y).
KITTI360_CAM_TO_VELO = np.array([[0.0, 0, 1, 0.3], [-1, 0, 0, 0.1], [0, -1, 0, -0.2]])
#: A small rectifying rotation about y.
_A = 0.02
KITTI360_R_RECT = np.array([[np.cos(_A), 0, np.sin(_A)], [0, 1, 0], [-np.sin(_A), 0, np.cos(_A)]])


def kitti360(root: Path, drive: str = KITTI360_DRIVE, frames=(299, 300, 301, 500), posed=(300, 301), h=12, w=16):
    """Frames numbered ``frames``; each LiDAR scan holds points at known pixels; returns
    ``{frame: expected sparse depth (h,w)}`` and the poses written."""
    calib = root / "calibration"
    calib.mkdir(parents=True, exist_ok=True)
    (calib / "perspective.txt").write_text(
        "image_00: 1408 376\n"
        f"P_rect_00: {' '.join(map(str, KITTI360_P.ravel()))}\n"
        f"R_rect_00: {' '.join(map(str, KITTI360_R_RECT.ravel()))}\n"
        "S_rect_00: 1408 376\n"
    )
    (calib / "calib_cam_to_velo.txt").write_text(" ".join(map(str, KITTI360_CAM_TO_VELO.ravel())) + "\n")
    cam_to_velo = np.vstack([KITTI360_CAM_TO_VELO, [0, 0, 0, 1]])
    f, cx, cy = KITTI360_P[0, 0], KITTI360_P[0, 2], KITTI360_P[1, 2]
    truth, poses = {}, {}
    for n in frames:
        rgb(root / "data_2d_raw" / drive / "image_00" / "data_rect" / f"{n:010d}.png", h, w)
        expected = np.zeros((h, w), np.float32)
        rect = []
        for _ in range(10):
            u, v, z = int(RNG.integers(0, w)), int(RNG.integers(0, h)), float(RNG.uniform(2, 60))
            if expected[v, u] == 0 or z < expected[v, u]:
                expected[v, u] = z
            rect.append(((u - cx) * z / f, (v - cy) * z / f, z))
        u0, v0 = 3, 2  # a pixel hit twice: the nearer point wins
        rect += [((u0 - cx) * 9.0 / f, (v0 - cy) * 9.0 / f, 9.0), ((u0 - cx) * 4.0 / f, (v0 - cy) * 4.0 / f, 4.0)]
        if expected[v0, u0] == 0 or expected[v0, u0] > 4.0:
            expected[v0, u0] = 4.0
        rect += [(0.0, 0.0, -5.0), (100.0, 0.0, 2.0)]  # behind the camera; outside the image
        rect = np.array(rect)
        cam0 = rect @ KITTI360_R_RECT  # R_rect^-1 = R_rect^T
        velo = np.c_[cam0, np.ones(len(cam0))] @ cam_to_velo.T
        scan = np.c_[velo[:, :3], RNG.uniform(0, 1, len(velo))].astype("<f4")
        path = root / "data_3d_raw" / drive / "velodyne_points" / "data" / f"{n:010d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        scan.tofile(path)
        truth[n] = expected
    lines = []
    for n in posed:
        pose = np.eye(4)
        pose[:3, 3] = [0.5 * n, 0.0, 1.0]
        poses[n] = pose
        lines.append(" ".join(map(str, [n, *pose.ravel()])))
    (root / "data_poses" / drive).mkdir(parents=True, exist_ok=True)
    (root / "data_poses" / drive / "cam0_to_world.txt").write_text("\n".join(lines) + "\n")
    return truth, poses


# -- ScanNet++ ---------------------------------------------------------------------------------


def scannetpp(root: Path, scenes=("0a5c013435", "1ada7a0617"), n=4, depth_hw=(6, 8), rgb_hw=(24, 32)):
    """iPhone frames ``frame_000000..``; returns ``{(scene, i): (depth_mm, K, pose)}``."""
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "splits" / "nvs_sem_val.txt").write_text("\n".join(scenes) + "\n")
    truth, meta = {}, {}
    for scene in scenes:
        folder = root / "data" / scene / "iphone"
        entries = {}
        for i in range(n):
            stem = f"frame_{i * 10:06d}"
            rgb(folder / "rgb" / f"{stem}.jpg", *rgb_hw, fmt="JPEG")
            mm = RNG.integers(200, 9000, depth_hw)
            mm[0, 0] = 0
            png16(folder / "depth" / f"{stem}.png", mm)
            k = np.array([[30.0 + i, 0, 15.5], [0, 31.0, 11.5], [0, 0, 1]])
            pose = np.eye(4)
            pose[:3, 3] = [0.1 * i, 0.2, 0.0]
            entries[stem] = {
                "timestamp": i / 60,
                "intrinsic": k.tolist(),
                "pose": np.eye(4).tolist(),
                "aligned_pose": pose.tolist(),
            }
            truth[scene, i] = (mm, k, pose)
        import json

        (folder / "pose_intrinsic_imu.json").write_text(json.dumps(entries))
        meta[scene] = entries
    return truth


# -- FlashDepth's test sets --------------------------------------------------------------------


def unreal4k(root: Path, scene="00000", n=3, h=8, w=12):
    """Returns ``{i: expected depth}`` with depth = baseline · fx / disparity (baseline 0.25)."""
    folder = root / "unrealstereo4k" / scene
    truth = {}
    for i in range(n):
        rgb(folder / "Image0" / f"{i:05d}.png", h, w)
        disp = RNG.uniform(5, 80, (h, w))
        disp[0, 0], disp[0, 1], disp[0, 2] = 0.0, np.inf, -3.0
        (folder / "Disp0").mkdir(parents=True, exist_ok=True)
        np.save(folder / "Disp0" / f"{i:05d}.npy", disp.astype(np.float32))
        k = np.array([[50.0, 0, 6], [0, 50.0, 4], [0, 0, 1]])
        rot = np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]])
        w2c0 = np.c_[rot, [1.0, 2.0, 3.0 + i]]
        c1 = np.linalg.inv(np.vstack([w2c0, [0, 0, 0, 1]])) @ np.array([0.25, 0, 0, 1])  # right camera 0.25 m along x
        w2c1 = np.c_[rot, -rot @ c1[:3]]
        for cam, w2c in (("Extrinsics0", w2c0), ("Extrinsics1", w2c1)):
            (folder / cam).mkdir(parents=True, exist_ok=True)
            (folder / cam / f"{i:05d}.txt").write_text(
                " ".join(map(str, k.ravel())) + "\n" + " ".join(map(str, w2c.ravel())) + "\n"
            )
        d32 = disp.astype(np.float32).astype(np.float64)
        with np.errstate(divide="ignore"):
            truth[i] = np.where(np.isfinite(d32) & (d32 > 0), 0.25 * 50.0 / d32, 0.0).astype(np.float32)
    return truth


def eth3d(root: Path, scene="courtyard", numbers=(3, 12), h=8, w=12):
    folder = root / "eth3d" / scene
    truth = {}
    for n in numbers:
        name = f"DSC_{n:04d}.JPG"
        rgb(folder / "images" / "dslr_images" / name, h, w, fmt="JPEG")
        depth = RNG.uniform(1, 30, (h, w)).astype(np.float32)
        depth[1, 1] = np.inf
        path = folder / "ground_truth_depth" / "dslr_images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        depth.astype("<f4").tofile(path)
        truth[n] = np.where(np.isfinite(depth), depth, 0)
    return truth


def waymo(root: Path, segment="segment-12831741023324393102_2673_230_2693_230", n=3, h=8, w=12):
    folder = root / "waymo" / "val" / segment / "FRONT"
    truth = {}
    for i in range(n):
        rgb(folder / "rgb" / "original" / f"{i}.jpg", h, w, fmt="JPEG")
        points = [(2.7, 3.2, 10.0), (5.0, 1.9, 20.0), (-0.5, 0.2, 7.0), (w + 0.1, 1.0, 8.0), (6.0, 6.0, -1.0)]
        points = np.array(points + [(2.2, 3.9, 11.0)])  # lands on (3, 2) after the first point: overwrites it
        (folder / "depth").mkdir(parents=True, exist_ok=True)
        np.save(folder / "depth" / f"{i}.npy", points)
        expected = np.zeros((h, w), np.float32)
        expected[3, 2] = 11.0
        expected[1, 5] = 20.0
        expected[0, 0] = 7.0  # x = -0.5 truncates to 0, as FlashDepth's astype(int32)
        truth[i] = expected
    return truth


def urbansyn(root: Path, scene="3", n=3, h=8, w=12):
    folder = root / "urbansyn" / scene
    truth = {}
    for i in range(1, n + 1):
        rgb(folder / "rgb" / f"rgb_{i:04d}.png", h, w)
        raw = RNG.uniform(1e-5, 5e-4, (h, w)).astype(np.float32)
        exr(folder / "depth" / f"depth_{i:04d}.exr", raw)
        labels = np.zeros((h, w), np.uint8)
        labels[0, :] = 10  # sky
        labels[1, 0] = 7
        (folder / "ss").mkdir(parents=True, exist_ok=True)
        Image.fromarray(labels).save(folder / "ss" / f"ss_{i:04d}.png")
        truth[i] = np.where(labels == 10, 0, raw * np.float32(1e5))
    return truth


def sintel_flashdepth(root: Path, seq="alley_1", n=3, h=8, w=12):
    truth = {}
    for i in range(n):
        rgb(root / "sintel/images/training/clean" / seq / f"frame_{i + 1:04d}.png", h, w)
        depth = RNG.uniform(0.5, 60, (h, w)).astype(np.float32)
        path = root / "sintel/depth/training/depth" / seq / f"frame_{i + 1:04d}.dpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.array([202021.25], "<f4").tofile(f)
            np.array([w, h], "<i4").tofile(f)
            depth.astype("<f4").tofile(f)
        truth[i] = depth
    return truth
