"""Lean training checkpoints: frozen modules loaded from weights files are left out and rebuilt.

A tiny DepthCrafter (stage 1 + tiny overlay) whose VAE (the shipped tiny VAE) and CLIP image
encoder (written here with ``save_pretrained``) both come from weights files trains 2 steps in
one ``vdf fit`` (a checkpoint every step), and a second ``vdf fit --ckpt_path`` resumes from the
step-1 checkpoint. The step-1 checkpoint holds no VAE or CLIP tensor, only their sources and
fingerprints; the resumed run must end bitwise where the uninterrupted one ends (weights and
optimizer state). The training noise is seeded per step from the run's seed, the step and its
clips (Lightning does not store the global RNG in checkpoints), the data order being restored by
the resumable loader.

The same checkpoint loads through ``vdf.load`` and ``init_weights``, and both refuse it, naming the
module, when the CLIP differs from the one it was trained with.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from recipes import tiny_args

from vdf.models.weights import FROZEN_RECORD, FrozenWeightsMismatchError, tensor_fingerprint

CLIP_ARG = "--model.init_args.predictor.init_args.denoiser.init_args.image_encoder.init_args.weights"
RUN = [
    "--trainer.max_steps=2",
    "--data.batch_size=1",
    "--data.max_frames_per_batch=null",
    "--data.num_frames=[1, 2]",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.callbacks+=ModelCheckpoint",
    "--trainer.callbacks.every_n_train_steps=1",
    "--trainer.callbacks.save_top_k=-1",
]


def _write_clip(folder: Path, seed: int) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        image_size=32,
        projection_dim=32,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from vdf.cli import main

    base = tmp_path_factory.mktemp("lean")
    clip = _write_clip(base / "clip", seed=0)
    args = [*tiny_args("depthcrafter", "stage1"), CLIP_ARG, str(clip), *RUN]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: a second thread only adds contention
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(base)
            main(["fit", *args])
            (mid,) = base.glob("runs/*/version_0/checkpoints/epoch=*-step=1.ckpt")
            main(["fit", *args, "--ckpt_path", str(mid)])
    finally:
        torch.set_num_threads(threads)
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)
    (full,) = base.glob("runs/*/version_0/checkpoints/epoch=*-step=2.ckpt")
    (resumed,) = base.glob("runs/*/version_1/checkpoints/epoch=*-step=2.ckpt")
    return {
        "base": base,
        "clip": clip,
        "args": args,
        "mid_path": mid,
        "mid": load(mid),
        "full": load(full),
        "resumed": load(resumed),
    }


def test_checkpoint_holds_no_vae_or_clip_tensors(runs):
    checkpoint = runs["mid"]
    keys = list(checkpoint["state_dict"])
    assert any(k.startswith("predictor.denoiser.unet.") for k in keys)
    assert not [k for k in keys if k.startswith(("predictor.denoiser.vae.", "predictor.denoiser.image_encoder."))]
    record = checkpoint[FROZEN_RECORD]
    assert set(record) == {"predictor.denoiser.vae", "predictor.denoiser.image_encoder"}
    assert record["predictor.denoiser.image_encoder"]["sources"] == [str(runs["clip"])]
    assert record["predictor.denoiser.vae"]["sources"][0].endswith("tiny_svd_vae")
    # The fingerprint is that of the weights file's tensors (as float32, the config's dtype).
    from transformers import CLIPVisionModelWithProjection

    tower = CLIPVisionModelWithProjection.from_pretrained(runs["clip"])
    expected = tensor_fingerprint({f"encoder.{k}": v for k, v in tower.state_dict().items()})
    assert record["predictor.denoiser.image_encoder"]["fingerprint"] == expected


def test_resume_from_lean_checkpoint_is_bitwise_equal_to_uninterrupted_run(runs):
    full, resumed = runs["full"], runs["resumed"]
    assert full["global_step"] == resumed["global_step"] == 2
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    mid = runs["mid"]["state_dict"]
    assert any(not torch.equal(v, mid[k]) for k, v in full["state_dict"].items()), "nothing trained after step 1"
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for a, b in zip(full["optimizer_states"][0]["state"].values(), resumed["optimizer_states"][0]["state"].values()):
        for name in a:
            assert torch.equal(a[name], b[name]), name
    assert full[FROZEN_RECORD] == resumed[FROZEN_RECORD]


def test_lean_checkpoint_loads_for_inference_and_as_init_weights(runs):
    import vdf
    from vdf.api import build_predictor, load_checkpoint
    from vdf.tasks import LatentDiffusionTask

    configs = [a for a in runs["args"][: 2 * 3] if not a.startswith("--")]
    clip = {"denoiser__init_args__image_encoder__init_args__weights": str(runs["clip"])}
    predictor = vdf.load(configs, ckpt=runs["mid_path"], device="cpu", **clip)
    state = predictor.state_dict()
    for key, value in runs["mid"]["state_dict"].items():
        assert torch.equal(state[key.removeprefix("predictor.")], value), key
    rebuilt = build_predictor(configs, clip)[0]
    task = LatentDiffusionTask(rebuilt, init_weights=str(runs["mid_path"]))
    for key, value in task.state_dict().items():
        assert torch.equal(value, state[key.removeprefix("predictor.")]), key
    # Other CLIP weights than those trained with: refused by both, naming the module.
    with torch.no_grad():
        rebuilt.denoiser.image_encoder.encoder.visual_projection.weight.add_(1e-3)
    with pytest.raises(FrozenWeightsMismatchError, match="image_encoder"):
        load_checkpoint(rebuilt, runs["mid_path"])
    with pytest.raises(FrozenWeightsMismatchError, match="image_encoder"):
        LatentDiffusionTask(rebuilt, init_weights=str(runs["mid_path"]))


def test_fsdp_resumes_from_a_lean_checkpoint(runs):
    """Lightning's FSDP loads a full checkpoint's weights before any hook runs: vdf's strategy
    completes the left-out frozen modules as the file is read. An FSDP run (one process, gloo, in
    this interpreter) resumed from its own lean step-1 checkpoint ends where it ends uninterrupted.
    The process group and the launcher's environment variables are removed afterwards."""
    import os

    import torch.distributed as dist

    from vdf.cli import main

    base = runs["base"] / "fsdp"
    base.mkdir()
    args = [*runs["args"], "--config", str(Path(__file__).resolve().parents[1] / "configs" / "strategy" / "fsdp.yaml")]
    environ, threads = dict(os.environ), torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(base)
            main(["fit", *args])
            (mid,) = base.glob("runs/*/version_0/checkpoints/epoch=*-step=1.ckpt")
            main(["fit", *args, "--ckpt_path", str(mid)])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
    lean = torch.load(mid, map_location="cpu", weights_only=False)["state_dict"]
    assert not any(".denoiser.vae." in k or ".image_encoder." in k for k in lean)
    (full,) = base.glob("runs/*/version_0/checkpoints/epoch=*-step=2.ckpt")
    (resumed,) = base.glob("runs/*/version_1/checkpoints/epoch=*-step=2.ckpt")
    full, resumed = (torch.load(p, map_location="cpu", weights_only=False) for p in (full, resumed))
    assert full["global_step"] == resumed["global_step"] == 2
    assert full["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_fingerprints_accept_the_same_weights_in_a_half_dtype_and_refuse_others(tmp_path):
    from torch import nn

    from vdf.models.weights import complete_state_dict, lean_state_dict, load_weights, mark_frozen

    torch.manual_seed(0)
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "frozen.pt")

    def build(dtype: torch.dtype = torch.float32) -> nn.Module:
        root = nn.Module()
        root.trained, root.frozen = nn.Linear(2, 2), nn.Linear(3, 2)
        load_weights(root.frozen, tmp_path / "frozen.pt", "frozen weights", "written by this test")
        mark_frozen(root.frozen.to(dtype))
        return root

    trained = build()
    state = trained.state_dict()
    record = lean_state_dict(state, trained)
    assert set(state) == {"trained.weight", "trained.bias"} and record["frozen"]["num_tensors"] == 2
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        rebuilt, completed = build(dtype), dict(state)
        complete_state_dict(completed, record, rebuilt, "test checkpoint")
        assert torch.equal(completed["frozen.weight"], trained.frozen.weight.detach().to(dtype))
    other = build()
    with torch.no_grad():
        other.frozen.bias.add_(1e-6)
    with pytest.raises(FrozenWeightsMismatchError, match="'frozen'.*frozen.pt"):
        complete_state_dict(dict(state), record, other, "test checkpoint")
    # A module with randomly initialised parts stays in the checkpoint.
    random = nn.Module()
    random.frozen = mark_frozen(nn.Linear(3, 2))
    kept = random.state_dict()
    assert lean_state_dict(kept, random) == {} and set(kept) == {"frozen.weight", "frozen.bias"}
