"""Depth Any Video (DAV) networks on diffusers' ``UNetSpatioTemporalConditionModel``.

DAV's UNet (``UNetSpatioTemporalRopeConditionModel``) is SVD's with two changes:

- no added-time conditioning: ``add_time_proj`` and ``add_embedding`` do not exist, the time
  embedding is ``time_embedding(time_proj(t))`` alone;
- RoPE over frame positions in temporal attention instead of the sinusoidal frame embedding
  (``time_pos_embed`` / ``time_proj`` of every ``TransformerSpatioTemporalModel`` removed), see
  :mod:`vdf.models.rope`.

Every other parameter name is diffusers', so DAV's ``diffusion_pytorch_model.safetensors`` loads
strictly into the UNet built here. Two checkpoints exist, folders of the Hugging Face repo
``hhyangcs/depth-any-video``: ``unet`` (8 input channels: noisy depth latent + RGB latent) and
``unet_interp`` (16: + masked keyframe depth latent + keyframe mask), the keyframe-conditioned
interpolation network.

The UNet returned here has ``add_embedding is None``: diffusers' own ``forward`` cannot run it
(it always applies ``add_time_proj``); the forward that drives it must skip the added-time
embedding when ``unet.add_embedding is None`` and set RoPE positions (``set_position_ids`` /
:func:`vdf.models.rope.temporal_positions`). ``unet_interp`` was initialised from ``unet`` by
widening ``conv_in`` (`vdf.models.weights.widen_conv_in`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel

from vdf.models.rope import enable_temporal_rope
from vdf.models.svd import constructor_kwargs
from vdf.models.weights import load_weights, read_config

__all__ = [
    "DAV_HF_REPO",
    "build_dav_unet",
    "dav_unet_kwargs",
    "load_dav_unet",
]

logger = logging.getLogger(__name__)

DAV_HF_REPO = "hhyangcs/depth-any-video"
_WHERE = (
    f"Depth Any Video UNets are the folders 'unet' (8 input channels) and 'unet_interp' "
    f"(16 input channels) of the Hugging Face repo {DAV_HF_REPO}: pass a local copy, or "
    f"hf://{DAV_HF_REPO}/unet (or /unet_interp)"
)


def dav_unet_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``UNetSpatioTemporalConditionModel`` found in a DAV-style config.

    Bookkeeping keys (``_class_name``, ``_diffusers_version``, ...) and keys the diffusers class
    does not accept are dropped (the latter logged); see `vdf.models.svd.constructor_kwargs`.
    """
    kwargs = constructor_kwargs(UNetSpatioTemporalConditionModel, dict(config))
    ignored = sorted(k for k in config if k not in kwargs and not k.startswith("_"))
    if ignored:
        logger.info("UNet config keys not used by UNetSpatioTemporalConditionModel: %s", ignored)
    return kwargs


def build_dav_unet(config: Mapping[str, Any], theta: float = 10000.0) -> UNetSpatioTemporalConditionModel:
    """A randomly initialised DAV UNet from a DAV-style config dict (``unet/config.json``).

    The result is a diffusers ``UNetSpatioTemporalConditionModel`` with ``add_time_proj`` and
    ``add_embedding`` set to ``None`` and RoPE temporal attention (:func:`enable_temporal_rope`);
    its state dict has DAV's key names. A wrapper running it must skip the added-time embedding
    when ``unet.add_embedding is None``.
    """
    unet = UNetSpatioTemporalConditionModel(**dav_unet_kwargs(config))
    unet.add_time_proj = None
    unet.add_embedding = None
    return enable_temporal_rope(unet, theta=theta)


def _describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    # SVD's UNet shares every other name: its added-time and frame embeddings tell them apart.
    if any(k.startswith("add_embedding.") or ".time_pos_embed." in k for k in state_dict):
        return "an SVD UNet (it has add_embedding / time_pos_embed keys)"
    return "a Depth Any Video UNet"


def load_dav_unet(
    folder: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None
) -> UNetSpatioTemporalConditionModel:
    """A DAV UNet (``unet`` or ``unet_interp``) from its diffusers-format folder, loaded strictly.

    Reads ``<folder>/config.json`` (``in_channels`` 8 or 16 comes from it) and the weights (any
    layout `vdf.models.weights.read_weights` reads; ``variant='fp16'`` for the fp16 files only).
    The model is built without initialising parameters, then every parameter is filled from the
    checkpoint and cast to ``dtype``.

    Raises:
        FileNotFoundError: the folder, its ``config.json`` or its weights are missing; the message
            names the path and the Hugging Face repo the folders come from.
        StateDictMismatchError: missing / unexpected keys or shape mismatches, listed, with the folder.
    """
    config = read_config(folder, "Depth Any Video UNet weights", _WHERE)
    with torch.device("meta"):
        unet = build_dav_unet(config)
    unet = unet.to_empty(device="cpu").to(dtype)
    load_weights(unet, folder, "Depth Any Video UNet weights", _WHERE, describe=_describe, variant=variant)
    return unet.eval()
