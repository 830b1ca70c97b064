"""Depth Any Video UNets (vdf.models.dav): build from DAV's config, strict loading, conv_in widening."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel
from safetensors.torch import save_file
from test_rope import TINY_UNET, tiny_inputs

from vdf.models.dav import DAV_HF_REPO, build_dav_unet, load_dav_unet
from vdf.models.rope import RopeTransformerSpatioTemporalModel
from vdf.models.svd import svd_unet_forward
from vdf.models.weights import StateDictMismatchError, read_weights, widen_conv_in

# DAV's unet/config.json layout: its own class name, diffusers bookkeeping, lists instead of tuples.
DAV_CONFIG = {
    "_class_name": "UNetSpatioTemporalRopeConditionModel",
    "_diffusers_version": "0.29.2",
    **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY_UNET.items()},
}


def dav_official_keys(config: dict) -> set[str]:
    """DAV's key layout, derived independently: diffusers' SVD UNet keys without the added-time
    embedding (``add_embedding.*``) and without every transformer's ``time_pos_embed.*``."""
    torch.manual_seed(0)
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    keys = UNetSpatioTemporalConditionModel(**kwargs).state_dict()
    return {k for k in keys if not k.startswith("add_embedding.") and ".time_pos_embed." not in k}


def dav_state_dict(config: dict, seed: int = 3) -> dict[str, torch.Tensor]:
    """Random tensors in DAV's layout (every key of ``dav_official_keys``)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {k: v.shape for k, v in build_dav_unet(config).state_dict().items()}
    assert set(shapes) == dav_official_keys(config)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in sorted(shapes.items())}


def write_folder(folder, config, state_dict, name="diffusion_pytorch_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    if name.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / name))
    else:
        torch.save(state_dict, folder / name)
    return folder


def run(unet, sample, position_ids=None):
    _, t, ctx, _ = tiny_inputs(batch=sample.shape[0], frames=sample.shape[1])
    with torch.no_grad():
        return svd_unet_forward(unet, sample, t, ctx, None, position_ids)


@pytest.fixture(scope="module")
def dav_folder(tmp_path_factory):
    sd = dav_state_dict(DAV_CONFIG)
    return write_folder(tmp_path_factory.mktemp("dav") / "unet", DAV_CONFIG, sd), sd


def test_build_from_dav_config_drops_added_time_embedding():
    unet = build_dav_unet({**DAV_CONFIG, "some_future_key": 1})
    assert unet.add_embedding is None and unet.add_time_proj is None
    assert set(unet.state_dict()) == dav_official_keys(DAV_CONFIG)
    assert any(isinstance(m, RopeTransformerSpatioTemporalModel) for m in unet.modules())
    assert unet.config.in_channels == 8 and unet.conv_in.in_channels == 8


def test_load_reproduces_the_checkpoint(dav_folder):
    folder, sd = dav_folder
    unet = load_dav_unet(folder)
    assert not unet.training
    for key, value in unet.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, sd[key]), key
    reference = build_dav_unet(DAV_CONFIG)
    reference.load_state_dict(sd, strict=True)
    sample = tiny_inputs(frames=3)[0]
    pos = torch.tensor([[0, 12, 17]])
    torch.testing.assert_close(run(unet, sample, pos), run(reference.eval(), sample, pos))


@pytest.mark.parametrize("name", ["diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bin", "sharded"])
def test_other_weight_files(tmp_path, dav_folder, name):
    _, sd = dav_folder
    if name == "sharded":
        keys = sorted(sd)
        shards = {
            "diffusion_pytorch_model-00001-of-00002.safetensors": keys[: len(keys) // 2],
            "diffusion_pytorch_model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
        }
        folder = tmp_path / "unet"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(DAV_CONFIG))
        for shard, shard_keys in shards.items():
            save_file({k: sd[k] for k in shard_keys}, str(folder / shard))
        index = {"metadata": {}, "weight_map": {k: s for s, ks in shards.items() for k in ks}}
        (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
        want = sd
    elif "fp16" in name:
        want = {k: v.half() for k, v in sd.items()}
        folder = write_folder(tmp_path / "unet", DAV_CONFIG, want, name)
    else:
        want = sd
        folder = write_folder(tmp_path / "unet", DAV_CONFIG, sd, name)
    assert set(read_weights(folder, "UNet weights", "test")) == set(sd)
    unet = load_dav_unet(folder)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, want[key].float()), key


def test_interpolation_unet_has_16_input_channels(tmp_path):
    config = {**DAV_CONFIG, "in_channels": 16}
    sd = dav_state_dict(config)
    assert sd["conv_in.weight"].shape[1] == 16
    unet = load_dav_unet(write_folder(tmp_path / "unet_interp", config, sd))
    assert unet.conv_in.in_channels == 16 and unet.config.in_channels == 16
    out = run(unet, torch.randn(1, 2, 16, 8, 8))
    assert out.shape == (1, 2, 4, 8, 8)


def test_missing_and_unexpected_keys_are_listed(tmp_path, dav_folder):
    _, sd = dav_folder
    missing = dict(sd)
    del missing["down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight"]
    folder = write_folder(tmp_path / "missing", DAV_CONFIG, missing)
    with pytest.raises(StateDictMismatchError) as err:
        load_dav_unet(folder)
    assert "1 missing key" in str(err.value) and "attn1.to_q.weight" in str(err.value)
    assert str(folder) in str(err.value)

    # an SVD checkpoint (added-time embedding, frame embedding) is not a DAV one
    svd_like = {
        **sd,
        "add_embedding.linear_1.weight": torch.zeros(4, 24),
        "down_blocks.0.attentions.0.time_pos_embed.linear_1.weight": torch.zeros(128, 32),
    }
    folder = write_folder(tmp_path / "svd", DAV_CONFIG, svd_like)
    with pytest.raises(StateDictMismatchError) as err:
        load_dav_unet(folder)
    msg = str(err.value)
    assert "2 unexpected key" in msg and "add_embedding.linear_1.weight" in msg and "SVD UNet" in msg

    # a 16-channel checkpoint under an 8-channel config
    wide = {**sd, "conv_in.weight": torch.zeros(32, 16, 3, 3)}
    with pytest.raises(StateDictMismatchError, match="shape mismatch for conv_in.weight"):
        load_dav_unet(write_folder(tmp_path / "wide", DAV_CONFIG, wide))


def test_missing_files_name_the_path_and_the_source(tmp_path, dav_folder):
    with pytest.raises(FileNotFoundError) as err:
        load_dav_unet(tmp_path / "nowhere" / "unet")
    assert str(tmp_path / "nowhere" / "unet") in str(err.value)
    assert DAV_HF_REPO in str(err.value) and "unet_interp" in str(err.value)

    no_config = tmp_path / "no_config"
    no_config.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_dav_unet(no_config)

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(DAV_CONFIG))
    with pytest.raises(FileNotFoundError) as err:
        load_dav_unet(no_weights)
    assert "diffusion_pytorch_model.safetensors" in str(err.value) and DAV_HF_REPO in str(err.value)


def test_widened_conv_in_reproduces_the_8_channel_unet(dav_folder):
    """DAV's unet_interp initialisation: the 8-channel checkpoint with conv_in widened loads
    strictly into the 16-channel UNet, which then equals the 8-channel one on a repeated input."""
    _, sd = dav_folder
    narrow = build_dav_unet(DAV_CONFIG).eval()
    narrow.load_state_dict(sd)
    widened = {**sd, "conv_in.weight": widen_conv_in(sd["conv_in.weight"], 16)}
    assert widened["conv_in.weight"].shape == (32, 16, 3, 3)
    torch.testing.assert_close(widened["conv_in.weight"], torch.cat([sd["conv_in.weight"]] * 2, dim=1) / 2)
    wide = build_dav_unet({**DAV_CONFIG, "in_channels": 16}).eval()
    wide.load_state_dict(widened, strict=True)
    assert wide.config.in_channels == 16
    torch.testing.assert_close(wide.conv_in.bias, sd["conv_in.bias"])
    sample = tiny_inputs(frames=3)[0]
    pos = torch.tensor([[0, 4, 9]])
    torch.testing.assert_close(
        run(wide, torch.cat([sample, sample], dim=2), pos), run(narrow, sample, pos), atol=1e-5, rtol=1e-5
    )


def test_widen_conv_in_generalises_to_k_copies():
    w = build_dav_unet(DAV_CONFIG).conv_in.weight.detach().clone()
    torch.testing.assert_close(widen_conv_in(w, 24), torch.cat([w] * 3, dim=1) / 3)
    with pytest.raises(ValueError, match="multiple"):
        widen_conv_in(w, 30)
