"""A tiny SVD-architecture VAE trained on the synthetic world, for the CPU (``configs/tiny``) twins.

A latent diffusion model can only be as good as its frozen VAE's reconstructions. SVD's VAE is
too large for a 2-core CPU and a randomly initialised small one does not reconstruct anything,
so the tiny configs use `TinySVDVAE`: diffusers' ``AutoencoderKLTemporalDecoder`` with two levels of
32 channels (4 latent channels, /2 downsampling), trained here on synthetic-world frames and
normalised disparity maps (replicated to three channels, as the depth models feed them), with
its ``scaling_factor`` set so scaled latents have unit standard deviation (EDM's σ_data = 1).
The weights ship with vdf (``vdf/models/assets/tiny_svd_vae``, under 1 MB); regenerate them with
``python -m vdf.models.tiny_vae``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vdf.models.svd import SVDVAE

ASSET = Path(__file__).parent / "assets" / "tiny_svd_vae"
BLOCKS = (32, 32)


class TinySVDVAE(SVDVAE):
    """SVD's VAE architecture at toy size with shipped weights trained on the synthetic world.

    Args:
        chunk_size: frames per encode/decode call.
    """

    def __init__(self, chunk_size: int = 4):
        super().__init__(weights=str(ASSET), chunk_size=chunk_size)


def _batches(seed: int, steps: int, batch: int, frames: int, height: int, width: int):
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=256, num_frames=frames, height=height, width=width, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        rgb, depth = [], []
        for i in torch.randint(len(world), (batch,), generator=g).tolist():
            sample = world.load(i, list(range(frames)))
            rgb.append(sample["video"] * 2 - 1)
            d = sample["depth"]
            disparity = 1 / d.clamp_min(1e-3)
            t = (disparity - disparity.min()) / (disparity.max() - disparity.min()).clamp_min(1e-6) * 2 - 1
            depth.append(t.expand(-1, 3, -1, -1))
        yield torch.cat(rgb), torch.cat(depth)


def train_tiny_vae(steps: int = 600, seed: int = 0, lr: float = 2e-3, kl_weight: float = 1e-6) -> SVDVAE:
    """Train the tiny VAE on synthetic RGB frames and depth targets (reconstruction + a small KL)."""
    torch.manual_seed(seed)
    vae = SVDVAE(block_out_channels=BLOCKS, layers_per_block=1, chunk_size=4)
    model = vae.vae
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    frames = 4
    for step, (rgb, depth) in enumerate(_batches(seed, steps, batch=4, frames=frames, height=32, width=48)):
        x = torch.cat([rgb, depth])
        posterior = model.encode(x).latent_dist
        z = posterior.sample()
        recon = model.decode(z, num_frames=frames).sample
        loss = (recon - x).abs().mean() + kl_weight * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * (step + 1) / steps))).item()
        if step % 100 == 0:
            print(f"step {step}: L1 {loss.item():.4f}")
    with torch.no_grad():
        rgb, depth = next(_batches(seed + 1, 1, batch=8, frames=frames, height=32, width=48))
        z = model.encode(torch.cat([rgb, depth])).latent_dist.mode()
        model.register_to_config(scaling_factor=float(1 / z.std()))
    return vae


def write_tiny_vae(output: str = str(ASSET), steps: int = 600, seed: int = 0) -> None:
    """Train the tiny VAE and save it in diffusers' folder format to ``output``."""
    vae = train_tiny_vae(steps, seed)
    vae.vae.save_pretrained(output, safe_serialization=True)
    print(f"wrote {output} (scaling_factor {vae.vae.config.scaling_factor:.4f})")


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(write_tiny_vae)
