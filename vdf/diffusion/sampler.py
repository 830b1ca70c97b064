"""`EulerSampler`: the first-order ODE sampler shared by EDM and flow matching.

It integrates ``dx/ds`` from the objective over a decreasing level schedule. Long-video strategies
drive it with two extras:

- ``x``: the initial latents, so a window can start from known latents (DepthCrafter re-noises
  the previous segment's result on the overlap);
- ``fixed`` and ``fixed_latents``: a per-frame mask of frames that are not denoised but shown
  clean to the network at the objective's ``context_level`` (ChronoDepth's context frames). They
  come back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vdf.diffusion.base import DiffusionObjective

#: ``net(net_input (B,T,C,h,w), timestep (B,T)) -> output (B,T,C,h,w)``
Network = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class EulerSampler:
    """Euler steps ``x ← x + dx/ds · (s_next - s)`` over ``objective.schedule(steps)``."""

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
            out = net(objective.net_input(x, level), objective.timestep(level))
            step = x + objective.derivative(x, out, level) * (s_next - s)
            x = step if fixed is None else torch.where(keep, x, step)
        return x
