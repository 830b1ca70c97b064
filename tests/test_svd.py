"""SVD wiring: per-frame UNet forward, the spatial/temporal split, folder loading, depth through the VAE."""

from __future__ import annotations

import pytest
import torch

from vdf.models.svd import (
    CLIP_MEAN,
    CLIP_STD,
    SVDVAE,
    CLIPFrameEmbedder,
    SVDDepthDenoiser,
    SVDUNet,
    ZeroFrameEmbedder,
    parameter_group,
    spatial_temporal_split,
)
from vdf.models.weights import StateDictMismatchError

TINY_UNET = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    num_attention_heads=(2, 4),
    cross_attention_dim=32,
    addition_time_embed_dim=8,
)
TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    patch_size=8,
    image_size=32,
    projection_dim=32,
)


@pytest.fixture(scope="module")
def unet() -> SVDUNet:
    torch.manual_seed(0)
    return SVDUNet(**TINY_UNET).eval()


def test_forward_equals_diffusers_for_shared_timestep_and_embedding(unet):
    x = torch.randn(2, 3, 8, 8, 8)
    t, e, ids = torch.tensor([0.3, 1.2]), torch.randn(2, 1, 32), torch.tensor([[7.0, 127, 0.02]] * 2)
    with torch.no_grad():
        reference = unet.unet(x, t, e, ids).sample
        ours = unet(x, t, e, ids)
        per_frame = unet(x, t[:, None].expand(2, 3), e[:, None].expand(2, 3, 1, 32), ids)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_frame, reference, atol=1e-5, rtol=1e-5)


def test_per_frame_timestep_and_embedding_reach_their_frame():
    """With the temporal paths mixed out, frames are independent: the per-frame forward equals
    diffusers' forward run on each frame alone with that frame's timestep and embedding."""
    torch.manual_seed(1)
    unet = SVDUNet(**TINY_UNET).eval()
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if name.endswith("mix_factor"):
                param.fill_(60.0)  # sigmoid -> 1: spatial path only
    x = torch.randn(1, 3, 8, 8, 8)
    t = torch.tensor([[0.5, -1.0, 1.3]])
    e = torch.randn(1, 3, 1, 32)
    ids = torch.tensor([[7.0, 127, 0.02]])
    with torch.no_grad():
        ours = unet(x, t, e, ids)
        alone = torch.cat([unet.unet(x[:, i : i + 1], t[0, i], e[:, i], ids).sample for i in range(3)], dim=1)
    torch.testing.assert_close(ours, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(alone[:, 0], alone[:, 1], atol=1e-3)


def test_spatial_temporal_split_covers_every_parameter_once(unet):
    groups = spatial_temporal_split(unet)
    names = [n for n, _ in groups["spatial"]] + [n for n, _ in groups["temporal"]]
    assert sorted(names) == sorted(n for n, _ in unet.named_parameters())
    assert len(set(names)) == len(names)
    ids = [id(p) for _, p in groups["spatial"]] + [id(p) for _, p in groups["temporal"]]
    assert len(set(ids)) == len(list(unet.parameters()))
    temporal = {n for n, _ in groups["temporal"]}
    assert any("temporal_transformer_blocks" in n for n in temporal)
    assert any("temporal_res_block" in n for n in temporal)
    assert any("time_mixer.mix_factor" in n for n in temporal)
    assert any("time_pos_embed" in n for n in temporal)
    spatial = {n for n, _ in groups["spatial"]}
    assert {"unet.conv_in.weight", "unet.conv_out.weight", "unet.time_embedding.linear_1.weight"} <= spatial
    assert any(".transformer_blocks.0.attn2.to_k" in n for n in spatial)
    assert any("spatial_res_block" in n for n in spatial)


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight", "temporal"),
        ("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight", "spatial"),
        ("mid_block.resnets.0.temporal_res_block.conv1.weight", "temporal"),
        ("mid_block.resnets.0.spatial_res_block.conv1.weight", "spatial"),
        ("up_blocks.1.attentions.2.time_pos_embed.linear_1.weight", "temporal"),
        ("up_blocks.1.attentions.2.proj_in.weight", "spatial"),
        ("down_blocks.1.resnets.0.time_mixer.mix_factor", "temporal"),
        ("down_blocks.0.downsamplers.0.conv.weight", "spatial"),
    ],
)
def test_parameter_group_rule(name, group):
    assert parameter_group(name) == group


