"""Episode files: a video with depth ground truth as ``<name>.mp4`` + ``<name>_gt.npz``.

This is vdf's own layout for depth-annotated videos: `write_episodes` writes it from any dataset
(the synthetic world's demo videos, ``python -m vdf.data.demo``), and
`vdf.data.datasets.episodes.EpisodeFolder` reads it back for evaluation; ``vdf predict`` reads the
mp4 files like any other video.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vdf.io.atomic import atomic_path
from vdf.io.codecs import video_codec, write_mp4

if TYPE_CHECKING:
    from vdf.data.datasets.base import VideoDepthDataset

__all__ = ["GT_SUFFIX", "write_episodes"]

GT_SUFFIX = "_gt.npz"
"""Ground truth of ``<name>.mp4`` is ``<name>_gt.npz`` beside it."""

_WRITE_CHUNK = 32  # frames rendered and encoded at a time by write_episodes
_GT_KEYS = ("depth", "valid", "frame_index", "intrinsics", "cam_to_world")


def write_episodes(
    dataset: VideoDepthDataset, out_dir: str | os.PathLike, indices: Sequence[int] | None = None, fps: int = 10
) -> list[Path]:
    """Write episodes as ``<out_dir>/<sequence>.mp4`` plus ``<out_dir>/<sequence>_gt.npz``.

    For ``SyntheticWorld`` the sequence name is ``episode_XXXXX``. Video: `vdf.io.codecs.write_mp4`
    (H.264, or ``mpeg4`` where FFmpeg lacks it), yuv420p, ``fps`` frames per second. yuv420p needs
    even sizes, so an odd last row / column is **cropped** from the video and from every
    ground-truth array alike; K is unchanged by cropping at the bottom/right. The npz holds
    ``depth`` float32 (T,H,W), ``valid`` bool (T,H,W), ``frame_index`` int64 (T,) and, when the
    dataset provides them, ``intrinsics`` float32 (T,3,3) and ``cam_to_world`` float32 (T,4,4).
    Files are written under a temporary name and moved into place, so a reader never sees a
    partial file.

    Args:
        dataset: any `VideoDepthDataset`; files are named after each sample's ``meta["sequence"]``.
        out_dir: the folder to write into (created if missing).
        indices: the items to write; ``None`` writes every item.
        fps: frame rate of the videos.

    Returns:
        The paths of the written mp4 files.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    written = []
    for index in range(len(dataset)) if indices is None else indices:
        index = int(index)
        T = dataset.sequence_length(index)
        H, W = dataset.frame_size(index)
        h, w = H - H % 2, W - W % 2
        first = dataset.load(index, range(min(_WRITE_CHUNK, T)))
        name = first["meta"]["sequence"]
        if h == 0 or w == 0:
            raise ValueError(f"{name}: frames of {H}x{W} are too small for a yuv420p video")
        gt: dict[str, list[np.ndarray]] = {key: [] for key in _GT_KEYS}

        def frames() -> Iterator[np.ndarray]:
            # Rendered and encoded in chunks of frames, so a long episode never sits whole in memory
            # (only its ground-truth arrays do, at one float per pixel).
            for start in range(0, T, _WRITE_CHUNK):
                sample = first if start == 0 else dataset.load(index, range(start, min(start + _WRITE_CHUNK, T)))
                _collect_ground_truth(gt, sample, h, w)
                rgb = (sample["video"][:, :, :h, :w].clamp(0, 1) * 255).round().to(torch.uint8)
                yield from rgb.permute(0, 2, 3, 1).contiguous().numpy()

        video_path = out_dir / f"{name}.mp4"
        with atomic_path(video_path) as tmp:
            write_mp4(tmp, frames(), h, w, fps, codec)
        with atomic_path(out_dir / f"{name}{GT_SUFFIX}") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{key: np.concatenate(parts) for key, parts in gt.items() if parts})
        written.append(video_path)
    return written


def _collect_ground_truth(gt: dict[str, list[np.ndarray]], sample: Mapping[str, Any], h: int, w: int) -> None:
    """Append a chunk's ground truth, cropped to ``h x w``, to the lists in ``gt``."""
    gt["depth"].append(sample["depth"][:, 0, :h, :w].numpy().astype(np.float32))
    gt["valid"].append(sample["valid"][:, 0, :h, :w].numpy().astype(bool))
    gt["frame_index"].append(sample["frame_index"].numpy().astype(np.int64))
    for key in ("intrinsics", "cam_to_world"):
        if key in sample:
            gt[key].append(sample[key].numpy().astype(np.float32))
