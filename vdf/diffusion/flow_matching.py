"""Conditional flow matching on the linear path, as Depth Any Video trains and samples it.

The noise level ``s`` is the fraction of noise: ``x_s = (1-s)·x0 + s·ε`` (``s=1`` is pure noise,
``s=0`` the data). The network predicts the velocity ``v = ε - x0`` (``dx/ds``), the sign
diffusers' ``FlowMatchEulerDiscreteScheduler`` integrates with ``x ← x + (s_next - s)·v``; the
paper's ``t`` is ``1 - s`` and its velocity ``x0 - ε``. The network's timestep is ``1000·s``.

Sampling uses the shifted schedule of that scheduler (``shift = 3`` for Depth Any Video): ``steps``
times linear in ``[1000·s_max, 1000·s_min]``, each mapped through ``shift·s/(1 + (shift-1)·s)``,
where ``s_min`` is the shifted ``1/num_train_timesteps`` — so the smallest level is shifted twice,
as diffusers does. 3 steps give ``s = [1, 0.75112, 0.00893, 0]``.
"""

from __future__ import annotations

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


def shift_levels(s: torch.Tensor, shift: float) -> torch.Tensor:
    """``shift·s / (1 + (shift-1)·s)``: spends more of the schedule at high noise for ``shift > 1``."""
    return shift * s / (1 + (shift - 1) * s)


class FlowMatching(DiffusionObjective):
    """Linear-path flow matching with velocity prediction.

    Args:
        time_sampler: training level distribution (``UniformTime`` or ``LogitNormalTime``).
        shift: schedule shift for sampling (Depth Any Video: 3.0).
        num_train_timesteps: timestep scale of the network (1000).
        training_shift: also shift the training levels (off by default).
    """

    context_level = 0.0

    def __init__(
        self,
        time_sampler: UniformTime | LogitNormalTime | None = None,
        shift: float = 3.0,
        num_train_timesteps: int = 1000,
        training_shift: bool = False,
    ):
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
        s_max = 1.0
        s_min = float(shift_levels(torch.tensor(1.0 / n, dtype=torch.float64), self.shift))
        # float32 as diffusers computes the timesteps (numpy linspace, then / n, then shift).
        t = torch.linspace(s_max * n, s_min * n, steps, dtype=torch.float64).float()
        levels = shift_levels(t / n, self.shift)
        return torch.cat([levels, levels.new_zeros(1)]).to(device)

    def initial_latents(self, noise):
        return noise
