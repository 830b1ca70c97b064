"""The latent cache: same training loss as on-the-fly encoding, stale caches refused, interrupted runs resumed."""

from types import SimpleNamespace

import pytest
import torch

from vdf.data.collate import collate_clips
from vdf.data.datasets.latent_cache import LatentCache, LatentCacheWriter, StaleCacheError
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.diffusion import EDM, DepthMinMax, LogNormalSigma
from vdf.models.latent_cache import encode_frames, encoder_key
from vdf.models.svd import SVDVAE, CLIPFrameEmbedder, SVDDepthDenoiser, SVDUNet
from vdf.predictors import LatentDiffusionPredictor
from vdf.tasks import LatentDiffusionTask

UNET = dict(
    block_out_channels=(32, 32),
    layers_per_block=1,
    num_attention_heads=(2, 2),
    cross_attention_dim=16,
    addition_time_embed_dim=4,
)
CLIP = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8, image_size=16
)


def tiny_task(chronodepth: bool) -> LatentDiffusionTask:
    """DepthCrafter's conditioning (posterior mode, unscaled, noise augmentation, per-frame CLIP) or
    ChronoDepth's (posterior sample, scaled, black-image CLIP, one level per frame) at toy size."""
    torch.manual_seed(0)
    denoiser = SVDDepthDenoiser(
        unet=SVDUNet(**UNET),
        vae=SVDVAE(block_out_channels=(32, 32), layers_per_block=1, chunk_size=4),
        image_encoder=CLIPFrameEmbedder(**CLIP, projection_dim=16, black_image=chronodepth),
        video_latent_sample=chronodepth,
        video_latent_scaled=chronodepth,
        noise_aug_strength=0.0 if chronodepth else 0.02,
        video_first=chronodepth,
    )
    extra = (
        dict(objective=EDM(sigma_sampler=LogNormalSigma(0.7, 1.6)), normalization=DepthMinMax()) if chronodepth else {}
    )
    return LatentDiffusionTask(LatentDiffusionPredictor(denoiser, **extra), per_frame_levels=chronodepth).train()


def write_cache(folder, dataset, denoiser, items=None) -> LatentCacheWriter:
    writer = LatentCacheWriter(folder, dataset, encoder_key(denoiser))
    for item in writer.pending() if items is None else items:
        video = dataset.load(item, range(dataset.sequence_length(item)))["video"]
        noise = writer.noise(item, range(len(video)), video.shape[1:]) if denoiser.noise_aug_strength > 0 else None
        writer.write(item, encode_frames(denoiser, video, noise))
    return writer


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(num_episodes=2, num_frames=6, height=8, width=8, seed=3)


@pytest.fixture(scope="module")
def made(world, tmp_path_factory):
    """Per family: the task and a complete cache of ``world`` made with its denoiser."""
    out = {}
    for chronodepth in (False, True):
        task = tiny_task(chronodepth)
        folder = tmp_path_factory.mktemp("cache")
        writer = write_cache(folder, world, task.predictor.denoiser)
        writer.finish()
        out[chronodepth] = (task, writer, folder)
    return out


# Two clips of 3 frames, one with a gap: any clip of a sequence is served from its frames' entries.
CLIPS = [(1, (0, 2, 3)), (0, (3, 4, 5))]


@pytest.mark.parametrize("chronodepth", [False, True], ids=["depthcrafter", "chronodepth"])
def test_cached_latents_give_the_on_the_fly_loss(chronodepth, world, made, monkeypatch):
    task, writer, folder = made[chronodepth]
    denoiser = task.predictor.denoiser
    cache = LatentCache(str(folder), world)
    fly = collate_clips([world.load(i, f) for i, f in CLIPS])
    cached = collate_clips([cache.load(i, f) for i, f in CLIPS])
    assert cached["video_latents"].shape == (2, 3, 4, 4, 4)
    assert ("video_latents_std" in cached) == chronodepth
    # On the fly, the noise augmentation replays the cache's per-frame draws (the cache fixes them).
    shape = fly["video"].shape[2:]
    recorded = torch.stack([writer.noise(i, f, shape) for i, f in CLIPS])
    monkeypatch.setattr(denoiser, "augmentation_noise", lambda shape, generator=None, device=None: recorded)

    calls = []
    hook = denoiser.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(7)
    expected = task.training_loss(fly)
    encoded = len(calls)
    torch.manual_seed(7)
    got = task.training_loss(cached)
    hook.remove()
    assert encoded == 1 and len(calls) == 1  # the cached step runs no image encoder
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # Another noise draw (or another posterior sample) moves the loss: the match above is not vacuous.
    torch.manual_seed(8)
    assert not torch.allclose(task.training_loss(cached), expected, rtol=1e-3)


