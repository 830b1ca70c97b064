"""Weights: reading a weights source, unwrapping, strict loading, widening ``conv_in``.

A *weights source* is a local path or a Hugging Face Hub reference (below) to one of:

- a single file: ``.safetensors`` (read with safetensors), or ``.pth`` / ``.pt`` / ``.bin`` /
  ``.ckpt`` (``torch.load`` with ``weights_only=True``: tensors and plain containers only), holding
  a flat ``{name: tensor}`` dict or one wrapped as official releases and Lightning save it
  (`unwrap_state_dict`);
- a diffusers / transformers folder as ``save_pretrained`` writes it: ``config.json`` (`read_config`)
  and the weights as one file, its ``fp16`` variant, or shards listed by a ``.safetensors`` or
  ``.bin`` index, whose shards must hold every key it lists (`weights_file` gives the order of
  preference).

A **Hub reference** is a string ``hf://<owner>/<repo>[@<revision>][/<path in the repo>]`` (the
syntax of ``huggingface_hub``'s ``HfFileSystem``): ``hf://tencent/DepthCrafter`` (a repository that
is a UNet folder), ``hf://stabilityai/stable-video-diffusion-img2vid-xt/vae`` (a sub-folder),
``hf://depth-anything/Depth-Anything-V2-Large/depth_anything_v2_vitl.pth`` (a file: the last part
ends in ``.safetensors .pth .pt .bin .ckpt .json``), ``hf://owner/repo@v1.0/unet`` (a branch, tag or
commit; ``/`` inside a revision is written ``%2F``). `resolve_source` turns it into a local path in
the Hugging Face cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
downloading what is missing unless ``HF_HUB_OFFLINE=1``; a folder brings only its own JSON files and
one weights file (or the shards of one index) in `weights_file`'s order of preference. Runs stay
offline-friendly: ``vdf download --config C`` fetches everything a config names ahead of time
(`weight_sources`), and a run with ``HF_HUB_OFFLINE=1`` then reads the cache only.

Every model reads its weights through `read_weights` and loads them with
`load_state_dict_strict` (both joined in `load_weights`), so all of them accept the same
layouts and fail the same way: a missing source is a ``FileNotFoundError`` naming the path (or the
Hub reference and what is missing from the cache) and saying where the weights come from (the
``where`` sentence each model supplies), and weights that do not fit are a
`StateDictMismatchError` listing the missing and unexpected keys and the shape mismatches, with
the file.

The argument naming rule that goes with it: a module's own weights are its ``weights``
argument; a source that initialises part of a module or a task is ``<part>_weights``
(``dav2_weights``, ``teacher_weights``, ``init_weights``, ...). ``vdf bench`` nulls them by that
name (`is_weights_argument`).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FROZEN_RECORD",
    "HUB_SCHEME",
    "FrozenWeightsMismatchError",
    "HubReference",
    "StateDictMismatchError",
    "complete_state_dict",
    "frozen_modules",
    "hub_cache_dir",
    "is_hub_reference",
    "is_weights_argument",
    "lean_state_dict",
    "load_state_dict_strict",
    "load_weights",
    "mark_frozen",
    "read_config",
    "read_weights",
    "resolve_source",
    "tensor_fingerprint",
    "unwrap_state_dict",
    "weight_sources",
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


# -- Hugging Face Hub references ----------------------------------------------------------------

HUB_SCHEME = "hf://"
#: A reference whose last part ends so names a file; anything else names a folder.
_HUB_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".json")


@dataclass(frozen=True)
class HubReference:
    """A file or folder of a Hugging Face Hub model repository, parsed from ``hf://...``.

    Args:
        repo_id: ``owner/name``.
        path: a file or folder inside the repository, ``""`` for the repository itself.
        revision: a branch, tag or commit; None is the repository's default branch (``main``).
    """

    repo_id: str
    path: str = ""
    revision: str | None = None

    @classmethod
    def parse(cls, text: str) -> HubReference:
        """``hf://owner/repo[@revision][/path]`` -> a reference; ValueError naming the text otherwise."""
        if not text.startswith(HUB_SCHEME):
            raise ValueError(f"{text!r} is not a Hub reference (hf://owner/repo[@revision][/path])")
        rest = text[len(HUB_SCHEME) :].strip("/")
        parts = rest.split("/")
        if len(parts) < 2 or not parts[0] or not parts[1] or parts[0] in ("datasets", "spaces"):
            raise ValueError(
                f"{text!r}: a Hub reference names a model repository, hf://owner/repo[@revision][/path] "
                "(dataset and space repositories are not weights sources)"
            )
        name, _, revision = parts[1].partition("@")
        if not name or (_ and not revision):
            raise ValueError(f"{text!r}: empty repository name or revision")
        path = "/".join(p for p in parts[2:] if p)
        return cls(f"{parts[0]}/{name}", path, urllib.parse.unquote(revision) if revision else None)

    @property
    def is_file(self) -> bool:
        return self.path.lower().endswith(_HUB_FILE_SUFFIXES)

    def __str__(self) -> str:
        revision = f"@{urllib.parse.quote(self.revision, safe='')}" if self.revision else ""
        return f"{HUB_SCHEME}{self.repo_id}{revision}" + (f"/{self.path}" if self.path else "")


