"""Demo videos for ``vdf predict``: synthetic-world episodes written as mp4 + ground truth.

``python -m vdf.data.demo --output demo_videos --episodes 3`` writes ``episode_XXXXX.mp4`` and
``episode_XXXXX_gt.npz`` (readable by `vdf.data.datasets.episodes.EpisodeFolder`; its ``depth``,
``intrinsics`` and ``cam_to_world`` also serve ``vdf predict``'s known depth and cameras).
``--lidar 0.01`` adds ``demo_lidar/episode_XXXXX/<frame:06d>.png`` (``--lidar_output``): 1% of
the pixels' depth, drawn at random per frame, as 16-bit PNGs in millimetres (0 = no return), a
stand-in for sparse LiDAR. It is kept out of ``output``, where a folder of PNGs would be taken
for one more video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from jsonargparse import CLI

from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io.codecs import ImageEncoder
from vdf.io.episodes import GT_SUFFIX, write_episodes


def write_sparse_depth(gt_path: str | Path, folder: str | Path, fraction: float, seed: int = 0) -> Path:
    """``fraction`` of the pixels of a ``<name>_gt.npz``'s depth, as 16-bit PNGs in millimetres
    (``<frame_index:06d>.png``, 0 where unknown) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with np.load(gt_path) as gt:
        depth, valid, frames = gt["depth"], gt["valid"], gt["frame_index"]
    encoder = ImageEncoder("png", "gray16be", *depth.shape[1:])
    for t, index in enumerate(frames.tolist()):
        keep = valid[t] & (rng.random(depth.shape[1:]) < fraction)
        mm = np.where(keep, np.clip(np.rint(depth[t] * 1000), 0, 65535), 0).astype(np.uint16)
        (folder / f"{index:06d}.png").write_bytes(encoder.encode(mm))
    return folder


def write_demo_videos(
    output: str = "demo_videos",
    episodes: int = 3,
    frames: int = 24,
    height: int = 128,
    width: int = 192,
    seed: int = 0,
    fps: int = 10,
    lidar: float = 0.0,
    lidar_output: str = "demo_lidar",
) -> None:
    """Render ``episodes`` synthetic-world videos of ``frames`` frames into ``output``; with
    ``lidar > 0``, also that fraction of each frame's depth as sparse 16-bit PNGs (millimetres)
    into ``lidar_output/<name>/``."""
    world = SyntheticWorld(num_episodes=episodes, num_frames=frames, height=height, width=width, seed=seed)
    for path in write_episodes(world, output, fps=fps):
        print(path)
        if lidar > 0:
            name = path.name.removesuffix(".mp4")
            print(write_sparse_depth(path.parent / f"{name}{GT_SUFFIX}", Path(lidar_output) / name, lidar, seed))


if __name__ == "__main__":
    CLI(write_demo_videos)
