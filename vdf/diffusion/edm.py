"""EDM (Karras et al. 2022) as SVD and the SVD-based depth models use it, in small swappable pieces.

- `VPreconditioning`: ``c_skip, c_out, c_in, c_noise`` of SVD's v-prediction parametrisation
  (σ_data = 1): ``x̂0 = c_skip·x + c_out·F(c_in·x, c_noise)``.
- `LogNormalSigma`: training σ with ``ln σ ~ N(P_mean, P_std²)``.
- `EDMWeighting`: the loss weight ``λ(σ) = 1/c_out(σ)²``, which makes the weighted x̂0 error an
  unweighted error on the network's target.
- `karras_sigmas`: the sampling schedule (ρ = 7) with a terminal 0.
- `EDM`: the objective that composes them (`vdf.diffusion.base.DiffusionObjective`).

With SVD's scheduler configuration (σ_min 0.002, σ_max 700, Karras ρ 7, ``timestep_type:
continuous``) the schedule, the timesteps (``0.25·ln σ``), the input scaling, the initial noise
scale and an Euler step equal diffusers' ``EulerDiscreteScheduler`` (tested side by side).
"""

from __future__ import annotations

import math

import torch

from vdf.diffusion.base import DiffusionObjective, per_frame


class VPreconditioning:
    """SVD's v-prediction preconditioning with data standard deviation ``sigma_data``."""

    def __init__(self, sigma_data: float = 1.0):
        self.sigma_data = sigma_data

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        return -sigma * self.sigma_data / (sigma**2 + self.sigma_data**2).sqrt()

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1.0 / (sigma**2 + self.sigma_data**2).sqrt()

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        return 0.25 * sigma.log()


class LogNormalSigma:
    """``ln σ ~ N(p_mean, p_std²)`` (EDM's training distribution; DepthCrafter and ChronoDepth: 0.7, 1.6)."""

    def __init__(self, p_mean: float = 0.7, p_std: float = 1.6):
        self.p_mean = p_mean
        self.p_std = p_std

    def __call__(
        self, shape: tuple[int, ...], device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        normal = torch.randn(shape, generator=generator, device=device if generator is None else generator.device)
        return (self.p_mean + self.p_std * normal).exp().to(device)


class EDMWeighting:
    """``λ(σ) = (σ² + σ_data²) / (σ·σ_data)²`` = ``1/c_out(σ)²``."""

    def __init__(self, sigma_data: float = 1.0):
        self.sigma_data = sigma_data

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2


class UnitWeighting:
    """``λ(σ) = 1``: a plain MSE on the clean-latent estimate (an ablation of `EDMWeighting`)."""

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(sigma)


def karras_sigmas(
    steps: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``steps`` Karras σ from ``sigma_max`` down to ``sigma_min``, then a terminal 0 (float32).

    Computed in float64 and rounded once, as diffusers computes them in numpy.
    """
    if steps < 1:
        raise ValueError(f"need at least one sampling step, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float().to(device)


class EDM(DiffusionObjective):
    """EDM with SVD's v-prediction: ``x_σ = x0 + σ·ε``; the network predicts ``F`` with ``x̂0 = c_skip·x + c_out·F``.

    Args:
        preconditioning: ``c_skip, c_out, c_in, c_noise``.
        sigma_sampler: training σ distribution.
        weighting: loss weight ``λ(σ)``.
        sigma_min: smallest σ of the sampling schedule.
        sigma_max: largest σ of the sampling schedule (initial noise).
        rho: Karras schedule exponent.
        context_sigma: σ at which clean context frames are shown to the network
            (``exp(-16)``: ChronoDepth's ``c_noise = -4``).
    """

    def __init__(
        self,
        preconditioning: VPreconditioning | None = None,
        sigma_sampler: LogNormalSigma | None = None,
        weighting: EDMWeighting | UnitWeighting | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 700.0,
        rho: float = 7.0,
        context_sigma: float = math.exp(-16.0),
    ):
        self.preconditioning = preconditioning or VPreconditioning()
        self.sigma_sampler = sigma_sampler or LogNormalSigma()
        self.weighting = weighting or EDMWeighting()
        self.sigma_min = sigma_min
        self.sigma_max = sigma_max
        self.rho = rho
        self.context_level = context_sigma

    def sample_levels(self, shape, device="cpu", generator=None):
        return self.sigma_sampler(shape, device=device, generator=generator)

    def add_noise(self, x0, noise, level):
        return x0 + per_frame(level, x0).to(x0.dtype) * noise

    def net_input(self, x, level):
        return self.preconditioning.c_in(per_frame(level, x)).to(x.dtype) * x

    def timestep(self, level):
        return self.preconditioning.c_noise(level)

    def denoised(self, x, out, level):
        sigma = per_frame(level, x)
        p = self.preconditioning
        return (p.c_skip(sigma) * x + p.c_out(sigma) * out).to(x.dtype)

    def derivative(self, x, out, level):
        return (x - self.denoised(x, out, level)) / per_frame(level, x).to(x.dtype)

    def loss(self, out, x, x0, noise, level):
        weight = per_frame(self.weighting(level), x0).to(x0.dtype)
        return weight * (self.denoised(x, out, level) - x0) ** 2

    def schedule(self, steps, device="cpu"):
        return karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho, device)

    @property
    def init_noise_sigma(self) -> float:
        """Scale of the initial noise: ``sqrt(σ_max² + 1)``, as diffusers' scheduler uses."""
        return math.sqrt(self.sigma_max**2 + 1)

    def initial_latents(self, noise):
        return noise * self.init_noise_sigma
