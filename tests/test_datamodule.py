import pytest
import torch

from vdf.data.datamodule import VideoDepthDataModule
from vdf.data.datasets.synthetic import SyntheticWorld


def _world(n, seed, frames=6, size=(16, 24), **kw):
    return SyntheticWorld(num_episodes=n, num_frames=frames, height=size[0], width=size[1], seed=seed, **kw)


def test_train_loader_mixes_datasets_by_weight_and_packs_batches():
    small = _world(4, seed=0, size=(16, 24))
    large = _world(4, seed=1, size=(24, 32))
    dm = VideoDepthDataModule(
        train=[small, large],
        train_weights=[0.75, 0.25],
        num_frames=[2, 4],
        max_pixels_per_batch=4 * 16 * 24 * 2,
        samples_per_epoch=64,
        seed=3,
    )
    shapes, sizes = [], []
    for batch in dm.train_dataloader():
        b, t, c, h, w = batch["video"].shape
        assert c == 3 and batch["depth"].shape == (b, t, 1, h, w) and batch["valid"].dtype == torch.bool
        assert batch["frame_index"].shape == (b, t) and len(batch["meta"]) == b
        assert b * t * h * w <= 4 * 16 * 24 * 2 or b == 1
        shapes.append((t, h, w))
        sizes.extend((h, w) for _ in range(b))
    frac_small = sum(s == (16, 24) for s in sizes) / len(sizes)
    assert len(sizes) == 64 and 0.55 < frac_small < 0.95
    # Video packing: short clips of the small size get the biggest batches.
    assert len(set(shapes)) > 1


def test_eval_loaders_give_whole_sequences_one_loader_per_dataset():
    a, b = _world(3, seed=10, frames=5), _world(2, seed=11, frames=7)
    b.name = "other"
    dm = VideoDepthDataModule(val=[a, b], test=[a])
    loaders = dm.val_dataloader()
    assert len(loaders) == 2 and dm.dataset_names("val") == ["synthetic_world", "other"]
    batches = list(loaders[1])
    assert len(batches) == 2
    for batch in batches:
        assert batch["video"].shape[:2] == (1, 7)
        assert batch["frame_index"][0].tolist() == list(range(7))
        assert batch["intrinsics"].shape == (1, 7, 3, 3) and batch["cam_to_world"].shape == (1, 7, 4, 4)
    first = next(iter(dm.val_dataloader()[0]))
    assert torch.equal(first["depth"][0], a[0]["depth"])
    assert len(dm.test_dataloader()) == 1


def test_duplicate_dataset_names_are_made_unique():
    dm = VideoDepthDataModule(val=[_world(1, 0), _world(1, 1)])
    assert dm.dataset_names("val") == ["synthetic_world", "synthetic_world_1"]


def test_training_order_is_deterministic_per_seed():
    def frames(seed):
        dm = VideoDepthDataModule(train=[_world(6, 0)], num_frames=[3], frame_stride=[1, 2], batch_size=2, seed=seed)
        return [b["frame_index"].tolist() for b in dm.train_dataloader()]

    assert frames(5) == frames(5)
    assert frames(5) != frames(6)


def test_missing_split_and_bad_weights_are_clear_errors():
    with pytest.raises(ValueError, match="no val dataset configured: set data.val"):
        VideoDepthDataModule(train=[_world(1, 0)]).val_dataloader()
    with pytest.raises(ValueError, match="one weight per dataset"):
        VideoDepthDataModule(train=[_world(1, 0)], train_weights=[1.0, 2.0])


def test_evaluation_uses_each_dataset_max_depth():
    from vdf.data.datasets.synthetic import SYNTHETIC_MAX_DEPTH

    assert _world(1, 0).max_depth == SYNTHETIC_MAX_DEPTH == 20.0
