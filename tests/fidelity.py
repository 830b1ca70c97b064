"""Golden fixtures from the official code (written by ``scripts/fidelity/<family>.py``), read by the tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "fidelity"


def load_case(family: str, case: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and settings of one fixture case."""
    from safetensors.torch import load_file

    folder = FIXTURES / family
    return load_file(str(folder / f"{case}.safetensors")), json.loads((folder / f"{case}.json").read_text())


def noise_draws(tensors: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The recorded noise tensors in drawing order."""
    keys = sorted((k for k in tensors if k.startswith("noise.")), key=lambda k: int(k.split(".")[1]))
    return [tensors[k] for k in keys]


class Replay:
    """Hands out recorded tensors in order, checking each requested shape; ``done()`` checks all were used."""

    def __init__(self, draws: list[torch.Tensor]):
        self._draws: Iterator[torch.Tensor] = iter(draws)
        self.count = len(draws)
        self.used = 0

    def __call__(self, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
        tensor = next(self._draws, None)
        if tensor is None:
            raise AssertionError(
                f"vdf drew more noise than the official code (draw {self.used + 1}, shape {tuple(shape)})"
            )
        if tensor.numel() != torch.Size(shape).numel():
            raise AssertionError(
                f"noise draw {self.used}: vdf asks for {tuple(shape)}, the official code drew {tuple(tensor.shape)}"
            )
        self.used += 1
        return tensor.reshape(shape).clone()

    def done(self) -> None:
        assert self.used == self.count, f"vdf used {self.used} of the official code's {self.count} noise draws"


def build_model(config: str, *overrides: str) -> Any:
    """The model a shipped config builds (``vdf`` CLI parsing, CPU, no logger), with ``--key value`` overrides."""
    from vdf.cli import VDFCLI, cli_options

    args = ["--config", config, "--trainer.accelerator", "cpu", "--trainer.logger", "false", *overrides]
    cli = VDFCLI(**cli_options(), run=False, args=args)
    return cli.model.eval()


def max_relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """``max |ours - theirs| / max |theirs|`` (float64)."""
    ours, theirs = ours.double(), theirs.double()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))
