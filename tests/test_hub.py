"""Hub references (``hf://owner/repo[@revision][/path]``) resolve through the Hugging Face cache:
offline, on a cache laid out as ``huggingface_hub`` writes it, a model loads from a config and
from `vdf.load`, and ``vdf download`` resolves what a config names. No network is used."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
import yaml
from recipes import tiny_files
from safetensors.torch import save_file

import vdf
from vdf.download import main as download
from vdf.models.weights import HubReference, _folder_selection, read_weights, resolve_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"
DAV2_REF = "hf://acme/tiny-dav2/depth_anything_v2_vits.pth"


def add_to_cache(cache, repo_id: str, files: dict[str, bytes], commit: str = COMMIT, ref: str = "main") -> None:
    """Files of a model repository in the cache's own layout: content-addressed ``blobs/``,
    ``snapshots/<commit>/<path>`` symlinks to them, and ``refs/<branch>`` naming the commit."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


def file_bytes(tmp_path, state: dict[str, torch.Tensor], name: str) -> bytes:
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path.read_bytes()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty cache under HF_HOME, offline; tests add repositories to it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    return cache


def test_references_parse_and_print_back():
    ref = HubReference.parse("hf://stabilityai/stable-video-diffusion-img2vid-xt/vae")
    assert (ref.repo_id, ref.path, ref.revision, ref.is_file) == (
        "stabilityai/stable-video-diffusion-img2vid-xt",
        "vae",
        None,
        False,
    )
    ref = HubReference.parse("hf://acme/m@refs%2Fpr%2F3/ckpt/w.pth")
    assert (ref.repo_id, ref.path, ref.revision, ref.is_file) == ("acme/m", "ckpt/w.pth", "refs/pr/3", True)
    assert str(ref) == "hf://acme/m@refs%2Fpr%2F3/ckpt/w.pth"
    assert HubReference.parse("hf://tencent/DepthCrafter").path == ""
    for bad in ("hf://justone", "hf://datasets/acme/x", "hf://acme/m@/x"):
        with pytest.raises(ValueError, match="hf://"):
            HubReference.parse(bad)


def test_folder_selection_takes_json_and_one_weights_file():
    names = [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "unet/config.json",
        "README.md",
    ]
    assert _folder_selection(names, "vae/") == ["vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
    sharded = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors"]
    sharded += ["model-00002-of-00002.safetensors", "model.fp16.safetensors"]
    assert _folder_selection(sharded, "") == ["config.json", *sharded[1:4]]


def test_a_model_loads_from_the_cache_via_a_config_and_vdf_load(tmp_path, offline_cache):
    configs = tiny_files("dav2")
    reference = vdf.load(configs, device="cpu")  # random tiny network: its weights are the "release"
    state = reference.net.state_dict()
    add_to_cache(offline_cache, "acme/tiny-dav2", {"depth_anything_v2_vits.pth": file_bytes(tmp_path, state, "w.pth")})

    # vdf.load with the reference as an override ...
    loaded = vdf.load(configs, device="cpu", **{"net.init_args.weights": DAV2_REF})
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, state[key]), key
    # ... and a config naming it (what `vdf predict --config` builds).
    overlay = tmp_path / "hub.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {"model": {"init_args": {"predictor": {"init_args": {"net": {"init_args": {"weights": DAV2_REF}}}}}}}
        )
    )
    loaded = vdf.load([*configs, str(overlay)], device="cpu")
    assert torch.equal(
        loaded.net.depth_head.scratch.output_conv2[2].weight, state["depth_head.scratch.output_conv2.2.weight"]
    )

    # vdf download resolves every Hub reference of the config and says where each one is.
    done = download(["--config", str(configs[0]), "--config", str(configs[-1]), "--config", str(overlay)])
    assert [(key, src) for key, src, _ in done] == [
        ("model.init_args.predictor.init_args.net.init_args.weights", DAV2_REF)
    ]
    assert done[0][2].startswith(str(offline_cache)) and done[0][2].endswith(
        f"snapshots/{COMMIT}/depth_anything_v2_vits.pth"
    )


def test_folders_subfolders_and_revisions(tmp_path, offline_cache):
    torch.manual_seed(0)
    state = {"w": torch.randn(3, 2)}
    weights = file_bytes(tmp_path, state, "diffusion_pytorch_model.safetensors")
    files = {"unet/config.json": json.dumps({"x": 1}).encode(), "unet/diffusion_pytorch_model.safetensors": weights}
    add_to_cache(offline_cache, "acme/svd", files)
    other = "f" * 40
    add_to_cache(offline_cache, "acme/svd", {"unet/config.json": b"{}"}, commit=other, ref="v0")
    assert torch.equal(read_weights("hf://acme/svd/unet", "UNet weights", "from acme")["w"], state["w"])
    assert resolve_source("hf://acme/svd/unet") == offline_cache / "models--acme--svd" / "snapshots" / COMMIT / "unet"
    assert resolve_source("hf://acme/svd@v0/unet").parent.name == other
    # The v0 snapshot has no weights: the error names the reference and where it was looked for.
    with pytest.raises(FileNotFoundError, match=r"has no weights .*hf://acme/svd@v0/unet is cached at"):
        read_weights("hf://acme/svd@v0/unet", "UNet weights", "from acme")


def test_missing_entries_name_the_reference_and_the_cache(offline_cache, tmp_path, capsys):
    with pytest.raises(FileNotFoundError) as info:
        read_weights("hf://acme/absent/w.pth", "Depth-Anything-V2 weights", "Release: acme/absent")
    message = str(info.value)
    for part in (
        "hf://acme/absent/w.pth",
        "w.pth of acme/absent",
        str(offline_cache),
        "HF_HUB_OFFLINE=1",
        "vdf download",
    ):
        assert part in message
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"init_args": {"weights": "hf://acme/absent"}}}))
    with pytest.raises(SystemExit):
        download(["--config", str(config)])
    assert "[error]" in capsys.readouterr().err


def test_online_folders_fetch_their_json_and_one_weights_file(tmp_path, monkeypatch):
    """Online, a folder reference lists the repository (a dry run) and fetches only what vdf reads;
    when the Hub cannot be listed, the cache alone decides (no second round of retries)."""
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # The library reads HF_HUB_OFFLINE once, at its first import (maybe under another test's setting).
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    calls = []
    listing = [
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]

    def fake_snapshot_download(repo_id, *, dry_run=False, allow_patterns=None, local_files_only=False, **kwargs):
        if dry_run:
            if repo_id == "acme/down":
                raise ConnectionError("no network")
            return [type("Info", (), {"filename": name}) for name in listing]
        calls.append((repo_id, allow_patterns, local_files_only, kwargs["cache_dir"]))
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_source("hf://acme/svd/vae") == tmp_path / "snapshot" / "vae"
    assert calls[-1] == ("acme/svd", listing[:2], False, str(tmp_path / "cache"))
    resolve_source("hf://acme/down/vae")
    assert calls[-1][0] == "acme/down" and calls[-1][2] is True
