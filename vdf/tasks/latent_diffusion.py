"""`LatentDiffusionTask`: training and sampling glue for the SVD-based depth denoisers.

One task serves DepthCrafter, ChronoDepth and Depth Any Video: the method is the configuration of
its collaborators — the network (`vdf.models.svd.SVDDepthDenoiser`), the objective (`EDM` or
`FlowMatching`), the depth normalisation and whether noise levels are drawn per frame.

Training (denoising score matching on depth latents)::

    target = normalisation(depth)              # (B,T,1,H,W) in [-1,1], VAE-encoded -> x0
    level  ~ objective.sample_levels((B,) or (B,T))
    loss   = objective.loss(net(objective.net_input(x0 + noise)), ...)

Sampling: Euler over ``steps`` levels from noise, the network conditioned on the clip's video
latents and image embeddings; then decoded and mapped to relative disparity. Long-video
strategies drive the same calls window by window (`condition`, `denoise`, `decode`).
"""

from __future__ import annotations

from typing import Any

import torch

from vdf.diffusion.base import DiffusionObjective
from vdf.diffusion.edm import EDM
from vdf.diffusion.normalization import DepthNormalization, DisparityMinMax
from vdf.diffusion.sampler import EulerSampler
from vdf.inference.base import LongVideoStrategy
from vdf.inference.resolution import Resolution
from vdf.models.svd import SVDCondition, SVDDepthDenoiser
from vdf.tasks.base import VideoDepthTask


