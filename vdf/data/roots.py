"""Dataset roots named once: ``data.roots`` and the ``${name}`` placeholders that use them.

A training mixture names each dataset's folder once, under ``data.roots``::

    data:
      roots: {mvs_synth: data/mvs_synth, spring: data/spring}
      train:
        - class_path: vdf.data.datasets.mvs_synth.MVSSynth
          init_args: {root: "${mvs_synth}"}

and a user points a dataset elsewhere with one setting, ``--data.roots.mvs_synth /mnt/mvs``. Before
the datasets are built, every string under ``data`` that holds ``${name}`` has it replaced by
``roots[name]`` (`resolve_roots`); a name missing from ``roots`` is an error that lists the names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["PLACEHOLDER", "resolve_roots", "substitute"]

#: ``${name}`` in a string: replaced by ``data.roots[name]``.
PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_.-]+)\}")


def substitute(value: Any, roots: Mapping[str, str], where: str = "data") -> Any:
    """``value`` with every ``${name}`` in its strings replaced by ``roots[name]`` (lists, dicts
    and jsonargparse namespaces are walked; other values are returned as they are)."""
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name not in roots:
                known = ", ".join(sorted(roots)) or "none"
                raise ValueError(
                    f"{where}: {match.group(0)} names no dataset root; set it with --data.roots.{name} PATH "
                    f"(data.roots has: {known})"
                )
            return str(roots[name])

        return PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [substitute(v, roots, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return type(value)({k: substitute(v, roots, f"{where}.{k}") for k, v in value.items()})
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        for key, item in vars(value).items():
            setattr(value, key, substitute(item, roots, f"{where}.{key}"))
        return value
    return value


def resolve_roots(data: Any) -> None:
    """Replace, in place, the ``${name}`` placeholders of the dataset lists of a parsed ``data``
    section (a jsonargparse namespace) with its ``roots``."""
    if data is None:
        return
    roots = getattr(data, "roots", None) or {}
    for split in ("train", "val", "test", "predict"):
        items = getattr(data, split, None)
        if items:
            setattr(data, split, substitute(items, roots, f"data.{split}"))
