"""Converters between official checkpoint layouts and vdf module names, and strict loading.

Depth-Anything-V2 (``depth_anything_v2_{vits,vitb,vitl}.pth``): a flat ``{name: tensor}`` dict whose
names are DAv2's module names (``pretrained.*`` DINOv2, ``depth_head.*`` DPT). vdf's
:class:`~vdf.models.dav2.DepthAnythingV2` uses the same names, with one exception: ViT-g's SwiGLU
FFN, which is ``mlp.w12`` / ``mlp.w3`` officially and ``mlp.fc1`` / ``mlp.fc2`` in timm (same
shapes, same computation: ``w3(silu(a) * b)`` with ``a, b = w12(x).chunk(2)``). The converter
is therefore a rename of those two plus unwrapping (``{'model': ...}``, ``{'state_dict': ...}``,
``module.`` prefixes); :func:`load_state_dict_strict` does the strict validation with readable
errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "StateDictMismatchError",
    "unwrap_state_dict",
    "dav2_official_to_vdf",
    "vdf_to_dav2_official",
    "guess_dav2_variant",
    "load_state_dict_strict",
]

_SHOW = 5  # how many names an error message lists per category
_SWIGLU_OFFICIAL_TO_TIMM = {"w12": "fc1", "w3": "fc2"}
_SWIGLU_TIMM_TO_OFFICIAL = {v: k for k, v in _SWIGLU_OFFICIAL_TO_TIMM.items()}
_MLP_KEY = re.compile(
    r"^(?P<pre>(?:.*\.)?blocks\.\d+\.mlp\.)(?P<layer>w12|w3|fc1|fc2)(?P<post>\.(?:weight|bias))$"
)
_VARIANTS = {(384, 12): "vits", (768, 12): "vitb", (1024, 24): "vitl", (1536, 40): "vitg"}


class StateDictMismatchError(RuntimeError):
    """A checkpoint does not fit the module: missing/unexpected keys or wrong shapes."""


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Return the flat ``{name: tensor}`` dict inside a loaded checkpoint.

    Accepts a flat dict, or one wrapped (possibly repeatedly) in ``{'model': ...}`` or
    ``{'state_dict': ...}``; strips a ``module.`` prefix (DataParallel / DDP saves) from every key
    that has it.
    """
    while isinstance(obj, Mapping) and not _is_flat_tensor_dict(obj):
        for wrapper in ("model", "state_dict", "module"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        else:
            raise StateDictMismatchError(
                "checkpoint is neither a flat {name: tensor} dict nor wrapped in 'model' / "
                f"'state_dict'; top-level keys: {_preview(list(obj))}"
            )
    if not isinstance(obj, Mapping):
        raise StateDictMismatchError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in out:
            raise StateDictMismatchError(f"key {name!r} appears both with and without 'module.' prefix")
        out[name] = value
    return out


def _is_flat_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _rename_mlp(state_dict: Mapping[str, torch.Tensor], table: dict[str, str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        m = _MLP_KEY.match(key)
        name = key
        if m is not None and m["layer"] in table:
            name = f"{m['pre']}{table[m['layer']]}{m['post']}"
        if name in out:
            raise StateDictMismatchError(
                f"two checkpoint keys map to {name!r} (e.g. both mlp.w12 and mlp.fc1)"
            )
        out[name] = value
    return out


def dav2_official_to_vdf(state_dict: Any) -> dict[str, torch.Tensor]:
    """Official DAv2 checkpoint (flat or wrapped) -> :class:`DepthAnythingV2` ``state_dict`` names.

    Renames ViT-g SwiGLU ``blocks.{i}.mlp.w12`` / ``mlp.w3`` to ``mlp.fc1`` / ``mlp.fc2``; every
    other name is kept. Tensors are not copied.
    """
    flat = unwrap_state_dict(state_dict)
    return _rename_mlp(flat, _SWIGLU_OFFICIAL_TO_TIMM)


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


def _preview(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return f"{shown}, ... ({len(names)} in total)" if len(names) > _SHOW else shown


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    expected_variant: str | None = None,
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with errors a person can act on.

    Raises:
        StateDictMismatchError: listing the counts and first names of missing and unexpected
            keys, or each mismatching key with both shapes; when the checkpoint's encoder differs
            from ``expected_variant`` the message says which variant it looks like.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or shapes):
        module.load_state_dict(dict(state_dict), strict=True)
        return
    lines = [f"{source} does not match {type(module).__name__}"]
    guess = guess_dav2_variant(state_dict)
    if guess is not None and expected_variant is not None and guess != expected_variant:
        lines[0] += f": the checkpoint looks like {guess}, the model was built as {expected_variant}"
    if missing:
        lines.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    for key, got, want in shapes[:_SHOW]:
        lines.append(f"shape mismatch for {key}: checkpoint {got} vs model {want}")
    if len(shapes) > _SHOW:
        lines.append(f"... {len(shapes)} shape mismatches in total")
    raise StateDictMismatchError("\n".join(lines))
