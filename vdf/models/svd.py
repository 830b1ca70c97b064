"""Stable Video Diffusion wiring for the latent video-depth models (DepthCrafter, ChronoDepth, DAV).

The networks are diffusers' and transformers' own classes, built either from a local
diffusers-format folder (their ``weights`` argument: ``config.json`` + weights, as
``save_pretrained`` writes them and as SVD, DepthCrafter, ChronoDepth and Depth Any Video are
published; read by `vdf.models.weights`) or from explicit sizes (the ``configs/tiny`` twins).
vdf adds what the methods need around them:

- `svd_unet_forward`: the UNet's forward with one timestep per *frame* (ChronoDepth), one image
  embedding per frame (DepthCrafter), optional added time ids (Depth Any Video has none) and
  frame positions for RoPE temporal attention;
- `SVDUNet`, `SVDVAE`, `CLIPFrameEmbedder` / `ZeroFrameEmbedder`: the three networks as modules
  with typed constructor arguments (the YAML schema);
- `SVDDepthDenoiser`: depth in and out of the VAE latent space, the video conditioning, the
  network call on ``[noisy depth latents, video latents (, extra channels)]``;
- `parameter_group` / `spatial_temporal_split`: DepthCrafter's spatial/temporal layer split.

Shapes: videos ``(B,T,3,H,W)``, latents ``(B,T,4,H/8,W/8)``.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from vdf.models.weights import load_weights, mark_frozen, read_config

#: The dtype a network holds its weights in (and computes in). The official inference pipelines
#: of DepthCrafter, ChronoDepth and Depth Any Video load UNet, VAE and CLIP in float16.
WeightsDtype = Literal["float32", "float16", "bfloat16"]
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a `WeightsDtype` name (a clear error for anything else)."""
    if name not in _DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    return _DTYPES[name]


# -- diffusers-format configs -------------------------------------------------------------------


