"""`VideoDepthDataModule`: train/val/test/predict splits over any `VideoDepthDataset`s."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from vdf.data.collate import collate_clips
from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.datasets.mixed import MixedVideoDataset
from vdf.data.loader import ResumableDataLoader
from vdf.data.sampler import MixedLengthBatchSampler
from vdf.io import VideoSource, find_inputs, output_name
from vdf.io.live import LiveSource, is_live_input

STAGES = ("train", "val", "test", "predict")


def _identity(item):
    return item


class VideoDepthDataModule(L.LightningDataModule):
    """Datasets per split, mixed with weights for training and kept apart for evaluation.

    Training draws clips from all ``train`` datasets (mixed by ``train_weights``) through a
    `MixedLengthBatchSampler`: clips of ``num_frames`` frames at a ``frame_stride``, with
    optional ``frame_dropout``, grouped by ``(T,H,W)`` and packed into batches by the frame and
    pixel budgets. Evaluation gives one dataloader per dataset (so metrics are reported per
    dataset) and, by default, whole sequences one per batch; ``eval_num_frames`` caps the clip
    length instead.

    Args:
        train: training datasets.
        val: validation datasets (one dataloader each).
        test: test datasets (one dataloader each).
        predict: prediction datasets (one dataloader each).
        train_weights: share of training draws per train dataset; None = proportional to size.
        num_frames: clip lengths to draw from (one per clip, uniformly).
        frame_stride: strides to draw from (one per clip, uniformly).
        frame_dropout: fraction of frames dropped inside a clip's span (original indices kept).
        batch_size: fixed number of clips per batch (overrides the budgets when set).
        max_frames_per_batch: budget of frames summed over a batch.
        max_pixels_per_batch: budget of T*H*W summed over a batch.
        max_batch_size: upper bound on clips per batch under the budgets.
        samples_per_epoch: clips drawn per training epoch; None = one per training item.
        batches_per_epoch: fix the number of training batches per epoch (global, cut or
            repeated from the epoch's plan). Lightning reads the epoch length once, so set it
            when clip lengths or weights make the number of batches vary between epochs.
        eval_num_frames: clip length for val/test/predict; None = whole sequences.
        eval_batch_size: sequences per evaluation batch.
        eval_space: the space the evaluation's per-sequence least-squares fit runs in:
            ``disparity`` (DepthCrafter's benchmark protocol, the default for cross-model tables)
            or ``depth`` (ChronoDepth's paper). Each model's prediction declares its own space and
            is converted exactly (`vdf.metrics.protocol`).
        num_workers: dataloader worker processes.
        seed: seed of the training sampler (deterministic per seed and epoch).
        predict_input: a video file, an image-sequence folder, a folder of videos and image
            sequences, or a live input (``-`` for stdin, a stream URL, a camera such as
            ``/dev/video0``: `vdf.io.live`) for ``vdf predict`` (``--input``);
            each becomes one streamed `VideoSource` instead of the ``predict`` datasets.
        predict_glob: only inputs whose path relative to ``predict_input`` matches this glob.
        max_size: cap on the long side of decoded frames (downscale only).
        size_multiple: round decoded frame sizes down to a multiple of this.
        stride: predict every ``stride``-th frame of each input video.
        max_frames: predict at most this many frames per video.
        start_frame: first frame of each video to predict.
        live_format: FFmpeg input format of a live ``predict_input`` (``v4l2`` by default for
            ``/dev/video*``; e.g. ``mpegts`` for a pipe, ``avfoundation`` for a Mac camera).
        prefetch_frames: ``predict_input`` frames decoded ahead of the model by a background
            thread, per input (`vdf.io.prefetch.ReadAhead`); at most this many decoded frames wait
            (float32, ``12 * H * W`` bytes each). 0 decodes in the model's thread.
        roots: dataset folders by name: a dataset ``root`` written ``${name}`` in a config is
            ``roots[name]`` (`vdf.data.roots`), so ``--data.roots.<name> PATH`` moves one dataset
            wherever a mixture uses it.
    """

    def __init__(
        self,
        train: list[VideoDepthDataset] | None = None,
        val: list[VideoDepthDataset] | None = None,
        test: list[VideoDepthDataset] | None = None,
        predict: list[VideoDepthDataset] | None = None,
        train_weights: list[float] | None = None,
        num_frames: list[int] = [5],  # noqa: B006 - jsonargparse reads the default from the signature
        frame_stride: list[int] = [1],  # noqa: B006
        frame_dropout: float = 0.0,
        batch_size: int | None = None,
        max_frames_per_batch: int | None = 16,
        max_pixels_per_batch: int | None = None,
        max_batch_size: int | None = None,
        samples_per_epoch: int | None = None,
        batches_per_epoch: int | None = None,
        eval_num_frames: int | None = None,
        eval_batch_size: int = 1,
        eval_space: str = "disparity",
        num_workers: int = 0,
        seed: int = 0,
        predict_input: str | None = None,
        predict_glob: str | None = None,
        max_size: int | None = None,
        size_multiple: int = 1,
        stride: int = 1,
        max_frames: int | None = None,
        start_frame: int = 0,
        live_format: str | None = None,
        prefetch_frames: int = 8,
        roots: dict[str, str] | None = None,
    ):
        super().__init__()
        self.datasets: dict[str, list[VideoDepthDataset]] = {
            "train": list(train or []),
            "val": list(val or []),
            "test": list(test or []),
            "predict": list(predict or []),
        }
        if train_weights is not None and len(train_weights) != len(self.datasets["train"]):
            raise ValueError(
                f"data.train_weights has {len(train_weights)} entries for "
                f"{len(self.datasets['train'])} train datasets; give one weight per dataset"
            )
        self.train_weights = train_weights
        self.num_frames = list(num_frames)
        self.frame_stride = list(frame_stride)
        self.frame_dropout = frame_dropout
        self.batch_size = batch_size
        self.max_frames_per_batch = max_frames_per_batch
        self.max_pixels_per_batch = max_pixels_per_batch
        self.max_batch_size = max_batch_size
        self.samples_per_epoch = samples_per_epoch
        self.batches_per_epoch = batches_per_epoch
        self.eval_num_frames = eval_num_frames
        self.eval_batch_size = eval_batch_size
        from vdf.metrics.protocol import check_space

        self.eval_space = check_space(eval_space, "data.eval_space")
        self.num_workers = num_workers
        self.seed = seed
        self.predict_input = predict_input
        self.predict_glob = predict_glob
        self.live_format = live_format
        self.roots = dict(roots or {})
        self.video_options = dict(
            max_size=max_size,
            size_multiple=size_multiple,
            stride=stride,
            max_frames=max_frames,
            start_frame=start_frame,
            prefetch_frames=prefetch_frames,
        )

    def dataset_names(self, split: str) -> list[str]:
        """Names of the datasets of ``split``, unique (a repeated name gets a ``_<i>`` suffix)."""
        names: list[str] = []
        for d in self.datasets[split]:
            name = getattr(d, "name", type(d).__name__)
            names.append(name if name not in names else f"{name}_{len(names)}")
        return names

    def _require(self, split: str) -> list[VideoDepthDataset]:
        if not self.datasets[split]:
            raise ValueError(
                f"no {split} dataset configured: set data.{split} in the config, e.g.\n"
                f"  data:\n    {split}:\n      - class_path: vdf.data.datasets.synthetic.SyntheticWorld"
            )
        return self.datasets[split]

    def _loader(
        self, dataset: VideoDepthDataset, sampler: MixedLengthBatchSampler, resumable: bool = False
    ) -> DataLoader:
        # Training uses a `ResumableDataLoader` so checkpoints store the position in the epoch.
        loader_class = ResumableDataLoader if resumable else DataLoader
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate_clips,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        mixed = MixedVideoDataset(self._require("train"), self.train_weights)
        item_weights = mixed.item_weights()
        fixed = self.batch_size is not None  # a fixed batch size replaces the budgets
        sampler = MixedLengthBatchSampler(
            mixed,
            num_frames=self.num_frames,
            frame_stride=self.frame_stride,
            frame_dropout=self.frame_dropout,
            batch_size=self.batch_size,
            max_frames_per_batch=None if fixed else self.max_frames_per_batch,
            max_pixels_per_batch=None if fixed else self.max_pixels_per_batch,
            max_batch_size=None if fixed else self.max_batch_size,
            item_weights=item_weights,
            samples_per_epoch=self.samples_per_epoch,
            batches_per_epoch=self.batches_per_epoch,
            shuffle=True,
            seed=self.seed,
        )
        return self._loader(mixed, sampler, resumable=True)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        loaders = []
        for dataset in self._require(split):
            sampler = MixedLengthBatchSampler(
                dataset,
                num_frames=None if self.eval_num_frames is None else [self.eval_num_frames],
                batch_size=self.eval_batch_size,
                shuffle=False,
                even_batches=False,  # under DDP, no sequence is scored twice
                seed=self.seed,
            )
            loaders.append(self._loader(dataset, sampler))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def video_sources(self) -> list[VideoSource]:
        """The inputs found under ``predict_input``, one lazily read `VideoSource` each."""
        if is_live_input(self.predict_input):  # stdin, a stream URL or a camera: read as it arrives
            return [LiveSource(self.predict_input, live_format=self.live_format, **self.video_options)]
        root = Path(self.predict_input)
        if root.is_file():  # one video named on its own
            return [VideoSource(root, name=output_name(root, root.parent), **self.video_options)]
        if not root.is_dir():
            raise FileNotFoundError(f"predict input {str(root)!r} does not exist (a video file or a folder)")
        paths = find_inputs(root, glob=self.predict_glob)
        if not paths:
            raise FileNotFoundError(
                f"no videos or image sequences found in {str(root)!r}"
                + (f" matching {self.predict_glob!r}" if self.predict_glob else "")
            )
        return [VideoSource(p, name=output_name(p, root), **self.video_options) for p in paths]

    def predict_dataloader(self) -> list[DataLoader] | DataLoader:
        if self.predict_input is None:
            return self._eval_loaders("predict")
        # One video per step, handed over unread: the task streams it through its strategy.
        sources = self.video_sources()
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Several processes (multi-GPU predict): each takes every world_size-th video, so each
            # video is predicted and written by exactly one rank.
            sources = sources[trainer.global_rank :: trainer.world_size]
        return DataLoader(sources, batch_size=None, shuffle=False, collate_fn=_identity)
