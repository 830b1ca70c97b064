"""Depth-Anything-V2 (Yang et al., NeurIPS 2024): DINOv2 ViT + DPT head, per frame.

:class:`DepthAnythingV2` keeps the official attribute names (``pretrained`` = the ViT,
``depth_head`` = the DPT), so its ``state_dict`` has the official key names and the released
``depth_anything_v2_{vits,vitb,vitl}.pth`` load strictly (its ``weights`` argument,
:meth:`DepthAnythingV2.from_checkpoint`). `vdf.predictors.FramePredictor` runs it on videos, frame by
frame, with the official pre-processing.

The official layout (``depth_anything_v2_*.pth``) is a flat ``{name: tensor}`` dict under DAv2's
module names (``pretrained.*`` DINOv2, ``depth_head.*`` DPT) with one exception: ViT-g's SwiGLU
FFN, which is ``mlp.w12`` / ``mlp.w3`` officially and ``mlp.fc1`` / ``mlp.fc2`` in timm (same
shapes, same computation: ``w3(silu(a) * b)`` with ``a, b = w12(x).chunk(2)``). The converter
(:func:`dav2_official_to_vdf`) is therefore a rename of those two after unwrapping
(`vdf.models.weights.unwrap_state_dict`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdf.models.dinov2 import PATCH_SIZE, DINOv2, check_patch_multiple
from vdf.models.dpt import DPTHead, StageHook
from vdf.models.weights import StateDictMismatchError, load_weights, unwrap_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DPT width and per-level projection widths of the released models.
DPT_CONFIGS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "vits": (64, (48, 96, 192, 384)),
    "vitb": (128, (96, 192, 384, 768)),
    "vitl": (256, (256, 512, 1024, 1024)),
    "vitg": (384, (1536, 1536, 1536, 1536)),
}

_HF_REPOS = {
    "vits": "depth-anything/Depth-Anything-V2-Small",
    "vitb": "depth-anything/Depth-Anything-V2-Base",
    "vitl": "depth-anything/Depth-Anything-V2-Large",
}


def _weights_hint(encoder: str) -> str:
    repo = _HF_REPOS.get(encoder)
    if repo is None:
        return (
            f"no official Depth-Anything-V2 checkpoint was released for {encoder!r}; "
            "the released ones are vits, vitb and vitl"
        )
    return (
        f"depth_anything_v2_{encoder}.pth is in the Depth-Anything-V2 release on the Hugging Face hub "
        f"(https://huggingface.co/{repo}): pass a local copy, or hf://{repo}/depth_anything_v2_{encoder}.pth"
    )


# -- the official checkpoint layout -------------------------------------------------------------

_SWIGLU_OFFICIAL_TO_TIMM = {"w12": "fc1", "w3": "fc2"}
_SWIGLU_TIMM_TO_OFFICIAL = {v: k for k, v in _SWIGLU_OFFICIAL_TO_TIMM.items()}
_MLP_KEY = re.compile(r"^(?P<pre>(?:.*\.)?blocks\.\d+\.mlp\.)(?P<layer>w12|w3|fc1|fc2)(?P<post>\.(?:weight|bias))$")
_VARIANTS = {(384, 12): "vits", (768, 12): "vitb", (1024, 24): "vitl", (1536, 40): "vitg"}


def dav2_official_to_vdf(state_dict: Any) -> dict[str, torch.Tensor]:
    """Official DAv2 checkpoint (flat or wrapped) -> :class:`DepthAnythingV2` ``state_dict`` names.

    Renames ViT-g SwiGLU ``blocks.{i}.mlp.w12`` / ``mlp.w3`` to ``mlp.fc1`` / ``mlp.fc2``; every
    other name is kept. Tensors are not copied.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in unwrap_state_dict(state_dict).items():
        m = _MLP_KEY.match(key)
        name = key
        if m is not None and m["layer"] in _SWIGLU_OFFICIAL_TO_TIMM:
            name = f"{m['pre']}{_SWIGLU_OFFICIAL_TO_TIMM[m['layer']]}{m['post']}"
        if name in out:
            raise StateDictMismatchError(f"two checkpoint keys map to {name!r} (e.g. both mlp.w12 and mlp.fc1)")
        out[name] = value
    return out


