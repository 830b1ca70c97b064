"""`vdf.load` and predictors from Python: every family without Lightning, every input kind, checkpoints, overrides."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recipes import tiny_args, tiny_files

import vdf
from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ["dav2", "flashdepth", "depthcrafter", "chronodepth", "depthanyvideo", "vda"]


def test_every_family_predicts_through_vdf_load_without_lightning():
    # A fresh interpreter: nothing of Lightning may be imported on the way.
    code = f"""
import sys, numpy as np, torch, vdf
video = (np.random.default_rng(0).random((8, 32, 48, 3)) * 255).astype(np.uint8)
for family in {FAMILIES!r}:
    configs = [f"{ROOT}/configs/{{family}}.yaml", f"{ROOT}/configs/tiny/{{family}}.yaml"]
    depth = vdf.load(configs, device="cpu").predict(video)
    predicted = ~torch.isnan(depth).flatten(1).all(1)
    assert depth.shape == (8, 32, 48) and predicted.any(), family
    assert torch.isfinite(depth[predicted]).all(), family
    print(family, int(predicted.sum()))
assert not any(m == "lightning" or m.startswith("lightning.") for m in sys.modules), "Lightning was imported"
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = dict(line.split() for line in out.stdout.split("\n") if line)
    assert set(counts) == set(FAMILIES)
    # Every frame predicted, except where the official layout drops frames (Depth Any Video).
    assert all(int(counts[f]) == 8 for f in FAMILIES if f != "depthanyvideo")
    assert 0 < int(counts["depthanyvideo"]) < 8


@pytest.fixture(scope="module")
def dav2():
    return vdf.load(tiny_files("dav2"), device="cpu")


def test_every_input_kind_gives_the_same_prediction(dav2, tmp_path):
    from vdf.data.datasets.synthetic import SyntheticWorld
    from vdf.io import VideoSource, write_episodes

    write_episodes(SyntheticWorld(num_episodes=1, num_frames=5, height=32, width=48, seed=3), tmp_path)
    path = tmp_path / "episode_00000.mp4"
    frames = torch.stack([frame for _, frame in VideoSource(path).frames()])  # (T,3,H,W) as decoded
    uint8 = (frames * 255).round().to(torch.uint8).permute(0, 2, 3, 1)  # (T,H,W,3)
    from_path = dav2.predict(path)
    assert from_path.shape == (5, 32, 48)
    torch.testing.assert_close(dav2.predict(frames), from_path)
    torch.testing.assert_close(dav2.predict(iter(list(frames))), from_path)
    torch.testing.assert_close(dav2.predict(uint8.numpy()), from_path)
    streamed = list(dav2(str(path)))
    assert [f.index for f in streamed] == list(range(5))
    torch.testing.assert_close(torch.stack([f.value for f in streamed]), from_path)
    with pytest.raises(ValueError, match="video array"):
        dav2.predict(np.zeros((32, 48, 3), dtype=np.uint8))


def test_checkpoint_and_overrides(tmp_path, in_tmp_cwd):
    cli = main(
        [
            "fit",
            *tiny_args("dav2"),
            "--trainer.max_steps",
            "2",
            "--trainer.limit_val_batches",
            "0",
        ]
    )
    ckpt = os.path.join(cli.trainer.log_dir, "checkpoints", "last.ckpt")
    trained = vdf.load(tiny_files("dav2"), ckpt=ckpt, device="cpu")
    for name, value in cli.model.predictor.state_dict().items():
        torch.testing.assert_close(trained.state_dict()[name], value.cpu())
    fresh = vdf.load(tiny_files("dav2"), device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
    tuned = vdf.load(tiny_files("dav2"), device="cpu", input_size=28, strategy__init_args__batch_size=3)
    assert tuned.input_size == 28 and tuned.strategy.batch_size == 3
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        vdf.load(tiny_files("dav2"), ckpt=tmp_path / "nope.ckpt")
    with pytest.raises(ValueError, match="names a predictor"):
        vdf.load(os.path.join(ROOT, "configs", "data", "sintel.yaml"))
