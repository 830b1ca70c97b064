"""ChronoDepth as a configuration of the latent-diffusion core, and the SlidingWindowContext strategy."""

import math
import os

import pytest
import torch

from vdf.cli import merge_configs, tiny_configs
from vdf.diffusion import EDM, DepthMinMax, FlowMatching, LogNormalSigma
from vdf.diffusion.sampler import EulerSampler, ScaledSampleEulerSampler
from vdf.inference import SlidingWindowContext
from vdf.inference.sliding_context import window_schedule
from vdf.models.svd import SVDVAE, CLIPFrameEmbedder, SVDCondition, SVDDepthDenoiser, SVDUNet
from vdf.models.weights import StateDictMismatchError
from vdf.predictors import LatentDiffusionPredictor
from vdf.tasks import LatentDiffusionTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNET_SIZES = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    num_attention_heads=(2, 4),
    cross_attention_dim=32,
    addition_time_embed_dim=8,
)


def chronodepth_predictor(seed: int = 0, **predictor_args) -> LatentDiffusionPredictor:
    """ChronoDepth's conventions on a tiny random SVD (as configs/tiny/chronodepth.yaml)."""
    torch.manual_seed(seed)
    denoiser = SVDDepthDenoiser(
        unet=SVDUNet(**UNET_SIZES),
        vae=SVDVAE(block_out_channels=(32, 32), layers_per_block=1, chunk_size=4),
        image_encoder=CLIPFrameEmbedder(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=8,
            image_size=32,
            projection_dim=32,
            black_image=True,
        ),
        video_first=True,
        video_latent_sample=True,
        video_latent_scaled=True,
        noise_aug_strength=0.0,
        fps_id=6,
        motion_bucket_id=127,
        noise_aug_id=0.0,
        clamp_channels=False,
    )
    args = dict(objective=EDM(sigma_sampler=LogNormalSigma(0.7, 1.6)), normalization=DepthMinMax(), steps=2)
    args.update(predictor_args)
    return LatentDiffusionPredictor(denoiser, **args).eval()


def tiny_chronodepth(seed: int = 0, per_frame_levels: bool = True, **predictor_args) -> LatentDiffusionTask:
    """The training task around `chronodepth_predictor` (ChronoDepth: one σ per frame)."""
    return LatentDiffusionTask(chronodepth_predictor(seed, **predictor_args), per_frame_levels=per_frame_levels).eval()


def frames(n: int, h: int = 16, w: int = 16, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for _ in range(n)]


def spy_unet(predictor: LatentDiffusionPredictor, record: list, arg: str = "timestep") -> None:
    """Record the ``sample`` or ``timestep`` argument of every call of the predictor's `SVDUNet`."""
    forward = predictor.denoiser.unet.forward

    def spy(sample, timestep, *args, **kwargs):
        record.append(timestep if arg == "timestep" else sample)
        return forward(sample, timestep, *args, **kwargs)

    predictor.denoiser.unet.forward = spy


# -- training: one σ per frame reaches the UNet -------------------------------------------------


def test_per_frame_sigma_reaches_the_unet_per_frame():
    task = tiny_chronodepth().train()
    levels, timesteps, projected = [], [], []
    sample_levels = task.predictor.objective.sample_levels

    def spy_levels(shape, **kwargs):
        out = sample_levels(shape, **kwargs)
        levels.append(out)
        return out

    task.predictor.objective.sample_levels = spy_levels
    spy_unet(task.predictor, timesteps)
    task.predictor.denoiser.unet.unet.time_proj.register_forward_hook(lambda m, args, out: projected.append(args[0]))

    b, t = 2, 4
    depth = torch.rand(b, t, 1, 16, 16) * 10 + 1
    batch = {"video": torch.rand(b, t, 3, 16, 16), "depth": depth, "valid": torch.ones_like(depth, dtype=torch.bool)}
    loss = task.training_loss(batch)
    assert torch.isfinite(loss)
    (sigma,), (timestep,), (flat,) = levels, timesteps, projected
    assert sigma.shape == (b, t) and timestep.shape == (b, t)
    assert torch.allclose(timestep, 0.25 * sigma.log())  # c_noise of each frame's own σ
    assert len(set(timestep.flatten().tolist())) == b * t  # independent per frame
    assert torch.allclose(flat, timestep.reshape(b * t))  # time_proj sees one value per frame


