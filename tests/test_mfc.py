"""ChronoDepth's multi-frame consistency (MFC): hand cases, an explicit per-pixel loop, the protocol
path (aligned depth, depth-space fit) and DDP-style merging."""

import numpy as np
import pytest
import torch

from vdf.metrics import (
    MultiFrameConsistency,
    VideoDepthMetrics,
    aligned_depth,
    evaluate_sequence,
    multi_frame_consistency,
)
from vdf.metrics.protocol import _align, _prepare

K = np.array([[6.0, 0, 3.5], [0, 6.0, 2.5], [0, 0, 1]])


def _pose(tx=0.0, ty=0.0, tz=0.0, yaw=0.0):
    c, s = np.cos(yaw), np.sin(yaw)
    pose = np.eye(4)
    pose[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    pose[:3, 3] = [tx, ty, tz]
    return pose


def _slow_mfc(depth, k, poses, mask):
    """The definition written out pixel by pixel: forward pairs, nearest-pixel rounding
    (half to even, as torch.round), nearest point per pixel, compared where the target is valid."""
    t, h, w = depth.shape
    errors = []
    for m in range(t - 1):
        rel = np.linalg.inv(poses[m + 1]) @ poses[m]
        warped = np.full((h, w), np.inf)
        for y in range(h):
            for x in range(w):
                z = depth[m, y, x]
                if z <= 0:
                    continue
                p = np.array([(x - k[0, 2]) * z / k[0, 0], (y - k[1, 2]) * z / k[1, 1], z])
                q = rel[:3, :3] @ p + rel[:3, 3]
                if q[2] <= 0:
                    continue
                u = np.round(q[0] * k[0, 0] / q[2] + k[0, 2])
                v = np.round(q[1] * k[1, 1] / q[2] + k[1, 2])
                if 0 <= u < w and 0 <= v < h:
                    warped[int(v), int(u)] = min(warped[int(v), int(u)], q[2])
        diffs = [
            abs(warped[y, x] - depth[m + 1, y, x])
            for y in range(h)
            for x in range(w)
            if np.isfinite(warped[y, x]) and mask[m + 1, y, x] and depth[m + 1, y, x] > 0
        ]
        if diffs:
            errors.append(np.mean(diffs))
    return (np.mean(errors) if errors else float("nan")), len(errors)


def test_mfc_hand_case_plane_and_forward_motion():
    # A fronto-parallel plane 5 m ahead; the camera moves 0.5 m forward between the frames.
    poses = np.stack([_pose(), _pose(tz=0.5)])
    truth = np.stack([np.full((5, 8), 5.0), np.full((5, 8), 4.5)])  # what the cameras see
    value, pairs = multi_frame_consistency(truth, K, poses)
    assert value == pytest.approx(0.0, abs=1e-12) and pairs == 1
    # A prediction that ignores the motion (5 m in both frames) is off by exactly the translation.
    value, _ = multi_frame_consistency(np.full((2, 5, 8), 5.0), K, poses)
    assert value == pytest.approx(0.5, abs=1e-12)
    # Sideways motion keeps the plane's depth: a plane predicted at a constant depth scores 0.
    value, _ = multi_frame_consistency(np.full((3, 5, 8), 5.0), K, np.stack([_pose(tx=0.2 * i) for i in range(3)]))
    assert value == pytest.approx(0.0, abs=1e-12)


def test_mfc_matches_an_explicit_per_pixel_loop():
    rng = np.random.default_rng(3)
    depth = rng.uniform(1.0, 4.0, (4, 5, 8))
    depth[2, 1, 1] = 0.0  # a pixel without depth is neither lifted nor compared
    poses = np.stack([_pose(0.1 * i, 0.02 * i, 0.05 * i, yaw=0.04 * i) for i in range(4)])
    mask = rng.random(depth.shape) < 0.8
    value, pairs = multi_frame_consistency(depth, K, poses, mask)
    slow, slow_pairs = _slow_mfc(depth, K, poses, mask)
    assert pairs == slow_pairs == 3
    assert value == pytest.approx(slow, rel=1e-12)
    # The same motion applied to the whole world changes nothing (only relative poses matter).
    moved = np.einsum("ij,tjk->tik", _pose(3.0, -1.0, 2.0, yaw=0.7), poses)
    assert multi_frame_consistency(depth, K, moved, mask)[0] == pytest.approx(value, rel=1e-9)


def test_mfc_pairs_without_compared_pixels_are_left_out_and_errors():
    depth = np.full((3, 5, 8), 2.0)
    mask = np.ones(depth.shape, bool)
    mask[1] = False  # frame 1 is never a valid target: only the pair (1, 2) counts
    poses = np.stack([_pose(tz=0.1 * i) for i in range(3)])
    value, pairs = multi_frame_consistency(depth, K, poses, mask)
    assert pairs == 1 and value == pytest.approx(0.1, abs=1e-12)
    assert np.isnan(multi_frame_consistency(depth, K, poses, np.zeros_like(mask))[0])
    with pytest.raises(ValueError, match="at least 2 frames"):
        multi_frame_consistency(depth[:1], K, poses[:1])
    with pytest.raises(ValueError, match="cam_to_world"):
        multi_frame_consistency(depth, K, poses[:2])
    with pytest.raises(ValueError, match="non-finite"):
        multi_frame_consistency(np.where(mask, depth, np.nan), K, poses)


def test_mfc_on_the_protocols_aligned_prediction_in_each_space():
    rng = np.random.default_rng(5)
    gt = rng.uniform(1.0, 6.0, (3, 5, 8))
    valid = rng.random(gt.shape) < 0.85
    poses = np.stack([_pose(0.05 * i, yaw=0.03 * i) for i in range(3)])
    pred = rng.uniform(0.2, 1.0, gt.shape)
    for space in ("disparity", "depth"):
        out = evaluate_sequence(
            pred, gt, 10.0, valid, intrinsics=K, cam_to_world=poses, tae=False, mfc=True, align_space=space
        )
        p, g, mask, max_depth = _prepare(pred, gt, 10.0, valid)
        depth, _, _ = _align(p, g, mask, max_depth, "disparity", space)
        expected, pairs = multi_frame_consistency(depth, K, poses, mask)
        assert "tae" not in out and out["mfc_pairs"] == pairs == 2
        assert out["mfc"] == pytest.approx(expected, rel=1e-12)
    assert out["mfc"] > 0  # a random prediction is not consistent
    d = aligned_depth(pred, gt, 10.0, valid)
    assert evaluate_sequence(pred, gt, 10.0, valid, intrinsics=K, cam_to_world=poses, mfc=True)["mfc"] == pytest.approx(
        multi_frame_consistency(d, K, poses, torch.from_numpy(valid & (gt > 1e-3) & (gt < 10)))[0], rel=1e-12
    )


def test_mfc_metrics_merge_like_ranks():
    rng = np.random.default_rng(7)
    b, t, h, w = 4, 3, 5, 8
    depth = torch.from_numpy(rng.uniform(1.0, 8.0, (b, t, 1, h, w))).float()
    valid = torch.from_numpy(rng.random((b, t, 1, h, w)) < 0.9)
    valid[3, 1:] = False  # no valid target frame: this sequence has no MFC
    pred = torch.from_numpy(rng.uniform(0.1, 1.0, (b, t, 1, h, w))).float()
    k = torch.from_numpy(np.tile(K, (b, t, 1, 1))).float()
    poses = torch.from_numpy(np.stack([np.stack([_pose(0.04 * i, yaw=0.02 * i) for i in range(t)])] * b)).float()
    full = VideoDepthMetrics(10.0, compute_mfc=True, align_space="depth")
    full.update(pred, depth, valid, k, poses)
    ranks = [VideoDepthMetrics(10.0, compute_mfc=True, align_space="depth") for _ in range(2)]
    ranks[0].update(pred[:2], depth[:2], valid[:2], k[:2], poses[:2])
    ranks[1].update(pred[2:], depth[2:], valid[2:], k[2:], poses[2:])
    ranks[0].merge_state(ranks[1])
    a, merged = full.compute(), ranks[0].compute()
    assert "tae" not in a and a["mfc"].dtype == torch.float64
    per_seq = [
        evaluate_sequence(
            pred[i],
            depth[i],
            10.0,
            valid[i],
            intrinsics=k[i],
            cam_to_world=poses[i],
            tae=False,
            mfc=True,
            align_space="depth",
        )
        for i in range(b)
    ]
    expected = np.mean([s["mfc"] for s in per_seq if s["mfc_pairs"] > 0])
    assert sum(s["mfc_pairs"] > 0 for s in per_seq) == 3
    assert a["mfc"].item() == pytest.approx(expected, rel=1e-12)
    assert merged["mfc"].item() == pytest.approx(a["mfc"].item(), rel=1e-12)
    # The standalone metric on aligned depth: same sums, same merge.
    aligned = torch.stack([aligned_depth(pred[i], depth[i], 10.0, valid[i]) for i in range(b)])
    masks = valid[:, :, 0] & (depth[:, :, 0] > 1e-3) & (depth[:, :, 0] < 10)
    one, two = MultiFrameConsistency(), MultiFrameConsistency()
    one.update(aligned[:2], k[:2], poses[:2], masks[:2])
    two.update(aligned[2:], k[2:], poses[2:], masks[2:])
    one.merge_state(two)
    expected = np.mean(
        [v for v, n in (multi_frame_consistency(aligned[i], k[i], poses[i], masks[i]) for i in range(b)) if n]
    )
    assert one.compute().item() == pytest.approx(expected, rel=1e-12) and one.skipped.item() == 1
