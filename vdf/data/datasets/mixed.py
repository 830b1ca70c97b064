"""Several datasets seen as one, with per-dataset sampling weights."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample


class MixedVideoDataset(VideoDepthDataset):
    """Concatenation of datasets whose items carry sampling weights.

    ``weights[d]`` is the share of draws that go to dataset ``d`` (normalised); within a dataset
    items are equally likely, so ``item_weights()[i] = weights[d] / len(datasets[d])``. Without
    weights every dataset gets a share proportional to its size (plain concatenation).
    """

    name = "mixed"

    def __init__(self, datasets: Sequence[VideoDepthDataset], weights: Sequence[float] | None = None):
        if not datasets:
            raise ValueError("MixedVideoDataset needs at least one dataset")
        if weights is not None:
            if len(weights) != len(datasets):
                raise ValueError(
                    f"{len(weights)} weights given for {len(datasets)} datasets; give one weight per dataset"
                )
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise ValueError(f"dataset weights must be non-negative with a positive sum, got {list(weights)}")
        empty = [d.name for d in datasets if len(d) == 0]
        if empty:
            raise ValueError(f"empty dataset(s) in the mix: {empty}")
        self.datasets = list(datasets)
        self.weights = None if weights is None else [float(w) for w in weights]
        self._offsets = [0]
        for d in self.datasets:
            self._offsets.append(self._offsets[-1] + len(d))

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """Global item index -> (dataset position, index inside that dataset)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        d = bisect.bisect_right(self._offsets, index) - 1
        return d, index - self._offsets[d]

    def sequence_length(self, index: int) -> int:
        d, i = self.locate(index)
        return self.datasets[d].sequence_length(i)

    def frame_size(self, index: int) -> tuple[int, int]:
        d, i = self.locate(index)
        return self.datasets[d].frame_size(i)

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        d, i = self.locate(index)
        return self.datasets[d].load(i, frames)

    def item_weights(self) -> list[float] | None:
        """Per-item draw probabilities (sum 1), or None for uniform over items."""
        if self.weights is None:
            return None
        total = sum(self.weights)
        out: list[float] = []
        for w, d in zip(self.weights, self.datasets):
            out.extend([w / total / len(d)] * len(d))
        return out
