"""`vdf.load`: a predictor from a config, in Python, without Lightning.

A config's model section names its predictor (``model.init_args.predictor``: the network, the
preprocessing, the strategy ...); `load` builds exactly that predictor with jsonargparse, the
parser the CLI uses, so the YAML means the same thing here as under ``vdf predict``::

    import vdf

    predictor = vdf.load("configs/depthcrafter.yaml", ckpt="runs/.../last.ckpt", steps=3)
    depth = predictor.predict("clip.mp4")        # (T,H,W) float32
    for frame in predictor("clip.mp4"):          # streamed: frame.index, frame.value (H,W)
        ...
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from vdf.predictors.base import Predictor

_AUTOCAST = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16, "16": torch.float16, "bf16": torch.bfloat16}


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path} does not exist")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"config {path} is not valid YAML: {error}") from None


def nest_dotted(settings: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": 1, "a__d": 2}`` -> ``{"a": {"b": {"c": 1}, "d": 2}}``: dotted settings as one
    config layer. A layer keeps a nested ``None`` as ``None``, which dotted command-line options
    three class levels deep do not (jsonargparse turns it into the string "None")."""
    nested: dict[str, Any] = {}
    for key, value in settings.items():
        *parents, leaf = key.replace("__", ".").split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"setting {key!r} conflicts with another setting of {part!r}")
        node[leaf] = value
    return nested


def _override_args(overrides: dict[str, Any]) -> list[str]:
    """``steps=3`` / ``strategy__init_args__window=8`` -> one more layer on the predictor's ``init_args``."""
    if not overrides:
        return []
    return ["--predictor", json.dumps({"init_args": nest_dotted(overrides)}, default=str)]


def build_predictor(
    configs: Sequence[str | Path], overrides: dict[str, Any] | None = None
) -> tuple[Predictor, str | None]:
    """The predictor the configs' ``model.init_args.predictor`` describe (later configs and the
    overrides win, as on the command line), and the last ``trainer.precision`` they set."""
    from jsonargparse import ArgumentParser

    args: list[str] = []
    precision = None
    for path in configs:
        config = _read(path)
        node = ((config.get("model") or {}).get("init_args") or {}).get("predictor")
        if node is not None:
            args += ["--predictor", json.dumps(node)]
        precision = (config.get("trainer") or {}).get("precision", precision)
    if not args:
        raise ValueError(f"none of {[str(p) for p in configs]} names a predictor (model.init_args.predictor)")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--predictor", type=Predictor, required=True)
    cfg = parser.parse_args(args + _override_args(overrides or {}))
    predictor = parser.instantiate_classes(cfg).predictor
    return predictor, None if precision is None else str(precision)


def load_checkpoint(predictor: Predictor, ckpt: str | Path) -> None:
    """Load a task checkpoint's ``predictor.*`` weights (or a bare predictor state dict), strictly."""
    from vdf.models.weights import FROZEN_RECORD, complete_state_dict, load_state_dict_strict

    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "predictor."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    # A lean checkpoint leaves out frozen modules rebuilt from their weights files (checked by fingerprint).
    record = checkpoint.get(FROZEN_RECORD) or {}
    record = {k[len(prefix) :]: v for k, v in record.items() if k.startswith(prefix)}
    if record:
        complete_state_dict(state, record, predictor, f"checkpoint {path}")
    load_state_dict_strict(predictor, state, source=f"checkpoint {path}")


def load(
    config: str | Path | Sequence[str | Path],
    ckpt: str | Path | None = None,
    device: str | torch.device | None = None,
    **overrides: Any,
) -> Predictor:
    """The predictor of a vdf config, ready to run.

    Args:
        config: a config file (``configs/dav2.yaml``) or several, layered as ``--config`` does.
        ckpt: a checkpoint of a ``vdf fit`` run (its ``predictor`` weights are taken); None: the
            weights the config names (official checkpoints) or random ones.
        device: where to run; default CUDA when available, else the CPU.
        **overrides: settings of the predictor, as ``init_args`` keys (``steps=3``); nested ones
            with dots or double underscores (``strategy__init_args__window=8``).

    The config's ``trainer.precision`` (``16-mixed``, ``bf16-mixed``) becomes autocast around
    every network call on CUDA. The predictor is in eval mode.
    """
    configs = [config] if isinstance(config, (str, Path)) else list(config)
    predictor, precision = build_predictor(configs, overrides)
    if ckpt is not None:
        load_checkpoint(predictor, ckpt)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    predictor.to(device).eval()
    dtype = _AUTOCAST.get(precision or "")
    if dtype is not None and device.type == "cuda":
        predictor.precision = lambda: torch.autocast("cuda", dtype=dtype)
    else:
        predictor.precision = contextlib.nullcontext
    return predictor