def constructor_kwargs(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """The entries of a saved config that ``cls.__init__`` accepts (drops ``_class_name`` etc.)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in accepted}


# -- UNet ---------------------------------------------------------------------------------------

SVD_SOURCE = (
    "SVD-img2vid-xt comes from stabilityai/stable-video-diffusion-img2vid-xt (folders unet, vae, image_encoder); "
    "DepthCrafter's UNet from tencent/DepthCrafter; ChronoDepth's from jhshao/ChronoDepth-v1; "
    "pass a local folder, or a Hub reference such as hf://stabilityai/stable-video-diffusion-img2vid-xt/vae"
)


def svd_unet_forward(
    unet: nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    added_time_ids: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """diffusers' ``UNetSpatioTemporalConditionModel`` forward, generalised per frame.

    Args:
        unet: a ``UNetSpatioTemporalConditionModel`` (``add_embedding`` may be None: no added ids).
        sample: ``(B,T,C,h,w)`` network input.
        timestep: ``()``, ``(B,)`` or ``(B,T)`` — one per frame when ``(B,T)``.
        encoder_hidden_states: ``(B,N,D)`` shared by the clip's frames, or ``(B,T,N,D)`` per frame.
        added_time_ids: ``(B,k)`` (SVD: fps id, motion bucket, noise augmentation) or None.
        position_ids: ``(B,T)`` frame positions for RoPE temporal attention (modules with
            ``set_position_ids``); None = ``arange(T)``.

    Returns:
        ``(B,T,out_channels,h,w)`` in the UNet's weights dtype.

    The network computes in its weights' dtype: the input, the timestep embedding and the image
    embeddings are cast to it on entry, as DepthCrafter's UNet casts them (float16 inference).
    """
    b, t = sample.shape[:2]
    dtype = unet.conv_in.weight.dtype
    timestep = torch.as_tensor(timestep, device=sample.device)
    if timestep.dim() == 0:
        timestep = timestep.expand(b)
    if timestep.dim() == 1:
        timestep = timestep[:, None].expand(b, t)
    t_emb = unet.time_proj(timestep.reshape(b * t)).to(dtype)
    emb = unet.time_embedding(t_emb)  # (B*T, C)
    if getattr(unet, "add_embedding", None) is not None:
        if added_time_ids is None:
            raise ValueError("this UNet has an added-time embedding: pass added_time_ids (fps, motion, noise aug)")
        ids = unet.add_time_proj(added_time_ids.flatten()).reshape(b, -1).to(emb.dtype)
        emb = emb + unet.add_embedding(ids).repeat_interleave(t, dim=0)
    if encoder_hidden_states.dim() == 4:
        context = encoder_hidden_states.flatten(0, 1)
    else:
        context = encoder_hidden_states.repeat_interleave(t, dim=0)
    context = context.to(dtype)

    up_factor = 2**unet.num_upsamplers
    forward_upsample_size = any(s % up_factor for s in sample.shape[-2:])
    x = unet.conv_in(sample.flatten(0, 1).to(dtype))
    indicator = torch.zeros(b, t, dtype=x.dtype, device=x.device)

    positioned = [m for m in unet.modules() if hasattr(m, "set_position_ids")]
    for m in positioned:
        m.set_position_ids(position_ids)
    try:
        skips = (x,)
        for block in unet.down_blocks:
            if getattr(block, "has_cross_attention", False):
                x, res = block(hidden_states=x, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
            else:
                x, res = block(hidden_states=x, temb=emb, image_only_indicator=indicator)
            skips += res
        x = unet.mid_block(hidden_states=x, temb=emb, encoder_hidden_states=context, image_only_indicator=indicator)
        for i, block in enumerate(unet.up_blocks):
            res = skips[-len(block.resnets) :]
            skips = skips[: -len(block.resnets)]
            upsample_size = skips[-1].shape[2:] if forward_upsample_size and i < len(unet.up_blocks) - 1 else None
            kwargs = dict(
                hidden_states=x,
                temb=emb,
                res_hidden_states_tuple=res,
                upsample_size=upsample_size,
                image_only_indicator=indicator,
            )
            if getattr(block, "has_cross_attention", False):
                kwargs["encoder_hidden_states"] = context
            x = block(**kwargs)
    finally:
        for m in positioned:
            m.set_position_ids(None)
    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(b, t, *x.shape[1:])


class SVDUNet(nn.Module):
    """diffusers' ``UNetSpatioTemporalConditionModel``, from a folder or from explicit sizes.

    The defaults are SVD-img2vid-xt's configuration. ``weights`` (a diffusers-format folder:
    SVD's ``unet``, DepthCrafter's, ChronoDepth's or Depth Any Video's UNet) overrides the sizes
    with the folder's ``config.json`` and loads its weights strictly.

    Args:
        weights: local folder with ``config.json`` and weights, or None (random init).
        in_channels: input channels (8: noisy depth latents + video latents).
        out_channels: output channels (4).
        block_out_channels: channels per resolution level.
        layers_per_block: resnets per down block.
        num_attention_heads: heads per level (head dim = channels / heads).
        cross_attention_dim: image-embedding width.
        addition_time_embed_dim: width of each added-time-id sinusoid.
        added_time_ids: whether the network has the added-time embedding (SVD: fps id, motion
            bucket, noise augmentation); Depth Any Video's UNet has none.
        temporal_rope: RoPE over frame positions in temporal attention instead of the sinusoidal
            frame embedding (Depth Any Video, `vdf.models.rope`).
        rope_theta: RoPE base.
        gradient_checkpointing: recompute activations in the backward pass.
        weights_dtype: dtype of the weights and of the computation (``float16`` as the official
            inference pipelines load the UNet; inputs are cast on entry, the output is in this
            dtype). For inference: optimisers need ``float32`` weights.
    """

    def __init__(
        self,
        weights: str | None = None,
        in_channels: int = 8,
        out_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        num_attention_heads: tuple[int, ...] = (5, 10, 20, 20),
        cross_attention_dim: int = 1024,
        addition_time_embed_dim: int = 256,
        added_time_ids: bool = True,
        temporal_rope: bool = False,
        rope_theta: float = 10000.0,
        gradient_checkpointing: bool = False,
        weights_dtype: WeightsDtype = "float32",
    ):
        super().__init__()
        from diffusers import UNetSpatioTemporalConditionModel

        dtype = torch_dtype(weights_dtype)
        if weights is not None:
            config = read_config(weights, "UNet weights", SVD_SOURCE)
            kwargs = constructor_kwargs(UNetSpatioTemporalConditionModel, config)
        else:
            levels = len(block_out_channels)
            kwargs = dict(
                in_channels=in_channels,
                out_channels=out_channels,
                down_block_types=("CrossAttnDownBlockSpatioTemporal",) * (levels - 1) + ("DownBlockSpatioTemporal",),
                up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * (levels - 1),
                block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block,
                num_attention_heads=tuple(num_attention_heads),
                cross_attention_dim=cross_attention_dim,
                addition_time_embed_dim=addition_time_embed_dim,
                projection_class_embeddings_input_dim=3 * addition_time_embed_dim,
            )
        if weights is not None:
            # Every parameter and buffer comes from the folder: skip the random initialisation
            # (seconds to minutes for SVD's 1.5 B parameters) by building on the meta device.
            with torch.device("meta"):
                self.unet = UNetSpatioTemporalConditionModel(**kwargs)
        else:
            self.unet = UNetSpatioTemporalConditionModel(**kwargs)
        if not added_time_ids:
            self.unet.add_time_proj = None
            self.unet.add_embedding = None
        if temporal_rope:
            from vdf.models.rope import enable_temporal_rope

            enable_temporal_rope(self.unet, rope_theta)
        if weights is not None:
            self.unet.to_empty(device="cpu")
            load_weights(self.unet, weights, "UNet weights", SVD_SOURCE)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if dtype != torch.float32:
            self.unet.to(dtype)

    @property
    def in_channels(self) -> int:
        return self.unet.conv_in.in_channels

    @property
    def cross_attention_dim(self) -> int:
        dim = self.unet.config.cross_attention_dim
        return dim if isinstance(dim, int) else dim[0]

    @property
    def has_added_time_ids(self) -> bool:
        return getattr(self.unet, "add_embedding", None) is not None

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids=None, position_ids=None):
        """See `svd_unet_forward`."""
        return svd_unet_forward(self.unet, sample, timestep, encoder_hidden_states, added_time_ids, position_ids)


# -- spatial / temporal split -------------------------------------------------------------------

# Checked first: "transformer_blocks" is a substring of "temporal_transformer_blocks".
TEMPORAL_PATTERNS = ("temporal_transformer_blocks", "temporal_res_block", "time_pos_embed", "time_mixer")


def parameter_group(name: str) -> str:
    """``"temporal"`` for layers that act along time (DepthCrafter supp. A.2), else ``"spatial"``.

    Temporal: temporal transformer blocks, temporal resnet blocks, the frame-position embedding
    and the spatial/temporal mixing factors. Everything else (spatial resnets and transformers,
    their norms and projections, samplers, ``conv_in``/``conv_out``, time embeddings) is spatial.
    """
    return "temporal" if any(p in name for p in TEMPORAL_PATTERNS) else "spatial"


def spatial_temporal_split(module: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """``{"spatial": [...], "temporal": [...]}`` of ``(name, parameter)``; every parameter exactly once."""
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {"spatial": [], "temporal": []}
    for name, param in module.named_parameters():
        groups[parameter_group(name)].append((name, param))
    return groups


# -- VAE ----------------------------------------------------------------------------------------


class SVDVAE(nn.Module):
    """diffusers' ``AutoencoderKLTemporalDecoder`` (SVD's VAE), chunked over frames.

    Args:
        weights: local diffusers-format folder (SVD's ``vae``) or None.
        block_out_channels: encoder/decoder channels per level (SVD: 128, 256, 512, 512).
        layers_per_block: resnets per level.
        latent_channels: 4.
        scaling_factor: latent scale (0.18215).
        chunk_size: frames per encode/decode call (bounds memory; the temporal decoder mixes
            frames inside a chunk, as the reference pipelines do).
        weights_dtype: dtype of the weights (``float16`` as the official inference pipelines load
            SVD's VAE). Also the dtype the depth models bring the input video to before encoding
            (`SVDDepthDenoiser.condition`), as those pipelines cast the video to their dtype.
        force_upcast: with ``float16`` weights, encode in float32 (the weights upcast for the
            call, exactly diffusers' ``force_upcast`` as SVD's VAE config sets it and the
            pipelines apply it); decoding stays in float16. No effect for other dtypes.
    """

    def __init__(
        self,
        weights: str | None = None,
        block_out_channels: tuple[int, ...] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        latent_channels: int = 4,
        scaling_factor: float = 0.18215,
        chunk_size: int = 8,
        weights_dtype: WeightsDtype = "float32",
        force_upcast: bool = True,
    ):
        super().__init__()
        from diffusers import AutoencoderKLTemporalDecoder

        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        dtype = torch_dtype(weights_dtype)
        self.force_upcast = force_upcast
        if weights is not None:
            config = read_config(weights, "VAE weights", SVD_SOURCE)
            kwargs = constructor_kwargs(AutoencoderKLTemporalDecoder, config)
        else:
            kwargs = dict(
                down_block_types=("DownEncoderBlock2D",) * len(block_out_channels),
                block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block,
                latent_channels=latent_channels,
                scaling_factor=scaling_factor,
            )
        self.vae = AutoencoderKLTemporalDecoder(**kwargs)
        if weights is not None:
            load_weights(self.vae, weights, "VAE weights", SVD_SOURCE)
        if dtype != torch.float32:
            self.vae.to(dtype)
        self.chunk_size = chunk_size

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        """The weights dtype (read from the decoder: the encoder is only upcast during a call)."""
        return self.vae.decoder.conv_in.weight.dtype

    @property
    def upcasts(self) -> bool:
        """Whether encoding runs in float32 on float16 weights (``force_upcast``)."""
        return self.force_upcast and self.dtype == torch.float16

    @contextmanager
    def _encoding_weights(self):
        """The encoder's weights as encoding uses them: upcast to float32 for the call under
        ``force_upcast`` (the float16 values, exactly), then back to float16."""
        if not self.upcasts:
            yield self.dtype
            return
        parts = (self.vae.encoder, self.vae.quant_conv)
        try:
            for part in parts:
                part.float()
            yield torch.float32
        finally:
            for part in parts:
                part.to(self.dtype)

    def encode(self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(B,T,3,H,W)`` in [-1,1] -> unscaled latents ``(B,T,4,h,w)`` (posterior mode or a sample),
        in the encoding dtype (float32 under ``force_upcast``)."""
        b, t = x.shape[:2]
        frames = x.flatten(0, 1)
        out = []
        with self._encoding_weights() as dtype:
            for chunk in frames.split(self.chunk_size):
                dist = self.vae.encode(chunk.to(dtype)).latent_dist
                out.append(dist.sample(generator) if sample else dist.mode())
        z = torch.cat(out)
        return z.reshape(b, t, *z.shape[1:])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents ``(B,T,4,h,w)`` -> ``(B,T,3,H,W)`` (about [-1,1]) in the weights dtype."""
        b, t = z.shape[:2]
        out = []
        for clip in z:
            for chunk in clip.split(self.chunk_size):
                out.append(self.vae.decode(chunk.to(self.dtype), num_frames=len(chunk)).sample)
        x = torch.cat(out)
        return x.reshape(b, t, *x.shape[1:])


# -- image embeddings ---------------------------------------------------------------------------

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class FrameEmbedder(nn.Module):
    """``(B,T,3,H,W)`` in [0,1] -> one image embedding per frame ``(B,T,1,D)``."""

    dim: int


class ZeroFrameEmbedder(FrameEmbedder):
    """All-zero embeddings (Depth Any Video: the cross-attention carries no image information)."""

    def __init__(self, dim: int = 1024):
        super().__init__()
        self.dim = dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return video.new_zeros(video.shape[0], video.shape[1], 1, self.dim)


class CLIPFrameEmbedder(FrameEmbedder):
    """transformers' ``CLIPVisionModelWithProjection`` applied to every frame (DepthCrafter).

    Preprocessing as SVD's and DepthCrafter's pipelines: the frames go to [-1,1] (in the dtype
    they come in, as the pipelines compute it), an antialiased bicubic resize to ``image_size`` in
    float32, back to [0,1], CLIP's mean/std, then the tower in its weights dtype.
    ``black_image=True`` embeds a black frame for every frame instead (ChronoDepth's disabled
    conditioning: the resized image set to zero, a constant embedding, not a zero vector).
    Defaults are SVD's ViT-H/14 encoder.

    Args:
        weights: local transformers folder (SVD's ``image_encoder``) or None.
        hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, patch_size,
        image_size, projection_dim: the vision tower's sizes when built without weights.
        chunk_size: frames per encoder call.
        black_image: embed black frames (conditioning disabled).
        weights_dtype: dtype of the tower's weights and computation (``float16`` as the
            official pipelines load it); embeddings come out in it.
    """

    def __init__(
        self,
        weights: str | None = None,
        hidden_size: int = 1280,
        intermediate_size: int = 5120,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 16,
        patch_size: int = 14,
        image_size: int = 224,
        projection_dim: int = 1024,
        chunk_size: int = 8,
        black_image: bool = False,
        weights_dtype: WeightsDtype = "float32",
    ):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        source = "SVD's image encoder comes from stabilityai/stable-video-diffusion-img2vid-xt (folder image_encoder)"
        if weights is not None:
            saved = read_config(weights, "CLIP image encoder weights", source)
            # A saved dtype (SVD's image_encoder says "torch_dtype": "float16") would build part of
            # the tower in that dtype and the projection in float32: build in float32, load, cast.
            config = CLIPVisionConfig(**{k: v for k, v in saved.items() if k not in ("dtype", "torch_dtype")})
        else:
            config = CLIPVisionConfig(
                hidden_size=hidden_size,
                intermediate_size=intermediate_size,
                num_hidden_layers=num_hidden_layers,
                num_attention_heads=num_attention_heads,
                patch_size=patch_size,
                image_size=image_size,
                projection_dim=projection_dim,
            )
        self.encoder = CLIPVisionModelWithProjection(config)
        if weights is not None:
            load_weights(self.encoder, weights, "CLIP image encoder weights", source)
        if torch_dtype(weights_dtype) != torch.float32:
            self.encoder.to(torch_dtype(weights_dtype))
        self.dim = config.projection_dim
        self.image_size = config.image_size
        self.chunk_size = chunk_size
        self.black_image = black_image
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N,3,H,W)`` in [0,1] -> CLIP input ``(N,3,S,S)`` float32."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        size = (self.image_size, self.image_size)
        if self.black_image:
            x = frames.new_zeros(frames.shape[0], 3, *size, dtype=torch.float32)
        else:
            # The pipelines resize in [-1,1]: same result up to rounding, but this is their arithmetic.
            x = (_resize_with_antialiasing((frames * 2 - 1).float(), size) + 1) / 2
        # Contiguous as CLIP's image processor returns it: the resize leaves a channels-last
        # layout, and the patch convolution's kernel (so its float16 rounding) depends on it.
        return ((x - self.mean) / self.std).contiguous()

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        frames = video.flatten(0, 1)
        dtype = next(self.encoder.parameters()).dtype
        out = [
            self.encoder(pixel_values=self.preprocess(chunk).to(dtype)).image_embeds
            for chunk in frames.split(self.chunk_size)
        ]
        return torch.cat(out).reshape(b, t, 1, -1)


# -- the denoiser -------------------------------------------------------------------------------


@dataclass
class SVDCondition:
    """What the UNet is conditioned on for a clip: video latents, image embeddings, added time ids."""

    video_latents: torch.Tensor  # (B,T,4,h,w)
    embeddings: torch.Tensor  # (B,T,1,D)
    added_time_ids: torch.Tensor | None  # (B,k)

    def frames(self, start: int, stop: int) -> SVDCondition:
        """The condition of frames ``[start, stop)``."""
        return SVDCondition(self.video_latents[:, start:stop], self.embeddings[:, start:stop], self.added_time_ids)

    def select(self, index: torch.Tensor) -> SVDCondition:
        """The condition of the frames at ``index`` (1-D)."""
        return SVDCondition(self.video_latents[:, index], self.embeddings[:, index], self.added_time_ids)

    @staticmethod
    def cat(parts: list[SVDCondition]) -> SVDCondition:
        return SVDCondition(
            torch.cat([p.video_latents for p in parts], dim=1),
            torch.cat([p.embeddings for p in parts], dim=1),
            parts[0].added_time_ids,
        )


class SVDDepthDenoiser(nn.Module):
    """The SVD-based depth denoiser: a UNet on ``[noisy depth latents, video latents]`` plus the
    frozen VAE and image encoder, with each method's conditioning conventions as arguments.

    Depth goes through the RGB VAE replicated to three channels and comes back as the mean of the
    three decoded channels; depth latents live in the scaled space (× ``scaling_factor``).

    Args:
        unet: the denoising network (8 input channels; 16 for keyframe interpolation).
        vae: SVD's VAE (frozen).
        image_encoder: per-frame image embeddings (frozen); None = zeros of the UNet's width.
        video_latent_sample: video latents are posterior samples (ChronoDepth) rather than modes.
        video_latent_scaled: video latents are multiplied by ``scaling_factor`` (ChronoDepth, DAV;
            DepthCrafter leaves them unscaled).
        noise_aug_strength: Gaussian noise added to the video in [-1,1] before encoding
            (DepthCrafter 0.02).
        video_first: channel order ``[video, depth]`` (ChronoDepth) instead of ``[depth, video]``.
        fps_id, motion_bucket_id, noise_aug_id: the added time ids (DepthCrafter 7, 127, 0.02;
            ChronoDepth 6, 127, 0.0); unused when the UNet has no added-time embedding.
        clamp_channels: clamp each decoded channel to [-1,1] before their mean (DepthCrafter's
            post-processing); otherwise the mean is clamped (ChronoDepth, Depth Any Video).
    """

    def __init__(
        self,
        unet: SVDUNet,
        vae: SVDVAE,
        image_encoder: FrameEmbedder | None = None,
        video_latent_sample: bool = False,
        video_latent_scaled: bool = False,
        noise_aug_strength: float = 0.02,
        video_first: bool = False,
        fps_id: float = 7.0,
        motion_bucket_id: float = 127.0,
        noise_aug_id: float = 0.02,
        clamp_channels: bool = True,
    ):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder if image_encoder is not None else ZeroFrameEmbedder(unet.cross_attention_dim)
        if self.image_encoder.dim != unet.cross_attention_dim:
            raise ValueError(
                f"image embeddings have width {self.image_encoder.dim} but the UNet's cross-attention expects "
                f"{unet.cross_attention_dim}"
            )
        # Never trained: replicated (not sharded) by FSDP, left out of checkpoints when loaded from files.
        mark_frozen(self.vae)
        mark_frozen(self.image_encoder)
        self.video_latent_sample = video_latent_sample
        self.video_latent_scaled = video_latent_scaled
        self.noise_aug_strength = noise_aug_strength
        self.video_first = video_first
        self.time_ids = (fps_id, motion_bucket_id, noise_aug_id)
        self.clamp_channels = clamp_channels
        #: Frames the UNet has been evaluated on (one per frame per network call), for cost tables.
        self.frame_evaluations = 0

    @property
    def downsample(self) -> int:
        return self.vae.downsample

    def check_size(self, height: int, width: int) -> None:
        multiple = self.vae.downsample
        if height % multiple or width % multiple:
            raise ValueError(
                f"frame size {height}x{width} is not a multiple of {multiple} (the VAE's downsampling); "
                f"resize to {height // multiple * multiple}x{width // multiple * multiple} or "
                f"{-(-height // multiple) * multiple}x{-(-width // multiple) * multiple}"
            )

    def augmentation_noise(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """Unit Gaussian noise of the video's noise augmentation, float32, drawn from ``generator``
        (on its device; the global RNG on ``device`` when None). Tests replace it to replay
        recorded noise."""
        return torch.randn(shape, generator=generator, device=device if generator is None else generator.device)

    @torch.no_grad()
    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> SVDCondition:
        """``(B,T,3,H,W)`` in [0,1] -> the clip's `SVDCondition` (no gradients: VAE and CLIP are frozen).

        As the official pipelines: the video is brought to the VAE's weights dtype and to [-1,1];
        the image embeddings see it before the noise augmentation (DepthCrafter draws that noise
        after embedding); the VAE encodes the augmented video; the added time ids take the
        embeddings' dtype.
        """
        self.check_size(*video.shape[-2:])
        video = video.to(self.vae.dtype)
        embeddings = self.image_encoder(video)
        x = video * 2 - 1
        if self.noise_aug_strength > 0:
            noise = self.augmentation_noise(x.shape, generator, x.device)
            x = x + self.noise_aug_strength * noise.to(x.device, x.dtype)
        latents = self.vae.encode(x, sample=self.video_latent_sample, generator=generator)
        if self.video_latent_scaled:
            latents = latents * self.vae.scaling_factor
        ids = None
        if self.unet.has_added_time_ids:
            ids = torch.tensor([self.time_ids], device=video.device, dtype=embeddings.dtype).expand(video.shape[0], 3)
        return SVDCondition(latents, embeddings, ids)

    @torch.no_grad()
    def encode_depth(self, target: torch.Tensor) -> torch.Tensor:
        """``(B,T,1,H,W)`` in [-1,1] -> scaled depth latents ``(B,T,4,h,w)`` (posterior mode)."""
        return self.vae.encode(target.expand(*target.shape[:2], 3, *target.shape[3:])) * self.vae.scaling_factor

    def decode_depth(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled depth latents -> ``(B,T,1,H,W)`` in [-1,1], the mean of the three decoded channels."""
        x = self.vae.decode(latents / self.vae.scaling_factor).float()
        if self.clamp_channels:
            return x.clamp(-1, 1).mean(dim=2, keepdim=True)
        return x.mean(dim=2, keepdim=True).clamp(-1, 1)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        cond: SVDCondition,
        position_ids: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The network output for scaled noisy depth latents ``x`` ``(B,T,4,h,w)``.

        ``timestep`` is ``(B,)`` or ``(B,T)``; ``extra`` ``(B,T,k,h,w)`` is appended to the input
        channels (keyframe latents and mask of the interpolation UNet).
        """
        video = cond.video_latents.to(x.dtype)
        parts = [video, x] if self.video_first else [x, video]
        if extra is not None:
            parts.append(extra.to(x.dtype))
        sample = torch.cat(parts, dim=2)
        self.frame_evaluations += sample.shape[0] * sample.shape[1]
        if sample.shape[2] != self.unet.in_channels:
            raise ValueError(f"the UNet takes {self.unet.in_channels} input channels, got {sample.shape[2]}")
        return self.unet(sample, timestep, cond.embeddings, cond.added_time_ids, position_ids)