def test_clip_levels_without_per_frame_levels_are_shared_by_the_frames():
    task = tiny_chronodepth(per_frame_levels=False).train()
    timesteps = []
    spy_unet(task.predictor, timesteps)
    depth = torch.rand(1, 3, 1, 16, 16) + 1
    task.training_loss({"video": torch.rand(1, 3, 3, 16, 16), "depth": depth, "valid": depth > 0})
    assert len(set(timesteps[0].flatten().tolist())) == 1


def test_chronodepth_conventions_black_frame_clip_rgb_first():
    predictor = chronodepth_predictor()
    video = torch.rand(1, 2, 3, 16, 16)
    cond = predictor.condition(video, torch.Generator().manual_seed(0))
    black = predictor.denoiser.image_encoder.encoder(
        pixel_values=predictor.denoiser.image_encoder.preprocess(torch.zeros(1, 3, 16, 16))
    ).image_embeds
    assert torch.allclose(cond.embeddings[0, 0, 0], black[0], atol=1e-5)
    assert torch.allclose(cond.embeddings[0, 1], cond.embeddings[0, 0])
    assert cond.added_time_ids.tolist() == [[6.0, 127.0, 0.0]]
    seen = []
    spy_unet(predictor, seen, arg="sample")
    predictor.denoiser(torch.zeros(1, 2, 4, 8, 8), torch.zeros(1, 2), cond)
    assert torch.equal(seen[0][:, :, :4], cond.video_latents)  # RGB latents first


def test_tiny_chronodepth_overfits_one_batch():
    task = tiny_chronodepth(seed=1).train()
    task.predictor.denoiser.unet.requires_grad_(True)
    depth = torch.rand(1, 2, 1, 16, 16) * 5 + 1
    batch = {"video": torch.rand(1, 2, 3, 16, 16), "depth": depth, "valid": depth > 0}
    opt = torch.optim.Adam(task.predictor.denoiser.unet.parameters(), lr=2e-3)

    def fixed_loss():
        torch.manual_seed(123)
        return task.training_loss(batch)

    with torch.no_grad():
        before = float(fixed_loss())
    for _ in range(10):
        opt.zero_grad()
        fixed_loss().backward()
        opt.step()
    with torch.no_grad():
        after = float(fixed_loss())
    assert after < 0.8 * before


# -- the sampler: ChronoDepth's loop, step by step in diffusers ------------------------------------


def svd_scheduler():
    """SVD-img2vid-xt's scheduler_config.json (the scheduler ChronoDepth's pipeline steps with)."""
    from diffusers import EulerDiscreteScheduler

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