def is_hub_reference(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(HUB_SCHEME)


def hub_cache_dir() -> Path:
    """The Hugging Face cache as ``huggingface_hub`` finds it, read from the environment at call
    time (so a variable set after import counts): ``HF_HUB_CACHE``, ``$HF_HOME/hub``, else the
    library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) as the environment says now."""
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is None:
        return bool(constants.HF_HUB_OFFLINE)
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _folder_selection(names: list[str], prefix: str) -> list[str]:
    """The files of a repository folder worth fetching: its JSON files and one weights file (or an
    index and its shards), chosen in `weights_file`'s order among ``names`` (repository paths)."""
    inside = [n[len(prefix) :] for n in names if n.startswith(prefix) and "/" not in n[len(prefix) :]]
    chosen = [n for n in inside if n.endswith(".json") and ".index." not in n]
    for candidate in _folder_names(None):
        if candidate in inside:
            chosen.append(candidate)
            if candidate.endswith(".json"):
                # Shards are named <stem>-00001-of-00002.<ext> after the index's weights file.
                stem, ext = candidate.split(".index")[0].rsplit(".", 1)
                chosen += [n for n in inside if n.startswith(f"{stem}-") and n.endswith(f".{ext}")]
            break
    return [prefix + n for n in chosen]


@functools.lru_cache(maxsize=64)
def _resolve_hub(text: str, cache_dir: str, offline: bool) -> str:
    from huggingface_hub import hf_hub_download, snapshot_download

    ref = HubReference.parse(text)
    common = dict(repo_id=ref.repo_id, revision=ref.revision, cache_dir=cache_dir)
    if ref.is_file:
        return hf_hub_download(filename=ref.path, local_files_only=offline, **common)
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    prefix = f"{ref.path}/" if ref.path else ""
    patterns = [f"{prefix}*.json", f"{prefix}*.safetensors", f"{prefix}*.bin"]
    local_only = offline
    if not offline:
        try:
            listing = snapshot_download(allow_patterns=patterns, dry_run=True, **common)
            patterns = _folder_selection([f.filename for f in listing], prefix) or patterns
        except Exception as error:
            cause = error.__cause__ or error
            if isinstance(cause, (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError)):
                raise cause from None
            # The Hub cannot be listed (no network, Hub down): the cache decides, without a
            # second round of the library's connection retries.
            local_only = True
    root = snapshot_download(allow_patterns=patterns, local_files_only=local_only, **common)
    return str(Path(root) / ref.path) if ref.path else root


def resolve_source(source: str | os.PathLike, what: str = "weights", where: str = "") -> Path:
    """The local path of a weights source: a path as it is; a Hub reference (``hf://...``)
    downloaded into, or found in, the Hugging Face cache (`hub_cache_dir`; only the cache when
    ``HF_HUB_OFFLINE=1``).

    Raises:
        FileNotFoundError: a Hub reference that cannot be resolved, naming it, the cache, and what
            is missing (the repository, the revision, the file, or the whole entry offline).
        ValueError: a malformed ``hf://`` string.
    """
    if not is_hub_reference(source):
        return Path(source)
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    ref = HubReference.parse(str(source))
    cache, offline = hub_cache_dir(), hub_offline()
    try:
        return Path(_resolve_hub(str(ref), str(cache), offline))
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        state = "HF_HUB_OFFLINE=1 forbids downloading it" if offline else "the Hub could not be reached to download it"
        missing = f"{ref.path or 'the repository'} of {ref.repo_id}" + (f" at {ref.revision}" if ref.revision else "")
        message = (
            f"{what} {ref}: {missing} is not in the Hugging Face cache {cache} and {state}; "
            "fetch it first with `vdf download --config CONFIG` (or point HF_HOME / HF_HUB_CACHE at the cache holding it)"
        )
    except GatedRepoError:
        message = f"{what} {ref}: {ref.repo_id} is gated; accept its licence on the Hub and log in (hf auth login)"
    except RevisionNotFoundError:
        message = f"{what} {ref}: {ref.repo_id} has no revision {ref.revision!r}"
    except RepositoryNotFoundError:
        message = f"{what} {ref}: no repository {ref.repo_id} on the Hub (or it is private)"
    except EntryNotFoundError:
        message = f"{what} {ref}: {ref.repo_id} has no file {ref.path}"
    raise _not_found(message, where) if where else FileNotFoundError(message)


def _local(source: str | os.PathLike, what: str, where: str) -> tuple[Path, str]:
    """`resolve_source`, with ``where`` extended to say which cache entry a Hub reference became
    (for errors about the files inside it)."""
    path = resolve_source(source, what, where)
    if is_hub_reference(source):
        where = f"{where}. ({source} is cached at {path})" if where else f"({source} is cached at {path})"
    return path, where


def weight_sources(config: Any) -> Iterator[tuple[str, str]]:
    """``(dotted key, source)`` of what a (merged) config loads, in order: every non-empty string
    given to a weights argument (``weights``, ``<part>_weights``, `is_weights_argument`), local
    or ``hf://``, and every other ``hf://`` string (e.g. a scheduler config)."""
    if isinstance(config, Mapping):
        items = ((str(k), v) for k, v in config.items())
    elif isinstance(config, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(config))
    else:
        return
    for key, value in items:
        if isinstance(value, str):
            if (value and is_weights_argument(key)) or is_hub_reference(value):
                yield key, value
        else:
            for sub, source in weight_sources(value):
                yield f"{key}.{sub}", source


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
    folder, where = _local(folder, what, where)
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
    folder, where = _local(folder, what, where)
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
        path: a weights file or a diffusers/transformers folder, local or ``hf://`` (see the module docstring).
        what: what the weights are, for messages (``"Depth-Anything-V2 weights"``).
        where: a sentence saying where the weights come from, appended to a not-found error.
        variant: for a folder, see `weights_file`.

    Raises:
        FileNotFoundError: the path, a folder's weights or a shard do not exist (with ``where``).
        StateDictMismatchError: an index lists keys its shards do not hold; a file is no state dict.
    """
    path, where = _local(path, what, where)
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
    # The module's whole state now comes from this source: a frozen module made of such modules is
    # rebuilt from them instead of being stored in training checkpoints (`lean_state_dict`).
    setattr(module, _SOURCE_ATTR, str(path))


# -- frozen modules and lean checkpoints --------------------------------------------------------
#
# Networks a method never trains (the SVD families' VAE and CLIP image encoder, FlashDepth (Full)'s
# teacher) are *marked frozen* by the model that owns them (`mark_frozen`). A training checkpoint
# leaves out a frozen module whose whole state was loaded from weights sources (`load_weights`):
# the constructor rebuilds it from those sources on load. In its place the checkpoint keeps, under
# ``FROZEN_RECORD``, each left-out module's sources and a fingerprint of its tensors; loading
# puts the rebuilt tensors back and refuses them when their fingerprint differs
# (`complete_state_dict`), so a run never resumes on frozen weights other than those it trained
# with. A module rebuilt in float16 or bfloat16 (an inference config) is compared with the trained
# weights cast to that dtype. A frozen module with randomly initialised parts (the tiny configs' CLIP) stays in the
# checkpoint whole.

#: Key of a checkpoint's record of the frozen modules it leaves out.
FROZEN_RECORD = "vdf_frozen_modules"
_FROZEN_ATTR = "_vdf_frozen"
_SOURCE_ATTR = "_vdf_weights_source"


class FrozenWeightsMismatchError(RuntimeError):
    """A checkpoint's left-out frozen module was rebuilt with different weights than it was trained with."""


def mark_frozen(module: nn.Module) -> nn.Module:
    """Freeze ``module`` (``requires_grad=False``) and mark it as never trained: sharded strategies
    replicate it instead of sharding it, and checkpoints may leave it out (see above)."""
    module.requires_grad_(False)
    setattr(module, _FROZEN_ATTR, True)
    return module


def frozen_modules(root: nn.Module) -> dict[str, nn.Module]:
    """The outermost modules under ``root`` marked by `mark_frozen`, by qualified name."""
    found: dict[str, nn.Module] = {}
    for name, module in root.named_modules(remove_duplicate=False):
        if getattr(module, _FROZEN_ATTR, False) and not any(name.startswith(f"{p}.") for p in found):
            found.setdefault(name, module)
    return found


def _rebuild_sources(module: nn.Module) -> list[str] | None:
    """The weights sources that set every tensor of ``module``'s state dict, or None if some are not."""
    covered: list[str] = []
    sources: list[str] = []
    for name, sub in module.named_modules():
        source = getattr(sub, _SOURCE_ATTR, None)
        if source is not None and not any(name == c or name.startswith(f"{c}.") for c in covered if c):
            covered.append(name)
            sources.append(source)
    if "" in covered:
        return sources
    keys = list(module.state_dict())
    if not keys:
        return None
    if all(any(k.startswith(f"{c}.") for c in covered) for k in keys):
        return sources
    return None


def tensor_fingerprint(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (in name order)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def _floating(tensors: Mapping[str, torch.Tensor]) -> bool:
    return any(t.is_floating_point() for t in tensors.values())


def _cast(tensors: Mapping[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    return {k: v.to(_HALF[dtype]) if v.is_floating_point() else v for k, v in tensors.items()}


def _under(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(f"{prefix}.")}


def lean_state_dict(state: dict[str, torch.Tensor], root: nn.Module) -> dict[str, dict[str, Any]]:
    """Remove from ``state`` (``root``'s state dict, in place) the frozen modules that their
    weights sources rebuild, and return the record of them to store beside it under
    ``FROZEN_RECORD``: ``{module name: {"sources": [...], "fingerprint": hex, "num_tensors": n}}``.

    The fingerprint is taken from the tensors in ``state`` (a sharded strategy's full state dict
    holds them whole; the live module may not)."""
    record: dict[str, dict[str, Any]] = {}
    for name, module in frozen_modules(root).items():
        if any(p.requires_grad for p in module.parameters()):
            continue  # unfrozen by a task: trained, so stored
        sources = _rebuild_sources(module)
        tensors = _under(state, name)
        if sources is None or not tensors:
            continue
        record[name] = {
            "sources": sources,
            "fingerprint": tensor_fingerprint(tensors),
            # A config may rebuild the module in a half dtype (the inference configs load VAE and
            # CLIP in float16): the same weights then equal these casts of the trained ones.
            "cast_fingerprints": {d: tensor_fingerprint(_cast(tensors, d)) for d in _HALF if _floating(tensors)},
            "num_tensors": len(tensors),
        }
        for key in tensors:
            del state[f"{name}.{key}"]
    return record


def complete_state_dict(
    state: dict[str, torch.Tensor], record: Mapping[str, Mapping[str, Any]], root: nn.Module, source: str
) -> None:
    """Put the frozen modules a lean checkpoint left out back into ``state`` (in place), from
    ``root``'s rebuilt ones, after checking their fingerprints.

    Raises:
        FrozenWeightsMismatchError: a rebuilt module's tensors differ from those the checkpoint
            was trained with (other weights files, dtype or sizes), naming the module and sources.
    """
    modules = dict(root.named_modules())
    for name, info in record.items():
        module = modules.get(name)
        if module is None:
            raise FrozenWeightsMismatchError(
                f"{source} left out the frozen module {name!r} (rebuilt from {info.get('sources')}), which "
                f"{type(root).__name__} as configured does not have: use the config the checkpoint was trained with"
            )
        tensors = module.state_dict()
        fingerprint = tensor_fingerprint(tensors)
        dtypes = {str(t.dtype).removeprefix("torch.") for t in tensors.values() if t.is_floating_point()}
        half = dtypes.pop() if len(dtypes) == 1 and dtypes <= set(_HALF) else None
        cast = (info.get("cast_fingerprints") or {}).get(half) if half else None
        if fingerprint != info.get("fingerprint") and fingerprint != cast:
            raise FrozenWeightsMismatchError(
                f"{source} was trained with frozen {name!r} from {info.get('sources')}, and the module rebuilt now "
                f"(from {_rebuild_sources(module) or 'random initialisation'}) has different weights, dtype or sizes "
                "(their fingerprints differ). Use the same weights files and the config the checkpoint was trained "
                "with (config.yaml in its run folder)"
            )
        for key, value in tensors.items():
            state[f"{name}.{key}"] = value


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
