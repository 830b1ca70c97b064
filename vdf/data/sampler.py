"""Mixed-length batching: DDP-aware packing of video clips of varying ``(T, H, W)``.

See ``docs/data/mixed_length_batching.md`` for the user-facing description.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import ClipRequest

ClipShape = tuple[int, int, int]  # (T, H, W)


class MixedLengthBatchSampler(Sampler[list[ClipRequest]]):
    """Batch sampler that packs clips of equal ``(T, H, W)`` into budget-sized batches.

    Use it as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_clips)``. Every
    yielded batch is a ``list[ClipRequest]`` of length ``B`` whose clips all have the same number
    of frames ``T`` and frame size ``(H, W)``, so the collate stacks them into ``(B, T, 3, H, W)``.

    One epoch is planned as follows, entirely from a generator seeded with ``(seed, epoch)``
    (``(seed, 0)`` when ``shuffle=False``, so evaluation clips never change between epochs):

    1. **Items.** With ``item_weights``, ``samples_per_epoch`` items are drawn with replacement
       proportionally to the weights. Otherwise items are taken from successive random
       permutations (``shuffle=True``) or in order, cycling, until ``samples_per_epoch`` items
       (default: ``len(dataset)``) are taken.
    2. **Clips.** For each item, ``T`` is drawn from ``num_frames`` and the stride ``s`` from
       ``frame_stride``. If the sequence (``L`` frames) is too short for ``T`` frames at stride
       ``s``, the stride is lowered to the largest one that fits; if even stride 1 does not fit
       (``L < T``), ``T`` becomes the largest value of ``num_frames`` that is ``<= L`` or, when
       none is, ``L`` itself (the whole sequence). With ``frame_dropout = p > 0`` a window of
       ``round(T / (1 - p))`` strided frames (shrunk to what the sequence holds) is chosen and a
       sorted random subset of ``T`` of them is kept. The start is uniform among feasible ones.
       ``num_frames=None`` requests every ``s``-th frame of the whole sequence (no dropout).
    3. **Buckets.** Clips are grouped by exact ``(T, H, W)`` and cut into batches of
       :meth:`batch_size_for` clips; the list of batches is then shuffled (``shuffle=True``) or
       ordered by position of its first clip.
    4. **Epoch length.** With ``batches_per_epoch`` the list is truncated or cycled to exactly
       that many batches, so the epoch length does not depend on the draw.
    5. **Ranks.** The global list is identical on every rank. It is padded by repeating batches
       from its start (``drop_last=False``) or truncated (``drop_last=True``) to a multiple of
       ``num_replicas``; rank ``r`` takes batches ``r::num_replicas``. So every rank gets the
       same number of batches and, apart from padding repeats, no batch is seen by two ranks.

    The plan is cached per ``(epoch, num_replicas, rank)``, so ``len(sampler)`` is exact: it
    equals the number of batches one full iteration yields.

    Args:
        dataset: the dataset whose items are sampled (only ``len``, ``sequence_length`` and
            ``frame_size`` are used; nothing is loaded).
        num_frames: candidate clip lengths ``T``, drawn uniformly per clip; ``None`` for whole
            sequences (evaluation). A dataset with a ``clip_options(index)`` method (a mixture of
            `TrainView` entries) may give its own lengths and strides per item, which replace
            these two lists for that item's clips.
        frame_stride: candidate strides between consecutive frames, drawn uniformly per clip.
        frame_dropout: probability-like share ``p`` in ``[0, 1)`` of frames dropped from the
            sampled span; the kept frames keep their original indices (``frame_index``).
        max_frames_per_batch: budget on ``B * T``.
        max_pixels_per_batch: budget on ``B * T * H * W``.
        max_batch_size: cap on ``B``.
        batch_size: a fixed ``B`` for every bucket instead of budgets (exclusive with the
            three above).
        item_weights: one non-negative weight per dataset item (e.g.
            ``MixedVideoDataset.item_weights()``); items are drawn with replacement.
        samples_per_epoch: number of clips planned per epoch (default ``len(dataset)``).
        batches_per_epoch: if set, exactly this many global batches per epoch (truncate or
            repeat from the start); makes ``len`` independent of the epoch's draw.
        shuffle: randomise items, clip starts per epoch and batch order; ``False`` gives a fixed,
            epoch-independent plan in item order.
        drop_last: drop each bucket's incomplete last batch and, on several ranks, the batches
            that do not divide evenly, instead of keeping and padding them. ``False`` yields every
            planned clip at least once.
        seed: base seed of the plan; must be equal on every rank.
        even_batches: pad the global list so every rank gets the same number of batches (needed
            for training, where ranks meet in every step). ``False`` (evaluation) leaves it
            unpadded: ranks may differ by one batch, and no sequence is scored twice.
        num_replicas: number of data-parallel ranks; default ``torch.distributed`` world size
            if initialised (looked up when the plan is made, not at construction), else 1.
        rank: this process's rank; default ``torch.distributed.get_rank()`` if initialised,
            else 0.

    A clip larger than the budget alone (e.g. ``T * H * W > max_pixels_per_batch``) is not an
    error: it gets a batch of 1, since there is no smaller batch to make of it.
    """

    def __init__(
        self,
        dataset: VideoDepthDataset,
        num_frames: Sequence[int] | None = (5,),
        frame_stride: Sequence[int] = (1,),
        frame_dropout: float = 0.0,
        max_frames_per_batch: int | None = None,
        max_pixels_per_batch: int | None = None,
        max_batch_size: int | None = None,
        batch_size: int | None = None,
        item_weights: Sequence[float] | None = None,
        samples_per_epoch: int | None = None,
        batches_per_epoch: int | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        even_batches: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if num_frames is not None:
            num_frames = [int(t) for t in num_frames]
            if not num_frames or min(num_frames) < 1:
                raise ValueError(f"num_frames must be a non-empty list of positive ints, got {num_frames}")
        frame_stride = [int(s) for s in frame_stride]
        if not frame_stride or min(frame_stride) < 1:
            raise ValueError(f"frame_stride must be a non-empty list of positive ints, got {frame_stride}")
        if not 0.0 <= frame_dropout < 1.0:
            raise ValueError(f"frame_dropout must be in [0, 1), got {frame_dropout}")
        budgets = {
            "max_frames_per_batch": max_frames_per_batch,
            "max_pixels_per_batch": max_pixels_per_batch,
            "max_batch_size": max_batch_size,
            "batch_size": batch_size,
            "samples_per_epoch": samples_per_epoch,
        }
        for name, value in budgets.items():
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive int or None, got {value}")
        if batches_per_epoch is not None and batches_per_epoch < 0:
            raise ValueError(f"batches_per_epoch must be >= 0 or None, got {batches_per_epoch}")
        given_budgets = [n for n in ("max_frames_per_batch", "max_pixels_per_batch", "max_batch_size") if budgets[n]]
        if batch_size is not None and given_budgets:
            raise ValueError(f"batch_size (fixed) is exclusive with the budgets {given_budgets}; give one or the other")
        if batch_size is None and not given_budgets:
            raise ValueError(
                "no batch size: give batch_size, or at least one of max_frames_per_batch, "
                "max_pixels_per_batch, max_batch_size"
            )
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if item_weights is not None:
            weights = np.asarray(item_weights, dtype=np.float64)
            if weights.shape != (len(dataset),):
                raise ValueError(f"item_weights has {weights.size} entries for a dataset of {len(dataset)} items")
            if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
                raise ValueError("item_weights must be finite, non-negative, with a positive sum")
            self._probabilities: np.ndarray | None = weights / weights.sum()
        else:
            self._probabilities = None
        if num_replicas is not None and num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
        if rank is not None and num_replicas is not None and not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for num_replicas={num_replicas}")

        self.dataset = dataset
        self.num_frames = num_frames
        self.frame_stride = frame_stride
        self.frame_dropout = float(frame_dropout)
        self.max_frames_per_batch = max_frames_per_batch
        self.max_pixels_per_batch = max_pixels_per_batch
        self.max_batch_size = max_batch_size
        # Stored under another name on purpose: an object with both `batch_size` and `drop_last`
        # makes Lightning try `type(self)(sampler, batch_size=..., drop_last=...)`, which cannot
        # work here; without it Lightning raises its clear "use_distributed_sampler=False" error.
        self.fixed_batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.batches_per_epoch = batches_per_epoch
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.even_batches = even_batches
        self.seed = seed
        self._num_replicas = num_replicas
        self._rank = rank

        self.epoch = 0
        self._resume_offset = 0  # batches to skip at the next __iter__, set by load_state_dict
        self._yielded = 0  # position in the current/last iteration, for state_dict
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: list[list[ClipRequest]] = []

    # ----------------------------------------------------------------------------- ranks

    @property
    def num_replicas(self) -> int:
        """Number of data-parallel ranks (explicit, else from ``torch.distributed``, else 1)."""
        if self._num_replicas is not None:
            return self._num_replicas
        # Looked up lazily: the sampler may be built before the process group exists.
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
        return 1

    @property
    def rank(self) -> int:
        """This process's rank (explicit, else from ``torch.distributed``, else 0)."""
        if self._rank is not None:
            return self._rank
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
        return 0

    # ----------------------------------------------------------------------------- epochs

    @property
    def sampler(self) -> MixedLengthBatchSampler:
        """``self``: Lightning calls ``dataloader.batch_sampler.sampler.set_epoch(epoch)`` (not
        ``batch_sampler.set_epoch``) at the start of every epoch; exposing ourselves here is what
        makes that call reach :meth:`set_epoch`."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose plan the next iteration yields (seeds ``(seed, epoch)``).

        A pending resume position from :meth:`load_state_dict` survives a call with the same
        epoch (Lightning calls ``set_epoch`` again when it resumes) and is cleared otherwise.
        """
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self._resume_offset = 0
            self._yielded = 0
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch", "batches_yielded", "seed", "num_replicas"}``.

        ``batches_yielded`` counts batches this rank has handed to the DataLoader in the current
        epoch. The DataLoader prefetches (up to ``num_workers * prefetch_factor`` batches), so it
        can be ahead of the batches the model has consumed; for an exact resume, store the
        training loop's batch count in its place.
        """
        return {
            "epoch": self.epoch,
            "batches_yielded": self._yielded,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields the batches of ``state["epoch"]`` after the first
        ``state["batches_yielded"]`` ones of this rank."""
        if "seed" in state and state["seed"] != self.seed:
            raise ValueError(f"state was saved with seed {state['seed']}, this sampler has seed {self.seed}")
        if "num_replicas" in state and state["num_replicas"] != self.num_replicas:
            raise ValueError(
                f"state was saved with num_replicas={state['num_replicas']}, now {self.num_replicas}: "
                "the per-rank plan differs, so the position cannot be resumed"
            )
        self.set_epoch(int(state["epoch"]))
        self._resume_offset = int(state["batches_yielded"])
        self._yielded = self._resume_offset

    # ----------------------------------------------------------------------------- planning

    def batch_size_for(self, num_frames: int, height: int, width: int) -> int:
        """Batch size ``B >= 1`` of the bucket of clips shaped ``(num_frames, 3, height, width)``.

        ``min(max_batch_size, max_frames_per_batch // T, max_pixels_per_batch // (T*H*W))`` over
        the budgets given (or ``batch_size``), and at least 1: an over-budget clip goes alone.
        """
        if self.fixed_batch_size is not None:
            return self.fixed_batch_size
        size = math.inf
        if self.max_batch_size is not None:
            size = min(size, self.max_batch_size)
        if self.max_frames_per_batch is not None:
            size = min(size, self.max_frames_per_batch // num_frames)
        if self.max_pixels_per_batch is not None:
            size = min(size, self.max_pixels_per_batch // (num_frames * height * width))
        return max(1, int(size))

    def _generator(self, epoch: int) -> np.random.Generator:
        # Evaluation plans must not move with the training epoch (Lightning sets it on val loaders too).
        return np.random.default_rng([self.seed, epoch if self.shuffle else 0])

    def _draw_items(self, rng: np.random.Generator) -> np.ndarray:
        """Item indices of the epoch, ``(samples_per_epoch,)`` int64."""
        n_items = len(self.dataset)
        count = self.samples_per_epoch if self.samples_per_epoch is not None else n_items
        if n_items == 0:
            return np.zeros(0, dtype=np.int64)
        if self._probabilities is not None:
            return rng.choice(n_items, size=count, replace=True, p=self._probabilities)
        rounds = -(-count // n_items)
        if self.shuffle:
            # Successive permutations: every item is seen once before any is seen twice.
            order = np.concatenate([rng.permutation(n_items) for _ in range(rounds)])
        else:
            order = np.tile(np.arange(n_items), rounds)
        return order[:count]

    def _fit_to_sequence(
        self, length: int, num_frames: int, stride: int, choices: Sequence[int] | None = None
    ) -> tuple[int, int]:
        """Largest feasible ``(T, stride)`` for a sequence of ``length`` frames (see class doc);
        ``choices`` are the clip lengths ``T`` was drawn from (default ``num_frames``)."""
        if num_frames > length:
            shorter = [t for t in (choices if choices is not None else self.num_frames) or () if t <= length]
            num_frames = max(shorter) if shorter else length
        if num_frames > 1 and (num_frames - 1) * stride + 1 > length:
            stride = (length - 1) // (num_frames - 1)
        return num_frames, stride

    def _make_clip(self, index: int, rng: np.random.Generator) -> ClipRequest:
        length = self.dataset.sequence_length(index)
        if length < 1:
            raise ValueError(f"{self.dataset.name}: item {index} has no frames")
        lengths, strides = self.num_frames, self.frame_stride
        options = getattr(self.dataset, "clip_options", None)
        if lengths is not None and options is not None:
            # A mixture entry with its own clip lengths / strides (`TrainView`).
            own = options(index)
            if own is not None:
                lengths = own[0] if own[0] is not None else lengths
                strides = own[1] if own[1] is not None else strides
        stride = strides[rng.integers(len(strides))]
        if lengths is None:
            return ClipRequest(index, tuple(range(0, length, stride)))
        num_frames = lengths[rng.integers(len(lengths))]
        num_frames, stride = self._fit_to_sequence(length, num_frames, stride, lengths)
        # Dropout samples T frames out of a longer window; shrink the window to what fits.
        window = max(num_frames, round(num_frames / (1.0 - self.frame_dropout)))
        window = min(window, (length - 1) // stride + 1)
        span = (window - 1) * stride + 1
        start = int(rng.integers(length - span + 1))
        frames = start + stride * np.arange(window)
        if window > num_frames:
            frames = np.sort(rng.choice(frames, size=num_frames, replace=False))
        return ClipRequest(index, tuple(int(f) for f in frames))

    def plan_epoch(self, epoch: int) -> list[list[ClipRequest]]:
        """The global batch list of ``epoch``, before the split over ranks (same on every rank)."""
        rng = self._generator(epoch)
        clips = [self._make_clip(int(i), rng) for i in self._draw_items(rng)]

        buckets: dict[ClipShape, list[int]] = {}
        for position, clip in enumerate(clips):
            height, width = self.dataset.frame_size(clip.index)
            buckets.setdefault((len(clip.frames), int(height), int(width)), []).append(position)

        batches: list[list[int]] = []
        for (t, h, w), positions in buckets.items():
            size = self.batch_size_for(t, h, w)
            for begin in range(0, len(positions), size):
                batch = positions[begin : begin + size]
                if len(batch) == size or not self.drop_last:
                    batches.append(batch)

        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches.sort(key=lambda batch: batch[0])
        if self.batches_per_epoch is not None:
            batches = _cycle_to(batches, self.batches_per_epoch)
        return [[clips[p] for p in batch] for batch in batches]

    def _rank_batches(self) -> list[list[ClipRequest]]:
        """This rank's batches of the current epoch (cached)."""
        replicas, rank = self.num_replicas, self.rank
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} out of range for num_replicas={replicas}")
        key = (self.epoch, replicas, rank)
        if self._cache_key != key:
            batches = self.plan_epoch(self.epoch)
            if self.drop_last:
                total = len(batches) // replicas * replicas
            elif not self.even_batches:
                total = len(batches)
            else:
                total = -(-len(batches) // replicas) * replicas
            # Padding repeats batches from the start, like DistributedSampler does with indices.
            batches = _cycle_to(batches, total)
            self._cache = batches[rank::replicas]
            self._cache_key = key
        return self._cache

    # ----------------------------------------------------------------------------- iteration

    def __len__(self) -> int:
        """Batches of this rank in the current epoch (a pending resume does not shorten it)."""
        return len(self._rank_batches())

    def __iter__(self) -> Iterator[list[ClipRequest]]:
        batches = self._rank_batches()
        # The resume position is used once: a later iteration (e.g. after an abandoned sanity
        # check) starts the epoch from its beginning again.
        start, self._resume_offset = self._resume_offset, 0
        self._yielded = start
        return self._iterate(batches, start)

    def _iterate(self, batches: list[list[ClipRequest]], start: int) -> Iterator[list[ClipRequest]]:
        for batch in batches[start:]:
            self._yielded += 1
            yield list(batch)


def _cycle_to(items: list[Any], count: int) -> list[Any]:
    """``items`` truncated, or repeated from the start, to exactly ``count`` entries (``[]`` if empty)."""
    if not items:
        return []
    return [items[i % len(items)] for i in range(count)]
