"""MixedLengthBatchSampler and collate_clips: packing, frames, DDP split, determinism, resume."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from vdf.data.collate import collate_clips
from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.sampler import MixedLengthBatchSampler
from vdf.data.types import ClipRequest, Sample


class FakeVideos(VideoDepthDataset):
    """In-memory items given as ``(sequence_length, H, W)``; ``load`` makes tiny constant clips."""

    name = "fake"

    def __init__(self, items: Sequence[tuple[int, int, int]], with_intrinsics: bool = True):
        self.items = list(items)
        self.with_intrinsics = with_intrinsics

    def __len__(self) -> int:
        return len(self.items)

    def sequence_length(self, index: int) -> int:
        return self.items[index][0]

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.items[index][1], self.items[index][2]

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        frames = list(frames)
        length, h, w = self.items[index]
        assert all(0 <= f < length for f in frames)
        t = len(frames)
        sample: Sample = {
            "video": torch.full((t, 3, h, w), index / 100.0),
            "depth": torch.ones(t, 1, h, w),
            "valid": torch.ones(t, 1, h, w, dtype=torch.bool),
            "frame_index": torch.tensor(frames, dtype=torch.int64),
            "meta": {"dataset": self.name, "sequence": f"seq{index}", "paths": []},
        }
        if self.with_intrinsics:
            sample["intrinsics"] = torch.eye(3).expand(t, 3, 3).clone()
        return sample


def clip_shape(dataset: FakeVideos, clip: ClipRequest) -> tuple[int, int, int]:
    return (len(clip.frames), *dataset.frame_size(clip.index))


def all_ranks(dataset: FakeVideos, num_replicas: int, epoch: int = 0, **kwargs) -> list[list[list[ClipRequest]]]:
    out = []
    for rank in range(num_replicas):
        sampler = MixedLengthBatchSampler(dataset, num_replicas=num_replicas, rank=rank, **kwargs)
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches)
        out.append(batches)
    return out


SIZES = [(4, 6), (8, 8), (6, 4)]
items_strategy = st.lists(
    st.tuples(st.integers(1, 30), st.sampled_from(SIZES)).map(lambda x: (x[0], *x[1])), min_size=1, max_size=12
)
config_strategy = st.fixed_dictionaries(
    {
        "num_frames": st.lists(st.integers(1, 8), min_size=1, max_size=3, unique=True),
        "frame_stride": st.lists(st.integers(1, 3), min_size=1, max_size=2, unique=True),
        "frame_dropout": st.sampled_from([0.0, 0.25, 0.5]),
        "max_frames_per_batch": st.one_of(st.none(), st.integers(1, 40)),
        "max_pixels_per_batch": st.one_of(st.none(), st.integers(50, 3000)),
        "max_batch_size": st.integers(1, 6),
        "samples_per_epoch": st.one_of(st.none(), st.integers(1, 30)),
        "shuffle": st.booleans(),
        "drop_last": st.booleans(),
        "seed": st.integers(0, 2**31),
    }
)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(items=items_strategy, config=config_strategy, num_replicas=st.integers(1, 4), epoch=st.integers(0, 5))
def test_batches_are_homogeneous_within_budget_with_valid_frames(items, config, num_replicas, epoch):
    dataset = FakeVideos(items)
    for batches in all_ranks(dataset, num_replicas, epoch, **config):
        for batch in batches:
            shapes = {clip_shape(dataset, c) for c in batch}
            assert len(shapes) == 1
            (t, h, w) = shapes.pop()
            b = len(batch)
            assert b >= 1
            if config["drop_last"]:  # incomplete bucket tails are dropped
                assert b == MixedLengthBatchSampler(dataset, **config).batch_size_for(t, h, w)
            if b > 1:
                assert b <= config["max_batch_size"]
                if config["max_frames_per_batch"] is not None:
                    assert b * t <= config["max_frames_per_batch"]
                if config["max_pixels_per_batch"] is not None:
                    assert b * t * h * w <= config["max_pixels_per_batch"]
            for clip in batch:
                check_frames(clip, dataset.sequence_length(clip.index), config)


def check_frames(clip: ClipRequest, length: int, config: dict) -> None:
    frames, t = clip.frames, len(clip.frames)
    num_frames, strides = config["num_frames"], config["frame_stride"]
    assert all(0 <= f < length for f in frames)
    assert all(a < b for a, b in zip(frames, frames[1:]))
    if t not in num_frames:  # fallback: no candidate fits, whole sequence
        assert t == length and min(num_frames) > length
    if t < 2:
        return
    diffs = [b - a for a, b in zip(frames, frames[1:])]
    lowered = (length - 1) // (t - 1)  # the stride used when the drawn one does not fit
    candidates = [s for s in strides if (t - 1) * s + 1 <= length] + [lowered]
    if config["frame_dropout"] == 0.0:
        assert len(set(diffs)) == 1
        assert diffs[0] in candidates
        if diffs[0] not in strides:
            assert any((t - 1) * s + 1 > length for s in strides)
    else:
        window = max(t, round(t / (1 - config["frame_dropout"])))
        gcd = math.gcd(*diffs)
        # the frames are a subset of one strided window of at most `window` positions
        assert any(gcd % s == 0 and (frames[-1] - frames[0]) // s + 1 <= window for s in candidates)


@settings(max_examples=100, deadline=None)
@given(
    items=items_strategy,
    config=config_strategy,
    num_replicas=st.integers(1, 4),
    epoch=st.integers(0, 5),
    batches_per_epoch=st.one_of(st.none(), st.integers(0, 9)),
)
def test_ranks_get_equal_counts_and_their_interleave_is_the_global_plan(
    items, config, num_replicas, epoch, batches_per_epoch
):
    dataset = FakeVideos(items)
    config = dict(config, batches_per_epoch=batches_per_epoch)
    per_rank = all_ranks(dataset, num_replicas, epoch, **config)
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1
    count = counts.pop()

    # The global plan does not depend on the number of ranks.
    plan = MixedLengthBatchSampler(dataset, num_replicas=1, rank=0, **config).plan_epoch(epoch)
    assert all_ranks(dataset, 1, epoch, **config)[0] == plan
    if batches_per_epoch is not None:
        assert len(plan) == batches_per_epoch or not plan
    elif not config["drop_last"]:  # every drawn clip is planned exactly once
        assert sum(map(len, plan)) == (config["samples_per_epoch"] or len(items))

    if config["drop_last"]:
        assert count == len(plan) // num_replicas
    else:
        assert count == -(-len(plan) // num_replicas)
    # Rank r's k-th batch is global batch k*R + r, padded by repeating the plan from its start.
    for rank, batches in enumerate(per_rank):
        for k, batch in enumerate(batches):
            assert batch == plan[(k * num_replicas + rank) % len(plan)]
    if len(plan) % num_replicas == 0:  # no padding: each planned batch is on exactly one rank
        assert sorted(repr(b) for batches in per_rank for b in batches) == sorted(map(repr, plan))
    elif not config["drop_last"]:  # padding: every planned batch is covered
        seen = {repr(b) for batches in per_rank for b in batches}
        assert seen == {repr(b) for b in plan}


@settings(max_examples=60, deadline=None)
@given(items=items_strategy, config=config_strategy, num_replicas=st.integers(1, 4), data=st.data())
def test_resume_from_state_dict_yields_exactly_the_remaining_batches(items, config, num_replicas, data):
    dataset = FakeVideos(items)
    rank = data.draw(st.integers(0, num_replicas - 1))
    epoch = data.draw(st.integers(0, 5))
    first = MixedLengthBatchSampler(dataset, num_replicas=num_replicas, rank=rank, **config)
    first.set_epoch(epoch)
    full = list(first)
    done = data.draw(st.integers(0, len(full)))
    iterator = iter(first)
    consumed = [next(iterator) for _ in range(done)]
    state = first.state_dict()
    assert state["epoch"] == epoch and state["batches_yielded"] == done

    resumed = MixedLengthBatchSampler(dataset, num_replicas=num_replicas, rank=rank, **config)
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # Lightning calls set_epoch again on resume: the position survives
    assert consumed + list(resumed) == full
    assert resumed.state_dict()["batches_yielded"] == len(full)
    assert list(resumed) == full  # the resume position is used once


# ----------------------------------------------------------------------------- examples


def varied_dataset() -> FakeVideos:
    return FakeVideos([(5 + (7 * i) % 40, *SIZES[i % 3]) for i in range(40)])


def test_plan_is_deterministic_per_seed_and_epoch():
    dataset = varied_dataset()
    kwargs = dict(num_frames=[2, 4, 8], frame_stride=[1, 2], frame_dropout=0.2, max_frames_per_batch=16, seed=7)

    def run(epoch, **extra):
        sampler = MixedLengthBatchSampler(dataset, **dict(kwargs, **extra))
        sampler.set_epoch(epoch)
        return list(sampler)

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert run(3) != run(3, seed=8)
    # shuffle=False: a fixed plan, the same for every epoch (val loaders get set_epoch too)
    assert run(0, shuffle=False) == run(5, shuffle=False)


def test_epoch_attribute_and_set_epoch_reach_the_sampler_through_lightning():
    from lightning.fabric.utilities.data import _set_sampler_epoch

    dataset = varied_dataset()
    sampler = MixedLengthBatchSampler(dataset, max_batch_size=4)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips)
    assert sampler.epoch == 0
    _set_sampler_epoch(loader, 3)  # what the fit and evaluation loops call each epoch
    assert sampler.epoch == 3
    assert [b["frame_index"].tolist() for b in loader] == [[list(c.frames) for c in batch] for batch in sampler]


def test_item_weights_set_draw_frequencies():
    # Two "datasets" in one: items 0-9 get 80% of the mass, items 10-29 get 20%, item 30 none.
    dataset = FakeVideos([(10, 4, 4)] * 31)
    weights = [0.8 / 10] * 10 + [0.2 / 20] * 20 + [0.0]
    n = 3000
    sampler = MixedLengthBatchSampler(
        dataset, num_frames=[3], item_weights=weights, samples_per_epoch=n, max_batch_size=7, seed=1
    )
    drawn = Counter(c.index for batch in sampler for c in batch)
    assert sum(drawn.values()) == n
    assert drawn[30] == 0
    share_a = sum(drawn[i] for i in range(10)) / n
    assert abs(share_a - 0.8) < 4 * math.sqrt(0.8 * 0.2 / n)
    chi2 = sum((drawn[i] - n * w) ** 2 / (n * w) for i, w in enumerate(weights) if w > 0)
    assert chi2 < 70  # 29 degrees of freedom: P(chi2 > 70) ~ 3e-5


def test_without_weights_each_item_is_seen_once_per_epoch():
    dataset = varied_dataset()
    sampler = MixedLengthBatchSampler(dataset, num_frames=[3, 5], max_frames_per_batch=20)
    assert sorted(c.index for batch in sampler for c in batch) == list(range(len(dataset)))
    # samples_per_epoch beyond the dataset cycles permutations: counts differ by at most one
    sampler = MixedLengthBatchSampler(dataset, num_frames=[3], max_batch_size=4, samples_per_epoch=100)
    counts = Counter(c.index for batch in sampler for c in batch)
    assert sum(counts.values()) == 100 and set(counts.values()) <= {2, 3}


def test_packing_small_clips_get_larger_batches_and_tiny_budget_gives_batches_of_one():
    dataset = FakeVideos([(20, 8, 8)] * 30 + [(20, 4, 4)] * 30)
    sampler = MixedLengthBatchSampler(dataset, num_frames=[2, 8], max_frames_per_batch=16, max_batch_size=100)
    assert sampler.batch_size_for(2, 8, 8) == 8 > sampler.batch_size_for(8, 8, 8) == 2
    sizes: dict[tuple[int, int, int], set[int]] = {}
    for batch in sampler:
        sizes.setdefault(clip_shape(dataset, batch[0]), set()).add(len(batch))
    assert max(sizes[(2, 8, 8)]) == 8 and max(sizes[(8, 8, 8)]) == 2

    pixels = MixedLengthBatchSampler(dataset, num_frames=[4], max_pixels_per_batch=4 * 8 * 8 * 3)
    assert pixels.batch_size_for(4, 4, 4) == 12 > pixels.batch_size_for(4, 8, 8) == 3

    tiny = MixedLengthBatchSampler(dataset, num_frames=[2, 8], max_pixels_per_batch=10)
    assert all(len(batch) == 1 for batch in tiny)
    assert len(tiny) == len(dataset)


def test_whole_sequences_for_evaluation():
    dataset = FakeVideos([(7, 4, 4), (3, 4, 4), (7, 4, 4), (5, 6, 4)])
    sampler = MixedLengthBatchSampler(dataset, num_frames=None, shuffle=False, max_batch_size=8)
    batches = list(sampler)
    assert [[(c.index, c.frames) for c in b] for b in batches] == [
        [(0, tuple(range(7))), (2, tuple(range(7)))],
        [(1, (0, 1, 2))],
        [(3, tuple(range(5)))],
    ]


def test_short_sequences_fall_back_to_smaller_stride_then_shorter_clip():
    dataset = FakeVideos([(9, 4, 4), (4, 4, 4), (2, 4, 4)])
    sampler = MixedLengthBatchSampler(dataset, num_frames=[5], frame_stride=[3], shuffle=False, max_batch_size=1)
    clips = {c.index: c.frames for batch in sampler for c in batch}
    assert clips[0] == (0, 2, 4, 6, 8)  # 5 frames at stride 3 need 13: stride lowered to 2
    assert clips[1] == (0, 1, 2, 3)  # fewer than 5 frames, none of num_frames fits: whole sequence
    sampler = MixedLengthBatchSampler(dataset, num_frames=[5, 2], frame_stride=[1], shuffle=False, max_batch_size=1)
    clips = {c.index: c.frames for batch in sampler for c in batch}
    assert len(clips[1]) == 2 and len(clips[2]) == 2  # a drawn 5 falls back to 2, the longest that fits


def test_frame_dropout_keeps_original_indices_from_a_longer_span():
    dataset = FakeVideos([(200, 4, 4)] * 20)
    sampler = MixedLengthBatchSampler(dataset, num_frames=[6], frame_dropout=0.5, max_batch_size=4)
    spans = [c.frames[-1] - c.frames[0] + 1 for batch in sampler for c in batch]
    assert all(6 <= s <= 12 for s in spans) and max(spans) > 6


def test_batches_per_epoch_fixes_the_length_across_epochs():
    dataset = varied_dataset()
    lengths = set()
    for epoch in range(4):
        sampler = MixedLengthBatchSampler(
            dataset, num_frames=[2, 9], max_frames_per_batch=20, batches_per_epoch=13, num_replicas=3, rank=1
        )
        sampler.set_epoch(epoch)
        assert len(list(sampler)) == len(sampler)
        lengths.add(len(sampler))
    assert lengths == {5}


def test_rank_defaults_to_single_process():
    sampler = MixedLengthBatchSampler(varied_dataset(), batch_size=2)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(), "no batch size"),
        (dict(batch_size=2, max_frames_per_batch=10), "exclusive"),
        (dict(batch_size=2, frame_dropout=1.0), "frame_dropout"),
        (dict(batch_size=2, num_frames=[]), "num_frames"),
        (dict(batch_size=2, item_weights=[1.0]), "item_weights"),
        (dict(batch_size=2, num_replicas=2, rank=2), "rank"),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixedLengthBatchSampler(varied_dataset(), **kwargs)


def test_state_dict_refuses_another_world_size():
    dataset = varied_dataset()
    state = MixedLengthBatchSampler(dataset, batch_size=2, num_replicas=2, rank=0).state_dict()
    with pytest.raises(ValueError, match="num_replicas"):
        MixedLengthBatchSampler(dataset, batch_size=2, num_replicas=4, rank=0).load_state_dict(state)


def test_set_epoch_to_another_epoch_clears_a_pending_resume():
    sampler = MixedLengthBatchSampler(varied_dataset(), batch_size=2)
    sampler.load_state_dict({"epoch": 2, "batches_yielded": 5})
    sampler.set_epoch(3)
    assert len(list(sampler)) == len(sampler) > 5


# ----------------------------------------------------------------------------- collate + end to end


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_yields_stacked_batches_with_the_requested_frames(num_workers):
    dataset = varied_dataset()
    sampler = MixedLengthBatchSampler(
        dataset, num_frames=[2, 4], frame_stride=[1, 3], frame_dropout=0.3, max_pixels_per_batch=1000, seed=3
    )
    sampler.set_epoch(1)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips, num_workers=num_workers)
    assert len(loader) == len(sampler)
    planned = list(sampler)
    got = list(loader)
    assert len(got) == len(planned)
    for batch, clips in zip(got, planned):
        b, (t, h, w) = len(clips), clip_shape(dataset, clips[0])
        assert batch["video"].shape == (b, t, 3, h, w)
        assert batch["depth"].shape == batch["valid"].shape == (b, t, 1, h, w)
        assert batch["intrinsics"].shape == (b, t, 3, 3)
        assert batch["frame_index"].dtype == torch.int64
        assert batch["frame_index"].tolist() == [list(c.frames) for c in clips]
        assert [m["sequence"] for m in batch["meta"]] == [f"seq{c.index}" for c in clips]


def test_collate_drops_keys_missing_from_some_samples_and_names_mismatched_shapes():
    with_k = FakeVideos([(5, 4, 6)]).load(0, [0, 1])
    without_k = FakeVideos([(5, 4, 6)], with_intrinsics=False).load(0, [2, 3])
    batch = collate_clips([with_k, without_k])
    assert "intrinsics" not in batch and batch["frame_index"].tolist() == [[0, 1], [2, 3]]
    assert isinstance(batch["meta"], list) and batch["meta"][1]["sequence"] == "seq0"

    other = FakeVideos([(5, 8, 6)]).load(0, [0, 1])
    with pytest.raises(ValueError, match=r"'video'.*\(2, 3, 4, 6\).*\(2, 3, 8, 6\)"):
        collate_clips([with_k, other])


def test_jsonargparse_builds_it_as_a_callable_of_the_dataset():
    from collections.abc import Callable

    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--sampler", type=Callable[[VideoDepthDataset], MixedLengthBatchSampler])
    config = parser.parse_string(
        """
        sampler:
          class_path: vdf.data.sampler.MixedLengthBatchSampler
          init_args:
            num_frames: [2, 4]
            frame_stride: [1, 2]
            frame_dropout: 0.25
            max_pixels_per_batch: 5000
            max_batch_size: 8
            seed: 3
        """
    )
    build = parser.instantiate_classes(config).sampler
    sampler = build(varied_dataset())
    assert isinstance(sampler, MixedLengthBatchSampler)
    assert sampler.num_frames == [2, 4] and sampler.frame_dropout == 0.25 and sampler.seed == 3


def test_lightning_fit_iterates_each_epochs_plan(tmp_path):
    import lightning as L

    dataset = varied_dataset()
    sampler = MixedLengthBatchSampler(dataset, num_frames=[2, 4], max_frames_per_batch=12, batches_per_epoch=6)
    seen: list[tuple[int, list[list[int]]]] = []

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch, batch_idx):
            seen.append((self.current_epoch, batch["frame_index"].tolist()))
            return (self.weight - batch["video"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_epochs=2,
        use_distributed_sampler=False,  # the sampler splits over ranks itself
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Recorder(), DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips))
    for epoch in range(2):
        expected = [[list(c.frames) for c in batch] for batch in sampler.plan_epoch(epoch)]
        assert [frames for e, frames in seen if e == epoch] == expected
    assert sampler.epoch == 1


def test_uneven_batches_for_evaluation_cover_every_batch_exactly_once():
    from vdf.data.sampler import MixedLengthBatchSampler

    ds = FakeVideos([(5, 4, 4)] * 7)
    plans = [
        list(
            MixedLengthBatchSampler(
                ds, num_frames=None, batch_size=1, shuffle=False, even_batches=False, num_replicas=3, rank=r
            )
        )
        for r in range(3)
    ]
    assert [len(p) for p in plans] == [3, 2, 2]
    seen = sorted(batch[0].index for plan in plans for batch in plan)
    assert seen == list(range(7))
