"""`ScanNetPP`: ScanNet++ iPhone sequences, ChronoDepth's ``nvs_sem_val`` evaluation selection.

Layout (``root`` = the ScanNet++ folder; the iPhone frames extracted with the ScanNet++ toolkit)::

    root/splits/nvs_sem_val.txt                            scene ids, one per line (50)
    root/data/<scene>/iphone/rgb/frame_000000.jpg          RGB (1920x1440)
    root/data/<scene>/iphone/depth/frame_000000.png        16-bit depth in millimetres (256x192), 0 = invalid
    root/data/<scene>/iphone/pose_intrinsic_imu.json       {"frame_000000": {"intrinsic": 3x3, "aligned_pose": 4x4, ...}, ...}

Frames are sorted by number and paired by name; ChronoDepth keeps the first 90 frames of each of
the 50 ``nvs_sem_val`` scenes. The depth maps are the ground truth and fix the scored grid; the
RGB is larger, so frames are returned at ``depth size · depth_upsample`` (default 2: 384x512):
RGB resized with antialiasing, depth repeated ``depth_upsample`` times per axis (every ground
truth pixel becomes an equal block, so per-frame means are those of the native map). Intrinsics
(given at the RGB size) are scaled to that size. Poses are ``aligned_pose``: camera -> world with
OpenCV axes, as the ScanNet++ toolkit back-projects the iPhone depth with it; ``pose_convention:
opengl`` flips y and z for a pose stored with OpenGL axes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vdf.data.datasets.frames import Frame, FrameSequence, PerFrameDataset, frame_number, scale_intrinsics
from vdf.data.readers import image_size, read_rgb, read_scaled_png

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


class ScanNetPP(PerFrameDataset):
    """ScanNet++ iPhone sequences (ChronoDepth: the 50 ``nvs_sem_val`` scenes, first 90 frames).

    Args:
        root: the ScanNet++ folder holding ``data/`` and ``splits/``.
        sequences: scene ids; None = the lines of ``splits/<split>.txt``.
        split: the split file's name (``nvs_sem_val``).
        start, stride: frame positions ``[start::stride]`` of the sorted frames.
        max_frames: keep at most this many frames (ChronoDepth: 90); None = all.
        depth_upsample: integer factor from the depth map's size to the returned frames.
        pose_key: the json entry read as the pose (``aligned_pose``, or ``pose`` for ARKit's own).
        pose_convention: ``opencv`` (x right, y down, z forward) or ``opengl`` (converted).
        eval_space: space of the evaluation fit (ChronoDepth: ``depth``); None = the datamodule's.
        inference_size: fixed ``(H, W)`` for models that honour protocol sizes; None = none.
        name: dataset name in logs and metric keys.
    """

    max_depth = 10.0

    def __init__(
        self,
        root: str,
        sequences: list[str] | None = None,
        split: str = "nvs_sem_val",
        start: int = 0,
        stride: int = 1,
        max_frames: int | None = 90,
        depth_upsample: int = 2,
        pose_key: str = "aligned_pose",
        pose_convention: str = "opencv",
        eval_space: str | None = "depth",
        inference_size: tuple[int, int] | None = None,
        name: str = "scannetpp",
    ):
        if pose_convention not in ("opencv", "opengl"):
            raise ValueError(f"ScanNetPP: pose_convention must be 'opencv' or 'opengl', got {pose_convention!r}")
        if int(depth_upsample) < 1:
            raise ValueError(f"ScanNetPP: depth_upsample must be a positive integer, got {depth_upsample}")
        self.split, self.depth_upsample = split, int(depth_upsample)
        self.pose_key, self.pose_convention = pose_key, pose_convention
        self.eval_space = eval_space
        self.inference_size = tuple(inference_size) if inference_size is not None else None
        super().__init__(root, name, sequences, start=start, stride=stride, max_frames=max_frames)

    def discover(self, names: list[str] | None) -> list[FrameSequence]:
        if names is None:
            split_file = self.root / "splits" / f"{self.split}.txt"
            if not split_file.is_file():
                raise FileNotFoundError(
                    f"ScanNetPP: split file {str(split_file)!r} does not exist; expected root/splits/{self.split}.txt "
                    "and root/data/<scene>/iphone/{rgb/*.jpg, depth/*.png, pose_intrinsic_imu.json}"
                )
            names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        out = []
        for scene in names:
            folder = self.root / "data" / scene / "iphone"
            rgbs = sorted((frame_number(p), p) for p in (folder / "rgb").glob("*.jpg"))
            if not rgbs:
                raise FileNotFoundError(f"ScanNetPP: no rgb/*.jpg in {str(folder)!r}")
            meta_path = folder / "pose_intrinsic_imu.json"
            try:
                meta = json.loads(meta_path.read_text())
            except FileNotFoundError as error:
                raise FileNotFoundError(f"ScanNetPP: {str(meta_path)!r} does not exist") from error
            except json.JSONDecodeError as error:
                raise ValueError(f"ScanNetPP: {str(meta_path)!r} is not valid JSON: {error}") from error
            frames = []
            for number, rgb in rgbs:
                frame = Frame(number, rgb, folder / "depth" / f"{rgb.stem}.png")
                entry = meta.get(rgb.stem)
                if entry is not None:
                    frame.intrinsics = self._matrix(entry, "intrinsic", (3, 3), meta_path, rgb.stem)
                    pose = self._matrix(entry, self.pose_key, (4, 4), meta_path, rgb.stem)
                    frame.cam_to_world = pose @ _GL_TO_CV if self.pose_convention == "opengl" else pose
                frames.append(frame)
            out.append(FrameSequence(scene, frames))
        return out

    @staticmethod
    def _matrix(entry: dict, key: str, shape: tuple[int, int], path: Path, frame: str) -> np.ndarray:
        try:
            value = np.asarray(entry[key], dtype=np.float64).reshape(shape)
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(
                f"ScanNetPP: {str(path)!r}: frame {frame!r} has no {shape[0]}x{shape[1]} {key!r}"
            ) from error
        return value

    def native_size(self, sequence: FrameSequence) -> tuple[int, int]:
        h, w = image_size(sequence.frames[0].depth)
        return h * self.depth_upsample, w * self.depth_upsample

    def read_depth(self, frame: Frame) -> np.ndarray:
        depth = read_scaled_png(frame.depth, 1000.0)
        return np.repeat(np.repeat(depth, self.depth_upsample, axis=0), self.depth_upsample, axis=1)

    def read_image(self, frame: Frame) -> np.ndarray:
        rgb = read_rgb(frame.rgb)
        h, w = image_size(frame.depth)
        size = (h * self.depth_upsample, w * self.depth_upsample)
        if rgb.shape[:2] == size:
            return rgb
        x = torch.tensor(rgb).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def read_camera(self, frame: Frame) -> tuple[np.ndarray | None, np.ndarray | None]:
        k = frame.intrinsics
        if k is not None:
            k = scale_intrinsics(k, image_size(frame.rgb), self.native_size(FrameSequence("", [frame])))
        return k, frame.cam_to_world
