import pytest
import torch

from vdf.tasks.losses import InverseDepthL1Loss, ScaleShiftInvariantLoss, _masked_median, gt_disparity


def _clip(b=2, t=3, h=8, w=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    depth = 0.5 + 10 * torch.rand(b, t, 1, h, w, generator=g)
    valid = torch.rand(b, t, 1, h, w, generator=g) > 0.2
    return depth, valid, g


def test_masked_median_matches_torch_median_on_the_masked_values():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 33, generator=g)
    m = torch.rand(6, 33, generator=g) > 0.4
    got = _masked_median(x, m)
    for i in range(6):
        assert got[i] == torch.median(x[i][m[i]])  # torch.median is the lower median too


def test_ssi_zero_for_any_per_frame_affine_map_of_the_true_disparity():
    depth, valid, g = _clip()
    scale = 0.1 + torch.rand(2, 3, 1, 1, 1, generator=g)
    shift = torch.randn(2, 3, 1, 1, 1, generator=g)
    pred = scale / depth + shift
    assert ScaleShiftInvariantLoss(per="frame")(pred, depth, valid) < 1e-5
    # One scale per clip is required by the clip-level loss: per-frame scales are penalised.
    assert ScaleShiftInvariantLoss(per="clip")(pred, depth, valid) > 1e-2
    clip_scale = scale[:, :1].expand_as(scale)
    clip_shift = shift[:, :1].expand_as(shift)
    assert ScaleShiftInvariantLoss(per="clip")(clip_scale / depth + clip_shift, depth, valid) < 1e-5


def test_ssi_invariant_to_affine_maps_of_the_prediction_and_ignores_invalid_pixels():
    depth, valid, g = _clip(seed=3)
    pred = torch.rand(depth.shape, generator=g)
    loss = ScaleShiftInvariantLoss(per="frame")
    base = loss(pred, depth, valid)
    assert base > 0.1
    assert torch.allclose(loss(3.0 * pred - 2.0, depth, valid), base, atol=1e-5)
    garbage = torch.where(valid, pred, torch.full_like(pred, 1e6))
    assert torch.allclose(loss(garbage, depth, valid), base, atol=1e-5)


def test_ssi_matches_a_direct_computation_and_skips_frames_without_enough_pixels():
    depth, valid, g = _clip(b=1, t=2, seed=4)
    valid[0, 1] = False
    valid[0, 1, 0, 0, :3] = True  # 3 pixels < min_valid
    pred = torch.rand(depth.shape, generator=g)
    got = ScaleShiftInvariantLoss(per="frame", min_valid=16)(pred, depth, valid)
    m = valid[0, 0, 0]
    p, t = pred[0, 0, 0][m], 1.0 / depth[0, 0, 0][m]
    pn = (p - p.median()) / (p - p.median()).abs().mean()
    tn = (t - t.median()) / (t - t.median()).abs().mean()
    assert torch.allclose(got, (pn - tn).abs().mean(), atol=1e-6)


def test_ssi_gradients_flow_and_empty_batches_give_zero_with_a_graph():
    depth, valid, g = _clip()
    pred = torch.rand(depth.shape, generator=g, requires_grad=True)
    ScaleShiftInvariantLoss()(pred, depth, valid).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    empty = ScaleShiftInvariantLoss()(pred, depth, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad


def test_ssi_rejects_unknown_grouping():
    with pytest.raises(ValueError, match="per must be"):
        ScaleShiftInvariantLoss(per="pixel")


def test_inverse_depth_l1_by_hand():
    depth = torch.tensor([2.0, 4.0, 0.0, 5.0]).view(1, 1, 1, 1, 4)
    valid = torch.tensor([True, True, True, False]).view(1, 1, 1, 1, 4)
    pred = torch.tensor([0.5, 0.5, 9.0, 9.0]).view(1, 1, 1, 1, 4)
    # valid and depth>0: pixels 0 and 1; |0.5-0.5| + |0.5-0.25| = 0.25, mean 0.125, x100
    assert InverseDepthL1Loss(scale=100.0)(pred, depth, valid).item() == pytest.approx(12.5)
    assert torch.equal(gt_disparity(depth, valid).flatten(), torch.tensor([0.5, 0.25, 0.0, 0.0]))
