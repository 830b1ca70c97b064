"""The data contracts shared by every dataset, sampler, model and metric (see DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch


class SampleMeta(TypedDict, total=False):
    dataset: str  # dataset name, e.g. "synthetic_world", "sintel"
    sequence: str  # sequence name inside the dataset
    paths: list[str]  # source files the sample was read from (empty for procedural data)


class _SampleRequired(TypedDict):
    video: torch.Tensor  # float32 (T,3,H,W) in [0,1]
    depth: torch.Tensor  # float32 (T,1,H,W) metres, 0 where unknown
    valid: torch.Tensor  # bool    (T,1,H,W)
    frame_index: torch.Tensor  # int64   (T,) the frames' original numbers in their video (increasing)
    meta: SampleMeta


class Sample(_SampleRequired, total=False):
    """One clip. Batches add a leading ``B`` to every tensor; ``meta`` becomes a list of dicts."""

    intrinsics: torch.Tensor  # float32 (T,3,3) pinhole K in pixels of this (H,W)
    cam_to_world: torch.Tensor  # float32 (T,4,4) OpenCV convention (x right, y down, z forward)


@dataclass(frozen=True)
class ClipRequest:
    """What a batch sampler asks a dataset for: item ``index`` restricted to ``frames``.

    ``frames`` are indices into the item's sequence, increasing, possibly with gaps (stride or
    frame dropout). The loaded sample's ``frame_index`` holds these frames' original numbers:
    the same values for datasets whose sequences are their videos' frames 0..N-1, the dataset's
    own frame numbers otherwise (files numbered from 1, a benchmark selection such as every third
    frame, gaps in the numbering). Only order and spacing carry meaning (RoPE, TAE).
    """

    index: int
    frames: tuple[int, ...]
