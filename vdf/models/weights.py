"""Weights: reading a local weights source, unwrapping, strict loading, widening ``conv_in``.

A *weights source* is a local path, one of:

- a single file: ``.safetensors`` (read with safetensors), or ``.pth`` / ``.pt`` / ``.bin`` /
  ``.ckpt`` (``torch.load`` with ``weights_only=True``: tensors and plain containers only), holding
  a flat ``{name: tensor}`` dict or one wrapped as official releases and Lightning save it
  (`unwrap_state_dict`);
- a diffusers / transformers folder as ``save_pretrained`` writes it: ``config.json`` (`read_config`)
  and the weights as one file, its ``fp16`` variant, or shards listed by a ``.safetensors`` or
  ``.bin`` index, whose shards must hold every key it lists (`weights_file` gives the order of
  preference).

Every model reads its weights through `read_weights` and loads them with
`load_state_dict_strict` (both joined in `load_weights`), so all of them accept the same
layouts and fail the same way: vdf never downloads, a missing source is a ``FileNotFoundError``
naming the path and saying where the weights come from (the ``where`` sentence each model
supplies), and weights that do not fit are a `StateDictMismatchError` listing the missing and
unexpected keys and the shape mismatches, with the file.

The argument naming rule that goes with it: a module's own weights are its ``weights``
argument; a source that initialises part of a module or a task is ``<part>_weights``
(``dav2_weights``, ``teacher_weights``, ``init_weights``, ...). ``vdf bench`` nulls them by that
name (`is_weights_argument`).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "StateDictMismatchError",
    "is_weights_argument",
    "load_state_dict_strict",
    "load_weights",
    "read_config",
    "read_weights",
    "unwrap_state_dict",
    "weights_file",
    "widen_conv_in",
]

_SHOW = 5  # how many names an error message lists per category
# The single-file names of diffusers (first) and transformers folders, full precision.
_FOLDER_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)
_WRAPPERS = ("model", "state_dict", "module")  # official releases ('model'), Lightning ('state_dict')

StateDict = dict[str, torch.Tensor]


class StateDictMismatchError(RuntimeError):
    """Weights do not fit the module: missing/unexpected keys or wrong shapes."""


def is_weights_argument(name: str) -> bool:
    """Whether a constructor argument names a weights source: ``weights`` or ``<part>_weights``."""
    return name == "weights" or name.endswith("_weights")


# -- reading ------------------------------------------------------------------------------------


def _not_found(message: str, where: str) -> FileNotFoundError:
    return FileNotFoundError(f"{message}. {where}.")


def read_config(folder: str | Path, what: str, where: str) -> dict[str, Any]:
    """``<folder>/config.json`` of a diffusers/transformers folder as a dict.

    Args:
        folder: the folder.
        what: what the weights are, for messages (``"UNet weights"``).
        where: a sentence saying where the weights come from, appended to a not-found error.
    """
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        state = "does not exist" if not folder.exists() else "has no config.json"
        raise _not_found(f"{what} folder {folder} {state}", where)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _folder_names(variant: str | None) -> list[str]:
    """File names a folder's weights may have, in order of preference: full precision before the
    fp16 variant, each as a single file, then as a shard index."""
    names = []
    for fp16 in [False, True] if variant is None else [True]:
        for name in _FOLDER_FILES:
            stem, ext = name.rsplit(".", 1)
            names.append(f"{stem}.fp16.{ext}" if fp16 else name)
            names.append(f"{name}.index.fp16.json" if fp16 else f"{name}.index.json")
    return names


def weights_file(folder: str | Path, what: str, where: str, variant: str | None = None) -> Path:
    """The weights file (or shard index) of a diffusers/transformers folder.

    Args:
        folder: the folder.
        what, where: for messages, see `read_config`.
        variant: None tries full precision, then ``fp16``; ``"fp16"`` only the fp16 variant.
    """
    if variant not in (None, "fp16"):
        raise ValueError(f"variant must be None or 'fp16', got {variant!r}")
    folder = Path(folder)
    names = _folder_names(variant)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    state = "does not exist" if not folder.exists() else f"has no weights (looked for {', '.join(names)})"
    raise _not_found(f"{what} folder {folder} {state}", where)


def _read_file(path: Path) -> Any:
    if path.name.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise StateDictMismatchError(
            f"{path} holds objects other than tensors and plain containers, which vdf does not unpickle "
            f"(weights_only=True); save its state dict alone and load that ({error})"
        ) from error


def _read_shards(index: Path, what: str, where: str) -> StateDict:
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no 'weight_map' of key -> shard file")
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        if not (index.parent / shard).is_file():
            raise _not_found(f"{what} folder {index.parent}: shard {shard} named in {index.name} is missing", where)
        state.update(_read_file(index.parent / shard))
    missing = sorted(k for k in weight_map if k not in state)
    if missing:
        raise StateDictMismatchError(f"{index} lists {len(missing)} key(s) its shards do not hold: {_preview(missing)}")
    return state


def read_weights(path: str | Path, what: str, where: str, variant: str | None = None) -> StateDict:
    """The flat ``{name: tensor}`` state dict of a weights source, on the CPU.

    Args:
        path: a weights file or a diffusers/transformers folder (see the module docstring).
        what: what the weights are, for messages (``"Depth-Anything-V2 weights"``).
        where: a sentence saying where the weights come from, appended to a not-found error.
        variant: for a folder, see `weights_file`.

    Raises:
        FileNotFoundError: the path, a folder's weights or a shard do not exist (with ``where``).
        StateDictMismatchError: an index lists keys its shards do not hold; a file is no state dict.
    """
    path = Path(path)
    if path.is_dir():
        path = weights_file(path, what, where, variant)
        if path.name.endswith(".json"):
            return _read_shards(path, what, where)
    elif not path.is_file():
        raise _not_found(f"{what} not found: {path}", where)
    try:
        return unwrap_state_dict(_read_file(path))
    except StateDictMismatchError as error:
        raise StateDictMismatchError(f"{path}: {error}") from None


def unwrap_state_dict(obj: Any) -> StateDict:
    """The flat ``{name: tensor}`` dict inside a loaded checkpoint.

    Accepts a flat dict, or one wrapped (possibly repeatedly) in ``{'model': ...}`` (official
    releases), ``{'state_dict': ...}`` (Lightning) or ``{'module': ...}``; strips a leading
    ``module.`` (DataParallel / DDP saves) and every ``_orig_mod.`` (``torch.compile``) from the
    keys. Tensors are not copied.
    """
    while isinstance(obj, Mapping) and not _is_flat_tensor_dict(obj):
        for wrapper in _WRAPPERS:
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
    out: StateDict = {}
    for key, value in obj.items():
        name = key.removeprefix("module.").replace("_orig_mod.", "")
        if name in out:
            raise StateDictMismatchError(f"key {name!r} appears with and without a 'module.' / '_orig_mod.' prefix")
        out[name] = value
    return out


def _is_flat_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _preview(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return f"{shown}, ... ({len(names)} in total)" if len(names) > _SHOW else shown


# -- loading ------------------------------------------------------------------------------------

#: Names what a state dict looks like (``"vitb"``, ``"FlashDepth-S"``), or None when it cannot tell.
Describe = Callable[[Mapping[str, torch.Tensor]], str | None]


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
    describe: Describe | None = None,
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with errors a person can act on.

    Args:
        module: the module to fill.
        state_dict: tensors under the module's names (cast to each parameter's dtype on copy).
        source: what the tensors are and where they come from, first in the message.
        describe: names what a state dict looks like; when the checkpoint's description differs
            from the module's, the message says both (e.g. the encoder variant).

    Raises:
        StateDictMismatchError: listing the counts and first names of missing and unexpected
            keys, and each mismatching key with both shapes.
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
    if describe is not None:
        theirs, ours = describe(state_dict), describe(own)
        if theirs is not None and ours is not None and theirs != ours:
            lines[0] += f": the checkpoint looks like {theirs}, the model was built as {ours}"
    if missing:
        lines.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        lines.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    for key, got, want in shapes[:_SHOW]:
        lines.append(f"shape mismatch for {key}: checkpoint {got} vs model {want}")
    if len(shapes) > _SHOW:
        lines.append(f"... {len(shapes)} shape mismatches in total")
    if unexpected and all(k.startswith(_RUN_PREFIXES) for k in unexpected) and not any(k in own for k in state_dict):
        # The task's names (predictor.net....) in a network's weights argument: a vdf run's checkpoint.
        lines.append(
            "this looks like the checkpoint of a vdf run: start a run from it with --model.init_args.init_weights "
            "PATH (the whole task's weights), not as a network's weights file"
        )
    raise StateDictMismatchError("\n".join(lines))


#: Leading names of a vdf task's state dict (a Lightning checkpoint of a run).
_RUN_PREFIXES = ("predictor.", "loss.", "teacher.")


def load_weights(
    module: nn.Module,
    path: str | Path,
    what: str,
    where: str,
    convert: Callable[[StateDict], StateDict] | None = None,
    describe: Describe | None = None,
    variant: str | None = None,
) -> None:
    """Read a weights source (`read_weights`), convert its names, load it strictly into ``module``.

    Args:
        module: the module to fill.
        path: a weights file or folder.
        what, where: what the weights are and where they come from, for messages.
        convert: official names -> the module's names (None: the names are the module's).
        describe: see `load_state_dict_strict`.
        variant: for a folder, see `weights_file`.

    Raises:
        FileNotFoundError: see `read_weights`.
        StateDictMismatchError: see `load_state_dict_strict`; the message names the path and
            ends with ``where``.
    """
    state = read_weights(path, what, where, variant)
    if convert is not None:
        state = convert(state)
    try:
        load_state_dict_strict(module, state, source=f"{what} {path}", describe=describe)
    except StateDictMismatchError as error:
        raise StateDictMismatchError(f"{error}\n({where})") from None


# -- conv_in ------------------------------------------------------------------------------------


def widen_conv_in(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A convolution weight ``(O,C,k,k)`` widened to ``(O,in_channels,k,k)``.

    The weight is repeated ``r = in_channels / C`` times along the input channels and divided by
    ``r`` (``cat([W, W], 1) / 2`` for 8 -> 16, as Depth Any Video initialises its interpolation
    UNet from the base one); the bias stays. The widened convolution gives exactly the old output
    on the old input repeated ``r`` times along channels.
    """
    if in_channels % weight.shape[1]:
        raise ValueError(f"in_channels={in_channels} is not a multiple of the weight's {weight.shape[1]} inputs")
    repeat = in_channels // weight.shape[1]
    return weight.repeat(1, repeat, 1, 1) / repeat
