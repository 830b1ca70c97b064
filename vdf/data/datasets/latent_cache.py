"""A training set's video latents and image embeddings on disk, and the dataset that trains from them.

``vdf cache-latents`` (`vdf.cache`) encodes every frame of every item of a training dataset once
with the model's frozen VAE and image encoder and writes one file per item here; `LatentCache`
then wraps the same dataset and adds the cached values of the requested frames to each sample,
so the SVD-family tasks skip the video encoding (`vdf.tasks.latent_diffusion`).

Folder layout::

    DIR/cache.json              key (model and dataset), item lengths and sizes, complete flag
    DIR/items/000000.safetensors  mean (L,4,h,w) [, std (L,4,h,w)], embeddings (L,1,D) of item 0's L frames

Each item file is written whole or not at all (`vdf.io.atomic`), so an interrupted run leaves
only complete files and a rerun goes on from the first missing one. ``cache.json`` says
``complete: false`` until every item is written; an incomplete cache is refused for training.

What is fixed when the cache is made, and what stays random in training:

- **Per frame, fixed**: the frames as the wrapped dataset returns them (its crop, resize and
  colour handling: vdf datasets are deterministic), the VAE posterior of each frame, the image
  embedding, and the noise augmentation of the video (DepthCrafter adds ``0.02 * N(0,1)`` in
  [-1,1] before encoding; the cache draws it once per frame, from ``augmentation_seed``, the item
  and the frame number: `augmentation_noise`).
- **Random in training, as without the cache**: which clips the sampler draws (item, length,
  stride, start, frame dropout: any clip of the sequence is served, nothing about clips is fixed),
  the posterior sample of models that sample their video latents (ChronoDepth: ``mean + std * eps``
  drawn every step), the diffusion noise level and noise, and the depth target (normalised over
  the drawn clip and VAE-encoded every step: its normalisation depends on the clip's frames).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdf.data.datasets.base import VideoDepthDataset
from vdf.data.types import Sample
from vdf.io.atomic import atomic_path, fsync_dir, fsync_file, remove_path, tmp_base, write_json_atomic

FORMAT = 1
INDEX = "cache.json"
#: The sample keys a cache adds (each ``(T, ...)``; batches ``(B,T,...)``).
MEAN, STD, EMBEDDINGS = "video_latents", "video_latents_std", "image_embeddings"
_FILE_KEYS = {"mean": MEAN, "std": STD, "embeddings": EMBEDDINGS}
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StaleCacheError(ValueError):
    """A latent cache that does not match the model or the dataset it is used with."""


def augmentation_noise(seed: int, item: int, frame: int, shape: Sequence[int]) -> torch.Tensor:
    """The unit Gaussian noise of frame ``frame`` of item ``item``'s noise augmentation (float32).

    One generator per frame, seeded from ``(seed, item, frame)``: a frame's noise does not depend
    on which other frames are encoded with it or on the order of encoding (resume-safe).
    """
    state = np.random.SeedSequence([seed, item, frame]).generate_state(2, dtype=np.uint32)
    g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
    return torch.randn(tuple(shape), generator=g)


def dataset_description(dataset: VideoDepthDataset) -> dict[str, Any]:
    """What identifies a dataset's frames: its class and its plain settings (public attributes
    that are numbers, strings, booleans or lists of them: root folders, sizes, crops, seeds)."""

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    def short(v: Any) -> Any:
        # Long lists (file lists of big datasets) enter by digest, so the index stays small.
        if isinstance(v, (list, tuple)) and len(v) > 32:
            text = json.dumps(list(v), sort_keys=True, default=str)
            return f"{len(v)} entries, sha256 {hashlib.sha256(text.encode()).hexdigest()[:16]}"
        return list(v) if isinstance(v, tuple) else v

    settings = {k: short(v) for k, v in sorted(vars(dataset).items()) if not k.startswith("_") and plain(v)}
    cls = type(dataset)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "settings": json.loads(json.dumps(settings))}


def describe_differences(found: dict[str, Any], expected: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: cache has A, now B`` for every entry (nested with dots) that differs."""
    out = []
    for key in sorted(set(found) | set(expected)):
        a, b = found.get(key, "<absent>"), expected.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += describe_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: cache has {a!r}, now {b!r}")
    return out


