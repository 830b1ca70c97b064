"""The weights module (vdf.models.weights): every layout of a local weights source reads to the same
state dict; strict loading and missing sources fail naming the file and where weights come from."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from vdf.models.weights import (
    StateDictMismatchError,
    is_weights_argument,
    load_weights,
    read_config,
    read_weights,
    weights_file,
)

WHERE = "Tiny nets come from nowhere"


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def state() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net().state_dict().items()}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], dtype=None) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value if dtype is None else value.to(dtype)), key


def write_shards(folder, sd, fmt: str, fp16: bool = False, drop: str | None = None) -> None:
    """Two shards and their index, as save_pretrained writes them (``drop``: a listed key left out)."""
    stem = "diffusion_pytorch_model"
    keys = sorted(sd)
    shards = {f"{stem}-0000{i + 1}-of-00002.{fmt}": part for i, part in enumerate((keys[:2], keys[2:]))}
    for name, part in shards.items():
        tensors = {k: sd[k] for k in part if k != drop}
        if fmt == "safetensors":
            save_file(tensors, str(folder / name))
        else:
            torch.save(tensors, folder / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (folder / f"{stem}.{fmt}.index{'.fp16' if fp16 else ''}.json").write_text(json.dumps(index))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".ckpt", ".safetensors"])
def test_single_files(tmp_path, suffix):
    sd = state()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    assert_same(read_weights(path, "tiny weights", WHERE), sd)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd, "epoch": 3, "loops": {"fit": {"step": 7}}, "hyper_parameters": {"lr": 1e-4}},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "step": 0},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
    ],
    ids=["lightning", "official+ddp", "compiled"],
)
def test_wrapped_files_unwrap(tmp_path, wrap):
    sd = state()
    torch.save(wrap(sd), tmp_path / "w.ckpt")
    assert_same(read_weights(tmp_path / "w.ckpt", "tiny weights", WHERE), sd)


def test_a_file_with_objects_is_refused_naming_it(tmp_path):
    torch.save({"state_dict": state(), "net": nn.Linear(1, 1)}, tmp_path / "pickled.pth")
    with pytest.raises(StateDictMismatchError, match=r"pickled\.pth holds objects other than tensors"):
        read_weights(tmp_path / "pickled.pth", "tiny weights", WHERE)
    torch.save({"optimizer": {}, "step": 1}, tmp_path / "no_weights.pth")
    with pytest.raises(StateDictMismatchError, match=r"no_weights\.pth: .*top-level keys"):
        read_weights(tmp_path / "no_weights.pth", "tiny weights", WHERE)


@pytest.mark.parametrize(
    "layout",
    [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.bin",
        "diffusion_pytorch_model.fp16.safetensors",
        "model.safetensors",
        "pytorch_model.bin",
        "shards.safetensors",
        "shards.bin",
        "shards.fp16.safetensors",
    ],
)
def test_folder_layouts(tmp_path, layout):
    sd = state()
    fp16 = ".fp16." in layout
    if fp16:
        sd = {k: v.half() for k, v in sd.items()}
    if layout.startswith("shards"):
        write_shards(tmp_path, sd, layout.rsplit(".", 1)[1], fp16=fp16)
    elif layout.endswith(".safetensors"):
        save_file(sd, str(tmp_path / layout))
    else:
        torch.save(sd, tmp_path / layout)
    assert_same(read_weights(tmp_path, "tiny weights", WHERE), sd)
    if fp16:
        assert_same(read_weights(tmp_path, "tiny weights", WHERE, variant="fp16"), sd)
    else:
        with pytest.raises(FileNotFoundError, match="has no weights"):
            read_weights(tmp_path, "tiny weights", WHERE, variant="fp16")


def test_full_precision_is_preferred_to_the_fp16_variant(tmp_path):
    sd = state()
    save_file(sd, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    save_file({k: v.half() for k, v in sd.items()}, str(tmp_path / "diffusion_pytorch_model.fp16.safetensors"))
    assert weights_file(tmp_path, "tiny weights", WHERE).name == "diffusion_pytorch_model.safetensors"
    assert_same(read_weights(tmp_path, "tiny weights", WHERE), sd)
    assert_same(read_weights(tmp_path, "tiny weights", WHERE, variant="fp16"), sd, dtype=torch.float16)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_shards_must_hold_every_listed_key(tmp_path, fmt):
    write_shards(tmp_path, state(), fmt, drop="2.bias")
    with pytest.raises(StateDictMismatchError, match=r"lists 1 key\(s\) its shards do not hold: 2.bias"):
        read_weights(tmp_path, "tiny weights", WHERE)


def test_a_missing_shard_names_the_folder_and_the_source(tmp_path):
    write_shards(tmp_path, state(), "safetensors")
    (tmp_path / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"shard diffusion_pytorch_model-00002-of-00002.safetensors .*missing"
        r"\. Tiny nets come from nowhere\.",
    ):
        read_weights(tmp_path, "tiny weights", WHERE)


def test_missing_sources_name_the_path_and_where_weights_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"tiny weights not found: .*nope\.pth\. Tiny nets come from nowhere\."):
        read_weights(tmp_path / "nope.pth", "tiny weights", WHERE)
    with pytest.raises(FileNotFoundError, match=r"has no weights \(looked for diffusion_pytorch_model\.safetensors, "):
        read_weights(tmp_path, "tiny weights", WHERE)
    with pytest.raises(FileNotFoundError, match=r"folder .*nowhere does not exist\. Tiny nets"):
        read_config(tmp_path / "nowhere", "tiny weights", WHERE)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        read_config(tmp_path, "tiny weights", WHERE)
    with pytest.raises(ValueError, match="variant"):
        weights_file(tmp_path, "tiny weights", WHERE, variant="bf16")


def test_load_weights_is_strict_and_names_the_file_and_the_source(tmp_path):
    sd = state()
    torch.save({"state_dict": sd}, tmp_path / "ok.ckpt")
    module = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    load_weights(module, tmp_path / "ok.ckpt", "tiny weights", WHERE)
    assert_same(module.state_dict(), sd)

    bad = {**sd, "3.weight": torch.zeros(1)}
    del bad["0.bias"]
    bad["2.weight"] = torch.zeros(2, 5)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(StateDictMismatchError) as err:
        load_weights(
            module,
            tmp_path / "bad.pth",
            "tiny weights",
            WHERE,
            describe=lambda s: f"a {s['2.weight'].shape[1]}-wide MLP",
        )
    msg = str(err.value)
    assert (
        f"tiny weights {tmp_path / 'bad.pth'} does not match Sequential: the checkpoint looks like a 5-wide "
        "MLP, the model was built as a 4-wide MLP" in msg
    )
    assert "1 missing key(s): 0.bias" in msg and "1 unexpected key(s): 3.weight" in msg
    assert "shape mismatch for 2.weight: checkpoint (2, 5) vs model (2, 4)" in msg
    assert msg.endswith(f"({WHERE})")


def test_weights_argument_names():
    assert all(map(is_weights_argument, ["weights", "dav2_weights", "teacher_weights", "init_weights", "base_weights"]))
    assert not any(map(is_weights_argument, ["weights_dtype", "gradient_checkpointing", "checkpoint", "pretrained"]))
