"""`LatentDiffusionPredictor`: sampling of the SVD-based depth models (DepthCrafter, ChronoDepth, Depth Any Video).

The method is the configuration of its collaborators — the network (`vdf.models.svd.SVDDepthDenoiser`),
the objective (`EDM` or `FlowMatching`), the depth normalisation, the sampler, the number of
steps and the seed. Sampling: ``steps`` levels from noise, the network conditioned on the clip's
video latents and image embeddings, then decoded and mapped to the output space. Long-video
strategies drive the same calls window by window (``condition``, ``denoise``, ``decode``, ...).

Depth Any Video's keyframe-conditioned interpolation network is a module of the predictor
(``interpolator``, itself a `LatentDiffusionPredictor` whose UNet takes 16 channels): its weights
are in the same state dict, and `vdf.inference.KeyframeInterpolation` uses it.
"""

from __future__ import annotations

import torch

from vdf.diffusion.base import DiffusionObjective
from vdf.diffusion.edm import EDM
from vdf.diffusion.normalization import DepthNormalization, DisparityMinMax
from vdf.diffusion.sampler import EulerSampler
from vdf.inference.base import LongVideoStrategy
from vdf.models.svd import SVDCondition, SVDDepthDenoiser
from vdf.predictors.base import Predictor
from vdf.predictors.options import InferenceOptions
from vdf.predictors.resolution import Resolution


