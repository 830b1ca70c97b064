"""Conditional flow matching on the linear path, as Depth Any Video trains and samples it.

The noise level ``s`` is the fraction of noise: ``x_s = (1-s)·x0 + s·ε`` (``s=1`` is pure noise,
``s=0`` the data). The network predicts the velocity ``v = ε - x0`` (``dx/ds``), the sign
diffusers' ``FlowMatchEulerDiscreteScheduler`` integrates with ``x ← x + (s_next - s)·v``; the
paper's ``t`` is ``1 - s`` and its velocity ``x0 - ε``. The network's timestep is ``1000·s``.

Sampling uses the shifted schedule of that scheduler (``shift = 3`` for Depth Any Video): ``steps``
times linear in ``[1000·s_max, 1000·s_min]``, each mapped through ``shift·s/(1 + (shift-1)·s)``,
where ``s_min`` is the shifted ``1/num_train_timesteps`` — so the smallest level is shifted twice,
as diffusers does. 3 steps give ``s = [1, 0.75112, 0.00893, 0]``. The levels are computed with
the scheduler's own precision (``s_min`` in float32, the rest in float64, rounded to float32), so
they equal ``FlowMatchEulerDiscreteScheduler.sigmas`` bit for bit.

A released model states its scheduler in ``scheduler/scheduler_config.json`` of its Hugging Face
folder; ``FlowMatching(scheduler_config=...)`` reads ``shift`` and ``num_train_timesteps`` from
there when the file exists (the constructor's values are the fallback).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from vdf.diffusion.base import DiffusionObjective, per_frame


class UniformTime:
    """Training levels ``s ~ U(eps, 1)``."""

    def __init__(self, eps: float = 1e-3):
        self.eps = eps

    def __call__(self, shape, device="cpu", generator=None) -> torch.Tensor:
        u = torch.rand(shape, generator=generator, device=device if generator is None else generator.device)
        return (self.eps + (1 - self.eps) * u).to(device)


class LogitNormalTime:
    """Training levels ``s = sigmoid(m + σ·n)``, ``n ~ N(0,1)`` (mass in the middle of the path)."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean = mean
        self.std = std

    def __call__(self, shape, device="cpu", generator=None) -> torch.Tensor:
        n = torch.randn(shape, generator=generator, device=device if generator is None else generator.device)
        return torch.sigmoid(self.mean + self.std * n).to(device)


logger = logging.getLogger(__name__)

# Scheduler settings vdf's sampling does not implement: a config that turns one on is refused.
_UNSUPPORTED = (
    "use_dynamic_shifting",
    "invert_sigmas",
    "shift_terminal",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "stochastic_sampling",
)


def shift_levels(s: torch.Tensor, shift: float) -> torch.Tensor:
    """``shift·s / (1 + (shift-1)·s)``: spends more of the schedule at high noise for ``shift > 1``."""
    return shift * s / (1 + (shift - 1) * s)


def scheduler_config_path(path: str | Path) -> Path:
    """The ``scheduler_config.json`` that ``path`` names: the file itself, a scheduler folder
    holding it, or a model folder in the Hugging Face layout (``<path>/scheduler/scheduler_config.json``)."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "scheduler" / "scheduler_config.json", path / "scheduler_config.json"):
            if candidate.is_file():
                return candidate
        return path / "scheduler" / "scheduler_config.json"
    return path


def read_scheduler_config(path: str | Path) -> dict | None:
    """The flow-matching settings (``shift``, ``num_train_timesteps``) of a diffusers
    ``FlowMatchEulerDiscreteScheduler`` config, or None when the file does not exist.

    Raises:
        ValueError: the config is another scheduler's or turns on a setting vdf does not sample
            with (dynamic shifting, Karras/exponential/beta sigmas, ...).
    """
    file = scheduler_config_path(path)
    if not file.is_file():
        return None
    config = json.loads(file.read_text())
    name = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(f"{file} configures a {name}, not a FlowMatchEulerDiscreteScheduler")
    enabled = [key for key in _UNSUPPORTED if config.get(key)]
    if enabled:
        raise ValueError(f"{file} turns on {enabled}, which vdf's flow-matching sampling does not implement")
    return {
        "shift": float(config.get("shift", 1.0)),
        "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
    }


class FlowMatching(DiffusionObjective):
    """Linear-path flow matching with velocity prediction.

    Args:
        time_sampler: training level distribution (``UniformTime`` or ``LogitNormalTime``).
        shift: schedule shift for sampling (Depth Any Video: 3.0); the fallback when
            ``scheduler_config`` names no existing file.
        num_train_timesteps: timestep scale of the network (1000); same fallback rule.
        training_shift: also shift the training levels (off by default).
        scheduler_config: a diffusers ``scheduler_config.json``, its folder, or a model folder in
            the Hugging Face layout (``<folder>/scheduler/scheduler_config.json``, e.g. Depth Any
            Video's download), local or a Hub reference (``hf://hhyangcs/depth-any-video/scheduler``,
            see `vdf.models.weights`; it must resolve). When the file exists its ``shift`` and
            ``num_train_timesteps`` replace the two arguments above.
    """

    context_level = 0.0

    def __init__(
        self,
        time_sampler: UniformTime | LogitNormalTime | None = None,
        shift: float = 3.0,
        num_train_timesteps: int = 1000,
        training_shift: bool = False,
        scheduler_config: str | None = None,
    ):
        if scheduler_config is not None:
            from vdf.models.weights import resolve_source

            scheduler_config = str(resolve_source(scheduler_config, "flow-matching scheduler config"))
            found = read_scheduler_config(scheduler_config)
            if found is None:
                logger.info(
                    "no scheduler config at %s: flow-matching shift %s from the arguments",
                    scheduler_config_path(scheduler_config),
                    shift,
                )
            else:
                logger.info("flow-matching settings %s from %s", found, scheduler_config_path(scheduler_config))
                shift, num_train_timesteps = found["shift"], found["num_train_timesteps"]
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        self.time_sampler = time_sampler or UniformTime()
        self.shift = shift
        self.num_train_timesteps = num_train_timesteps
        self.training_shift = training_shift

    def sample_levels(self, shape, device="cpu", generator=None):
        s = self.time_sampler(shape, device=device, generator=generator)
        return shift_levels(s, self.shift) if self.training_shift else s

    def add_noise(self, x0, noise, level):
        s = per_frame(level, x0).to(x0.dtype)
        return (1 - s) * x0 + s * noise

    def net_input(self, x, level):
        return x

    def timestep(self, level):
        return level * self.num_train_timesteps

    def denoised(self, x, out, level):
        return x - per_frame(level, x).to(x.dtype) * out

    def derivative(self, x, out, level):
        return out

    def loss(self, out, x, x0, noise, level):
        return (out - (noise - x0)) ** 2

    def schedule(self, steps, device="cpu"):
        if steps < 1:
            raise ValueError(f"need at least one sampling step, got {steps}")
        n = self.num_train_timesteps
        # As FlowMatchEulerDiscreteScheduler: its training grid's end points shifted in float32,
        # then a float64 linspace of timesteps, / n, shifted, rounded to float32.
        s_max = float(shift_levels(torch.tensor(1.0, dtype=torch.float32), self.shift))
        s_min = float(shift_levels(torch.tensor(1.0, dtype=torch.float32) / n, self.shift))
        t = torch.linspace(s_max * n, s_min * n, steps, dtype=torch.float64)
        levels = shift_levels(t / n, self.shift).float()
        return torch.cat([levels, levels.new_zeros(1)]).to(device)

    def initial_latents(self, noise):
        return noise
