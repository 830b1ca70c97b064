"""Evaluation in either space: depth-native and disparity-native predictions, aligned in depth or disparity."""

import numpy as np
import pytest
import torch

from vdf.metrics import VideoDepthMetrics, evaluate_sequence


def _scene(seed=0, t=3, h=12, w=16):
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 8.0 * torch.rand(t, h, w, generator=g, dtype=torch.float64)
    return depth


@pytest.mark.parametrize("align_space", ["disparity", "depth"])
def test_exact_predictions_score_zero_in_both_spaces(align_space):
    gt = _scene()
    depth_pred = 0.2 * gt - 0.1  # affine in depth, as ChronoDepth's relative depth
    disp_pred = 3.0 / gt + 0.05  # affine in disparity
    for pred, space in ((depth_pred, "depth"), (disp_pred, "disparity")):
        scores = evaluate_sequence(pred, gt, 10.0, pred_space=space, align_space=align_space)
        assert scores["abs_rel"] < 1e-7 and scores["delta1"] == 1.0, (space, align_space, scores)


def test_depth_alignment_is_least_squares_on_depth():
    gt = _scene(1)
    g = torch.Generator().manual_seed(2)
    pred = (0.3 * gt + 0.2 + 0.3 * torch.rand(gt.shape, generator=g, dtype=torch.float64)).clamp_min(1e-3)
    scores = evaluate_sequence(pred, gt, 10.0, pred_space="depth", align_space="depth")
    # Independent computation: numpy's least squares of [pred, 1] onto gt, then the metrics.
    a = np.stack([pred.numpy().ravel(), np.ones(pred.numel())], 1)
    (s, b), *_ = np.linalg.lstsq(a, gt.numpy().ravel(), rcond=None)
    assert scores["scale"] == pytest.approx(s, rel=1e-9) and scores["shift"] == pytest.approx(b, rel=1e-9, abs=1e-12)
    aligned = np.clip(s * pred.numpy() + b, 1e-3, 10.0)
    abs_rel = np.mean([np.mean(np.abs(aligned[i] - gt.numpy()[i]) / gt.numpy()[i]) for i in range(gt.shape[0])])
    assert scores["abs_rel"] == pytest.approx(abs_rel, rel=1e-9)


def test_a_depth_prediction_enters_disparity_space_only_once_metric():
    gt = _scene(3)
    g = torch.Generator().manual_seed(4)
    pred = 0.1 * gt + 0.05 * torch.rand(gt.shape, generator=g, dtype=torch.float64) + 0.02
    scores = evaluate_sequence(pred, gt, 10.0, pred_space="depth", align_space="disparity")
    # Independent: fit in depth, invert the metric depth, then the disparity protocol on it.
    a = np.stack([pred.numpy().ravel(), np.ones(pred.numel())], 1)
    (s, b), *_ = np.linalg.lstsq(a, gt.numpy().ravel(), rcond=None)
    metric = np.clip(s * pred.numpy() + b, 1e-3, 10.0)
    disparity = np.maximum(1.0 / metric, 1e-3)
    a = np.stack([disparity.ravel(), np.ones(disparity.size)], 1)
    (s2, b2), *_ = np.linalg.lstsq(a, 1.0 / (gt.numpy().ravel() + 1e-8), rcond=None)
    assert scores["scale"] == pytest.approx(s2, rel=1e-8) and scores["shift"] == pytest.approx(b2, rel=1e-8, abs=1e-10)
    depth = np.clip(1.0 / np.maximum(s2 * disparity + b2, 1e-3), 1e-3, 10.0)
    abs_rel = np.mean([np.mean(np.abs(depth[i] - gt.numpy()[i]) / gt.numpy()[i]) for i in range(gt.shape[0])])
    assert scores["abs_rel"] == pytest.approx(abs_rel, rel=1e-8)
    # The same prediction read as if it were disparity scores far worse: the space matters.
    wrong = evaluate_sequence(pred, gt, 10.0, pred_space="disparity", align_space="disparity")
    assert wrong["abs_rel"] > 3 * scores["abs_rel"]


def test_defaults_are_the_disparity_protocol_and_bad_spaces_are_refused():
    gt = _scene(5)
    pred = torch.rand(gt.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert evaluate_sequence(pred, gt, 10.0) == evaluate_sequence(
        pred, gt, 10.0, pred_space="disparity", align_space="disparity"
    )
    with pytest.raises(ValueError, match="align_space"):
        evaluate_sequence(pred, gt, 10.0, align_space="log")
    with pytest.raises(ValueError, match="pred_space"):
        evaluate_sequence(pred, gt, 10.0, pred_space="inverse")
    with pytest.raises(ValueError, match="align_space"):
        VideoDepthMetrics(10.0, align_space="metric")


def test_metric_accumulates_with_the_prediction_space():
    gt = _scene(7)[None, :, None]
    pred = 0.5 * gt + 1.0
    metric = VideoDepthMetrics(10.0, align_space="depth")
    metric.update(pred.float(), gt.float(), pred_space="depth")
    assert float(metric.compute()["abs_rel"]) < 1e-6
    metric = VideoDepthMetrics(10.0)
    metric.update(pred.float(), gt.float(), pred_space="disparity")
    assert float(metric.compute()["abs_rel"]) > 0.05


def test_models_declare_their_output_space():
    from vdf.diffusion import DepthMinMax, DisparityMinMax, PercentileDisparity

    assert DepthMinMax.space == "depth"
    assert DisparityMinMax.space == "disparity" and PercentileDisparity.space == "disparity"
