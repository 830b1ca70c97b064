"""Base class of every video-depth dataset."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from torch.utils.data import Dataset

from vdf.data.types import ClipRequest, Sample


class VideoDepthDataset(Dataset, ABC):
    """A map-style dataset of depth-annotated videos.

    An item is one sequence (or one fixed clip of it). Samplers look at ``sequence_length`` and
    ``frame_size`` of every item without loading it, choose frames, and ask for
    ``dataset[ClipRequest(index, frames)]``; a plain integer index loads every frame.
    """

    name: str = "dataset"
    #: Evaluation depth cap in metres: pixels at or beyond it are not scored and aligned depth
    #: is clipped to it (the published protocol's per-dataset ``max_depth``).
    max_depth: float = 80.0
    #: The benchmark's fixed inference size ``(H, W)`` (DepthCrafter's benchmark runs each dataset
    #: at one size, ``dataset_res_dict`` of its ``utils.py``); models whose resolution rule has
    #: ``protocol_sizes`` run there and are scored after resizing back. None: no fixed size.
    inference_size: tuple[int, int] | None = None
    #: The space of the evaluation's least-squares fit for this dataset (``disparity`` or
    #: ``depth``, e.g. ``depth`` for ChronoDepth's sets); None: the datamodule's ``eval_space``.
    eval_space: str | None = None
    #: Always score boundary F1 on this dataset (FlashDepth's sets), whatever the model's flag.
    boundary_f1: bool = False

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def sequence_length(self, index: int) -> int:
        """Number of frames available in item ``index``."""

    @abstractmethod
    def frame_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of the frames this dataset returns for item ``index``."""

    @abstractmethod
    def load(self, index: int, frames: Sequence[int]) -> Sample:
        """Load item ``index`` restricted to ``frames`` (indices into its sequence)."""

    def __getitem__(self, item: int | ClipRequest) -> Sample:
        if isinstance(item, ClipRequest):
            return self.load(item.index, item.frames)
        if not 0 <= item < len(self):
            raise IndexError(f"{self.name}: index {item} out of range for {len(self)} items")
        return self.load(item, range(self.sequence_length(item)))
