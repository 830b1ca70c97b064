"""Pure-torch models (no Lightning). Names are imported lazily: ``import vdf.models`` stays cheap
(timm, diffusers, ... load only when a model class is first touched)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "DINOv2": "vdf.models.dinov2",
    "DPTHead": "vdf.models.dpt",
    "DepthAnythingV2": "vdf.models.dav2",
    "processing_size": "vdf.models.dav2",
    "StateDictMismatchError": "vdf.models.weights",
    "Mamba2": "vdf.models.mamba",
    "Mamba2State": "vdf.models.mamba",
    "FlashDepth": "vdf.models.flashdepth",
    "FlashDepthState": "vdf.models.flashdepth",
    "TemporalMamba": "vdf.models.flashdepth",
    "MambaBlock": "vdf.models.flashdepth",
    "HybridFusion": "vdf.models.hybrid_fusion",
    "VideoDepthAnything": "vdf.models.vda",
    "VDAStreamState": "vdf.models.vda",
    "TemporalModule": "vdf.models.vda",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from vdf.models.dav2 import DepthAnythingV2, processing_size
    from vdf.models.dinov2 import DINOv2
    from vdf.models.dpt import DPTHead
    from vdf.models.flashdepth import FlashDepth, FlashDepthState, MambaBlock, TemporalMamba
    from vdf.models.hybrid_fusion import HybridFusion
    from vdf.models.mamba import Mamba2, Mamba2State
    from vdf.models.vda import TemporalModule, VDAStreamState, VideoDepthAnything
    from vdf.models.weights import StateDictMismatchError


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vdf.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