def vdf_to_dav2_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`dav2_official_to_vdf` for a vdf ``state_dict``.

    A block's ``mlp.fc1`` / ``mlp.fc2`` are renamed to ``w12`` / ``w3`` only when they are a packed
    SwiGLU, recognised by shape (``fc1`` rows == 2 x ``fc2`` columns; a GELU MLP has equal widths).
    """
    swiglu_prefixes = set()
    for key, value in state_dict.items():
        m = _MLP_KEY.match(key)
        if m is None or m["layer"] != "fc1" or m["post"] != ".weight":
            continue
        fc2 = state_dict.get(f"{m['pre']}fc2.weight")
        if fc2 is not None and value.shape[0] == 2 * fc2.shape[1]:
            swiglu_prefixes.add(m["pre"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _MLP_KEY.match(key)
        if m is not None and m["pre"] in swiglu_prefixes:
            key = f"{m['pre']}{_SWIGLU_TIMM_TO_OFFICIAL[m['layer']]}{m['post']}"
        out[key] = value
    return out


def guess_dav2_variant(state_dict: Mapping[str, torch.Tensor], prefix: str = "pretrained.") -> str | None:
    """Name the DINOv2 variant a state dict was saved from (``'vitb'``, ...) or describe its shape."""
    emb = state_dict.get(f"{prefix}cls_token")
    if emb is None:
        emb = state_dict.get(f"{prefix}patch_embed.proj.weight")
    if emb is None:
        return None
    dim = emb.shape[-1] if emb.ndim == 3 else emb.shape[0]
    blocks = [int(m[1]) for k in state_dict if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))]
    depth = max(blocks) + 1 if blocks else 0
    return _VARIANTS.get((dim, depth), f"a custom ViT (embed_dim {dim}, depth {depth})")


# -- the network ---------------------------------------------------------------------------------


class DepthAnythingV2(nn.Module):
    """Per-image relative depth network: ``(B,3,H,W)`` normalised images -> ``(B,1,H,W)`` disparity.

    Args:
        encoder: DINOv2 variant, ``"vits" | "vitb" | "vitl" | "vitg"``.
        features: DPT fusion width (default per encoder: 64 / 128 / 256 / 384).
        out_channels: DPT per-level widths (default per encoder, e.g. ``[48, 96, 192, 384]`` for S).
        embed_dim, depth, num_heads, layer_indices: encoder overrides (see :class:`DINOv2`),
            used by the tiny CPU configs, e.g. ``embed_dim=48, depth=4, num_heads=2,
            layer_indices=[0, 1, 2, 3], features=16, out_channels=[8, 16, 32, 48]``.
        weights: optional path to an official ``depth_anything_v2_<encoder>.pth``, loaded
            strictly at construction (handy in YAML; same as :meth:`from_checkpoint`).
        device: where to allocate (``"meta"`` builds the module without memory).

    The output is relative (affine-invariant) disparity: larger is nearer, unknown scale and
    shift, ``>= 0`` (FlashDepth's authors note the official outputs are "in the hundreds").
    """

    def __init__(
        self,
        encoder: str = "vitl",
        features: int | None = None,
        out_channels: Sequence[int] | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        layer_indices: Sequence[int] | None = None,
        weights: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if encoder not in DPT_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(DPT_CONFIGS)}")
        default_features, default_oc = DPT_CONFIGS[encoder]
        self.encoder = encoder
        self.pretrained = DINOv2(
            encoder,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            layer_indices=layer_indices,
            device=device,
        )
        with torch.device(device) if device is not None else nullcontext():
            self.depth_head = DPTHead(
                self.pretrained.embed_dim,
                features=default_features if features is None else features,
                out_channels=list(default_oc if out_channels is None else out_channels),
            )
        if weights is not None:
            self.load_official(weights)

    @property
    def layer_indices(self) -> list[int]:
        return self.pretrained.layer_indices

    def encode(self, images: torch.Tensor) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """ViT features for the DPT: four ``(B, ph*pw, D)`` token tensors and ``(ph, pw)``."""
        patch_hw = check_patch_multiple(images.shape[-2], images.shape[-1], PATCH_SIZE)
        return self.pretrained.get_intermediate_layers(images, self.layer_indices), patch_hw

    def forward(self, images: torch.Tensor, hook: StageHook | None = None) -> torch.Tensor:
        """Relative disparity.

        Args:
            images: ``(B, 3, H, W)`` ImageNet-normalised RGB, H and W multiples of 14.
            hook: optional ``hook(stage, path) -> path`` applied after each DPT fusion stage
                (see :mod:`vdf.models.dpt`).

        Returns:
            ``(B, 1, H, W)`` non-negative relative disparity.
        """
        feats, patch_hw = self.encode(images)
        # Official: F.relu on the head output (whose last layer is already a ReLU; harmless).
        return F.relu(self.depth_head(feats, patch_hw, hook))

    def load_official(self, path: str | os.PathLike) -> None:
        """Load an official ``depth_anything_v2_*.pth`` strictly (see :meth:`from_checkpoint`)."""
        load_weights(
            self,
            os.fspath(path),
            "Depth-Anything-V2 weights",
            _weights_hint(self.encoder),
            convert=dav2_official_to_vdf,
            describe=guess_dav2_variant,
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, encoder: str = "vitl", **kwargs) -> DepthAnythingV2:
        """Build a model and load an official checkpoint strictly.

        Args:
            path: local ``depth_anything_v2_{vits,vitb,vitl}.pth`` (flat dict, or wrapped in
                ``{'model': ...}`` / ``{'state_dict': ...}``, optionally with ``module.`` prefixes).
            encoder: the variant the file was trained with.
            **kwargs: other constructor arguments (``features``, ``out_channels``, ...).

        Raises:
            FileNotFoundError: the file is missing (the message says where to get it).
            vdf.models.weights.StateDictMismatchError: keys or shapes do not match; the message
                lists them and names the variant the checkpoint looks like.
        """
        model = cls(encoder, **kwargs)
        model.load_official(path)
        return model


def processing_size(height: int, width: int, input_size: int = 518, multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """The official DAv2 resize target ``(H', W')`` for a ``height x width`` frame.

    ``Resize(keep_aspect_ratio=True, resize_method='lower_bound', ensure_multiple_of=14)``:
    scale = max(input_size / h, input_size / w) (the short side goes to ``input_size``); each
    scaled side is rounded to the nearest multiple of 14 (round-half-to-even, like ``np.round``)
    and, if that falls below ``input_size``, ceiled to a multiple of 14 instead.
    Example: 1080 x 1920 -> 518 x 924.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")
    scale = max(input_size / height, input_size / width)

    def constrain(x: float) -> int:
        y = int(round(x / multiple) * multiple)
        if y < input_size:
            y = int(math.ceil(x / multiple) * multiple)
        return y

    return constrain(scale * height), constrain(scale * width)


def normalize_imagenet(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` in [0, 1] -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std


def preprocess_frames(frames: torch.Tensor, input_size: int = 518, antialias: bool = False) -> torch.Tensor:
    """``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, H', W')`` ImageNet-normalised at :func:`processing_size`.

    Bicubic resize (antialiased only when asked and downscaling), as DAv2's preprocessing.
    """
    h, w = frames.shape[-2:]
    size = processing_size(h, w, input_size)
    if size != (h, w):
        downscale = size[0] < h or size[1] < w
        frames = F.interpolate(
            frames, size=size, mode="bicubic", align_corners=False, antialias=antialias and downscale
        )
    return normalize_imagenet(frames)
