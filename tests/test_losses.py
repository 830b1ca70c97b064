import numpy as np
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
    pred = torch.tensor([50.0, 30.0, 9.0, 9.0]).view(1, 1, 1, 1, 4)
    # valid and depth>0: pixels 0 and 1; targets 100/2 = 50 and 100/4 = 25: (0 + 5) / 2
    assert InverseDepthL1Loss(scale=100.0)(pred, depth, valid).item() == pytest.approx(2.5)
    assert torch.equal(gt_disparity(depth, valid).flatten(), torch.tensor([0.5, 0.25, 0.0, 0.0]))


def test_inverse_depth_l1_is_zero_for_a_perfect_official_scale_prediction():
    # FlashDepth predicts 100 / metres: that prediction on the valid pixels costs nothing,
    # whatever it holds elsewhere (the loss must not pull official weights' outputs down 100x).
    depth, valid, g = _clip(seed=5)
    pred = torch.where(valid, 100.0 / depth, 1e3 * torch.rand(depth.shape, generator=g))
    assert InverseDepthL1Loss()(pred, depth, valid).item() == 0.0
    assert InverseDepthL1Loss()(pred / 100.0, depth, valid).item() > 1.0


def test_inverse_depth_l1_matches_an_independent_computation():
    # The official loss: F.l1_loss(pred[valid], 100 * inverse_depth[valid]) over all frames of the
    # batch at once; here in float64 numpy over the pooled valid pixels.
    depth, valid, g = _clip(b=2, t=3, seed=6)
    depth[0, 1, 0, 0, :4] = float("inf")  # sky: a valid target of 0
    depth[1, 2, 0, 1, :3] = 0.0  # unknown depth, even where marked valid, is ignored
    pred = 200 * torch.rand(depth.shape, generator=g)
    d, v, p = depth.double().numpy(), valid.numpy(), pred.double().numpy()
    keep = v & (d > 0)
    expected = np.abs(p[keep] - 100.0 / d[keep]).mean()
    got = InverseDepthL1Loss(scale=100.0)(pred, depth, valid)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    official = torch.nn.functional.l1_loss(pred[torch.from_numpy(keep)], 100.0 / depth[torch.from_numpy(keep)])
    assert torch.allclose(got, official)
    empty = InverseDepthL1Loss()(pred.requires_grad_(), depth, torch.zeros_like(valid))
    assert empty.item() == 0.0 and empty.requires_grad