def test_unet_folder_round_trip_and_errors(unet, tmp_path):
    unet.unet.save_pretrained(tmp_path / "unet")
    loaded = SVDUNet(weights=str(tmp_path / "unet")).eval()
    for (n1, p1), (n2, p2) in zip(unet.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    x = torch.randn(1, 2, 8, 8, 8)
    args = (torch.tensor([0.1]), torch.randn(1, 1, 32), torch.tensor([[7.0, 127, 0.02]]))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, *args), unet(x, *args))

    from safetensors.torch import load_file, save_file

    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state.pop("conv_out.bias")
    save_file(state, str(weights))
    with pytest.raises(StateDictMismatchError, match="1 missing key.*conv_out.bias"):
        SVDUNet(weights=str(tmp_path / "unet"))
    with pytest.raises(FileNotFoundError, match="does not exist.*stable-video-diffusion"):
        SVDUNet(weights=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="has no weights"):
        SVDUNet(weights=str(tmp_path / "empty"))


def test_vae_and_clip_folders_load(tmp_path):
    torch.manual_seed(0)
    vae = SVDVAE(block_out_channels=(32, 32), layers_per_block=1)
    vae.vae.save_pretrained(tmp_path / "vae")
    loaded = SVDVAE(weights=str(tmp_path / "vae"))
    x = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x), vae.encode(x))
    clip = CLIPFrameEmbedder(**TINY_CLIP)
    clip.encoder.save_pretrained(tmp_path / "image_encoder")
    loaded_clip = CLIPFrameEmbedder(weights=str(tmp_path / "image_encoder"))
    video = torch.rand(1, 3, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded_clip(video), clip(video))


