"""`EpisodeFolder`: videos with depth ground truth in vdf's own on-disk layout.

Layout (what `vdf.io.episodes.write_episodes` writes)::

    root/<name>.mp4       the RGB video (any container/codec PyAV decodes)
    root/<name>_gt.npz    depth float32 (T,H,W) metres, valid bool (T,H,W), frame_index int64 (T,),
                          optional intrinsics (T,3,3) and cam_to_world (T,4,4)

Each video is one item; frames are decoded in a stream and only the requested ones are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample
from vdf.io.episodes import GT_SUFFIX


class EpisodeFolder(VideoDepthDataset):
    """Depth-annotated videos stored as ``<name>.mp4`` + ``<name>_gt.npz`` pairs.

    Args:
        root: the folder holding the pairs.
        max_depth: evaluation depth cap in metres (20 suits the synthetic world).
        name: dataset name used in logs and metric keys.
    """

    def __init__(self, root: str, max_depth: float = 20.0, name: str = "episodes"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"EpisodeFolder: dataset root {str(self.root)!r} does not exist or is not a folder "
                "(write one with vdf.io.write_episodes, or fix data.*.init_args.root)"
            )
        self.videos = sorted(p for p in self.root.glob("*.mp4") if not p.name.startswith("."))
        if not self.videos:
            raise FileNotFoundError(f"EpisodeFolder: no <name>.mp4 videos in {str(self.root)!r}")
        missing = [str(v) for v in self.videos if not self._gt_path(v).is_file()]
        if missing:
            raise FileNotFoundError(
                f"EpisodeFolder: ground truth missing for {len(missing)} video(s), e.g. "
                f"{missing[0]!r} has no {self._gt_path(Path(missing[0])).name!r} beside it"
            )
        self.max_depth = max_depth
        self.name = name
        self._shapes = [self._read_shape(v) for v in self.videos]

    @staticmethod
    def _gt_path(video: Path) -> Path:
        return video.with_name(video.stem + GT_SUFFIX)

    def _read_shape(self, video: Path) -> tuple[int, int, int]:
        gt_path = self._gt_path(video)
        try:
            with np.load(gt_path) as gt:
                depth = gt["depth"]
                keys = set(gt.files)
        except Exception as error:  # corrupt zip, truncated file, ...
            raise ValueError(f"EpisodeFolder: cannot read ground truth {str(gt_path)!r}: {error}") from error
        if not {"depth", "valid", "frame_index"} <= keys or depth.ndim != 3:
            raise ValueError(
                f"EpisodeFolder: {str(gt_path)!r} must hold depth (T,H,W), valid and frame_index; "
                f"found keys {sorted(keys)} with depth shape {depth.shape}"
            )
        return depth.shape  # (T, H, W)

    def __len__(self) -> int:
        return len(self.videos)

    def sequence_length(self, index: int) -> int:
        return self._shapes[index][0]

    def frame_size(self, index: int) -> tuple[int, int]:
        return self._shapes[index][1], self._shapes[index][2]

    def _decode(self, video: Path, frames: Sequence[int]) -> np.ndarray:
        import av

        wanted = {f: i for i, f in enumerate(frames)}
        out: list[np.ndarray | None] = [None] * len(frames)
        last = max(frames)
        try:
            with av.open(str(video)) as container:
                for position, frame in enumerate(container.decode(video=0)):
                    if position in wanted:
                        out[wanted[position]] = frame.to_ndarray(format="rgb24")
                    if position >= last:
                        break
        except av.error.FFmpegError as error:
            raise ValueError(f"EpisodeFolder: cannot decode {str(video)!r}: {error}") from error
        absent = [f for f, i in wanted.items() if out[i] is None]
        if absent:
            raise ValueError(
                f"EpisodeFolder: {str(video)!r} has fewer frames than its ground truth "
                f"({self._shapes[self.videos.index(video)][0]}); frame {absent[0]} is missing"
            )
        return np.stack(out)

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        frames = [int(f) for f in frames]
        video = self.videos[index]
        t, h, w = self._shapes[index]
        if not frames or min(frames) < 0 or max(frames) >= t:
            raise IndexError(f"EpisodeFolder: frames {frames} out of range for {t} frames of {str(video)!r}")
        rgb = self._decode(video, frames)
        if rgb.shape[1:3] != (h, w):
            raise ValueError(
                f"EpisodeFolder: {str(video)!r} frames are {rgb.shape[1]}x{rgb.shape[2]} but its ground "
                f"truth is {h}x{w}"
            )
        with np.load(self._gt_path(video)) as gt:
            depth = gt["depth"][frames].astype(np.float32)
            # The contract: depth is 0 wherever it is unknown. NaN, inf, zero and negative depths
            # (sky, holes, sensor errors) are invalid whatever the stored mask says.
            valid = gt["valid"][frames].astype(bool) & np.isfinite(depth) & (depth > 0)
            depth = np.where(valid, depth, np.float32(0.0))
            sample: Sample = {
                "video": torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0,
                "depth": torch.from_numpy(depth).unsqueeze(1),
                "valid": torch.from_numpy(valid).unsqueeze(1),
                "frame_index": torch.from_numpy(gt["frame_index"][frames].astype(np.int64)),
                "meta": {
                    "dataset": self.name,
                    "sequence": video.stem,
                    "paths": [str(video), str(self._gt_path(video))],
                },
            }
            for key in ("intrinsics", "cam_to_world"):
                if key in gt.files:
                    sample[key] = torch.from_numpy(gt[key][frames].astype(np.float32))
        return sample