def read_index(folder: str | Path) -> dict[str, Any] | None:
    """The cache's ``cache.json``, or None when the folder holds none."""
    path = Path(folder) / INDEX
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise StaleCacheError(f"latent cache {folder}: {INDEX} is not valid JSON ({error})") from None


def _item_path(folder: Path, item: int) -> Path:
    return folder / "items" / f"{item:06d}.safetensors"


class LatentCacheWriter:
    """Writes (or resumes) the cache of one dataset in ``folder``.

    Args:
        folder: the cache folder (created).
        dataset: the dataset whose items are cached.
        encoder: the model's side of the key (`vdf.models.latent_cache.encoder_key`).
        augmentation_seed: seed of the per-frame noise augmentation draws.
        storage_dtype: dtype of the stored tensors (``float32`` keeps the encoding's values;
            ``float16`` halves the disk at the cost of rounding).
        overwrite: start afresh when the folder holds a cache with another key (otherwise refused).
    """

    def __init__(
        self,
        folder: str | Path,
        dataset: VideoDepthDataset,
        encoder: dict[str, Any],
        augmentation_seed: int = 0,
        storage_dtype: str = "float32",
        overwrite: bool = False,
    ):
        if storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
        self.folder = Path(folder)
        self.dataset = dataset
        self.dtype = STORAGE_DTYPES[storage_dtype]
        self.key = {
            "format": FORMAT,
            "encoder": encoder,
            "dataset": dataset_description(dataset),
            "augmentation_seed": int(augmentation_seed),
            "storage_dtype": storage_dtype,
        }
        self.augmentation_seed = int(augmentation_seed)
        self.lengths = [int(dataset.sequence_length(i)) for i in range(len(dataset))]
        self.sizes = [[int(v) for v in dataset.frame_size(i)] for i in range(len(dataset))]
        earlier = read_index(self.folder)
        if earlier is not None and not overwrite:
            differences = describe_differences(earlier.get("key", {}), self.key)
            differences += [] if earlier.get("lengths") == self.lengths else ["item lengths differ"]
            differences += [] if earlier.get("sizes") == self.sizes else ["frame sizes differ"]
            if differences:
                raise StaleCacheError(
                    f"latent cache {self.folder} was made with other settings: {'; '.join(differences)}. "
                    "Use another --output folder, or --overwrite true to replace it"
                )
        elif earlier is not None:
            remove_path(self.folder / "items")
        (self.folder / "items").mkdir(parents=True, exist_ok=True)
        # Leftovers of an interrupted write (hidden temporary siblings) are never outputs.
        for leftover in (self.folder / "items").iterdir():
            if tmp_base(leftover.name) is not None:
                remove_path(leftover)
        self._write_index(complete=False)

    def _write_index(self, complete: bool) -> None:
        write_json_atomic(
            self.folder / INDEX,
            {
                "key": self.key,
                "items": len(self.lengths),
                "lengths": self.lengths,
                "sizes": self.sizes,
                "complete": complete,
            },
        )

    def done(self, item: int) -> bool:
        """Whether item ``item`` is written (files appear whole, so existing means complete)."""
        return _item_path(self.folder, item).is_file()

    def pending(self) -> list[int]:
        """Items still to encode."""
        return [i for i in range(len(self.lengths)) if not self.done(i)]

    def noise(self, item: int, frames: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
        """The augmentation noise ``(len(frames), *shape)`` of these frames of ``item``."""
        return torch.stack([augmentation_noise(self.augmentation_seed, item, f, shape) for f in frames])

    def write(self, item: int, entries: dict[str, torch.Tensor]) -> None:
        """Store item ``item``'s entries (``mean``, optional ``std``, ``embeddings``; one row per frame)."""
        from safetensors.torch import save_file

        length = self.lengths[item]
        for name, value in entries.items():
            if name not in _FILE_KEYS:
                raise ValueError(f"unknown cache entry {name!r} (expected {sorted(_FILE_KEYS)})")
            if value.shape[0] != length:
                raise ValueError(f"item {item}: {name} has {value.shape[0]} frames, the sequence {length}")
        tensors = {k: v.detach().to("cpu", self.dtype).contiguous() for k, v in entries.items()}
        path = _item_path(self.folder, item)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))
            fsync_file(tmp)
        fsync_dir(path.parent)

    def finish(self) -> None:
        """Mark the cache complete (every item written)."""
        missing = self.pending()
        if missing:
            raise RuntimeError(f"latent cache {self.folder}: items {missing[:5]} are not written yet")
        self._write_index(complete=True)


