"""Shared pieces of the golden-fixture scripts (``scripts/fidelity/<family>.py``).

Each script takes a local checkout of a family's official repository (``--official PATH``),
imports its inference code from there, runs it on tiny random weights with fixed inputs and
noise, and writes a fixture folder under ``tests/fixtures/fidelity/<family>/``:

- the tiny weights in the official on-disk layout (diffusers folders, ``.pth`` files), rounded
  to float16 precision and stored as float16 to keep the fixtures small (both sides compute in
  float32 on the same values);
- ``<case>.safetensors``: the inputs, every noise tensor the official code drew (in drawing
  order, ``noise.<k>``) and the official outputs; ``<case>.json``: the case's settings.

Nothing here is imported by vdf or by the tests; the official code is run, never copied.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "fidelity"


def import_official(checkout: str | Path, module: str):
    """Import ``module`` from the official checkout at ``checkout`` (put first on ``sys.path``)."""
    checkout = Path(checkout).resolve()
    if not checkout.is_dir():
        raise SystemExit(f"official checkout {checkout} does not exist (clone the official repository there)")
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise SystemExit(f"cannot import {module} from {checkout}: {error}") from None


@torch.no_grad()
def round_to_fp16_(module: torch.nn.Module, seed: int | None = None, scale: float | None = None) -> torch.nn.Module:
    """Round every floating parameter and buffer of ``module`` to float16 precision, in place.

    With ``seed``, parameters are first redrawn ``N(0, scale²)`` (``scale`` default: kept from
    each tensor's own initialisation), so that zero-initialised output layers do not hide the
    paths behind them.
    """
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        if not tensor.is_floating_point():
            continue
        if g is not None and "norm" not in name and tensor.dim() > 0 and name.rsplit(".", 1)[-1] in ("weight", "bias"):
            std = scale if scale is not None else max(float(tensor.float().std()) if tensor.numel() > 1 else 0.0, 0.02)
            tensor.copy_(torch.randn(tensor.shape, generator=g) * std)
        tensor.copy_(tensor.half().to(tensor.dtype))
    return module


def save_case(folder: Path, case: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``<folder>/<case>.safetensors`` (float tensors as float32) and ``<folder>/<case>.json``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    out = {
        k: v.detach().cpu().contiguous().float() if v.is_floating_point() else v.detach().cpu().contiguous()
        for k, v in tensors.items()
    }
    save_file(out, str(folder / f"{case}.safetensors"))
    (folder / f"{case}.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"wrote {folder / case}.* ({len(out)} tensors; folder now {size / 1e6:.2f} MB)")


class NoiseLog:
    """Records the tensors returned by patched random functions, in call order."""

    def __init__(self) -> None:
        self.draws: list[torch.Tensor] = []

    def wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def recorded(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.draws.append(out.detach().cpu().clone())
            return out

        return recorded

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"noise.{i}": t for i, t in enumerate(self.draws)}


@contextmanager
def recording(targets: list[tuple[Any, str]]):
    """Patch each ``(owner, attribute)`` random function to record what it returns; yields the `NoiseLog`."""
    log = NoiseLog()
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    try:
        for owner, name, fn in saved:
            setattr(owner, name, log.wrap(fn))
        yield log
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def make_video(frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """``(T,H,W,3)`` uint8: smooth random blobs drifting across frames (a video-like input)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, 6, 6, generator=g)
    big = torch.nn.functional.interpolate(base, size=(height * 2, width * 2), mode="bicubic", align_corners=False)
    out = []
    for t in range(frames):
        dy, dx = (t * 3) % height, (t * 5) % width
        frame = big[0, :, dy : dy + height, dx : dx + width]
        frame = frame + 0.08 * torch.rand(3, height, width, generator=g)
        out.append(frame.clamp(0, 1))
    video = torch.stack(out).permute(0, 2, 3, 1)
    return (video * 255).round().to(torch.uint8).numpy()
