"""What a diffusion objective is to the rest of vdf: the interface tasks and samplers call.

An objective describes one family of noising processes by its *noise level* ``s`` (EDM's σ, or
the flow-matching time measured from the data, ``x_s = (1-s)·x0 + s·ε``). Everything a task or a
sampler needs goes through these few calls, so an EDM model and a flow-matching model share the
task, the sampler and every long-video strategy::

    level = objective.sample_levels(shape)              # training noise levels
    x_t   = objective.add_noise(x0, noise, level)
    out   = net(objective.net_input(x_t, level), objective.timestep(level), ...)
    loss  = objective.loss(out, x_t, x0, noise, level)  # elementwise, weighted
    levels = objective.schedule(steps)                  # sampling, ends with 0
    x     = objective.initial_latents(noise)
    x     = x + objective.derivative(x, out, s) * (s_next - s)   # one Euler step

Levels broadcast against latents ``(B,T,C,h,w)`` from shape ``(B,)`` (one per clip) or ``(B,T)``
(one per frame, as ChronoDepth trains and as fixed context frames need).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


def per_frame(level: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``level`` of shape ``()``, ``(B,)`` or ``(B,T)`` viewed to broadcast against ``like`` ``(B,T,...)``."""
    if level.dim() == 0:
        level = level.expand(like.shape[0])
    if level.dim() == 1:
        level = level[:, None]
    return level.reshape(*level.shape, *([1] * (like.dim() - level.dim())))


class DiffusionObjective(ABC):
    """A noising process with its training loss and its probability-flow ODE for Euler sampling."""

    #: Level at which clean, fixed frames (context) are shown to the network.
    context_level: float = 0.0

    @abstractmethod
    def sample_levels(
        self, shape: tuple[int, ...], device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Training noise levels of ``shape`` (``(B,)`` or ``(B,T)``)."""

    @abstractmethod
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The noisy latents at ``level``."""

    @abstractmethod
    def net_input(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """What the network sees of the noisy latents (EDM scales them by ``c_in``)."""

    @abstractmethod
    def timestep(self, level: torch.Tensor) -> torch.Tensor:
        """The network's timestep input for ``level`` (same shape as ``level``)."""

    @abstractmethod
    def denoised(self, x: torch.Tensor, out: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The estimate of the clean latents from the network output ``out``."""

    @abstractmethod
    def derivative(self, x: torch.Tensor, out: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """``dx/ds`` of the probability-flow ODE at ``x``, given the network output."""

    @abstractmethod
    def loss(
        self, out: torch.Tensor, x: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor
    ) -> torch.Tensor:
        """Elementwise weighted training loss (same shape as the latents)."""

    @abstractmethod
    def schedule(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``steps + 1`` decreasing levels for sampling, the last one 0 (float32)."""

    @abstractmethod
    def initial_latents(self, noise: torch.Tensor) -> torch.Tensor:
        """Pure-noise latents at the first level of the schedule, from unit Gaussian ``noise``."""

    def renoise(self, x0: torch.Tensor, noise: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Clean latents taken to ``level`` (used to start a window from known latents)."""
        return self.add_noise(x0, noise, level)