def test_vae_chunking_does_not_change_encoding():
    torch.manual_seed(0)
    vae = SVDVAE(block_out_channels=(32, 32), layers_per_block=1, chunk_size=2)
    x = torch.rand(2, 5, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        chunked = vae.encode(x)
        vae.chunk_size = 100
        whole = vae.encode(x)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert chunked.shape == (2, 5, 4, 8, 8)


def test_denoiser_depth_round_trip_and_conditioning():
    torch.manual_seed(0)
    denoiser = SVDDepthDenoiser(
        SVDUNet(**TINY_UNET),
        SVDVAE(block_out_channels=(32, 32), layers_per_block=1),
        CLIPFrameEmbedder(**TINY_CLIP),
        noise_aug_strength=0.0,
    )
    target = torch.rand(1, 3, 1, 16, 24) * 2 - 1
    z = denoiser.encode_depth(target)
    assert z.shape == (1, 3, 4, 8, 12)
    # Depth is replicated to three channels: identical to encoding the 3-channel image.
    torch.testing.assert_close(z, denoiser.vae.encode(target.expand(1, 3, 3, 16, 24)) * denoiser.vae.scaling_factor)
    decoded = denoiser.decode_depth(z)
    assert decoded.shape == (1, 3, 1, 16, 24) and decoded.abs().max() <= 1
    video = torch.rand(1, 3, 3, 16, 24)
    cond = denoiser.condition(video)
    assert cond.video_latents.shape == (1, 3, 4, 8, 12) and cond.embeddings.shape == (1, 3, 1, 32)
    torch.testing.assert_close(cond.added_time_ids, torch.tensor([[7.0, 127.0, 0.02]]))
    # Unscaled posterior mode (DepthCrafter's video latents).
    torch.testing.assert_close(cond.video_latents, denoiser.vae.encode(video * 2 - 1))
    assert not any(p.requires_grad for p in denoiser.vae.parameters())
    assert not any(p.requires_grad for p in denoiser.image_encoder.parameters())
    with pytest.raises(ValueError, match="not a multiple of 2"):
        denoiser.condition(torch.rand(1, 2, 3, 15, 24))


def test_black_image_and_zero_embedders():
    torch.manual_seed(0)
    black = CLIPFrameEmbedder(**TINY_CLIP, black_image=True)
    a, b = black(torch.rand(1, 2, 3, 32, 32)), black(torch.rand(1, 2, 3, 32, 32))
    torch.testing.assert_close(a, b)
    assert a.abs().sum() > 0  # the embedding of a black frame, not a zero vector
    assert torch.equal(ZeroFrameEmbedder(16)(torch.rand(2, 3, 3, 8, 8)), torch.zeros(2, 3, 1, 16))
    with pytest.raises(ValueError, match="width 16"):
        SVDDepthDenoiser(
            SVDUNet(**TINY_UNET), SVDVAE(block_out_channels=(32, 32), layers_per_block=1), ZeroFrameEmbedder(16)
        )


# -- weight dtypes (the official pipelines run UNet, VAE and CLIP in float16) --------------------


def test_float16_unet_casts_its_inputs_and_computes_in_float16():
    torch.manual_seed(0)
    unet = SVDUNet(**TINY_UNET, weights_dtype="float16").eval()
    assert {p.dtype for p in unet.parameters()} == {torch.float16}
    x, t, e = torch.randn(1, 3, 8, 8, 8), torch.tensor([0.3]), torch.randn(1, 3, 1, 32)
    ids = torch.tensor([[7.0, 127, 0.02]], dtype=torch.float16)
    with torch.no_grad():
        out = unet(x, t, e, ids)  # float32 latents and embeddings, as the samplers pass them
        reference = unet(x.half(), t, e.half(), ids)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert torch.equal(out, reference)


def test_float16_vae_encodes_in_float32_under_force_upcast():
    torch.manual_seed(0)
    vae16 = SVDVAE(block_out_channels=(32, 32), layers_per_block=1, weights_dtype="float16")
    vae32 = SVDVAE(block_out_channels=(32, 32), layers_per_block=1)
    vae32.load_state_dict({k: v.float() for k, v in vae16.state_dict().items()})  # the float16 values
    x = (torch.rand(1, 3, 3, 16, 16) * 2 - 1).half()
    with torch.no_grad():
        z = vae16.encode(x)
        assert z.dtype == torch.float32 and vae16.upcasts
        assert torch.equal(z, vae32.encode(x.float()))  # the upcast weights are exactly the float16 ones
        assert {p.dtype for p in vae16.parameters()} == {torch.float16} and vae16.dtype == torch.float16
        assert vae16.decode(z).dtype == torch.float16  # decoding stays in float16
        no_upcast = SVDVAE(block_out_channels=(32, 32), layers_per_block=1, weights_dtype="float16", force_upcast=False)
        assert no_upcast.encode(x).dtype == torch.float16 and not no_upcast.upcasts
    with pytest.raises(ValueError, match="weights_dtype"):
        SVDVAE(block_out_channels=(32, 32), layers_per_block=1, weights_dtype="float64")


def test_float16_denoiser_casts_as_the_official_pipeline():
    """Video in the VAE's dtype before [-1,1] and augmentation, CLIP in float16, float32 video
    latents, added time ids in the embeddings' dtype, network output in float16."""
    torch.manual_seed(0)
    denoiser = SVDDepthDenoiser(
        SVDUNet(**TINY_UNET, weights_dtype="float16"),
        SVDVAE(block_out_channels=(32, 32), layers_per_block=1, weights_dtype="float16"),
        CLIPFrameEmbedder(**TINY_CLIP, weights_dtype="float16"),
    )
    video = torch.rand(1, 2, 3, 16, 24)
    noise = torch.randn(1, 2, 3, 16, 24)
    denoiser.augmentation_noise = lambda shape, generator=None, device=None: noise
    with torch.no_grad():
        cond = denoiser.condition(video)
        assert cond.embeddings.dtype == torch.float16 and cond.video_latents.dtype == torch.float32
        assert cond.added_time_ids.dtype == torch.float16
        v16 = video.half() * 2 - 1
        torch.testing.assert_close(
            cond.video_latents, denoiser.vae.encode((v16 + 0.02 * noise.half()).float()), rtol=0, atol=0
        )
        out = denoiser(torch.randn(1, 2, 4, 8, 12), torch.tensor([0.5]), cond)
        assert out.dtype == torch.float16
        assert denoiser.decode_depth(torch.randn(1, 2, 4, 8, 12)).dtype == torch.float32


def test_clip_preprocessing_is_svds_arithmetic():
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing

    clip = CLIPFrameEmbedder(**TINY_CLIP)
    frames = torch.rand(2, 3, 40, 56)
    x = (_resize_with_antialiasing(frames * 2 - 1, (32, 32)) + 1) / 2
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    pixels = clip.preprocess(frames)
    assert pixels.is_contiguous()  # as CLIP's image processor returns them (the kernel depends on it)
    assert torch.equal(pixels, (x - mean) / std)
    black = CLIPFrameEmbedder(**TINY_CLIP, black_image=True).preprocess(frames)
    torch.testing.assert_close(black, ((0 - mean) / std).expand(2, 3, 32, 32))