class LatentDiffusionTask(VideoDepthTask):
    """Latent video diffusion for depth on the SVD UNet.

    Args:
        denoiser: the network with its VAE and image encoder (both frozen).
        objective: the noising process; default `EDM` with SVD's settings.
        normalization: how depth becomes the [-1,1] target; default `DisparityMinMax` (one
            min-max of disparity per clip, DepthCrafter).
        sampler: the sampling loop (default `EulerSampler`, the textbook Euler step).
        steps: Euler steps when sampling (validation, test, predict).
        per_frame_levels: draw an independent training noise level per frame (ChronoDepth)
            instead of one per clip.
        frame_positions: give the network the frames' original indices (``frame_index``) as
            positions — used by RoPE temporal attention (Depth Any Video), ignored otherwise.
        sampling_seed: seed of the initial noise when sampling (None: the global RNG), so
            evaluations are repeatable.
        init_weights: a Lightning checkpoint whose weights initialise the model (the
            previous training stage); optimizer state is not taken.
        lr, weight_decay, warmup_steps, min_lr_ratio, ...: see `VideoDepthTask`.
    """

    def __init__(
        self,
        denoiser: SVDDepthDenoiser,
        objective: DiffusionObjective | None = None,
        normalization: DepthNormalization | None = None,
        sampler: EulerSampler | None = None,
        steps: int = 5,
        per_frame_levels: bool = False,
        frame_positions: bool = False,
        sampling_seed: int | None = 0,
        init_weights: str | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        min_lr_ratio: float = 1.0,
        eval_max_depth: float = 80.0,
        boundary_f1: bool = False,
        tae: bool = False,
        strategy: LongVideoStrategy | None = None,
        test_with_strategy: bool = True,
        resolution: Resolution | None = None,
    ):
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if strategy is None:
            from vdf.inference.segment_stitching import SegmentStitching

            strategy = SegmentStitching()
        super().__init__(
            loss=None,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            min_lr_ratio=min_lr_ratio,
            eval_max_depth=eval_max_depth,
            boundary_f1=boundary_f1,
            tae=tae,
            strategy=strategy,
            test_with_strategy=test_with_strategy,
            resolution=resolution,
        )
        self.save_hyperparameters(ignore=["denoiser", "objective", "normalization", "sampler", "strategy", "resolution"])
        self.denoiser = denoiser
        self.objective = objective if objective is not None else EDM()
        self.normalization = normalization if normalization is not None else DisparityMinMax()
        self.sampler = sampler if sampler is not None else EulerSampler()
        self.steps = steps
        self.per_frame_levels = per_frame_levels
        self.frame_positions = frame_positions
        self.sampling_seed = sampling_seed
        if init_weights is not None:
            self.load_weights(init_weights)

    def load_weights(self, path: str) -> None:
        """Initialise from a Lightning checkpoint's weights (strict; errors name the file)."""
        from vdf.models.weights import load_weights

        load_weights(self, path, "init_weights", "The previous stage's checkpoint (checkpoints/last.ckpt of its run)")

    # -- the calls strategies use -------------------------------------------------------------
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
        """Depth latents -> the prediction ``(B,T,1,H,W)`` in ``output_space`` (relative disparity or depth)."""
        return self.normalization.to_output(self.denoiser.decode_depth(latents))

    @property
    def output_space(self) -> str:
        return self.normalization.space

    # -- clip forward ---------------------------------------------------------------------------
    def forward(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [0,1] -> relative disparity ``(B,T,1,H,W)``, sampled with ``steps`` steps."""
        generator = self.generator()
        cond = self.condition(video, generator)
        x = self.initial_latents(self.latent_shape(video), generator)
        positions = self._positions(frame_index, video) if self.frame_positions else None
        return self.decode(self.denoise(cond, x, position_ids=positions))

    @staticmethod
    def _positions(frame_index: torch.Tensor | None, video: torch.Tensor) -> torch.Tensor:
        if frame_index is None:
            return torch.arange(video.shape[1], device=video.device).expand(video.shape[0], -1)
        return frame_index - frame_index[:, :1]

    # -- cost accounting ------------------------------------------------------------------------
    def _denoisers(self) -> list[SVDDepthDenoiser]:
        """This model's denoiser and any its strategy holds (the keyframe interpolation network)."""
        found = [self.denoiser]
        other = getattr(getattr(self.strategy, "interpolator", None), "denoiser", None)
        if isinstance(other, SVDDepthDenoiser) and other is not self.denoiser:
            found.append(other)
        return found

    def _eval_step(self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False,
                   test: bool = False) -> dict[str, torch.Tensor]:
        before = sum(d.frame_evaluations for d in self._denoisers())
        out = super()._eval_step(batch, dataloader_idx, stream, test)
        evaluations = sum(d.frame_evaluations for d in self._denoisers()) - before
        name = self._eval_names[dataloader_idx]
        done, frames = self._evaluations.get(name, (0, 0))
        self._evaluations[name] = (done + evaluations, frames + batch["video"].shape[0] * batch["video"].shape[1])
        return out

    def _setup_metrics(self, split: str) -> None:
        super()._setup_metrics(split)
        self._evaluations: dict[str, tuple[int, int]] = {}

    def _log_metrics(self, split: str) -> None:
        # UNet evaluations per output frame: sampling steps x frames each step denoises or shows as
        # context, over the frames predicted (the cost axis of the steps-vs-accuracy tables).
        for name, (evaluations, frames) in self._evaluations.items():
            if frames:
                self.log(f"{split}/{name}/unet_evals_per_frame", evaluations / frames)
        super()._log_metrics(split)

    # -- training -------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        video, depth, valid = batch["video"], batch["depth"], batch["valid"]
        b, t = video.shape[:2]
        target = self.normalization(depth, valid)
        x0 = self.denoiser.encode_depth(target)
        cond = self.denoiser.condition(video)
        shape = (b, t) if self.per_frame_levels else (b,)
        level = self.objective.sample_levels(shape, device=self.device)
        noise = torch.randn_like(x0)
        x = self.objective.add_noise(x0, noise, level)
        frame_level = level if level.dim() == 2 else level[:, None].expand(b, t)
        positions = self._positions(batch.get("frame_index"), video) if self.frame_positions else None
        out = self.denoiser(self.objective.net_input(x, level), self.objective.timestep(frame_level), cond,
                            position_ids=positions)
        return self.objective.loss(out, x, x0, noise, level).mean()

    def param_groups(self) -> list[dict[str, Any]]:
        params = [p for p in self.denoiser.unet.parameters() if p.requires_grad]
        return [{"params": params, "lr": self.lr}]
