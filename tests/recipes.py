"""The tiny recipes tests run: a family's base config, its overlays, then its tiny overlay."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")


def tiny_files(family: str, *overlays: str) -> list[str]:
    """``configs/<family>.yaml``, ``configs/<family>/<overlay>.yaml`` ..., ``configs/tiny/<family>.yaml``."""
    return (
        [os.path.join(CONFIGS, f"{family}.yaml")]
        + [os.path.join(CONFIGS, family, f"{o}.yaml") for o in overlays]
        + [os.path.join(CONFIGS, "tiny", f"{family}.yaml")]
    )


def tiny_args(family: str, *overlays: str) -> list[str]:
    """The same files as repeated ``--config`` options."""
    return [arg for path in tiny_files(family, *overlays) for arg in ("--config", path)]
