import pytest
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.datasets.mixed import MixedVideoDataset
from vdf.data.types import ClipRequest


class Fake(VideoDepthDataset):
    def __init__(self, name, lengths, size=(4, 6)):
        self.name, self.lengths, self.size = name, lengths, size

    def __len__(self):
        return len(self.lengths)

    def sequence_length(self, index):
        return self.lengths[index]

    def frame_size(self, index):
        return self.size

    def load(self, index, frames):
        frames = list(frames)
        t, (h, w) = len(frames), self.size
        return {
            "video": torch.zeros(t, 3, h, w),
            "depth": torch.ones(t, 1, h, w),
            "valid": torch.ones(t, 1, h, w, dtype=torch.bool),
            "frame_index": torch.tensor(frames, dtype=torch.int64),
            "meta": {"dataset": self.name, "sequence": str(index), "paths": []},
        }


def test_mixed_routes_global_indices_to_their_dataset():
    a, b = Fake("a", [3, 5]), Fake("b", [7, 2, 4], size=(8, 8))
    mixed = MixedVideoDataset([a, b])
    assert len(mixed) == 5
    assert [mixed.locate(i) for i in range(5)] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert [mixed.sequence_length(i) for i in range(5)] == [3, 5, 7, 2, 4]
    assert mixed.frame_size(3) == (8, 8)
    sample = mixed[ClipRequest(4, (0, 2, 3))]
    assert sample["meta"]["dataset"] == "b" and sample["meta"]["sequence"] == "2"
    assert sample["frame_index"].tolist() == [0, 2, 3]
    assert mixed[1]["frame_index"].tolist() == list(range(5))
    with pytest.raises(IndexError):
        mixed.locate(5)


def test_item_weights_split_each_dataset_share_evenly_over_its_items():
    mixed = MixedVideoDataset([Fake("a", [1, 1]), Fake("b", [1, 1, 1, 1])], weights=[3.0, 1.0])
    w = mixed.item_weights()
    assert w == pytest.approx([0.375, 0.375, 0.0625, 0.0625, 0.0625, 0.0625])
    assert sum(w[:2]) == pytest.approx(0.75)
    assert MixedVideoDataset([Fake("a", [1])]).item_weights() is None


@pytest.mark.parametrize(
    "datasets, weights, message",
    [
        ([], None, "at least one"),
        ([Fake("a", [1])], [1.0, 2.0], "one weight per dataset"),
        ([Fake("a", [1])], [-1.0], "non-negative"),
        ([Fake("a", [])], None, "empty dataset"),
    ],
)
def test_mixed_rejects_bad_configuration_clearly(datasets, weights, message):
    with pytest.raises(ValueError, match=message):
        MixedVideoDataset(datasets, weights)
