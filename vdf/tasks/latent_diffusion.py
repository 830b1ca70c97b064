"""`LatentDiffusionTask`: training of the SVD-based depth denoisers (DepthCrafter, ChronoDepth, Depth Any Video).

The method is its predictor's configuration (`vdf.predictors.LatentDiffusionPredictor`: network,
objective, normalisation, sampler, steps); the task adds the denoising loss, whether training
noise levels are drawn per frame, stage chaining and cost accounting::

    target = normalisation(depth)              # (B,T,1,H,W) in [-1,1], VAE-encoded -> x0
    level  ~ objective.sample_levels((B,) or (B,T))
    loss   = objective.loss(net(objective.net_input(x0 + noise), extra_channels(x0)), ...)

A batch from a latent cache (`vdf.data.datasets.latent_cache`, made by ``vdf cache-latents``)
carries its frames' video latents and image embeddings: the conditioning is built from them and
the video is not encoded (`training_condition`).

Validation and test sample with the predictor (``vdf test`` through its strategy); results also
report the UNet evaluations per output frame.
"""

from __future__ import annotations

from typing import Any

import torch

from vdf.predictors.latent import LatentDiffusionPredictor
from vdf.tasks.base import VideoDepthTask


class LatentDiffusionTask(VideoDepthTask):
    """Latent video diffusion for depth on the SVD UNet.

    Args:
        predictor: the latent diffusion predictor (its denoiser's VAE and image encoder are frozen).
        per_frame_levels: draw an independent training noise level per frame (ChronoDepth)
            instead of one per clip.
        **kwargs: `VideoDepthTask`'s arguments (optimiser, schedule, evaluation, ``init_weights``:
            the previous training stage's checkpoint).
    """

    def __init__(
        self,
        predictor: LatentDiffusionPredictor,
        per_frame_levels: bool = False,
        **kwargs,
    ):
        super().__init__(predictor=predictor, **kwargs)
        self.per_frame_levels = per_frame_levels

    # -- cost accounting ------------------------------------------------------------------------
    def _eval_step(
        self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False, test: bool = False
    ) -> dict[str, torch.Tensor]:
        denoisers = self.predictor.denoisers()
        before = sum(d.frame_evaluations for d in denoisers)
        out = super()._eval_step(batch, dataloader_idx, stream, test)
        evaluations = sum(d.frame_evaluations for d in denoisers) - before
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
    @property
    def network(self) -> LatentDiffusionPredictor:
        """The predictor this task trains (the interpolation task trains the predictor's interpolator)."""
        return self.predictor

    def extra_channels(self, x0: torch.Tensor) -> torch.Tensor | None:
        """Extra input channels of the network during training, from the clean latents ``x0``
        ``(B,T,4,h,w)``; none here (the interpolation task adds its keyframes)."""
        return None

    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        p = self.network
        video, depth, valid = batch["video"], batch["depth"], batch["valid"]
        b, t = video.shape[:2]
        x0 = p.denoiser.encode_depth(p.normalization(depth, valid))
        cond = self.training_condition(batch)
        shape = (b, t) if self.per_frame_levels else (b,)
        level = p.objective.sample_levels(shape, device=self.device)
        noise = torch.randn_like(x0)
        x = p.objective.add_noise(x0, noise, level)
        frame_level = level if level.dim() == 2 else level[:, None].expand(b, t)
        positions = p.positions(batch.get("frame_index"), video) if p.frame_positions else None
        out = p.denoiser(
            p.objective.net_input(x, level),
            p.objective.timestep(frame_level),
            cond,
            position_ids=positions,
            extra=self.extra_channels(x0),
        )
        return p.objective.loss(out, x, x0, noise, level).mean()

    def training_condition(self, batch: dict[str, Any]):
        """The clip's `SVDCondition`: from the batch's cached video latents and image embeddings
        when it carries them (`vdf.data.datasets.latent_cache.LatentCache`), else encoded now."""
        from vdf.data.datasets.latent_cache import EMBEDDINGS, MEAN, STD

        denoiser = self.network.denoiser
        if MEAN not in batch:
            return denoiser.condition(batch["video"])
        from vdf.models.latent_cache import condition_from_cache

        return condition_from_cache(denoiser, batch[MEAN], batch[EMBEDDINGS], batch.get(STD))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # A latent cache made with other VAE / image-encoder weights or settings is refused before
        # training (weights still unwrapped here, before the strategy moves or shards them).
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        caches = [d for d in getattr(datamodule, "datasets", {}).get("train", []) if hasattr(d, "check_encoder")]
        if stage == "fit" and caches:
            from vdf.models.latent_cache import encoder_key

            key = encoder_key(self.network.denoiser)
            for cache in caches:
                cache.check_encoder(key)

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.network.denoiser.unet.parameters() if p.requires_grad]}]
