"""Sharded training: FSDP on CPU (gloo, 2 processes) agrees with one process, with staged freezing.

One module-scoped fixture runs two ``python -m vdf fit`` subprocesses of the tiny DepthCrafter
stage 2 (temporal layers only: ``configs/depthcrafter.yaml`` + ``configs/depthcrafter/stage2.yaml``
+ ``configs/tiny/depthcrafter.yaml``), 2 optimizer steps, 1 clip per batch:

1. with ``configs/strategy/fsdp.yaml`` on 2 processes (`vdf.tasks.sharding.FSDPStrategy`);
2. on one process with ``accumulate_grad_batches=2`` (in the test's interpreter, one thread).

They see the same clips per step (the sampler's global plan does not depend on the world size,
see ``tests/test_ddp.py``), and FSDP's gradient is ``g0/2 + g1/2`` as accumulation's (it divides
by the world size before the reduce-scatter). The training noise is seeded per step from the
run's seed and the step's clips (``VideoDepthTask._clip_seeded_randomness``), so two ranks and one
accumulating process draw the same noise for the same clip. Clips have 1 to 5
frames, so the two ranks really run clips of different lengths in one step (the frozen VAE and
CLIP, replicated, run a different number of chunks on each rank without a collective mismatch).
Gradient clipping (stage 2: norm 1.0) runs through FSDP's sharded norm in run 1, torch's in run
2: equal up to summation order, hence a float tolerance rather than bitwise equality.

DeepSpeed cannot run here (no GPU, and it is an optional install): its overlays are parsed by
vdf's CLI parser and their settings checked, without building the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from ddp_helpers import run_vdf

from vdf.models.svd import parameter_group
from vdf.models.weights import FROZEN_RECORD

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RECIPE = [
    "--config",
    str(CONFIGS / "depthcrafter.yaml"),
    "--config",
    str(CONFIGS / "depthcrafter" / "stage2.yaml"),
    "--config",
    str(CONFIGS / "tiny" / "depthcrafter.yaml"),
]
COMMON = [
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.enable_progress_bar",
    "false",
    "--data.batch_size",
    "1",
    "--data.max_frames_per_batch",
    "null",
    "--data.num_frames",
    "[1, 2, 3]",
    # One frame per VAE call: ranks with clips of 2 and 3 frames call the frozen VAE 2 and 3 times.
    "--model.init_args.predictor.init_args.denoiser.init_args.vae.init_args.chunk_size",
    "1",
    "--trainer.callbacks+=sharding_helpers.RecordSharding",
]


def _last(run: Path) -> dict:
    (path,) = run.glob("runs/*/version_0/checkpoints/last.ckpt")
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from vdf.cli import main

    base = tmp_path_factory.mktemp("sharding")
    fsdp = [*RECIPE, "--config", str(CONFIGS / "strategy" / "fsdp.yaml"), "--trainer.devices", "2", *COMMON]
    run_vdf(["fit", *fsdp], base / "fsdp", ROOT)
    # The one-process run in this interpreter (no second start-up), on one thread as the ranks.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            (base / "single").mkdir()
            mp.chdir(base / "single")
            main(["fit", *RECIPE, *COMMON, "--trainer.accumulate_grad_batches", "2"])
    finally:
        torch.set_num_threads(threads)

    def record(run: str, rank: int) -> dict:
        return torch.load(base / run / "sharding_record" / f"rank{rank}.pt", weights_only=False)

    return {
        "fsdp": [record("fsdp", r) for r in range(2)],
        "single": record("single", 0),
        "fsdp_ckpt": _last(base / "fsdp"),
        "single_ckpt": _last(base / "single"),
    }


def test_fsdp_two_ranks_match_one_process_with_accumulation_under_staged_freezing(runs):
    fsdp, single = runs["fsdp_ckpt"], runs["single_ckpt"]
    assert fsdp["global_step"] == single["global_step"] == 2
    a, b = fsdp["state_dict"], single["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}")
    # Staged freezing was active in both: the temporal layers moved, the spatial ones did not.
    initial = runs["single"]["initial"]
    moved = {k for k in initial if not torch.equal(initial[k], b[k])}
    temporal = {k for k in initial if parameter_group(k) == "temporal"}
    assert moved and moved <= temporal, sorted(moved - temporal)[:5]
    assert len(moved) > len(temporal) // 2
    for key in initial.keys() - temporal:
        assert torch.equal(a[key], initial[key]), f"frozen {key} changed under FSDP"


def test_frozen_parameters_are_neither_optimized_nor_reduced(runs):
    for rank, record in enumerate(runs["fsdp"]):
        assert record["world_size"] == 2 and len(record["steps"]) == 2
        for step in record["steps"]:
            # The optimizer holds exactly the trainable (temporal) UNet parameters, by their names.
            assert step["temporal"] and step["spatial"]
            assert step["in_optimizer"] == step["temporal"], f"rank {rank}"
            assert step["frozen_with_grad"] == [], f"rank {rank}: {step['frozen_with_grad'][:5]}"
            # Every FSDP unit is all-frozen or all-trainable, and only trainable ones are reduced.
            assert step["num_flat"] > 10 and step["frozen_flat"] > 0 and step["trainable_flat"] > 0
            assert step["reduced"] == step["trainable_flat"], f"rank {rank}: {step}"
    for step in runs["single"]["steps"]:
        assert step["in_optimizer"] == step["temporal"] and step["frozen_with_grad"] == []
    # The ranks trained clips of different lengths in one step (so different numbers of VAE calls).
    frames = [[step["frames"] for step in record["steps"]] for record in runs["fsdp"]]
    assert any(a != b for a, b in zip(*frames)), frames


def test_fsdp_checkpoint_is_full_and_lean(runs):
    checkpoint = runs["fsdp_ckpt"]
    keys = checkpoint["state_dict"].keys()
    # The shipped tiny VAE is loaded from its weights file: left out, rebuilt on load.
    assert not any(k.startswith("predictor.denoiser.vae.") for k in keys)
    record = checkpoint[FROZEN_RECORD]
    assert list(record) == ["predictor.denoiser.vae"]
    assert record["predictor.denoiser.vae"]["sources"][0].endswith("tiny_svd_vae")
    # The tiny CLIP is randomly initialised (no weights file): it stays in the checkpoint.
    assert any(k.startswith("predictor.denoiser.image_encoder.") for k in keys)
    assert not any("_fsdp_wrapped_module" in k for k in keys)


def test_fsdp_without_original_parameters_is_refused():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy as LightningFSDP

    from vdf.callbacks.freezing import StagedFreezing
    from vdf.tasks.sharding import FSDPStrategy

    trainer = SimpleNamespace(world_size=2, strategy=LightningFSDP(use_orig_params=False))
    with pytest.raises(RuntimeError, match="use_orig_params=True"):
        StagedFreezing("temporal").setup(trainer, SimpleNamespace(), "fit")
    with pytest.raises(ValueError, match="use_orig_params=True"):
        FSDPStrategy(use_orig_params=False)
    assert FSDPStrategy().kwargs["use_orig_params"] is True


# -- DeepSpeed: configuration only ---------------------------------------------------------------


def _parsed_strategy(capsys, recipe: list[str], overlay: str) -> dict:
    from vdf.cli import main

    args = [a for name in recipe for a in ("--config", str(CONFIGS / name))]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--config", str(CONFIGS / "strategy" / overlay), "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)["trainer"]["strategy"]


@pytest.mark.parametrize(
    ("overlay", "stage", "offload"),
    [("deepspeed_zero2.yaml", 2, False), ("deepspeed_zero3_offload.yaml", 3, True)],
)
def test_deepspeed_overlays_parse_with_their_settings(overlay, stage, offload, capsys, in_tmp_cwd):
    strategy = _parsed_strategy(capsys, ["depthcrafter.yaml", "depthcrafter/stage3.yaml"], overlay)
    assert strategy["class_path"] == "lightning.pytorch.strategies.DeepSpeedStrategy"
    args = strategy["init_args"]
    assert args["stage"] == stage
    assert args["offload_optimizer"] is offload and args["offload_parameters"] is offload
    # Activation checkpointing stays the networks' own (the recipes' gradient_checkpointing).
    assert args["partition_activations"] is False
    raw = yaml.safe_load((CONFIGS / "strategy" / overlay).read_text())
    assert "precision" not in raw.get("trainer", {}), "precision stays the recipe's (bf16-mixed)"
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return
    from lightning.pytorch.strategies import DeepSpeedStrategy

    built = DeepSpeedStrategy(**{k: v for k, v in args.items() if v is not None})
    assert built.config["zero_optimization"]["stage"] == stage


def _units(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """The qualified names of the modules `VDFWrapPolicy` makes FSDP units, and of the parameters
    left to the root unit."""
    from vdf.models.sharding import VDFWrapPolicy

    wrapped = VDFWrapPolicy()._run_policy(model, set(), {})
    names = {m: n for n, m in model.named_modules()}
    units = sorted(names[m] for m in wrapped if m is not model)
    root = [n for n, _ in model.named_parameters() if not any(n.startswith(f"{u}.") for u in units)]
    return units, root


def test_wrap_units_hold_one_training_group_for_every_family():
    from vdf.models.flashdepth import FlashDepth
    from vdf.models.svd import SVDUNet

    # The SVD UNet as DepthCrafter/ChronoDepth build it, and with Depth Any Video's RoPE temporal
    # attention and no added time ids: every unit is all-spatial or all-temporal, the root spatial.
    tiny = dict(block_out_channels=(32, 64), layers_per_block=1, num_attention_heads=(2, 4), cross_attention_dim=32)
    for unet in (SVDUNet(**tiny, addition_time_embed_dim=8), SVDUNet(**tiny, added_time_ids=False, temporal_rope=True)):
        units, root = _units(unet)
        assert len(units) > 10
        for unit in units:
            groups = {parameter_group(f"{unit}.{n}") for n, _ in unet.get_submodule(unit).named_parameters()}
            assert len(groups) == 1, (unit, groups)
        assert {parameter_group(n) for n in root} == {"spatial"}
        assert {parameter_group(u) for u in units} == {"spatial", "temporal"}
    # FlashDepth (Full): student and teacher ViT blocks and the fusion blocks; not the per-frame Mamba.
    net = FlashDepth(
        "full",
        embed_dim=48,
        depth=4,
        num_heads=2,
        layer_indices=[0, 1, 2, 3],
        features=16,
        out_channels=[8, 16, 24, 32],
        mamba_d_state=16,
        mamba_expand=2,
        mamba_headdim=8,
        teacher_embed_dim=48,
        teacher_depth=4,
        teacher_num_heads=2,
        teacher_layer_indices=[0, 1, 2, 3],
        teacher_features=32,
        teacher_out_channels=[8, 16, 24, 32],
    )
    units, _ = _units(net)
    assert sum(u.startswith("pretrained.blocks.") for u in units) == 4
    assert sum(u.startswith("teacher_model.pretrained.blocks.") for u in units) == 4
    assert any(u.startswith("hybrid_fusion.") for u in units)
    assert not any(u.startswith("mamba.") for u in units)