def test_stale_cache_is_refused(world, made, monkeypatch):
    task, _, folder = made[False]
    denoiser = task.predictor.denoiser
    cache = LatentCache(str(folder), world)
    monkeypatch.setattr(task, "_trainer", SimpleNamespace(datamodule=SimpleNamespace(datasets={"train": [cache]})))
    task.setup("fit")  # the model it was made with: accepted

    # Changed VAE weights: refused by the task before training, naming the folder and what differs.
    weight = next(denoiser.vae.parameters())
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1e-3)
    try:
        with pytest.raises(StaleCacheError, match=rf"{folder}.*vae_weights: cache has"):
            task.setup("fit")
    finally:
        with torch.no_grad():
            weight.copy_(saved)

    # Changed preprocessing: the noise augmentation, and the dataset's frame size.
    monkeypatch.setattr(denoiser, "noise_aug_strength", 0.05)
    changed = encoder_key(denoiser)
    with pytest.raises(StaleCacheError, match="noise_aug_strength: cache has 0.02, now 0.05"):
        cache.check_encoder(changed)
    resized = SyntheticWorld(num_episodes=2, num_frames=6, height=16, width=8, seed=3)
    with pytest.raises(StaleCacheError, match=rf"{folder}.*dataset.settings.sizes"):
        LatentCache(str(folder), resized)
    # Writing into the folder with other settings is refused too (unless overwrite).
    with pytest.raises(StaleCacheError, match="noise_aug_strength"):
        LatentCacheWriter(folder, world, changed)


def test_interrupted_cache_run_resumes(made, tmp_path, monkeypatch):
    denoiser = made[False][0].predictor.denoiser
    world = SyntheticWorld(num_episodes=2, num_frames=2, height=8, width=8, seed=4)
    folder = tmp_path / "cache"
    write_cache(folder, world, denoiser, items=[0])
    # A crash inside the second item's write leaves no item file (atomic), only nothing or a temporary.
    import safetensors.torch

    def crash(tensors, path):
        open(path, "wb").write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        write_cache(folder, world, denoiser, items=[1])
    monkeypatch.undo()
    assert sorted(p.name for p in (folder / "items").iterdir()) == ["000000.safetensors"]
    (folder / "items" / ".000001.safetensors.tmp-99999").write_bytes(b"left by a killed run")
    with pytest.raises(StaleCacheError, match="incomplete"):
        LatentCache(str(folder), world)

    first = (folder / "items" / "000000.safetensors").stat().st_mtime_ns
    writer = LatentCacheWriter(folder, world, encoder_key(denoiser))
    assert writer.pending() == [1]  # item 0 is kept, the leftover removed
    assert sorted(p.name for p in (folder / "items").iterdir()) == ["000000.safetensors"]
    write_cache(folder, world, denoiser).finish()
    assert (folder / "items" / "000000.safetensors").stat().st_mtime_ns == first
    # The resumed cache equals one made in a single run.
    write_cache(tmp_path / "whole", world, denoiser).finish()
    a, b = LatentCache(str(folder), world), LatentCache(str(tmp_path / "whole"), world)
    for item in range(2):
        for key, value in a.cached(item, range(2)).items():
            torch.testing.assert_close(value, b.cached(item, range(2))[key], rtol=0, atol=0)
