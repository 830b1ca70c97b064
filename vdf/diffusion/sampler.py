"""Euler samplers shared by EDM and flow matching.

- `EulerSampler`: the textbook first-order step of the probability-flow ODE, ``x ← x + dx/ds ·
  (s_next - s)`` from the latents themselves (diffusers' and DepthCrafter's loop).
- `ScaledSampleEulerSampler`: the same step taken from the network's *input*: at every level the
  denoised frames' latents are first replaced by ``objective.net_input(x, s)`` (EDM: ``c_in·x``),
  and the step starts from that scaled sample. This is ChronoDepth's released inference loop.

Long-video strategies drive either with two extras:

- ``x``: the initial latents, so a window can start from known latents (DepthCrafter re-noises
  the previous segment's result on the overlap);
- ``fixed`` and ``fixed_latents``: a per-frame mask of frames that are not denoised but shown
  clean to the network at the objective's ``context_level`` (ChronoDepth's context frames). They
  come back unchanged, and are never replaced by their scaled copy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vdf.diffusion.base import DiffusionObjective

#: ``net(net_input (B,T,C,h,w), timestep (B,T)) -> output (B,T,C,h,w)``
Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EulerSampler:
    """Euler steps ``x ← x + dx/ds · (s_next - s)`` over ``objective.schedule(steps)``."""

    def step_origin(self, x: torch.Tensor, net_input: torch.Tensor) -> torch.Tensor:
        """The state a step starts from, given the latents ``x`` and what the network saw of them.

        The textbook step starts from the latents.
        """
        return x

    def __call__(
        self,
        net: Network,
        objective: DiffusionObjective,
        x: torch.Tensor,
        levels: torch.Tensor,
        fixed: torch.Tensor | None = None,
        fixed_latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise ``x`` (B,T,C,h,w), which is at ``levels[0]``, down to ``levels[-1]``.

        Args:
            net: the preconditioned network call (input already scaled by the objective).
            objective: the noising process (`EDM`, `FlowMatching`).
            x: initial latents.
            levels: decreasing noise levels, ``steps + 1`` of them.
            fixed: bool ``(B,T)``, frames held at ``fixed_latents`` and shown at ``context_level``.
            fixed_latents: clean latents of the fixed frames (B,T,C,h,w) (other frames ignored).
        """
        b, t = x.shape[:2]
        if fixed is not None:
            if fixed_latents is None or fixed_latents.shape != x.shape:
                raise ValueError("fixed frames need fixed_latents of the latents' shape")
            fixed = fixed.to(x.device).bool()
            keep = fixed.view(b, t, *([1] * (x.dim() - 2)))
            x = torch.where(keep, fixed_latents, x)
        for s, s_next in zip(levels[:-1].tolist(), levels[1:].tolist()):
            level = torch.full((b, t), s, dtype=torch.float32, device=x.device)
            if fixed is not None:
                level = torch.where(fixed, torch.full_like(level, objective.context_level), level)
            net_input = objective.net_input(x, level)
            out = net(net_input, objective.timestep(level))
            origin = self.step_origin(x, net_input)
            step = origin + objective.derivative(origin, out, level) * (s_next - s)
            x = step if fixed is None else torch.where(keep, x, step)
        return x


class ScaledSampleEulerSampler(EulerSampler):
    """Euler steps taken from the scaled sample the network sees (ChronoDepth's inference loop).

    At each level ``s`` the latents being denoised are replaced by ``x_in =
    objective.net_input(x, s)`` (EDM: ``c_in(σ)·x = x/sqrt(σ²+1)``), the network is evaluated on
    ``x_in``, and the Euler step starts from ``x_in``: ``x ← x_in + dx/ds(x_in) · (s_next - s)``.
    ChronoDepth's pipeline does this by overwriting its latents with ``scale_model_input`` before
    ``scheduler.step``; the released model's results come from this loop. Compared with
    `EulerSampler`, the noise an EDM step leaves in the state is shrunk by ``c_in`` (after the
    first step from σ_max = 700 the state is about data-sized, not noise-sized). Fixed (context)
    frames are unaffected. For flow matching (``net_input`` is the identity) both samplers agree.
    """

    def step_origin(self, x: torch.Tensor, net_input: torch.Tensor) -> torch.Tensor:
        return net_input
