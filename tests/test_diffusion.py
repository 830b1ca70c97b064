"""EDM and flow matching against diffusers' schedulers, closed forms, and the shared Euler sampler."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

from vdf.diffusion import EDM, EulerSampler, FlowMatching, LogNormalSigma, karras_sigmas
from vdf.diffusion.normalization import DepthMinMax, DisparityMinMax, PercentileDisparity


def svd_scheduler() -> EulerDiscreteScheduler:
    """SVD-img2vid-xt's scheduler_config.json."""
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )


@pytest.mark.parametrize("steps", [1, 4, 5, 25])
def test_edm_schedule_matches_diffusers(steps):
    scheduler = svd_scheduler()
    scheduler.set_timesteps(steps)
    edm = EDM()
    sigmas = edm.schedule(steps)
    torch.testing.assert_close(sigmas, scheduler.sigmas.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(edm.timestep(sigmas[:-1]), scheduler.timesteps.float(), rtol=1e-5, atol=1e-6)
    assert edm.init_noise_sigma == pytest.approx(float(scheduler.init_noise_sigma), rel=1e-7)


def test_edm_reference_values():
    # svd_methods.md §1.4, 5 steps.
    sigmas = karras_sigmas(5)
    expected = torch.tensor([700.0, 134.854, 15.590, 0.6781, 0.002, 0.0])
    torch.testing.assert_close(sigmas, expected, rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(
        EDM().timestep(sigmas[:-1]), torch.tensor([1.6378, 1.2260, 0.6867, -0.0971, -1.5537]), atol=2e-4, rtol=0
    )


def test_edm_input_scaling_and_step_match_diffusers():
    torch.manual_seed(0)
    scheduler = svd_scheduler()
    scheduler.set_timesteps(5)
    edm = EDM()
    levels = edm.schedule(5)
    x = torch.randn(1, 3, 4, 6, 6) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        out = torch.randn_like(x)
        level = levels[i].expand(1, 3)
        torch.testing.assert_close(edm.net_input(x, level), scheduler.scale_model_input(x, t), rtol=1e-6, atol=1e-6)
        ours = x + edm.derivative(x, out, level) * (levels[i + 1] - levels[i])
        theirs = scheduler.step(out, t, x).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5 * float(x.abs().max()))
        x = theirs


def test_edm_preconditioning_closed_form():
    edm = EDM()
    sigma = torch.tensor([0.01, 1.0, 30.0])
    p = edm.preconditioning
    torch.testing.assert_close(p.c_skip(sigma), 1 / (sigma**2 + 1))
    torch.testing.assert_close(p.c_out(sigma), -sigma / torch.sqrt(sigma**2 + 1))
    torch.testing.assert_close(p.c_in(sigma), 1 / torch.sqrt(sigma**2 + 1))
    torch.testing.assert_close(p.c_noise(sigma), 0.25 * sigma.log())
    # λ(σ) = 1 / c_out²: the weighted x̂0 error equals the error on the network's own target.
    torch.testing.assert_close(edm.weighting(sigma), 1 / p.c_out(sigma) ** 2)
    x0, noise = torch.randn(3, 1, 2, 2, 2), torch.randn(3, 1, 2, 2, 2)
    x = edm.add_noise(x0, noise, sigma)
    target = (x0 - p.c_skip(sigma).view(3, 1, 1, 1, 1) * x) / p.c_out(sigma).view(3, 1, 1, 1, 1)
    out = torch.randn_like(x)
    torch.testing.assert_close(edm.loss(out, x, x0, noise, sigma), (out - target) ** 2, rtol=1e-4, atol=1e-5)
    # The exact network output recovers x0.
    torch.testing.assert_close(edm.denoised(x, target, sigma), x0, rtol=1e-4, atol=1e-4)


def test_log_normal_sigma_moments():
    sigma = LogNormalSigma(0.7, 1.6)((200_000,), generator=torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(0.7, abs=0.02)
    assert sigma.log().std().item() == pytest.approx(1.6, abs=0.02)


@pytest.mark.parametrize("steps", [1, 2, 3, 10])
def test_flow_matching_schedule_matches_diffusers(steps):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    scheduler.set_timesteps(steps)
    fm = FlowMatching(shift=3.0)
    levels = fm.schedule(steps)
    torch.testing.assert_close(levels, scheduler.sigmas.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(fm.timestep(levels[:-1]), scheduler.timesteps.float(), rtol=1e-6, atol=1e-4)


def test_flow_matching_reference_values_and_step():
    # svd_methods.md §4.2: 3 steps -> [1, 0.75112, 0.00893], timesteps [1000, 751.1, 8.93].
    fm = FlowMatching(shift=3.0)
    torch.testing.assert_close(fm.schedule(3), torch.tensor([1.0, 0.75112, 0.00893, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(fm.schedule(1), torch.tensor([1.0, 0.0]))
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)
    scheduler.set_timesteps(3)
    x = torch.randn(1, 2, 4, 5, 5)
    levels = fm.schedule(3)
    for i, t in enumerate(scheduler.timesteps):
        v = torch.randn_like(x)
        ours = x + fm.derivative(x, v, levels[i]) * (levels[i + 1] - levels[i])
        theirs = scheduler.step(v, t, x).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
        x = theirs


def test_flow_matching_path_and_target():
    fm = FlowMatching()
    x0, noise = torch.randn(2, 3, 4, 2, 2), torch.randn(2, 3, 4, 2, 2)
    s = torch.tensor([0.25, 0.9])
    x = fm.add_noise(x0, noise, s)
    torch.testing.assert_close(x, (1 - s.view(2, 1, 1, 1, 1)) * x0 + s.view(2, 1, 1, 1, 1) * noise)
    v = noise - x0  # the exact velocity: zero loss, exact clean estimate
    assert fm.loss(v, x, x0, noise, s).abs().max() < 1e-6
    torch.testing.assert_close(fm.denoised(x, v, s), x0, rtol=1e-5, atol=1e-5)
    # One Euler step from pure noise with the exact velocity lands on the data (straight path).
    torch.testing.assert_close(noise + v * (0.0 - 1.0), x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objective", [EDM(), FlowMatching()], ids=["edm", "flow"])
def test_sampler_with_oracle_network_returns_data(objective):
    """A network that knows x0 exactly makes the sampler land on x0 from any noise."""
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, 4)

    def net(x_in, timestep):
        level = timestep.exp() ** 4 if isinstance(objective, EDM) else timestep / 1000
        level = level.view(*level.shape, 1, 1, 1)
        if isinstance(objective, EDM):
            p = objective.preconditioning
            x = x_in / p.c_in(level)
            return (x0 - p.c_skip(level) * x) / p.c_out(level)
        return (x_in - x0) / level  # v = ε − x0 = (x − x0)/s

    levels = objective.schedule(4)
    x = objective.initial_latents(torch.randn_like(x0))
    out = EulerSampler()(net, objective, x, levels)
    torch.testing.assert_close(out, x0, rtol=1e-3, atol=1e-3)


def test_sampler_fixed_frames_are_kept_and_shown_at_context_level():
    edm = EDM()
    x = torch.randn(1, 4, 4, 3, 3) * 700
    known = torch.randn(1, 4, 4, 3, 3)
    fixed = torch.tensor([[True, True, False, False]])
    seen = []

    def net(x_in, timestep):
        seen.append((x_in.clone(), timestep.clone()))
        return torch.zeros_like(x_in)

    out = EulerSampler()(net, edm, x, edm.schedule(3), fixed=fixed, fixed_latents=known)
    assert torch.equal(out[:, :2], known[:, :2])
    assert not torch.allclose(out[:, 2:], x[:, 2:])
    for x_in, timestep in seen:
        torch.testing.assert_close(timestep[:, :2], torch.full((1, 2), 0.25 * math.log(edm.context_level)))
        c_in = 1 / math.sqrt(edm.context_level**2 + 1)
        torch.testing.assert_close(x_in[:, :2], known[:, :2] * c_in)
        assert (timestep[:, 2:] > timestep[:, :2].max()).all()
    with pytest.raises(ValueError, match="fixed_latents"):
        EulerSampler()(net, edm, x, edm.schedule(2), fixed=fixed)


def test_disparity_minmax_is_one_range_per_clip():
    depth = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 4, 1, 1, 1).expand(1, 4, 1, 2, 2).clone()
    valid = torch.ones_like(depth, dtype=torch.bool)
    target = DisparityMinMax()(depth, valid)
    disparity = 1 / depth
    expected = (disparity - disparity.min()) / (disparity.max() - disparity.min()) * 2 - 1
    torch.testing.assert_close(target, expected)
    # Per frame every frame spans its own range (constant frames map to -1).
    assert torch.equal(DisparityMinMax(per_frame=True)(depth, valid), torch.full_like(depth, -1.0))
    # Invalid pixels are far and do not move the range.
    valid[0, 0, 0, 0, 0] = False
    depth2 = depth.clone()
    depth2[0, 0, 0, 0, 0] = 1e-3
    torch.testing.assert_close(DisparityMinMax()(depth2, valid)[valid], target[valid])
    assert DisparityMinMax()(depth2, valid)[0, 0, 0, 0, 0] == -1
    torch.testing.assert_close(DisparityMinMax().to_output(target), (target + 1) / 2)
    assert DisparityMinMax.space == "disparity"


def test_percentile_and_depth_normalisations():
    torch.manual_seed(0)
    depth = torch.rand(2, 3, 1, 10, 10) * 9 + 1
    valid = torch.ones_like(depth, dtype=torch.bool)
    target = PercentileDisparity(0.02, 0.98)(depth, valid)
    assert target.min() == -1 and target.max() == 1
    d = (1 / depth)[0, 1].flatten()
    lo, hi = torch.quantile(d, 0.02), torch.quantile(d, 0.98)
    inside = (d > lo) & (d < hi)
    torch.testing.assert_close(target[0, 1].flatten()[inside], ((d[inside] - lo) / (hi - lo)) * 2 - 1)
    depth_target = DepthMinMax()(depth, valid)
    # Near is -1; the prediction is relative depth in [0, 1] (ChronoDepth's (x + 1) / 2), near at 0.
    near, far = depth.argmin(), depth.argmax()
    assert depth_target.flatten()[near] == -1
    assert DepthMinMax.space == "depth"
    out = DepthMinMax().to_output(depth_target)
    assert out.flatten()[near] == 0 and out.flatten()[far] == 1
    torch.testing.assert_close(out, (depth_target.clamp(-1, 1) + 1) / 2)
