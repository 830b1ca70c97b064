"""`vdf predict` / `vdf test`: the configured precision, the resolution rule and frames without a prediction."""

import json
import os

import numpy as np
import pytest
import torch
from recipes import tiny_args

from vdf.cli import main
from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.inference.per_frame import PerFrame
from vdf.io import write_episodes
from vdf.predictors import FramePredictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = tiny_args("dav2")


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "videos"
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=4, height=30, width=46, seed=5), root)
    return root


@pytest.fixture
def autocast_log(monkeypatch):
    """Records, for every clip forward of the tiny DAv2 predictor, whether CPU autocast was on and the input size."""
    log = []
    clip = FramePredictor.clip

    def recording(self, video, frame_index=None):
        log.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), tuple(video.shape[-2:])))
        return clip(self, video, frame_index)

    monkeypatch.setattr(FramePredictor, "clip", recording)
    return log


def test_predict_runs_the_strategy_under_the_configured_precision(videos, tmp_path, autocast_log, in_tmp_cwd):
    main(
        [
            "predict",
            *TINY,
            "--input",
            str(videos),
            "--output",
            str(tmp_path / "out"),
            "--trainer.precision",
            "bf16-mixed",
            "--writer.progress",
            "false",
        ]
    )
    assert autocast_log and all(on and dtype == torch.bfloat16 for on, dtype, _ in autocast_log)
    autocast_log.clear()
    main(
        [
            "predict",
            *TINY,
            "--input",
            str(videos),
            "--output",
            str(tmp_path / "out32"),
            "--trainer.precision",
            "32-true",
            "--writer.progress",
            "false",
        ]
    )
    assert autocast_log and not any(on for on, _, _ in autocast_log)


def test_test_runs_the_strategy_under_the_configured_precision(autocast_log, in_tmp_cwd):
    main(["test", *TINY, "--trainer.precision", "bf16-mixed", "--trainer.limit_test_batches", "1"])
    assert autocast_log and all(on and dtype == torch.bfloat16 for on, dtype, _ in autocast_log)


def test_predict_runs_at_the_resolution_rule_and_writes_at_the_input_size(videos, tmp_path, autocast_log, in_tmp_cwd):
    out = tmp_path / "out"
    rule = '{"class_path": "vdf.predictors.resolution.RoundToMultiple", "init_args": {"max_size": null, "multiple": 16, "rounding": "up"}}'
    # A null inside a class nested three deep takes the JSON form (see docs/cli.md).
    main(
        [
            "predict",
            *TINY,
            "--input",
            str(videos),
            "--output",
            str(out),
            "--model.init_args.predictor",
            f'{{"init_args": {{"resolution": {rule}}}}}',
            "--writer.progress",
            "false",
        ]
    )
    assert {size for _, _, size in autocast_log} == {(32, 48)}
    manifest = json.loads((out / "episode_00000.json").read_text())
    assert manifest["inference_resolution"] == [32, 48] and manifest["space"] == "disparity"
    with np.load(out / "episode_00000.npz") as npz:
        assert npz["disparity"].shape == (4, 30, 46)


def test_frames_without_a_prediction_get_no_output_and_no_score(videos, tmp_path, monkeypatch, in_tmp_cwd):
    per_frame = PerFrame.__call__

    def skip_first(self, model, frames):
        # As a layout that drops frames does: no prediction for the first frame.
        for i, out in enumerate(per_frame(self, model, frames)):
            yield None if i == 0 else out

    monkeypatch.setattr(PerFrame, "__call__", skip_first)
    out = tmp_path / "out"
    main(["predict", *TINY, "--input", str(videos), "--output", str(out), "--writer.progress", "false"])
    with np.load(out / "episode_00000.npz") as npz:
        assert npz["frame_index"].tolist() == [1, 2, 3] and npz["disparity"].shape[0] == 3
    scored = []
    import vdf.metrics.video_depth as video_depth

    evaluate = video_depth.evaluate_sequence

    def recording(pred, depth, max_depth, valid=None, **kwargs):
        scored.append(valid.flatten(1).any(1).tolist())
        assert torch.isfinite(pred).all()
        return evaluate(pred, depth, max_depth, valid, **kwargs)

    monkeypatch.setattr(video_depth, "evaluate_sequence", recording)
    cli = main(["test", *TINY, "--trainer.limit_test_batches", "1"])
    assert scored and all(not frames[0] and any(frames[1:]) for frames in scored)
    assert float(cli.trainer.callback_metrics["test/abs_rel"]) > 0
