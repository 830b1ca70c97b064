"""Collating clips into batches."""

from __future__ import annotations

from typing import Any

import torch

from vdf.data.types import Sample


def collate_clips(samples: list[Sample]) -> dict[str, Any]:
    """Stack ``B`` clips of equal ``(T, H, W)`` into one batch.

    Tensors gain a leading ``B``: ``video`` ``(B,T,3,H,W)``, ``depth`` ``(B,T,1,H,W)``, ``valid``
    ``(B,T,1,H,W)``, ``frame_index`` ``(B,T)``, and ``intrinsics`` ``(B,T,3,3)`` /
    ``cam_to_world`` ``(B,T,4,4)``. A key is kept only when every sample has it (optional keys such
    as ``intrinsics`` are dropped if one clip lacks them). ``meta`` becomes a list of ``B`` dicts;
    any other non-tensor value becomes a list too.

    Raises:
        ValueError: if the samples cannot be stacked; the message names the key and the shapes
            (``MixedLengthBatchSampler`` guarantees equal ``(T, H, W)`` inside a batch).
    """
    if not samples:
        raise ValueError("collate_clips got an empty list of samples")
    keys = [k for k in samples[0] if all(k in s for s in samples[1:])]
    batch: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in samples]
        if key == "meta" or not all(isinstance(v, torch.Tensor) for v in values):
            batch[key] = [dict(v) if key == "meta" else v for v in values]
            continue
        shapes = [tuple(v.shape) for v in values]
        if len(set(shapes)) > 1:
            names = [_describe(s, i) for i, s in enumerate(samples)]
            listing = ", ".join(f"{n}: {shape}" for n, shape in zip(names, shapes))
            raise ValueError(
                f"cannot stack '{key}' of {len(samples)} samples with different shapes ({listing}); "
                "a batch must share (T, H, W) — use MixedLengthBatchSampler or resize to one size"
            )
        batch[key] = torch.stack(values)
    return batch


def _describe(sample: Sample, position: int) -> str:
    meta = sample.get("meta") or {}
    name = "/".join(str(meta[k]) for k in ("dataset", "sequence") if k in meta)
    return f"#{position} {name}" if name else f"#{position}"
