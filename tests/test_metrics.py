"""vdf.metrics against hand-computed cases and slow, independent numpy re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vdf.metrics import (
    NoValidPixelsError,
    VideoDepthMetrics,
    align_disparity,
    aligned_depth,
    boundary_f1,
    boundary_thresholds,
    evaluate_sequence,
    temporal_alignment_error,
)

# ----------------------------------------------------------------------------------------------
# Slow references, written independently of the library (loops, numpy, np.linalg.lstsq).
# ----------------------------------------------------------------------------------------------


def slow_protocol(pred, gt, max_depth, valid=None):
    """DepthCrafter eval_single, frame by frame, numpy float64, LAPACK gelsd for the fit."""
    pred = np.maximum(np.asarray(pred, dtype=np.float64), 1e-3)
    gt = np.asarray(gt, dtype=np.float64)
    n_frames = gt.shape[0]
    masks = []
    xs, ys = [], []
    for t in range(n_frames):
        m = (gt[t] > 1e-3) & (gt[t] < max_depth)
        if valid is not None:
            m = m & valid[t]
        masks.append(m)
        xs.append(pred[t][m])
        ys.append(1.0 / (gt[t][m] + 1e-8))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    a = np.stack([x, np.ones_like(x)], axis=1)
    scale, shift = np.linalg.lstsq(a, y, rcond=None)[0]
    abs_rel, rmse, d1 = [], [], []
    for t in range(n_frames):
        m = masks[t]
        if m.sum() == 0:
            continue
        al = np.maximum(scale * pred[t] + shift, 1e-3)
        d = np.minimum(np.maximum(1.0 / al, 1e-3), max_depth)[m]
        g = gt[t][m]
        abs_rel.append(np.sum(np.abs(d - g) / g) / m.sum())
        rmse.append(math.sqrt(np.sum((d - g) ** 2) / m.sum()))
        hits = sum(1 for dd, gg in zip(d, g) if max(dd / gg, gg / dd) < 1.25)
        d1.append(np.float32(hits) / np.float32(m.sum()))
    return {
        "abs_rel": float(np.mean(abs_rel)),
        "rmse": float(np.mean(rmse)),
        "delta1": float(np.mean(np.array(d1, dtype=np.float32))),
        "scale": scale,
        "shift": shift,
        "num_frames": len(abs_rel),
    }


def slow_boundary_f1(pred, gt):
    """Depth Pro SI boundary F1 with explicit pixel loops."""
    ts = [1.05 + i * (1.25 - 1.05) / 9 for i in range(10)]
    ws = [t / sum(ts) for t in ts]
    h, w = pred.shape

    def edges(depth, t):
        disp = [[1.0 / max(float(depth[i][j]), 1e-6) for j in range(w)] for i in range(h)]
        sets = {"left": set(), "top": set(), "right": set(), "bottom": set()}
        for i in range(h):
            for j in range(w - 1):
                if disp[i][j] / disp[i][j + 1] > t:
                    sets["left"].add((i, j))
                if disp[i][j + 1] / disp[i][j] > t:
                    sets["right"].add((i, j))
        for i in range(h - 1):
            for j in range(w):
                if disp[i][j] / disp[i + 1][j] > t:
                    sets["top"].add((i, j))
                if disp[i + 1][j] / disp[i][j] > t:
                    sets["bottom"].add((i, j))
        return sets

    total = 0.0
    for t, wt in zip(ts, ws):
        pe, ge = edges(pred, t), edges(gt, t)
        r = sum(len(pe[k] & ge[k]) / max(len(ge[k]), 1) for k in pe) / 4
        p = sum(len(pe[k] & ge[k]) / max(len(pe[k]), 1) for k in pe) / 4
        total += wt * (0.0 if r + p == 0 else 2 * r * p / (r + p))
    return total


def slow_tae(depth, K, poses, mask=None):
    """VDA TAE with per-point loops; duplicates resolved by the nearest point (as documented)."""
    depth = np.asarray(depth, dtype=np.float64)
    n, h, w = depth.shape

    def one_way(d1, d2, T, k, m2):
        fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        zbuf = {}
        for yy in range(h):
            for xx in range(w):
                z = d1[yy, xx]
                p = np.array([(xx - cx) * z / fx, (yy - cy) * z / fy, z, 1.0])
                q = T @ p
                if q[2] <= 0:
                    continue
                u = round(q[0] * fx / q[2] + cx)  # Python round: half to even, like torch.round
                v = round(q[1] * fy / q[2] + cy)
                if 0 <= u < w and 0 <= v < h:
                    zbuf[(v, u)] = min(zbuf.get((v, u), np.inf), q[2])
        errs = [
            abs(d2[v, u] - z) / d2[v, u]
            for (v, u), z in zbuf.items()
            if z > 0 and d2[v, u] > 0 and (m2 is None or m2[v, u])
        ]
        return float(np.mean(errs)) if errs else 0.0

    total = 0.0
    for i in range(n - 1):
        t21 = np.linalg.inv(poses[i + 1]) @ poses[i]
        total += one_way(depth[i], depth[i + 1], t21, K[i], None if mask is None else mask[i + 1])
        total += one_way(depth[i + 1], depth[i], np.linalg.inv(t21), K[i], None if mask is None else mask[i])
    return 100 * total / (2 * (n - 1))


def random_sequence(rng, t=3, h=7, w=9, max_depth=10.0):
    gt = rng.uniform(0.5, 12.0, size=(t, h, w))  # some above max_depth
    gt[rng.random((t, h, w)) < 0.2] = 0.0  # unknown
    gt[1, :, :] = 0.0  # a frame with no valid pixel: must be dropped
    pred = 1.0 / gt.clip(0.3) * rng.uniform(0.7, 1.3, size=gt.shape) * 3.0 + 0.2
    pred[rng.random(gt.shape) < 0.05] = -0.5  # negatives: hit by the pre-fit clip
    return pred, gt


# ----------------------------------------------------------------------------------------------
# Protocol: hand cases
# ----------------------------------------------------------------------------------------------


def test_hand_computed_2x2():
    # GT depths 1, 2, 4 (+ one unknown pixel), predicted disparities 4, 2, 2.
    # Centred LSQ on x=(4,2,2), y=(1,1/2,1/4): x̄=8/3, ȳ=7/12, Sxy=5/6, Sxx=8/3
    # -> s = 5/16, b = -1/4; aligned disparities 1, 3/8, 3/8 -> depths 1, 8/3, 8/3.
    # AbsRel = (0 + (2/3)/2 + (4/3)/4)/3 = 2/9; δ1: ratios 1, 4/3, 3/2 -> 1/3; RMSE = sqrt(20/27).
    gt = np.array([[[1.0, 2.0], [4.0, 0.0]]])
    pred = np.array([[[4.0, 2.0], [2.0, 1.0]]])
    out = evaluate_sequence(pred, gt, max_depth=10)
    assert out["scale"] == pytest.approx(5 / 16, rel=1e-7)
    assert out["shift"] == pytest.approx(-1 / 4, rel=1e-7)
    assert out["abs_rel"] == pytest.approx(2 / 9, rel=1e-7)
    assert out["delta1"] == pytest.approx(1 / 3, rel=1e-7)
    assert out["rmse"] == pytest.approx(math.sqrt(20 / 27), rel=1e-7)
    assert out["num_frames"] == 1 and out["num_valid"] == 3
    # the unknown pixel: disparity 5/16 - 1/4 = 1/16 -> depth 16 -> clipped to max_depth
    d = aligned_depth(pred, gt, max_depth=10)
    assert d.dtype == torch.float64 and d.shape == (1, 2, 2)
    np.testing.assert_allclose(d.numpy(), [[[1.0, 8 / 3], [8 / 3, 10.0]]], rtol=1e-7)
    assert align_disparity(pred, gt, 10) == pytest.approx((out["scale"], out["shift"]), rel=1e-12)


def test_delta1_threshold_is_strict_and_float32():
    from vdf.metrics.protocol import frame_metrics

    # ratios 1.0 and exactly 1.25: only the first counts
    m = frame_metrics(
        torch.tensor([[[1.0, 1.0]]], dtype=torch.float64),
        torch.tensor([[[1.0, 1.25]]], dtype=torch.float64),
        torch.ones(1, 1, 2, dtype=torch.bool),
    )
    assert m["delta1"].item() == 0.5
    assert m["delta1"].dtype == torch.float32  # the reference's float32 0/1 map and division
    # 1 hit out of 3: the reported value is float32(1/3), not the float64 1/3
    m = frame_metrics(
        torch.tensor([[[1.0, 2.0, 2.0]]], dtype=torch.float64),
        torch.ones(1, 1, 3, dtype=torch.float64),
        torch.ones(1, 1, 3, dtype=torch.bool),
    )
    assert m["delta1"].item() == float(np.float32(1) / np.float32(3)) != 1 / 3


def test_perfect_prediction_any_affine():
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 9.0, size=(4, 6, 8))
    gt[0, :2] = 0.0
    for a, b in [(1.0, 0.0), (3.7, -0.05), (0.01, 5.0)]:
        pred = a / gt.clip(1e-3) + b
        out = evaluate_sequence(pred, gt, max_depth=10)
        assert out["abs_rel"] < 1e-7 and out["rmse"] < 1e-6
        assert out["delta1"] == 1.0
        assert out["scale"] == pytest.approx(1 / a, rel=1e-6)


def test_affine_invariance_of_pred_disparity():
    rng = np.random.default_rng(2)
    gt = rng.uniform(0.5, 9.0, size=(3, 5, 6))
    pred = rng.uniform(0.1, 1.0, size=gt.shape)
    ref = evaluate_sequence(pred, gt, 10)
    for a, b in [(2.0, 0.0), (0.5, 3.0), (1e4, -50.0)]:  # a·pred + b stays above the 1e-3 floor
        out = evaluate_sequence(a * pred + b, gt, 10)
        for k in ("abs_rel", "rmse", "delta1"):
            assert out[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-12)


def test_average_per_frame_then_sequence():
    # frame 0 has 1 valid pixel, frame 1 has 3: each frame weighs 1/2, not 1/4 per pixel.
    gt = np.array([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [4.0, 0.0]]])
    pred = np.array([[[0.5, 1.0], [1.0, 1.0]], [[1.0, 0.6], [0.2, 1.0]]])
    out = evaluate_sequence(pred, gt, 10)
    s, b = out["scale"], out["shift"]

    def depth(x):
        return min(max(1 / max(s * x + b, 1e-3), 1e-3), 10)

    err0 = [abs(depth(0.5) - 1.0) / 1.0]
    err1 = [abs(depth(x) - g) / g for x, g in [(1.0, 1.0), (0.6, 2.0), (0.2, 4.0)]]
    assert out["abs_rel"] == pytest.approx((np.mean(err0) + np.mean(err1)) / 2, rel=1e-12)
    pooled = np.mean(err0 + err1)
    assert abs(out["abs_rel"] - pooled) > 1e-2  # the pooled average is a different number
    # and over sequences: VideoDepthMetrics weighs sequences equally whatever their length
    m = VideoDepthMetrics(10.0)
    m.update(torch.from_numpy(pred)[None, :, None], torch.from_numpy(gt)[None, :, None])
    m.update(torch.from_numpy(pred[:1])[None, :, None], torch.from_numpy(gt[:1])[None, :, None])
    short = evaluate_sequence(pred[:1], gt[:1], 10)
    assert m.compute()["abs_rel"].item() == pytest.approx((out["abs_rel"] + short["abs_rel"]) / 2, rel=1e-12)


def test_clip_before_fit_changes_the_result():
    gt = np.array([[[1.0, 2.0], [4.0, 8.0]]])
    pred = np.array([[[1.0, 0.5], [-0.5, -1.0]]])
    out = evaluate_sequence(pred, gt, 100)
    clipped = evaluate_sequence(np.maximum(pred, 1e-3), gt, 100)
    assert out == clipped
    # without the pre-fit clip the fit (on -1, -0.5, 0.5, 1) is different
    y = 1 / (gt.ravel() + 1e-8)
    s_raw, _b_raw = np.linalg.lstsq(np.stack([pred.ravel(), np.ones(4)], 1), y, rcond=None)[0]
    s_clip, b_clip = np.linalg.lstsq(np.stack([np.maximum(pred.ravel(), 1e-3), np.ones(4)], 1), y, rcond=None)[0]
    assert abs(s_raw - s_clip) > 1e-2
    assert out["scale"] == pytest.approx(s_clip, rel=1e-10)
    assert out["shift"] == pytest.approx(b_clip, rel=1e-10)


def test_post_fit_clips():
    # Fit on (2 -> 1/1) and (1.5 -> 1/2): s = 1, b = -1. Unknown pixels: 0.5 -> aligned -0.5 ->
    # floor 1e-3 -> depth 1000 -> max_depth; 1.2 -> 0.2 -> depth 5; 1e6 -> depth 1e-6 -> floor 1e-3.
    gt = np.array([[[1.0, 2.0, 0.0, 0.0, 0.0]]])
    pred = np.array([[[2.0, 1.5, 0.5, 1.2, 1e6]]])
    s, b = align_disparity(pred, gt, 5.5)
    assert (s, b) == pytest.approx((1.0, -1.0), rel=1e-7)
    d = aligned_depth(pred, gt, 5.5)
    np.testing.assert_allclose(d.numpy()[0, 0], [1.0, 2.0, 5.5, 5.0, 1e-3], rtol=1e-7)


def test_against_slow_reference_random():
    rng = np.random.default_rng(3)
    for trial in range(5):
        pred, gt = random_sequence(rng, t=4, h=6 + trial, w=9)
        valid = rng.random(gt.shape) < 0.9
        for v in (None, valid):
            ref = slow_protocol(pred, gt, 10.0, v)
            out = evaluate_sequence(pred, gt, 10.0, v)
            for k in ("abs_rel", "rmse", "scale", "shift"):
                assert out[k] == pytest.approx(ref[k], rel=1e-10, abs=1e-12), k
            assert out["delta1"] == pytest.approx(ref["delta1"], abs=1e-6)
            assert out["num_frames"] == ref["num_frames"] == 3


def test_rank_deficient_fits_match_numpy():
    rng = np.random.default_rng(4)
    gt = rng.uniform(1, 5, size=(2, 3, 3))
    for pred in (np.full(gt.shape, 0.7), np.full(gt.shape, -2.0), np.full(gt.shape, 1e5)):
        x = np.maximum(pred, 1e-3).ravel()
        ref = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), 1 / (gt.ravel() + 1e-8), rcond=None)[0]
        assert align_disparity(pred, gt, 10) == pytest.approx(tuple(ref), rel=1e-9)
    # a single valid pixel: minimum-norm solution, reproduces the pixel exactly
    valid = np.zeros(gt.shape, bool)
    valid[1, 2, 0] = True
    s, b = align_disparity(rng.uniform(0.1, 1, gt.shape), gt, 10, valid)
    out = evaluate_sequence(np.full(gt.shape, 0.3), gt, 10, valid)
    assert out["abs_rel"] < 1e-7 and out["num_frames"] == 1 and math.isfinite(s + b)


def test_input_forms_agree():
    rng = np.random.default_rng(5)
    pred, gt = random_sequence(rng)
    ref = evaluate_sequence(pred, gt, 10)
    assert evaluate_sequence(torch.from_numpy(pred)[:, None], torch.from_numpy(gt)[:, None], 10) == ref
    out32 = evaluate_sequence(pred.astype(np.float32), gt.astype(np.float32), 10)
    assert out32["abs_rel"] == pytest.approx(ref["abs_rel"], rel=1e-5)


def test_prediction_resize_matches_cv2():
    cv2 = pytest.importorskip("cv2")
    from vdf.metrics import resize_prediction

    rng = np.random.default_rng(6)
    for (h, w), (hh, ww) in [((5, 7), (12, 17)), ((12, 17), (5, 7)), ((8, 8), (4, 4)), ((20, 30), (13, 11))]:
        a = rng.random((h, w)).astype(np.float32)
        ours = resize_prediction(torch.from_numpy(a)[None], (hh, ww))[0].numpy()
        ref = cv2.resize(a, (ww, hh), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(ours, ref, atol=2e-7)
    # evaluate_sequence resizes a smaller prediction to the GT size
    gt = rng.uniform(1, 5, size=(2, 8, 12))
    small = rng.uniform(0.2, 1, size=(2, 4, 6))
    up = np.stack([cv2.resize(f.astype(np.float32), (12, 8), interpolation=cv2.INTER_LINEAR) for f in small])
    assert evaluate_sequence(small, gt, 10)["abs_rel"] == pytest.approx(slow_protocol(up, gt, 10)["abs_rel"], rel=1e-5)


def test_errors_are_explicit():
    gt = np.zeros((2, 3, 3))
    with pytest.raises(NoValidPixelsError, match="no frame"):
        evaluate_sequence(np.ones((2, 3, 3)), gt, 10)
    assert issubclass(NoValidPixelsError, ValueError)
    gt = np.ones((2, 3, 3))
    with pytest.raises(NoValidPixelsError):  # valid range excludes everything, mask does too
        evaluate_sequence(np.ones((2, 3, 3)), gt, 10, valid=np.zeros((2, 3, 3), bool))
    bad = np.ones((2, 3, 3))
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_sequence(bad, gt, 10)
    bad[0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="inf"):
        align_disparity(bad, gt, 10)
    with pytest.raises(ValueError, match="frames"):
        evaluate_sequence(np.ones((3, 3, 3)), gt, 10)
    with pytest.raises(ValueError, match="max_depth"):
        evaluate_sequence(np.ones((2, 3, 3)), gt, 0.0)
    with pytest.raises(TypeError, match="bool"):
        evaluate_sequence(np.ones((2, 3, 3)), gt, 10, valid=np.ones((2, 3, 3)))


def test_range_mask_uses_the_gt_dtype():
    # float32(1e-3) = 0.0010000000474974513: not > 1e-3 in float32 (the reference's numpy
    # comparison on Sintel's float32 GT), but > 1e-3 once cast to float64.
    edge = np.float32(1e-3)
    gt32 = np.array([[[edge, 2.0, 4.0]]], dtype=np.float32)
    pred = np.array([[[5.0, 0.5, 0.25]]])
    assert evaluate_sequence(pred, gt32, 10)["num_valid"] == 2
    assert evaluate_sequence(pred, gt32.astype(np.float64), 10)["num_valid"] == 3


def test_gt_nan_and_inf_are_just_invalid():
    gt = np.array([[[1.0, np.nan], [np.inf, 2.0]]])
    pred = np.array([[[1.0, 0.2], [0.1, 0.5]]])
    out = evaluate_sequence(pred, gt, 10)
    assert out["num_valid"] == 2 and out["abs_rel"] < 1e-7


# ----------------------------------------------------------------------------------------------
# Boundary F1
# ----------------------------------------------------------------------------------------------


def test_boundary_thresholds_and_weights():
    t, w = boundary_thresholds()
    np.testing.assert_allclose(t.numpy()[[0, 1, 9]], [1.05, 1.0722222222, 1.25], rtol=1e-9)
    np.testing.assert_allclose(w.numpy()[[0, 9]], [0.0913043478, 0.1086956522], rtol=1e-8)
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-15)


def test_boundary_hand_cases():
    square = np.full((8, 8), 4.0)
    square[2:5, 3:6] = 1.0  # a near block: edges in all four directions
    assert boundary_f1(square, square) == pytest.approx(1.0, abs=1e-15)
    assert boundary_f1(square * 7.3, square) == pytest.approx(1.0, abs=1e-15)  # scale invariant
    flat = np.full((8, 8), 3.0)
    assert boundary_f1(flat, square) == 0.0
    assert boundary_f1(square, flat) == 0.0
    assert boundary_f1(flat, flat) == 0.0  # no edge anywhere: P + R == 0 -> 0, not NaN
    # A single vertical step exists in one of the four directions only; the other three have
    # empty GT and prediction sets and contribute 0 to both averages, so an exact prediction
    # scores 1/4 with Depth Pro's per-direction averaging.
    step = np.ones((5, 6))
    step[:, 3:] = 2.0
    assert boundary_f1(step, step) == pytest.approx(0.25, abs=1e-15)
    # the step reversed (near/far swapped) lies in the opposite direction: no overlap at all
    assert boundary_f1(step[:, ::-1].copy(), step) == 0.0
    # a weak step (disparity ratio 1.15) is an edge only for thresholds below 1.15 (the first 5)
    weak = np.ones((5, 6))
    weak[:, 3:] = 1.15
    _t, w = boundary_thresholds()
    assert boundary_f1(weak, weak) == pytest.approx(0.25 * float(w[:5].sum()), rel=1e-12)


def test_boundary_against_slow_loop():
    rng = np.random.default_rng(7)
    for _ in range(3):
        base = np.where(rng.random((9, 11)) < 0.5, 1.0, 2.5) * rng.uniform(1, 1.3, (9, 11))
        pred = base * np.exp(rng.normal(0, 0.08, base.shape))
        assert boundary_f1(pred, base) == pytest.approx(slow_boundary_f1(pred, base), rel=1e-12, abs=1e-15)
    gt = rng.uniform(0.0, 3.0, (6, 7))
    gt[0, 0] = 0.0  # clipped to 1e-6 before inversion
    pred = rng.uniform(0.5, 3.0, (6, 7))
    assert boundary_f1(torch.from_numpy(pred)[None], gt) == pytest.approx(slow_boundary_f1(pred, gt), abs=1e-15)


def test_evaluate_sequence_boundary_uses_max_depth_for_invalid_gt():
    rng = np.random.default_rng(8)
    gt = rng.uniform(1, 5, (2, 6, 7))
    gt[0, 0, :3] = 0.0
    pred = 1 / gt.clip(0.5)
    out = evaluate_sequence(pred, gt, 10, boundary=True)
    d = aligned_depth(pred, gt, 10).numpy()
    g = np.where((gt > 1e-3) & (gt < 10), gt, 10.0)
    assert out["boundary_f1"] == pytest.approx(np.mean([slow_boundary_f1(d[t], g[t]) for t in range(2)]), abs=1e-12)


# ----------------------------------------------------------------------------------------------
# TAE
# ----------------------------------------------------------------------------------------------

K_SMALL = np.array([[10.0, 0, 4.0], [0, 10.0, 3.0], [0, 0, 1.0]])


def _pose(tx=0.0, ty=0.0, tz=0.0, yaw=0.0):
    p = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    p[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    p[:3, 3] = [tx, ty, tz]
    return p


def test_tae_identity_pose_same_depth_is_zero():
    rng = np.random.default_rng(9)
    d = np.repeat(rng.uniform(1, 5, (1, 6, 8)), 3, axis=0)
    poses = np.stack([np.eye(4)] * 3)
    assert temporal_alignment_error(d, K_SMALL, poses) == 0.0


def test_tae_fronto_parallel_plane_under_known_motion_is_zero():
    # Plane z = 2 in world. Camera 1 moves 0.4 m sideways (every pixel shifts fx·0.4/2 = 2 px),
    # camera 2 then moves 0.5 m forward (the plane is then at depth 1.5).
    poses = np.stack([_pose(), _pose(tx=0.4), _pose(tx=0.4, tz=0.5)])
    depth = np.stack([np.full((6, 8), 2.0), np.full((6, 8), 2.0), np.full((6, 8), 1.5)])
    assert temporal_alignment_error(depth, K_SMALL, poses) == pytest.approx(0.0, abs=1e-12)
    # the same with a depth that ignores the forward motion: every reprojected point is off by 0.5
    wrong = depth.copy()
    wrong[2] = 2.0
    # pair (1,2): warp 1->2 gives z = 1.5 vs 2.0 -> 0.25 on the pixels reached; 2->1 gives 2.5 vs 2 -> 0.25
    assert temporal_alignment_error(wrong, K_SMALL, poses) == pytest.approx(100 * 0.5 / 4, rel=1e-12)


def test_tae_against_slow_loop():
    rng = np.random.default_rng(10)
    n, h, w = 4, 6, 8
    poses = np.stack([_pose(0.05 * i, -0.02 * i, 0.03 * i, yaw=0.02 * i) for i in range(n)])
    ks = np.stack([K_SMALL * [[1 + 0.01 * i], [1], [1]] for i in range(n)])
    ks[:, 2] = [0, 0, 1]
    depth = rng.uniform(1.5, 3.0, (n, h, w))
    mask = rng.random((n, h, w)) < 0.8
    ours = temporal_alignment_error(depth, ks, poses, mask)
    assert ours > 0
    assert ours == pytest.approx(slow_tae(depth, ks, poses, mask), rel=1e-10)
    k4 = np.tile(np.eye(4), (n, 1, 1))
    k4[:, :3, :3] = ks
    assert temporal_alignment_error(torch.from_numpy(depth)[:, None], k4, poses, mask) == pytest.approx(ours, rel=1e-12)


def test_tae_duplicates_keep_nearest_point():
    # Strong forward motion squeezes the source image: several points land in one pixel.
    h, w = 6, 8
    poses = np.stack([_pose(), _pose(tz=-2.0)])  # camera moves back: image shrinks
    depth = np.stack([np.linspace(1.0, 2.0, h * w).reshape(h, w), np.full((h, w), 3.0)])
    assert temporal_alignment_error(depth, K_SMALL, poses) == pytest.approx(
        slow_tae(depth, np.stack([K_SMALL] * 2), poses), rel=1e-12
    )


def test_tae_perturbed_depth_is_positive_and_errors():
    poses = np.stack([_pose(), _pose(tx=0.4)])
    depth = np.full((2, 6, 8), 2.0)
    depth[1, 2, 3] = 2.6
    assert temporal_alignment_error(depth, K_SMALL, poses) > 0
    with pytest.raises(ValueError, match="at least 2 frames"):
        temporal_alignment_error(depth[:1], K_SMALL, poses[:1])
    with pytest.raises(ValueError, match="cam_to_world"):
        temporal_alignment_error(depth, K_SMALL, poses[:1])


def test_evaluate_sequence_with_tae_uses_aligned_depth():
    rng = np.random.default_rng(11)
    gt = rng.uniform(1, 5, (3, 6, 8))
    poses = np.stack([_pose(0.05 * i) for i in range(3)])
    pred = rng.uniform(0.2, 1.0, gt.shape)
    out = evaluate_sequence(pred, gt, 10, intrinsics=K_SMALL, cam_to_world=poses)
    d = aligned_depth(pred, gt, 10)
    assert out["tae"] == pytest.approx(temporal_alignment_error(d, K_SMALL, poses), rel=1e-12)
    with pytest.raises(ValueError, match="both"):
        evaluate_sequence(pred, gt, 10, intrinsics=K_SMALL)


# ----------------------------------------------------------------------------------------------
# torchmetrics class
# ----------------------------------------------------------------------------------------------


def _batch(rng, b=4, t=3, h=6, w=8, small=False):
    depth = torch.from_numpy(rng.uniform(0.5, 12, (b, t, 1, h, w))).float()
    valid = torch.from_numpy(rng.random((b, t, 1, h, w)) < 0.9)
    ph, pw = (h // 2, w // 2) if small else (h, w)
    pred = torch.from_numpy(rng.uniform(0.1, 1.0, (b, t, 1, ph, pw))).float()
    k = torch.from_numpy(np.tile(K_SMALL, (b, t, 1, 1))).float()
    poses = torch.from_numpy(np.stack([np.stack([_pose(0.03 * i) for i in range(t)])] * b)).float()
    return pred, depth, valid, k, poses


def test_video_depth_metrics_mean_over_sequences_and_skips():
    rng = np.random.default_rng(12)
    pred, depth, valid, k, poses = _batch(rng, small=True)
    valid[2] = False  # a sequence without any valid pixel
    metric = VideoDepthMetrics(max_depth=10.0, compute_boundary_f1=True, compute_tae=True)
    metric.update(pred, depth, valid, intrinsics=k, cam_to_world=poses)
    res = metric.compute()
    per_seq = [
        evaluate_sequence(pred[i], depth[i], 10.0, valid[i], intrinsics=k[i], cam_to_world=poses[i], boundary=True)
        for i in (0, 1, 3)
    ]
    for key in ("abs_rel", "delta1", "rmse", "boundary_f1", "tae"):
        assert res[key].dtype == torch.float64
        assert res[key].item() == pytest.approx(np.mean([s[key] for s in per_seq]), rel=1e-12), key
    assert res["skipped"].item() == 1 and res["num_sequences"].item() == 3


def test_video_depth_metrics_two_ranks_merge_equals_single():
    rng = np.random.default_rng(13)
    pred, depth, valid, k, poses = _batch(rng, b=6)
    valid[4] = False
    full = VideoDepthMetrics(10.0, compute_boundary_f1=True, compute_tae=True)
    full.update(pred, depth, valid, k, poses)
    ranks = [VideoDepthMetrics(10.0, compute_boundary_f1=True, compute_tae=True) for _ in range(2)]
    ranks[0].update(pred[:3], depth[:3], valid[:3], k[:3], poses[:3])
    ranks[1].update(pred[3:], depth[3:], valid[3:], k[3:], poses[3:])
    ranks[0].merge_state(ranks[1])
    a, b = full.compute(), ranks[0].compute()
    assert a.keys() == b.keys()
    for key in a:
        assert b[key].item() == pytest.approx(a[key].item(), rel=1e-12), key
    # the states themselves are sums: summing them by hand gives the same numbers
    r0 = VideoDepthMetrics(10.0)
    r1 = VideoDepthMetrics(10.0)
    r0.update(pred[:3], depth[:3], valid[:3])
    r1.update(pred[3:], depth[3:], valid[3:])
    assert (r0.abs_rel_sum + r1.abs_rel_sum).item() == pytest.approx(full.abs_rel_sum.item(), rel=1e-12)
    assert (r0.skipped + r1.skipped).item() == 1


def test_video_depth_metrics_errors_and_optional_tae():
    rng = np.random.default_rng(14)
    pred, depth, valid, _, _ = _batch(rng, b=2)
    metric = VideoDepthMetrics(10.0, compute_tae=True)
    metric.update(pred, depth, valid)  # no poses: no TAE, no error
    assert "tae" not in metric.compute()
    empty = VideoDepthMetrics(10.0)
    empty.update(pred, depth, torch.zeros_like(valid))
    with pytest.raises(ValueError, match="2 skipped"):
        empty.compute()
    pred[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update(pred, depth, valid)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(15)
    pred, gt = random_sequence(rng, t=3, h=12, w=16)
    poses = np.stack([_pose(0.05 * i, yaw=0.01 * i) for i in range(3)])
    cpu = evaluate_sequence(pred, gt, 10.0, intrinsics=K_SMALL, cam_to_world=poses, boundary=True)
    gpu = evaluate_sequence(
        torch.from_numpy(pred).cuda(),
        torch.from_numpy(gt).cuda(),
        10.0,
        intrinsics=torch.from_numpy(K_SMALL).cuda(),
        cam_to_world=torch.from_numpy(poses).cuda(),
        boundary=True,
    )
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-10, abs=1e-12), k
    metric = VideoDepthMetrics(10.0, compute_boundary_f1=True, compute_tae=True).cuda()
    metric.update(
        torch.from_numpy(pred)[None, :, None].cuda(),
        torch.from_numpy(gt)[None, :, None].cuda(),
        intrinsics=torch.from_numpy(K_SMALL).expand(1, 3, 3, 3).cuda(),
        cam_to_world=torch.from_numpy(poses)[None].cuda(),
    )
    res = metric.compute()
    assert res["abs_rel"].device.type == "cuda"
    assert res["tae"].item() == pytest.approx(cpu["tae"], rel=1e-10)


def test_documented_worked_example():
    """The fixed arrays and numbers of docs/metrics.md, by the library and by the §6 recipe."""
    gt = np.array([[[1.0, 2.0], [4.0, 0.0]], [[2.0, 8.0], [3.0, 12.0]]])
    pred = np.array([[[0.9, 0.6], [0.2, 0.5]], [[0.5, 0.1], [0.0005, 0.7]]])
    ours = evaluate_sequence(pred, gt, max_depth=10)
    valid = (gt > 1e-3) & (gt < 10)
    p = np.clip(pred, 1e-3, None)
    a = np.stack([p[valid], np.ones(valid.sum())], 1)
    s, b = np.linalg.lstsq(a, 1 / (gt[valid] + 1e-8), rcond=None)[0]
    depth = np.clip(1 / np.clip(s * p + b, 1e-3, None), 1e-3, 10)
    frames = [(depth[t][valid[t]], gt[t][valid[t]]) for t in range(2)]
    recipe = {
        "abs_rel": np.mean([np.mean(np.abs(d - g) / g) for d, g in frames]),
        "delta1": np.mean([np.mean(np.maximum(d / g, g / d) < 1.25) for d, g in frames]),
        "rmse": np.mean([np.sqrt(np.mean((d - g) ** 2)) for d, g in frames]),
    }
    documented = {"abs_rel": 0.397760, "delta1": 0.5, "rmse": 1.776150}
    for key, value in documented.items():
        assert ours[key] == pytest.approx(recipe[key], abs=1e-12)
        assert round(ours[key], 6) == value
    assert (round(ours["scale"], 6), round(ours["shift"], 6)) == (0.807035, 0.141891)
