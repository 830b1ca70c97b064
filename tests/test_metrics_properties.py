"""Hostile inputs for vdf.metrics: every call either returns finite numbers or raises a clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vdf.metrics import (
    NoValidPixelsError,
    VideoDepthMetrics,
    align_disparity,
    aligned_depth,
    boundary_f1,
    evaluate_sequence,
    temporal_alignment_error,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5))
# any finite double, including huge and tiny magnitudes and negatives
wild = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)
tame = st.floats(0.01, 100.0)
gt_values = st.one_of(st.floats(1e-4, 50.0), st.sampled_from([0.0, -1.0, 1e-3, 10.0, np.nan, np.inf, 1e30]))


def _lstsq_ref(pred, gt, max_depth, valid=None):
    m = (gt > 1e-3) & (gt < max_depth)
    if valid is not None:
        m &= valid
    x = np.maximum(pred, 1e-3)[m]
    return np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), 1 / (gt[m] + 1e-8), rcond=None)[0]


def _check_finite_scores(out):
    for k in ("abs_rel", "delta1", "rmse", "scale", "shift"):
        assert math.isfinite(out[k]), k
    assert out["abs_rel"] >= 0 and out["rmse"] >= 0 and 0 <= out["delta1"] <= 1
    assert out["num_frames"] >= 1


@SETTINGS
@given(data=st.data(), shape=shapes, max_depth=st.sampled_from([10.0, 70.0, 80.0]))
def test_any_finite_prediction_scores_or_raises_no_valid(data, shape, max_depth):
    pred = data.draw(arrays(np.float64, shape, elements=wild))
    gt = data.draw(arrays(np.float64, shape, elements=gt_values))
    has_valid = bool(((gt > 1e-3) & (gt < max_depth)).any())
    if not has_valid:
        with pytest.raises(NoValidPixelsError, match="valid"):
            evaluate_sequence(pred, gt, max_depth)
        return
    out = evaluate_sequence(pred, gt, max_depth)
    _check_finite_scores(out)
    d = aligned_depth(pred, gt, max_depth)
    assert torch.isfinite(d).all() and float(d.min()) >= 1e-3 and float(d.max()) <= max_depth


@SETTINGS
@given(data=st.data(), shape=shapes)
def test_agrees_with_numpy_lstsq_on_well_posed_data(data, shape):
    pred = data.draw(arrays(np.float64, shape, elements=tame))
    gt = data.draw(arrays(np.float64, shape, elements=st.floats(0.1, 9.0)))
    assume(np.ptp(pred) > 1e-2 * pred.max())  # keep the fit well conditioned
    ref = _lstsq_ref(pred, gt, 10.0)
    s, b = align_disparity(pred, gt, 10.0)
    scale = max(abs(ref[0]) * pred.max(), abs(ref[1]))  # size of the fitted disparities
    assert abs(s - ref[0]) * pred.max() <= 1e-9 * scale
    assert abs(b - ref[1]) <= 1e-9 * scale


@SETTINGS
@given(data=st.data(), shape=shapes, depth=st.floats(0.01, 9.9))
def test_constant_gt_depth_is_fitted_exactly(data, shape, depth):
    pred = data.draw(arrays(np.float64, shape, elements=st.floats(-1e6, 1e6)))
    out = evaluate_sequence(pred, np.full(shape, depth), 10.0)
    assert out["abs_rel"] < 1.01e-8 / depth + 1e-9 and out["delta1"] == 1.0


@SETTINGS
@given(data=st.data(), shape=shapes, value=wild)
def test_constant_prediction_matches_minimum_norm_lstsq(data, shape, value):
    gt = data.draw(arrays(np.float64, shape, elements=st.floats(0.01, 9.9)))
    pred = np.full(shape, value)
    ref = _lstsq_ref(pred, gt, 10.0)
    s, b = align_disparity(pred, gt, 10.0)
    x0 = max(value, 1e-3)
    assert s * x0 + b == pytest.approx(ref[0] * x0 + ref[1], rel=1e-9)
    assert s == pytest.approx(ref[0], rel=1e-9, abs=1e-300) and b == pytest.approx(ref[1], rel=1e-9, abs=1e-300)
    _check_finite_scores(evaluate_sequence(pred, gt, 10.0))


@SETTINGS
@given(data=st.data(), shape=shapes)
def test_single_valid_pixel(data, shape):
    pred = data.draw(arrays(np.float64, shape, elements=wild))
    gt = data.draw(arrays(np.float64, shape, elements=st.floats(0.01, 9.9)))
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    valid = np.zeros(shape, bool)
    valid[idx] = True
    out = evaluate_sequence(pred, gt, 10.0, valid)
    _check_finite_scores(out)
    assert out["num_frames"] == 1 and out["num_valid"] == 1
    # two unknowns, one equation: the pixel is reproduced up to the target's +1e-8 (1/(gt+1e-8))
    assert out["abs_rel"] < 1.01e-8 / gt[idx] + 1e-12


@SETTINGS
@given(data=st.data(), shape=shapes, bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_prediction_is_an_error(data, shape, bad):
    pred = data.draw(arrays(np.float64, shape, elements=tame))
    gt = data.draw(arrays(np.float64, shape, elements=st.floats(0.1, 9.0)))
    idx = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    pred[idx] = bad
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_sequence(pred, gt, 10.0)
    with pytest.raises(ValueError, match="non-finite"):
        align_disparity(torch.from_numpy(pred).float(), gt, 10.0)


@SETTINGS
@given(data=st.data(), shape=st.tuples(st.integers(1, 6), st.integers(1, 6)), k=st.integers(-3, 20))
def test_boundary_f1_bounded_and_scale_invariant(data, shape, k):
    gt = data.draw(arrays(np.float64, shape, elements=st.one_of(st.floats(0.0, 1e6), st.just(np.inf))))
    pred = data.draw(arrays(np.float64, shape, elements=st.floats(1e-5, 1e5)))
    f = boundary_f1(pred, gt)
    assert 0.0 <= f <= 1.0
    # a power of two scales exactly, so every ratio (and the score) is unchanged, as long as the
    # 1e-6 depth floor is not reached (pred >= 1e-5, k >= -3)
    assert boundary_f1(pred * 2.0**k, gt) == f
    assert 0.0 <= boundary_f1(gt.clip(max=1e6), gt) <= 1.0


@SETTINGS
@given(data=st.data(), n=st.integers(2, 3), tx=st.floats(-1, 1), tz=st.floats(-1, 1))
def test_tae_nonnegative_finite_and_zero_for_static_identity(data, n, tx, tz):
    depth = data.draw(arrays(np.float64, (n, 4, 5), elements=st.floats(1e-3, 1e3)))
    k = np.array([[5.0, 0, 2.0], [0, 5.0, 1.5], [0, 0, 1]])
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[1:, 0, 3] = tx
    poses[1:, 2, 3] = tz
    tae = temporal_alignment_error(depth, k, poses)
    assert math.isfinite(tae) and tae >= 0
    static = np.repeat(depth[:1], n, axis=0)
    assert temporal_alignment_error(static, k, np.tile(np.eye(4), (n, 1, 1))) == 0.0


@SETTINGS
@given(data=st.data(), b=st.integers(1, 4))
def test_metric_class_counts_skipped_and_stays_finite(data, b):
    depth = data.draw(arrays(np.float32, (b, 2, 1, 3, 4), elements=st.floats(0.0, 20.0, width=32)))
    pred = data.draw(arrays(np.float32, (b, 2, 1, 3, 4), elements=st.floats(-1e30, 1e30).map(np.float32)))
    n_valid = [bool(((d > 1e-3) & (d < 10)).any()) for d in depth]
    metric = VideoDepthMetrics(10.0, compute_boundary_f1=True)
    metric.update(torch.from_numpy(pred), torch.from_numpy(depth))
    assert metric.skipped.item() == b - sum(n_valid)
    if not any(n_valid):
        with pytest.raises(ValueError, match="no sequence"):
            metric.compute()
        return
    res = metric.compute()
    assert all(torch.isfinite(v) for v in res.values())
    assert res["num_sequences"].item() == sum(n_valid)
