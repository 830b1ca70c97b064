"""`vdf bench --train`: training-step memory per stage, the modelled sharding and the extrapolation fit."""

import json
import os

import pytest

from vdf.bench_train import TrainResult, fit_activations, parse_size, shard, stage_of
from vdf.cli import run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configs(*names: str) -> list[str]:
    return [os.path.join(ROOT, "configs", n) for n in names]


def test_stage_is_read_from_the_staged_freezing_callback():
    assert stage_of(configs("depthcrafter.yaml", "depthcrafter/stage1.yaml"))[0] == "all"
    assert stage_of(configs("depthcrafter.yaml", "depthcrafter/stage2.yaml"))[0] == "temporal"
    assert stage_of(configs("depthcrafter.yaml", "depthcrafter/stage3.yaml"))[0] == "spatial"
    assert stage_of(configs("depthcrafter.yaml")) == ("all", "predictor.denoiser.unet")


def test_train_step_memory_of_a_tiny_stage(tmp_path):
    stage2 = "+".join(configs("depthcrafter.yaml", "depthcrafter/stage2.yaml"))
    out = tmp_path / "train.json"
    report = run(
        ["bench", "--train", stage2, "--tiny", "--no_isolate", "--sizes", "[2x16x16]", "--devices", "4"]
        + ["--output", str(out)]
    )
    assert json.loads(out.read_text())["results"] == report["results"]
    rows = report["results"]
    assert [r["checkpointing"] for r in rows] == [False, True]
    for r in rows:
        assert (r["trainable"], r["frames"], r["height"], r["width"]) == ("temporal", 2, 16, 16)
        # Stage 2 trains the temporal layers only: gradients are a part of the network, and Adam
        # keeps two moments per trained value (plus a step counter per tensor).
        assert 0 < r["gradients_mb"] < r["network_mb"] < r["params_mb"]
        assert 2 * r["gradients_mb"] <= r["optimizer_mb"] < 2 * r["gradients_mb"] * 1.01
        # Linux's RSS counters are approximate (each thread batches up to 64 pages, 256 KB, before
        # they reach the counters), so a step that adds little can read a few KB below zero.
        assert r["step_mb"] > -1.0 and r["seconds"] > 0
        resident = r["params_mb"] + r["batch_mb"] + r["optimizer_mb"]
        increase = max(r["forward_backward_mb"], r["step_mb"] - r["optimizer_mb"])
        assert r["peak_mb"] == pytest.approx(resident + increase)
        assert r["zero2_mb"] == pytest.approx(r["peak_mb"] - 0.75 * (r["optimizer_mb"] + r["gradients_mb"]))
        assert r["fsdp_mb"] == pytest.approx(r["zero2_mb"] - 0.75 * r["network_mb"])
        assert "lower bound" in r["memory_kind"]  # in-process on CPU
    assert "| depthcrafter_stage2 | temporal | 2×16×16 | off |" in report["table"]


def test_activation_fit_and_sharding_model_by_hand():
    # activations = 0.5 MB per latent pixel-frame + 3 MB, exactly: the fit recovers it.
    rows = []
    for t, h, w in [(2, 64, 128), (6, 64, 128), (4, 128, 128)]:
        r = TrainResult("x", "c", "all", t, h, w, False)
        r.activations_mb = 0.5 * t * (h // 8) * (w // 8) + 3
        rows.append(r)
    fit = fit_activations(rows)[False]
    assert fit["a_mb_per_latent_pixel_frame"] == pytest.approx(0.5)
    assert fit["b_mb"] == pytest.approx(3)
    assert fit["max_relative_error"] < 1e-9
    r = TrainResult("x", "c", "all", 1, 8, 8, True, network_mb=100, gradients_mb=40, optimizer_mb=80, peak_mb=500)
    shard(r, devices=8)
    assert r.zero2_mb == pytest.approx(500 - 7 / 8 * 120)
    assert r.fsdp_mb == pytest.approx(r.zero2_mb - 7 / 8 * 100)
    with pytest.raises(ValueError, match="TxHxW"):
        parse_size("25x320")