def toy_network(seed: int = 0):
    """A fixed nonlinear ``net(input (1,T,4,h,w), timestep (1,T))`` that mixes frames and channels."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(4, 4, generator=g) * 0.5
    frames = torch.randn(16, 16, generator=g) * 0.2

    def net(x, timestep):
        t = x.shape[1]
        y = torch.einsum("btchw,dc->btdhw", x, mix) + torch.einsum("btchw,st->bschw", x, frames[:t, :t])
        return torch.tanh(y) + 0.3 * torch.sin(timestep).view(*timestep.shape, 1, 1, 1)

    return net


def official_window(scheduler, net, depth, n_context, steps, sigma_epsilon=-4.0):
    """ChronoDepth's window loop (single_infer_ours) on ``depth`` (1,T,4,h,w): the first
    ``n_context`` frames are clean context, the others are denoised with the scheduler."""
    scheduler.set_timesteps(steps)
    depth = depth.clone()
    new = depth.shape[1] - n_context
    for t in scheduler.timesteps:
        depth[:, n_context:] = scheduler.scale_model_input(depth[:, n_context:], t)
        timesteps = torch.cat([torch.full((n_context,), sigma_epsilon), t.repeat(new)])
        out = net(depth, timesteps[None])
        depth[:, n_context:] = scheduler.step(out[:, n_context:], t, depth[:, n_context:]).prev_sample
    scheduler._step_index = None
    return depth


@pytest.mark.parametrize("steps", [1, 2, 5])
@pytest.mark.parametrize("n_context", [0, 5, 7])
def test_scaled_sample_sampler_is_chronodepths_loop_in_diffusers(steps, n_context):
    scheduler, edm, net = svd_scheduler(), EDM(), toy_network()
    g = torch.Generator().manual_seed(steps + n_context)
    new = 10 - n_context if n_context else 10
    context = torch.randn(1, n_context, 4, 3, 5, generator=g)
    noise = torch.randn(1, new, 4, 3, 5, generator=g)
    x = torch.cat([context, edm.initial_latents(noise)], dim=1)
    expected = official_window(scheduler, net, x, n_context, steps)
    fixed = None
    if n_context:
        fixed = torch.zeros(1, x.shape[1], dtype=torch.bool)
        fixed[:, :n_context] = True
    got = ScaledSampleEulerSampler()(net, edm, x, edm.schedule(steps), fixed, x if n_context else None)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[:, :n_context], context)
    # The textbook step is another sampler: at 5 steps the residual noise it keeps shows (with 1 or
    # 2 steps both end within c_skip(700)·x ≈ 1e-3 of each other).
    textbook = EulerSampler()(net, edm, x, edm.schedule(steps), fixed, x if n_context else None)
    if steps == 5:
        assert (textbook - expected).abs().max() > 1e-2


def test_scaled_sample_sampler_is_the_euler_sampler_for_flow_matching():
    fm, net = FlowMatching(), toy_network(1)
    x = torch.randn(1, 4, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    levels = fm.schedule(3)
    assert torch.equal(ScaledSampleEulerSampler()(net, fm, x, levels), EulerSampler()(net, fm, x, levels))


# -- SlidingWindowContext: schedule, context frames, streaming ----------------------------------


class RecordingLatentModel:
    """A fast latent model: the real EDM and Euler sampler around a tiny fake network.

    Each frame's video latent carries its index, so the calls to ``denoise`` tell which frames a
    window held; the fake network records the timesteps it was shown.
    """

    def __init__(self, steps: int = 2, chunk: int = 3):
        self.objective = EDM()
        self.sampler = EulerSampler()
        self.steps = steps
        self.device = torch.device("cpu")
        self.decode_chunk_size = chunk
        self.calls: list[dict] = []
        self.conditioned = 0

    def generator(self, offset=0):
        return torch.Generator().manual_seed(offset)

    def noise_like(self, shape, generator=None):
        return torch.randn(shape, generator=generator)

    def condition(self, video, generator=None):
        b, t = video.shape[:2]
        index = torch.arange(self.conditioned, self.conditioned + t, dtype=torch.float32)
        self.conditioned += t
        latents = index.view(1, t, 1, 1, 1).expand(b, t, 4, 2, 2).clone()
        return SVDCondition(latents, torch.zeros(b, t, 1, 8), None)

    def denoise(self, cond, x, fixed=None, fixed_latents=None, position_ids=None, extra=None, steps=None):
        timesteps = []

        def net(inp, timestep):
            timesteps.append(timestep.clone())
            return 0.1 * inp + 0.01 * cond.video_latents

        levels = self.objective.schedule(steps or self.steps)
        out = self.sampler(net, self.objective, x, levels, fixed, fixed_latents)
        self.calls.append(
            dict(
                frames=cond.video_latents[0, :, 0, 0, 0].long().tolist(),
                fixed=fixed,
                x=x.clone(),
                out=out.clone(),
                timesteps=timesteps,
            )
        )
        return out

    def decode(self, latents):
        return latents.mean(dim=2, keepdim=True).repeat_interleave(4, -1).repeat_interleave(4, -2)


REFERENCE_23 = [(0, 10), (5, 15), (10, 20), (13, 23)]


def test_window_schedule_matches_chronodepth_n23():
    assert [(s, e) for s, _, e in window_schedule(23, 10, 5)] == REFERENCE_23
    assert [c - s for s, c, _ in window_schedule(23, 10, 5)] == [0, 5, 5, 7]
    assert window_schedule(7, 10, 5) == [(0, 0, 7)]
    assert window_schedule(0) == []
    assert window_schedule(12, 10, 5) == [(0, 0, 10), (2, 10, 12)]
    assert window_schedule(20, 10, 5) == [(0, 0, 10), (5, 10, 15), (10, 15, 20)]


@pytest.mark.parametrize(
    "n,window,stride", [(23, 10, 5), (11, 10, 5), (12, 10, 5), (20, 10, 5), (9, 4, 3), (7, 3, 1), (8, 4, 4)]
)
def test_sliding_window_calls_follow_the_schedule(n, window, stride):
    model = RecordingLatentModel()
    out = list(SlidingWindowContext(window, stride)(model, frames(n, 8, 8)))
    assert len(out) == n and out[0].shape == (1, 8, 8)
    schedule = window_schedule(n, window, stride)
    assert [c["frames"] for c in model.calls] == [list(range(s, e)) for s, _, e in schedule]
    for call, (s, cur, e) in zip(model.calls, schedule):
        if cur == s:
            assert call["fixed"] is None
        else:
            assert call["fixed"][0].tolist() == [True] * (cur - s) + [False] * (e - cur)


def test_context_frames_are_final_latents_held_fixed_and_shown_at_context_level():
    model = RecordingLatentModel(steps=3)
    list(SlidingWindowContext(10, 5)(model, frames(23, 8, 8)))
    final: dict[int, torch.Tensor] = {}
    context_timestep = float(model.objective.timestep(torch.tensor(model.objective.context_level)))
    assert context_timestep == pytest.approx(-4.0)  # ChronoDepth's sigma_epsilon
    sigmas = model.objective.schedule(3)[:-1]
    for call in model.calls:
        n_ctx = 0 if call["fixed"] is None else int(call["fixed"].sum())
        for j, f in enumerate(call["frames"][:n_ctx]):
            # the clean latents an earlier window produced, unchanged in and out
            assert torch.equal(call["x"][0, j], final[f]) and torch.equal(call["out"][0, j], final[f])
        for step, ts in enumerate(call["timesteps"]):
            assert ts.shape == (1, len(call["frames"]))
            assert torch.allclose(ts[0, :n_ctx], torch.full((n_ctx,), context_timestep))
            assert torch.allclose(ts[0, n_ctx:], 0.25 * sigmas[step].log().expand(len(call["frames"]) - n_ctx))
        for j, f in enumerate(call["frames"][n_ctx:], start=n_ctx):
            assert f not in final  # every frame is denoised once
            final[f] = call["out"][0, j]
    assert sorted(final) == list(range(23))


class CountingIterator:
    def __init__(self, items):
        self.items, self.pulled = items, 0

    def __iter__(self):
        for item in self.items:
            self.pulled += 1
            yield item


def test_sliding_window_streams_holding_at_most_a_window():
    model = RecordingLatentModel(chunk=2)
    source = CountingIterator(frames(40, 8, 8))
    stream = SlidingWindowContext(10, 5)(model, source)
    first = next(stream)
    assert first.shape == (1, 8, 8) and source.pulled <= 10 + 5
    rest = list(stream)
    assert len(rest) == 39 and max(len(c["frames"]) for c in model.calls) == 10


@pytest.mark.parametrize("n", [1, 5, 10, 11, 23])
def test_one_output_per_input_frame(n):
    model = RecordingLatentModel()
    assert len(list(SlidingWindowContext(10, 5)(model, frames(n, 8, 8)))) == n
    assert sum(len(c["frames"]) - (0 if c["fixed"] is None else int(c["fixed"].sum())) for c in model.calls) == n


@pytest.mark.parametrize("n", [1, 11])
def test_one_output_per_input_frame_on_the_tiny_model(n, shared_predictor):
    out = list(SlidingWindowContext(10, 5)(shared_predictor, frames(n)))
    assert len(out) == n and all(o.shape == (1, 16, 16) for o in out)
    assert all(torch.isfinite(o).all() for o in out)


@pytest.fixture(scope="module")
def shared_predictor():
    return chronodepth_predictor(seed=2)


def test_a_single_window_equals_the_plain_clip_forward(shared_predictor):
    video = torch.stack(frames(6, seed=3))
    expected = shared_predictor.clip(video[None])[0]
    got = torch.stack(list(SlidingWindowContext(10, 5)(shared_predictor, iter(video))))
    assert torch.allclose(got, expected, atol=1e-6)


def test_output_is_the_models_decode_without_video_min_max():
    model = RecordingLatentModel()
    out = torch.stack(list(SlidingWindowContext(4, 2)(model, frames(9, 8, 8))))
    finals = torch.cat([c["out"][0, (0 if c["fixed"] is None else int(c["fixed"].sum())) :] for c in model.calls])
    assert torch.allclose(out, model.decode(finals[None])[0])


def test_sliding_window_rejects_models_without_denoise_and_bad_arguments():
    class ClipOnly:
        def predict_clip(self, video):
            return video[:, :, :1]

    with pytest.raises(TypeError, match="not a latent diffusion model"):
        list(SlidingWindowContext()(ClipOnly(), frames(3)))
    with pytest.raises(ValueError):
        SlidingWindowContext(window=4, stride=5)
    with pytest.raises(ValueError):
        SlidingWindowContext(window=4, stride=0)


# -- weights: ChronoDepth's UNet folder (diffusers format) --------------------------------------


def test_svd_unet_loads_a_save_pretrained_folder_strictly(tmp_path):
    from diffusers import UNetSpatioTemporalConditionModel
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    reference = SVDUNet(**UNET_SIZES).unet
    reference.save_pretrained(tmp_path / "unet")
    assert isinstance(reference, UNetSpatioTemporalConditionModel)
    loaded = SVDUNet(weights=str(tmp_path / "unet"))
    for (name, a), (_, b) in zip(reference.state_dict().items(), loaded.unet.state_dict().items()):
        assert torch.equal(a, b), name

    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    missing = "down_blocks.0.attentions.0.temporal_transformer_blocks.0.attn1.to_q.weight"
    del state[missing]
    save_file(state, str(weights))
    with pytest.raises(StateDictMismatchError, match="temporal_transformer_blocks.0.attn1.to_q.weight"):
        SVDUNet(weights=str(tmp_path / "unet"))
    with pytest.raises(FileNotFoundError, match="ChronoDepth-v1"):
        SVDUNet(weights=str(tmp_path / "nowhere"))


# -- configs: the full recipes and their tiny twins agree on ChronoDepth's conventions ------------


RECIPES = {  # the recipe's config files (base, then the stage overlay)
    "stage1": ["chronodepth.yaml", "chronodepth/stage1.yaml"],
    "stage2": ["chronodepth.yaml", "chronodepth/stage2.yaml"],
    "inference": ["chronodepth.yaml"],
}


def _load(names):
    """The recipe ``names`` layered in order, and its tiny twin (the recipe with the tiny overlay)."""
    paths = [os.path.join(ROOT, "configs", name) for name in names]
    tiny_paths = tiny_configs(paths)
    assert tiny_paths == paths + [os.path.join(ROOT, "configs", "tiny", "chronodepth.yaml")]
    return merge_configs(paths), merge_configs(tiny_paths)


def _weight_files(node, key=""):
    """Non-null values of ``weights`` / ``*_weights`` keys anywhere in ``node`` (weight files)."""
    if isinstance(node, dict):
        return [f for k, v in node.items() for f in _weight_files(v, k)]
    if isinstance(node, list):
        return [f for v in node for f in _weight_files(v, key)]
    return [node] if (key == "weights" or key.endswith("_weights")) and node is not None else []


@pytest.mark.parametrize("name", list(RECIPES))
def test_full_and_tiny_configs_share_the_recipe(name):
    full, tiny = _load(RECIPES[name])
    f, t = full["model"]["init_args"], tiny["model"]["init_args"]
    fp, tp = f["predictor"]["init_args"], t["predictor"]["init_args"]
    assert full["model"]["class_path"] == tiny["model"]["class_path"] == "vdf.tasks.LatentDiffusionTask"
    assert f["predictor"]["class_path"] == t["predictor"]["class_path"] == "vdf.predictors.LatentDiffusionPredictor"
    drop = {"unet", "vae", "image_encoder"}
    assert {k: v for k, v in fp["denoiser"]["init_args"].items() if k not in drop} == {
        k: v for k, v in tp["denoiser"]["init_args"].items() if k not in drop
    }
    assert fp["denoiser"]["init_args"]["image_encoder"]["init_args"]["black_image"] is True
    assert tp["denoiser"]["init_args"]["image_encoder"]["init_args"]["black_image"] is True
    for key in ("objective", "normalization", "sampler"):
        assert fp.get(key) == tp.get(key), key
    assert f.get("per_frame_levels") == t.get("per_frame_levels") is True
    assert fp["sampler"] in (
        "vdf.diffusion.ScaledSampleEulerSampler",  # the official loop
        {"class_path": "vdf.diffusion.ScaledSampleEulerSampler"},
    )
    assert fp["resolution"]["class_path"] == tp["resolution"]["class_path"]
    assert fp["resolution"]["init_args"] == {
        "max_size": 1024,
        "multiple": 64,
        "rounding": "nearest",
        "mode": "bilinear",
    }
    assert fp["strategy"]["class_path"] == tp["strategy"]["class_path"] == "vdf.inference.SlidingWindowContext"
    assert fp["strategy"]["init_args"] == {"window": 10, "stride": 5} and fp["steps"] == 5
    callbacks = lambda c: [cb["init_args"] for cb in c["trainer"].get("callbacks", [])]
    assert callbacks(full) == callbacks(tiny)
    if name != "inference":
        assert f["optimizer"]["init_args"]["lr"] == 3.0e-5
        assert full["data"]["num_frames"] == tiny["data"]["num_frames"]
        assert tiny["data"]["num_frames"] == ([1] if name == "stage1" else [1, 2, 3, 4, 5])
    for config in (tiny,):
        # no weight files: neither `weights` nor `*_weights` (init_weights) names one
        assert _weight_files(config["model"]) == []
    assert math.isclose(EDM().context_level, math.exp(-16))