class LatentCache(VideoDepthDataset):
    """A dataset whose samples also carry their frames' cached video latents and image embeddings.

    Wraps the dataset the cache was made from (the same class and settings: checked here) and adds
    to every sample ``video_latents`` ``(T,4,h,w)`` (the VAE posterior mean, unscaled),
    ``video_latents_std`` ``(T,4,h,w)`` when cached, and ``image_embeddings`` ``(T,1,D)``, for the
    frames the sampler requested. The model side of the key (VAE and image-encoder weights,
    conditioning settings) is checked by the task before training (`check_encoder`).

    Args:
        cache: the folder ``vdf cache-latents`` wrote for this dataset.
        dataset: the dataset the cache was made from; it still provides depth, masks, frame
            indices and the video.
    """

    def __init__(self, cache: str, dataset: VideoDepthDataset):
        self.folder = Path(cache)
        self.dataset = dataset
        self.name = dataset.name
        self.max_depth = dataset.max_depth
        self.inference_size = dataset.inference_size
        index = read_index(self.folder)
        if index is None:
            raise FileNotFoundError(
                f"latent cache {self.folder}: no {INDEX} there; make it with vdf cache-latents --config ... --output DIR"
            )
        if index.get("key", {}).get("format") != FORMAT:
            raise StaleCacheError(
                f"latent cache {self.folder} has format {index.get('key', {}).get('format')}, this vdf reads {FORMAT}"
            )
        self.key = index["key"]
        differences = describe_differences(self.key["dataset"], dataset_description(dataset), "dataset.")
        lengths = [int(dataset.sequence_length(i)) for i in range(len(dataset))]
        sizes = [[int(v) for v in dataset.frame_size(i)] for i in range(len(dataset))]
        if not differences and index.get("lengths") != lengths:
            differences.append(
                f"item lengths: cache has {len(index.get('lengths', []))} items, the dataset {len(lengths)}"
            )
        if not differences and index.get("sizes") != sizes:
            differences.append("frame sizes differ")
        if differences:
            raise StaleCacheError(
                f"latent cache {self.folder} was made from another dataset: {'; '.join(differences)}. "
                "Re-create it with vdf cache-latents"
            )
        if not index.get("complete"):
            raise StaleCacheError(
                f"latent cache {self.folder} is incomplete (an interrupted vdf cache-latents run): run the same "
                "command again to finish it"
            )

    def check_encoder(self, encoder: dict[str, Any]) -> None:
        """Refuse the cache when the model's VAE, image encoder or conditioning settings differ."""
        differences = describe_differences(self.key["encoder"], encoder, "encoder.")
        if differences:
            raise StaleCacheError(
                f"latent cache {self.folder} was made with another model: {'; '.join(differences)}. "
                "Re-create it with vdf cache-latents for this config (or use the config it was made with)"
            )

    def __len__(self) -> int:
        return len(self.dataset)

    def sequence_length(self, index: int) -> int:
        return self.dataset.sequence_length(index)

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.dataset.frame_size(index)

    def cached(self, index: int, frames: Sequence[int]) -> dict[str, torch.Tensor]:
        """The cached entries of ``frames`` of item ``index`` (only their rows are read)."""
        from safetensors import safe_open

        path = _item_path(self.folder, index)
        if not path.is_file():
            raise FileNotFoundError(
                f"latent cache {self.folder}: item file {path} is missing; re-run vdf cache-latents"
            )
        frames = [int(f) for f in frames]
        lo, hi = min(frames), max(frames) + 1
        rows = torch.tensor(frames) - lo
        out = {}
        with safe_open(str(path), framework="pt") as f:
            names = f.keys()
            for name in names:
                out[_FILE_KEYS[name]] = f.get_slice(name)[lo:hi][rows].float()
        return out

    def load(self, index: int, frames: Sequence[int]) -> Sample:
        sample = self.dataset.load(index, frames)
        sample.update(self.cached(index, frames))
        return sample
