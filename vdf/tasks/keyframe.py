"""`KeyframeInterpolationTask`: Depth Any Video's keyframe-conditioned interpolation network.

The task trains the predictor's ``interpolator`` (Depth Any Video's predictor holds both networks;
the base network stays as it is). The interpolation network is the base model's UNet with 16
input channels: ``[noisy depth latents, video
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

from vdf.inference.keyframe_interpolation import endpoint_mask, keyframe_extra
from vdf.predictors.latent import LatentDiffusionPredictor
from vdf.tasks.latent_diffusion import LatentDiffusionTask

CONV_IN = "conv_in.weight"
BASE_WHERE = (
    "The 8-channel base model: a Lightning checkpoint of the Depth Any Video base run, or DAV's 'unet' folder "
    "(Hugging Face hhyangcs/depth-any-video)"
)


class KeyframeInterpolationTask(LatentDiffusionTask):
    """The interpolation network of Depth Any Video, trained and evaluated on its own.

    Args:
        predictor: Depth Any Video's predictor; its ``interpolator`` (UNet of 16 input channels)
            is the network trained here.
        base_weights: the trained 8-channel base model whose UNet starts the interpolation UNet:
            a Lightning checkpoint of the base run (its ``predictor.denoiser.unet``) or a
            diffusers UNet folder such as Depth Any Video's ``unet``; ``conv_in`` is widened.
            None: no such start.
        test_with_strategy: default False — test as validation, with ground-truth keyframes.
        **kwargs: `LatentDiffusionTask`'s arguments (``init_weights`` loads a checkpoint of this
            task, e.g. to resume from a previous interpolation run's weights).
    """

    def __init__(
        self,
        predictor: LatentDiffusionPredictor,
        base_weights: str | None = None,
        test_with_strategy: bool = False,
        **kwargs,
    ):
        interpolator = predictor.interpolator
        if interpolator is None or interpolator.denoiser.unet.in_channels != 16:
            raise ValueError(
                "the interpolation task trains the predictor's interpolator, whose UNet takes 16 input channels "
                "(noisy, video, keyframe latents, mask): set predictor.init_args.interpolator (in_channels: 16, or "
                "DAV's unet_interp folder)"
            )
        init_weights = kwargs.pop("init_weights", None)
        super().__init__(predictor=predictor, test_with_strategy=test_with_strategy, **kwargs)
        if base_weights is not None:
            self.load_base(base_weights)
        if init_weights is not None:
            self.load_weights(init_weights)

    @property
    def network(self) -> LatentDiffusionPredictor:
        return self.predictor.interpolator

    def load_base(self, path: str) -> None:
        """Initialise the interpolation UNet from an 8-channel one (Lightning checkpoint or diffusers folder)."""
        from vdf.models.weights import load_state_dict_strict, read_weights, widen_conv_in

        unet = self.network.denoiser.unet.unet
        state = read_weights(path, "base_weights", BASE_WHERE)
        if not Path(path).is_dir():
            # A Lightning checkpoint of the base run holds the whole task: keep its UNet.
            prefix = "predictor.denoiser.unet.unet."
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if CONV_IN not in state:
            raise KeyError(f"base_weights {path} has no UNet {CONV_IN}: not a checkpoint of an SVD-UNet depth model")
        state[CONV_IN] = widen_conv_in(state[CONV_IN], unet.conv_in.in_channels)
        load_state_dict_strict(unet, state, source=f"base_weights {path}")

    # -- keyframes from the ground truth --------------------------------------------------------
    def extra_channels(self, x0: torch.Tensor) -> torch.Tensor:
        """The first and the last frame of the clip as keyframes, from clean latents ``x0`` (B,T,4,h,w)."""
        b, t = x0.shape[:2]
        return keyframe_extra(x0, endpoint_mask(b, t, x0.device))

    @torch.no_grad()
    def interpolate(
        self, video: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, frame_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The prediction ``(B,T,1,H,W)`` of a clip whose first and last frames' latents come from
        the ground truth (``depth`` in metres, ``valid``)."""
        p = self.network
        x0 = p.denoiser.encode_depth(p.normalization(depth.to(self.device), valid.to(self.device)))
        return p.clip(video.to(self.device), frame_index, extra=self.extra_channels(x0))

    def _eval_step(
        self, batch: dict[str, Any], dataloader_idx: int, stream: bool = False, test: bool = False
    ) -> dict[str, torch.Tensor]:
        if stream:
            return super()._eval_step(batch, dataloader_idx, stream=True, test=test)
        pred = self.interpolate(batch["video"], batch["depth"], batch["valid"], batch.get("frame_index"))
        self.eval_metrics[self._eval_names[dataloader_idx]].update(
            pred.float(),
            batch["depth"],
            batch["valid"],
            intrinsics=batch.get("intrinsics"),
            cam_to_world=batch.get("cam_to_world"),
            pred_space=self.output_space,
        )
        return {"disparity": pred}
