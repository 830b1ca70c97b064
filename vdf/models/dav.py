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
:func:`vdf.models.rope.temporal_positions`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.models.unets.unet_spatio_temporal_condition import UNetSpatioTemporalConditionModel
from torch import nn

from vdf.models.convert import StateDictMismatchError, load_state_dict_strict
from vdf.models.rope import enable_temporal_rope
from vdf.models.svd import constructor_kwargs

__all__ = [
    "DAV_HF_REPO",
    "dav_unet_kwargs",
    "build_dav_unet",
    "find_unet_weights",
    "read_unet_state_dict",
    "load_dav_unet",
    "expand_conv_in",
]

logger = logging.getLogger(__name__)

DAV_HF_REPO = "hhyangcs/depth-any-video"
_WHERE = (
    f"Depth Any Video UNets are the folders 'unet' (8 input channels) and 'unet_interp' "
    f"(16 input channels) of the Hugging Face repo {DAV_HF_REPO}; download one and pass its path"
)
# diffusers' file names, in order of preference (full precision before the fp16 variant).
_WEIGHT_NAMES: dict[str | None, tuple[str, ...]] = {
    None: (
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.bin.index.json",
    ),
    "fp16": (
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.safetensors.index.fp16.json",
        "diffusion_pytorch_model.fp16.bin",
        "diffusion_pytorch_model.bin.index.fp16.json",
    ),
}


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


def find_unet_weights(folder: str | Path, variant: str | None = None) -> Path:
    """The weights file of a diffusers-format UNet folder: ``diffusion_pytorch_model.safetensors``,
    a sharded ``.safetensors.index.json``, the ``.fp16`` variant, or the ``.bin`` equivalents.

    ``variant=None`` tries full precision first, then fp16; ``variant='fp16'`` only fp16.
    """
    folder = Path(folder)
    if variant not in (None, "fp16"):
        raise ValueError(f"variant must be None or 'fp16', got {variant!r}")
    names = _WEIGHT_NAMES["fp16"] if variant == "fp16" else _WEIGHT_NAMES[None] + _WEIGHT_NAMES["fp16"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"no UNet weights in {folder} (looked for {', '.join(names)}). {_WHERE}."
    )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"UNet weight shard not found: {path}. {_WHERE}.")
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def read_unet_state_dict(folder: str | Path, variant: str | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers-format UNet folder's weights (single file or shards), on CPU."""
    path = find_unet_weights(folder, variant)
    if not path.name.endswith(".json"):
        return _read_weights_file(path)
    index = json.loads(path.read_text())
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{path} has no 'weight_map' of key -> shard file")
    state_dict: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(_read_weights_file(path.parent / shard))
    missing = sorted(k for k in weight_map if k not in state_dict)
    if missing:
        raise StateDictMismatchError(
            f"{path} lists {len(missing)} key(s) its shards do not hold, e.g. {missing[:5]}"
        )
    return state_dict


def load_dav_unet(
    folder: str | Path, dtype: torch.dtype = torch.float32, variant: str | None = None
) -> UNetSpatioTemporalConditionModel:
    """A DAV UNet (``unet`` or ``unet_interp``) from its diffusers-format folder, loaded strictly.

    Reads ``<folder>/config.json`` (``in_channels`` 8 or 16 comes from it) and the weights (see
    :func:`find_unet_weights`). The model is built without initialising parameters, then every
    parameter is filled from the checkpoint and cast to ``dtype``.

    Raises:
        FileNotFoundError: the folder, its ``config.json`` or its weights are missing; the message
            names the path and the Hugging Face repo the folders come from.
        StateDictMismatchError: missing / unexpected keys or shape mismatches, listed, with the folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Depth Any Video UNet folder not found: {folder}. {_WHERE}.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"UNet config not found: {config_path}. {_WHERE}.")
    config = json.loads(config_path.read_text())
    state_dict = read_unet_state_dict(folder, variant)

    with torch.device("meta"):
        unet = build_dav_unet(config)
    unet = unet.to_empty(device="cpu").to(dtype)
    try:
        load_state_dict_strict(unet, state_dict, source=f"Depth Any Video UNet weights in {folder}")
    except StateDictMismatchError as err:
        hint = ""
        if any(k.startswith("add_embedding.") or ".time_pos_embed." in k for k in state_dict):
            hint = (
                "\nthe checkpoint has add_embedding / time_pos_embed keys: it looks like an SVD "
                "UNet, not a Depth Any Video one"
            )
        raise StateDictMismatchError(f"{err}{hint}") from None
    return unet.eval()


def expand_conv_in(unet: UNetSpatioTemporalConditionModel, in_channels: int = 16) -> UNetSpatioTemporalConditionModel:
    """Widen ``unet.conv_in`` to ``in_channels`` inputs, in place, as DAV initialises ``unet_interp``.

    The new weight is the old one repeated ``k = in_channels / C`` times along the input channels
    and divided by ``k`` (``cat([W, W], 1) / 2`` for 8 -> 16); the bias is unchanged. At
    initialisation the widened UNet therefore gives exactly the old output when the input is the
    old one repeated ``k`` times along channels. ``unet.config.in_channels`` is updated.
    """
    old = unet.conv_in
    if in_channels % old.in_channels:
        raise ValueError(
            f"in_channels={in_channels} is not a multiple of conv_in's {old.in_channels} input channels"
        )
    k = in_channels // old.in_channels
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(old.weight.repeat(1, k, 1, 1) / k)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet
