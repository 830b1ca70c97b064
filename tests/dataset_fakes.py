"""Tiny fakes of every training dataset, written in each dataset's exact on-disk layout.

`write_fake(name, root)` writes the dataset ``name`` (a key of the mixtures' ``data.roots``) under
``root`` and returns the number of items its reader lists there. The writers of the per-reader
tests (tests/test_train_datasets.py) are reused where they exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_train_datasets import (
    _dynamic_replica,
    _exr,
    _hypersim,
    _png16,
    _pointodyssey,
    _rgb,
    _spring,
    _tartanair,
    _vkitti,
)

H, W = 6, 8  # the frame size of the fakes (as in test_train_datasets)


def mvs_synth(root: Path, seq: str = "0000", frames: int = 3) -> None:
    base = root / "GTAV_1080" / seq
    for n in range(frames):
        _rgb(base / "images" / f"{n:04d}.png", n)
        depth = np.full((H, W), 120.0 + 10 * n, np.float32)
        depth[0, 0] = np.inf  # sky
        _exr(base / "depths" / f"{n:04d}.exr", depth)
        w2c = np.eye(4)
        w2c[2, 3] = -float(n)
        cam = {"f_x": 20.0, "f_y": 20.0, "c_x": 4.0, "c_y": 3.0, "extrinsic": w2c.tolist()}
        (base / "poses").mkdir(parents=True, exist_ok=True)
        (base / "poses" / f"{n:04d}.json").write_text(json.dumps(cam))


def matrixcity(root: Path, block: str = "block_1", frames: int = 3, view: str = "street") -> None:
    """The Hugging Face release unpacked: RGB under small_city/, depth (cm, EXR) under small_city_depth/."""
    rgb = root / "small_city" / view / "train" / block
    depth_dir = root / "small_city_depth" / view / "train" / f"{block}_depth"
    transforms = {"camera_angle_x": 1.2, "frames": []}
    for n in range(frames):
        _rgb(rgb / f"{n:04d}.png", 50 + n)
        depth = np.full((H, W), 1500.0 + 100 * n, np.float32)  # 15 m, 16 m, ... in centimetres
        depth[0, :2] = 65504.0  # no geometry
        _exr(depth_dir / f"{n:04d}.exr", depth, rgb=True)
        c2w = np.eye(4) * 100.0
        c2w[3, 3] = 1.0
        c2w[:3, 3] = [float(n), 0.0, 2.0]
        transforms["frames"].append({"file_path": f"{n:04d}.png", "transform_matrix": c2w.tolist()})
    (rgb / "transforms.json").write_text(json.dumps(transforms))


def video_folder(root: Path, sequences: tuple[str, ...] = ("clip_a", "clip_b"), frames: int = 3) -> None:
    """The generic layout: rgb/ PNG frames and depth/ 16-bit PNG millimetres."""
    for s, seq in enumerate(sequences):
        for n in range(frames):
            _rgb(root / seq / "rgb" / f"{n:06d}.png", 100 * s + n)
            _png16(root / seq / "depth" / f"{n:06d}.png", np.full((H, W), 2000 + 500 * n + 100 * s, np.uint16))


#: ``data.roots`` key -> (writer, number of items it makes).
WRITERS = {
    "mvs_synth": (mvs_synth, 1),
    "dynamic_replica": (_dynamic_replica, 1),
    "tartanair": (_tartanair, 1),
    "pointodyssey": (_pointodyssey, 1),
    "spring": (_spring, 1),
    "hypersim": (_hypersim, 1),
    "vkitti2": (_vkitti, 2),  # two cameras: two items
    "matrixcity": (matrixcity, 1),
    "videos": (video_folder, 2),
}


def write_fake(name: str, root: Path) -> int:
    writer, items = WRITERS[name]
    writer(Path(root))
    return items
