"""Demo videos for ``vdf predict``: synthetic-world episodes written as mp4 + ground truth.

``python -m vdf.data.demo --output demo_videos --episodes 3`` writes ``episode_XXXXX.mp4`` and
``episode_XXXXX_gt.npz`` (readable by `vdf.data.datasets.episodes.EpisodeFolder`).
"""

from __future__ import annotations

from jsonargparse import CLI

from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.io.episodes import write_episodes


def write_demo_videos(
    output: str = "demo_videos",
    episodes: int = 3,
    frames: int = 24,
    height: int = 128,
    width: int = 192,
    seed: int = 0,
    fps: int = 10,
) -> None:
    """Render ``episodes`` synthetic-world videos of ``frames`` frames into ``output``."""
    world = SyntheticWorld(num_episodes=episodes, num_frames=frames, height=height, width=width, seed=seed)
    for path in write_episodes(world, output, fps=fps):
        print(path)


if __name__ == "__main__":
    CLI(write_demo_videos)
