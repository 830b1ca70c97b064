"""Diffusion objectives (EDM, flow matching), their pieces, the Euler samplers, depth normalisations."""

from vdf.diffusion.base import DiffusionObjective
from vdf.diffusion.edm import EDM, EDMWeighting, LogNormalSigma, UnitWeighting, VPreconditioning, karras_sigmas
from vdf.diffusion.flow_matching import FlowMatching, LogitNormalTime, UniformTime, shift_levels
from vdf.diffusion.normalization import DepthMinMax, DepthNormalization, DisparityMinMax, PercentileDisparity
from vdf.diffusion.sampler import EulerSampler, ScaledSampleEulerSampler

__all__ = [
    "EDM",
    "DepthMinMax",
    "DepthNormalization",
    "DiffusionObjective",
    "DisparityMinMax",
    "EDMWeighting",
    "EulerSampler",
    "FlowMatching",
    "LogNormalSigma",
    "LogitNormalTime",
    "PercentileDisparity",
    "ScaledSampleEulerSampler",
    "UniformTime",
    "UnitWeighting",
    "VPreconditioning",
    "karras_sigmas",
    "shift_levels",
]