class LatentDiffusionPredictor(Predictor):
    """Latent video diffusion for depth on the SVD UNet.

    Args:
        denoiser: the network with its VAE and image encoder (both frozen).
        objective: the noising process; default `EDM` with SVD's settings.
        normalization: how depth becomes the [-1,1] target and how a decoded prediction becomes
            the output (its ``space``); default `DisparityMinMax` (DepthCrafter).
        sampler: the sampling loop (default `EulerSampler`, the textbook Euler step).
        steps: sampling steps.
        frame_positions: give the network the frames' original indices as positions (RoPE
            temporal attention, Depth Any Video), ignored otherwise.
        sampling_seed: seed of the sampling noise (None: the global RNG), so runs are repeatable.
        interpolator: Depth Any Video's keyframe-conditioned interpolation network (a predictor
            whose UNet takes 16 input channels), used by `KeyframeInterpolation`.
        strategy: long-video strategy; default `SegmentStitching` (DepthCrafter's).
        resolution: the family's official inference size rule.
        inference: test/predict-time options (dtype, channels-last, attention, compile;
            `vdf.predictors.InferenceOptions`); default: as built.
    """

    def __init__(
        self,
        denoiser: SVDDepthDenoiser,
        objective: DiffusionObjective | None = None,
        normalization: DepthNormalization | None = None,
        sampler: EulerSampler | None = None,
        steps: int = 5,
        frame_positions: bool = False,
        sampling_seed: int | None = 0,
        interpolator: LatentDiffusionPredictor | None = None,
        strategy: LongVideoStrategy | None = None,
        resolution: Resolution | None = None,
        inference: InferenceOptions | None = None,
    ):
        super().__init__(strategy, resolution, inference)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.denoiser = denoiser
        self.objective = objective if objective is not None else EDM()
        self.normalization = normalization if normalization is not None else DisparityMinMax()
        self.sampler = sampler if sampler is not None else EulerSampler()
        self.steps = steps
        self.frame_positions = frame_positions
        self.sampling_seed = sampling_seed
        self.interpolator = interpolator

    def default_strategy(self) -> LongVideoStrategy:
        from vdf.inference.segment_stitching import SegmentStitching

        return SegmentStitching()

    @property
    def output_space(self) -> str:
        return self.normalization.space

    def denoisers(self) -> list[SVDDepthDenoiser]:
        """The networks sampling evaluates: this denoiser and the interpolator's (cost accounting)."""
        found = [self.denoiser]
        if self.interpolator is not None:
            found.append(self.interpolator.denoiser)
        return found

    def inference_networks(self) -> dict[str, torch.nn.Module]:
        """The UNets (this one's and the interpolator's), the VAE's encoder and decoder and the image
        encoder, each called as a module by the denoiser."""
        nets: dict[str, torch.nn.Module] = {}
        for prefix, predictor in (("", self), ("interpolator.", self.interpolator)):
            if predictor is None:
                continue
            denoiser = predictor.denoiser
            nets[prefix + "unet"] = denoiser.unet
            vae = getattr(denoiser.vae, "vae", None)
            if vae is not None:
                nets[prefix + "vae.encoder"] = vae.encoder
                nets[prefix + "vae.decoder"] = vae.decoder
            encoder = getattr(denoiser.image_encoder, "encoder", None)
            if encoder is not None:
                nets[prefix + "image_encoder"] = encoder
        # The interpolator shares the VAE (and image encoder) module: name each module once.
        seen: set[int] = set()
        return {k: v for k, v in nets.items() if not (id(v) in seen or seen.add(id(v)))}

    def cast_networks(self, dtype: torch.dtype) -> None:
        """The latent networks take a reduced dtype as their ``weights_dtype`` does: weights cast,
        inputs cast on entry by each network, the VAE encoding upcast under ``force_upcast``."""
        for predictor in (self, self.interpolator):
            if predictor is not None:
                predictor.denoiser.unet.to(dtype)
                predictor.denoiser.vae.to(dtype)
                predictor.denoiser.image_encoder.to(dtype)

    # -- the calls strategies use -----------------------------------------------------------------
    def generator(self, offset: int = 0) -> torch.Generator | None:
        """A CPU generator seeded by ``sampling_seed + offset`` (None when unseeded)."""
        if self.sampling_seed is None:
            return None
        return torch.Generator().manual_seed(self.sampling_seed + offset)

    def noise_like(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Unit Gaussian noise of ``shape`` on the model's device (drawn on CPU when seeded)."""
        return torch.randn(shape, generator=generator).to(self.device)

    @property
    def decode_chunk_size(self) -> int:
        """Frames per VAE decode call (the temporal decoder mixes frames inside one)."""
        return self.denoiser.vae.chunk_size

    def latent_shape(self, video: torch.Tensor) -> tuple[int, ...]:
        b, t, _, h, w = video.shape
        f = self.denoiser.downsample
        return (b, t, 4, h // f, w // f)

    @torch.no_grad()
    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> SVDCondition:
        """``(B,T,3,H,W)`` in [0,1] -> the conditioning of those frames."""
        return self.denoiser.condition(video.to(self.device), generator=generator)

    def network(self, cond: SVDCondition, position_ids: torch.Tensor | None = None, extra: torch.Tensor | None = None):
        """The network call the sampler integrates: ``(net_input, timestep (B,T)) -> output``."""

        def net(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return self.denoiser(x, timestep, cond, position_ids=position_ids, extra=extra)

        return net

    @torch.no_grad()
    def denoise(
        self,
        cond: SVDCondition,
        x: torch.Tensor,
        fixed: torch.Tensor | None = None,
        fixed_latents: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Sample clean depth latents from initial latents ``x`` (B,T,4,h,w) at the schedule's first level.

        ``fixed`` (B,T) marks frames held at ``fixed_latents`` and shown clean (context);
        ``position_ids`` (B,T) are the frames' positions; ``extra`` adds input channels.
        """
        levels = self.objective.schedule(steps or self.steps, device=self.device)
        return self.sampler(self.network(cond, position_ids, extra), self.objective, x, levels, fixed, fixed_latents)

    def initial_latents(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        """Pure-noise latents at the first sampling level."""
        return self.objective.initial_latents(self.noise_like(shape, generator))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Depth latents -> the prediction ``(B,T,1,H,W)`` in ``output_space``."""
        return self.normalization.to_output(self.denoiser.decode_depth(latents))

    # -- the clip forward -------------------------------------------------------------------------
    @staticmethod
    def positions(frame_index: torch.Tensor | None, video: torch.Tensor) -> torch.Tensor:
        """``(B,T)`` positions: the frames' indices from the clip's first, or ``arange(T)``."""
        if frame_index is None:
            return torch.arange(video.shape[1], device=video.device).expand(video.shape[0], -1)
        return frame_index - frame_index[:, :1]

    @torch.no_grad()
    def clip(
        self, video: torch.Tensor, frame_index: torch.Tensor | None = None, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [0,1] -> ``(B,T,1,H,W)`` sampled jointly with ``steps`` steps; ``extra``
        adds input channels (the interpolation network's keyframes)."""
        if extra is None and self.denoiser.unet.in_channels != 8:
            raise RuntimeError(
                f"this network takes {self.denoiser.unet.in_channels} input channels: it is an interpolation "
                "network and needs keyframe latents; run it as the interpolator of a Depth Any Video predictor, "
                "through vdf.inference.KeyframeInterpolation"
            )
        generator = self.generator()
        cond = self.condition(video, generator)
        x = self.initial_latents(self.latent_shape(video), generator)
        positions = self.positions(frame_index, video) if self.frame_positions else None
        return self.decode(self.denoise(cond, x, position_ids=positions, extra=extra))
