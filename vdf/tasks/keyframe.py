"""`KeyframeInterpolationTask`: Depth Any Video's keyframe-conditioned interpolation network.

The network is the base model's UNet with 16 input channels: ``[noisy depth latents, video
latents, keyframe depth latents (zeros at other frames), keyframe mask ×4]`` — the last eight
reach `SVDDepthDenoiser` as its ``extra`` channels (`vdf.inference.keyframe_interpolation.keyframe_extra`).

Training as DAV's code: the keyframes are the first and the last frame of every training clip;
their clean ground-truth depth latents are the condition, and the flow-matching loss covers all
frames. Validation and test (``test_with_strategy: false`` by default) do the same with
sampling: keyframe latents from the ground truth (normalised and VAE-encoded as in training),
the other frames sampled — the score of the interpolation network alone, given perfect
keyframes. For whole videos the network is used by `vdf.inference.KeyframeInterpolation`.

``base_weights`` starts training from a trained 8-channel model as the paper does:
``conv_in``'s weights are repeated along the input channels and divided by the repeat count
(`vdf.models.weights.widen_conv_in`), so at initialisation the network equals the base one when
the extra channels repeat ``[noisy, video]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vdf.diffusion.base import DiffusionObjective
from vdf.diffusion.normalization import DepthNormalization
from vdf.diffusion.sampler import EulerSampler
from vdf.inference.base import LongVideoStrategy
from vdf.inference.resolution import Resolution
from vdf.inference.keyframe_interpolation import endpoint_mask, keyframe_extra
from vdf.models.svd import SVDDepthDenoiser
from vdf.tasks.latent_diffusion import LatentDiffusionTask

CONV_IN = "conv_in.weight"
BASE_WHERE = (
    "The 8-channel base model: a Lightning checkpoint of the Depth Any Video base run, or DAV's 'unet' folder "
    "(Hugging Face hhyangcs/depth-any-video)"
)


class KeyframeInterpolationTask(LatentDiffusionTask):
    """The interpolation network of Depth Any Video, trained and evaluated on its own.

    Args:
        denoiser: an `SVDDepthDenoiser` whose UNet takes 16 input channels.
        base_weights: the trained 8-channel base model to start from: a Lightning checkpoint
            of a `LatentDiffusionTask` (all weights; ``conv_in`` expanded) or a diffusers UNet
            folder such as Depth Any Video's ``unet`` (UNet weights only). None: no such start.
        steps, frame_positions: defaults are Depth Any Video's (3 steps; RoPE positions from
            ``frame_index``).
        test_with_strategy: default False — test as validation, with ground-truth keyframes.
        Other arguments: see `LatentDiffusionTask` (``init_weights`` loads a checkpoint of
            this task, e.g. to resume from a previous interpolation run's weights).
    """

    def __init__(
        self,
        denoiser: SVDDepthDenoiser,
        objective: DiffusionObjective | None = None,
        normalization: DepthNormalization | None = None,
        sampler: EulerSampler | None = None,
        steps: int = 3,
        per_frame_levels: bool = False,
        frame_positions: bool = True,
        sampling_seed: int | None = 0,
        init_weights: str | None = None,
        base_weights: str | None = None,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        min_lr_ratio: float = 1.0,
        eval_max_depth: float = 80.0,
        boundary_f1: bool = False,
        tae: bool = False,
        strategy: LongVideoStrategy | None = None,
        test_with_strategy: bool = False,
        resolution: Resolution | None = None,
    ):
        if denoiser.unet.in_channels != 16:
            raise ValueError(
                f"the interpolation UNet takes 16 input channels (noisy, video, keyframe latents, mask), "
                f"this one {denoiser.unet.in_channels}: set in_channels: 16 (or load DAV's unet_interp folder)"
            )
        super().__init__(
            denoiser=denoiser,
            objective=objective,
            normalization=normalization,
            sampler=sampler,
            steps=steps,
            per_frame_levels=per_frame_levels,
            frame_positions=frame_positions,
            sampling_seed=sampling_seed,
            init_weights=None,
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
        if base_weights is not None:
            self.load_base(base_weights)
        if init_weights is not None:
            self.load_weights(init_weights)

    def load_base(self, path: str) -> None:
        """Initialise from an 8-channel model (Lightning checkpoint or diffusers UNet folder)."""
        from vdf.models.weights import load_state_dict_strict, read_weights, widen_conv_in

        unet = self.denoiser.unet.unet
        # A diffusers folder holds the UNet alone, a Lightning checkpoint the whole task.
        target, key = (unet, CONV_IN) if Path(path).is_dir() else (self, "denoiser.unet.unet." + CONV_IN)
        state = read_weights(path, "base_weights", BASE_WHERE)
        if key not in state:
            raise KeyError(f"base_weights {path} has no {key}: not a checkpoint of an SVD-UNet depth model")
        state[key] = widen_conv_in(state[key], unet.conv_in.in_channels)
        load_state_dict_strict(target, state, source=f"base_weights {path}")

    # -- keyframes from the ground truth --------------------------------------------------------
    def keyframe_condition(self, x0: torch.Tensor) -> torch.Tensor:
        """Extra channels for clean depth latents ``x0`` (B,T,4,h,w): first and last frame as keyframes."""
        b, t = x0.shape[:2]
        return keyframe_extra(x0, endpoint_mask(b, t, x0.device))

    def forward(self, video: torch.Tensor, frame_index: torch.Tensor | None = None) -> torch.Tensor:
        raise RuntimeError(
            "the interpolation network needs keyframe latents: run it through "
            "vdf.inference.KeyframeInterpolation(interpolator=...) on a base Depth Any Video model"
        )

    @torch.no_grad()
    def interpolate(self, video: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor,
                    frame_index: torch.Tensor | None = None) -> torch.Tensor:
        """Relative disparity ``(B,T,1,H,W)`` of a clip whose first and last frames' latents come
        from the ground truth (``depth`` in metres, ``valid``)."""
        generator = self.generator()
        x0 = self.denoiser.encode_depth(self.normalization(depth.to(self.device), valid.to(self.device)))
        cond = self.condition(video, generator)
        x = self.initial_latents(self.latent_shape(video), generator)
        positions = self._positions(frame_index, video) if self.frame_positions else None
        return self.decode(self.denoise(cond, x, position_ids=positions, extra=self.keyframe_condition(x0)))

    def _eval_step(self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False,
                   test: bool = False) -> dict[str, torch.Tensor]:
        if stream:
            return super()._eval_step(batch, dataloader_idx, stream=True, test=test)
        pred = self.interpolate(batch["video"], batch["depth"], batch["valid"], batch.get("frame_index"))
        self.eval_metrics[self._eval_names[dataloader_idx]].update(
            pred.float(),
            batch["depth"],
            batch["valid"],
            intrinsics=batch.get("intrinsics"),
            cam_to_world=batch.get("cam_to_world"),
        )
        return {"disparity": pred}

    # -- training -------------------------------------------------------------------------------
    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        video, depth, valid = batch["video"], batch["depth"], batch["valid"]
        b, t = video.shape[:2]
        x0 = self.denoiser.encode_depth(self.normalization(depth, valid))
        cond = self.denoiser.condition(video)
        shape = (b, t) if self.per_frame_levels else (b,)
        level = self.objective.sample_levels(shape, device=self.device)
        noise = torch.randn_like(x0)
        x = self.objective.add_noise(x0, noise, level)
        frame_level = level if level.dim() == 2 else level[:, None].expand(b, t)
        positions = self._positions(batch.get("frame_index"), video) if self.frame_positions else None
        out = self.denoiser(self.objective.net_input(x, level), self.objective.timestep(frame_level), cond,
                            position_ids=positions, extra=self.keyframe_condition(x0))
        return self.objective.loss(out, x, x0, noise, level).mean()
