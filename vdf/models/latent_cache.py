"""The SVD depth denoiser's video conditioning, computed once for a latent cache and used from it.

`SVDDepthDenoiser.condition` encodes a clip's frames with the frozen VAE and image encoder every
training step. Both act frame by frame (SVD's VAE encoder is a 2-D network; the image encoder sees
one frame at a time), so each frame's encoding can be computed once and stored
(`vdf.data.datasets.latent_cache`), and any clip later drawn from the sequence is served from it:

- `encode_frames`: what the cache stores per frame — the VAE posterior's mean and (when the model
  samples its video latents, ChronoDepth) its standard deviation, unscaled, and the image embedding;
  the video is prepared exactly as ``condition`` prepares it (dtype, [-1,1], noise augmentation);
- `condition_from_cache`: the `SVDCondition` of a batch of cached frames, as ``condition`` builds
  it (posterior sample drawn here, with the encoder's chunking so a seeded run draws the same
  numbers; ``scaling_factor``; added time ids);
- `encoder_key`: what the cached values depend on — the VAE and image-encoder weights
  (fingerprints) and the conditioning settings — so a cache made with other weights or settings
  is refused.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn

from vdf.models.svd import SVDCondition, SVDDepthDenoiser


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a module's state dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:16]


def encoder_key(denoiser: SVDDepthDenoiser) -> dict[str, Any]:
    """What a cached frame's values depend on, on the model's side (compared entry by entry).

    The fingerprints cover every weight of the VAE and of the image encoder; the settings are
    those `encode_frames` applies (noise augmentation, whether the posterior's spread is kept) and
    the image encoder's own preprocessing. The latent scaling is applied when the cache is read,
    so it is not part of the key.
    """
    embedder = denoiser.image_encoder
    return {
        "vae_weights": weights_fingerprint(denoiser.vae),
        "image_encoder": type(embedder).__name__,
        "image_encoder_weights": weights_fingerprint(embedder),
        "image_encoder_size": getattr(embedder, "image_size", None),
        "image_encoder_black_image": getattr(embedder, "black_image", None),
        "noise_aug_strength": float(denoiser.noise_aug_strength),
        "posterior_std": bool(denoiser.video_latent_sample),
    }


@torch.no_grad()
def encode_frames(
    denoiser: SVDDepthDenoiser, video: torch.Tensor, augmentation: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Cache entries of frames ``video`` ``(T,3,H,W)`` in [0,1].

    ``augmentation`` ``(T,3,H,W)`` is the unit Gaussian noise of the video's noise augmentation
    (required when the denoiser's ``noise_aug_strength`` is positive); it is scaled and added in
    [-1,1] exactly as `SVDDepthDenoiser.condition` adds its own draw.

    Returns ``{"mean": (T,4,h,w), "embeddings": (T,1,D)}`` and ``"std": (T,4,h,w)`` when the
    denoiser samples its video latents; latents unscaled, in the VAE's encoding dtype.
    """
    denoiser.check_size(*video.shape[-2:])
    vae = denoiser.vae
    frames = video.to(vae.dtype)
    embeddings = denoiser.image_encoder(frames[None])[0]
    x = frames * 2 - 1
    if denoiser.noise_aug_strength > 0:
        if augmentation is None:
            raise ValueError("this model augments the video with noise before encoding: pass the augmentation noise")
        x = x + denoiser.noise_aug_strength * augmentation.to(x.device, x.dtype)
    means, stds = [], []
    # The posterior itself (SVDVAE.encode returns only its mode or one sample), with the weights as
    # SVDVAE.encode uses them (float32 under force_upcast).
    with vae._encoding_weights() as dtype:
        for chunk in x.split(vae.chunk_size):
            dist = vae.vae.encode(chunk.to(dtype)).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
    out = {"mean": torch.cat(means), "embeddings": embeddings}
    if denoiser.video_latent_sample:
        out["std"] = torch.cat(stds)
    return out


def condition_from_cache(
    denoiser: SVDDepthDenoiser,
    mean: torch.Tensor,
    embeddings: torch.Tensor,
    std: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SVDCondition:
    """The `SVDCondition` of cached frames: ``mean``/``std`` ``(B,T,4,h,w)``, ``embeddings`` ``(B,T,1,D)``.

    As `SVDDepthDenoiser.condition`: the posterior's mode, or a sample ``mean + std * eps`` with
    ``eps`` drawn per chunk of ``vae.chunk_size`` frames of the flattened clip (as the encoder draws
    it, so the same RNG state gives the same sample), times ``scaling_factor`` when the model
    scales its video latents; the added time ids in the embeddings' dtype.
    """
    b = mean.shape[0]
    latents = mean
    if denoiser.video_latent_sample:
        if std is None:
            raise ValueError(
                "this model samples its video latents (video_latent_sample) but the cache holds no posterior "
                "std: re-create the cache with this config"
            )
        flat_mean, flat_std = mean.flatten(0, 1), std.flatten(0, 1)
        parts = []
        for m, s in zip(flat_mean.split(denoiser.vae.chunk_size), flat_std.split(denoiser.vae.chunk_size)):
            eps = torch.randn(m.shape, generator=generator, device=m.device if generator is None else generator.device)
            parts.append(m + s * eps.to(m.device, m.dtype))
        latents = torch.cat(parts).reshape(mean.shape)
    if denoiser.video_latent_scaled:
        latents = latents * denoiser.vae.scaling_factor
    ids = None
    if denoiser.unet.has_added_time_ids:
        ids = torch.tensor([denoiser.time_ids], device=mean.device, dtype=embeddings.dtype).expand(b, 3)
    return SVDCondition(latents, embeddings, ids)
