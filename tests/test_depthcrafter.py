"""DepthCrafter: the tiny model learns, staged freezing really freezes, SegmentStitching stitches as specified."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vdf
from vdf.callbacks.freezing import FreezeStage, StagedFreezing, apply_trainable
from vdf.cli import main, tiny_configs
from vdf.diffusion import EDM
from vdf.inference import IndependentWindows, SegmentStitching
from vdf.models.svd import SVDCondition, parameter_group

ROOT = Path(__file__).resolve().parents[1]
# DepthCrafter's stage-1 recipe (the family base, the stage overlay) with the family's tiny overlay.
TINY_CONFIGS = tiny_configs(
    [str(ROOT / "configs" / "depthcrafter.yaml"), str(ROOT / "configs" / "depthcrafter" / "stage1.yaml")]
)
TINY = [x for c in TINY_CONFIGS for x in ("--config", c)]
QUIET = [
    "--trainer.enable_progress_bar=false",
    "--trainer.callbacks=[]",
]
VAL = [
    "--data.val=[{class_path: vdf.data.datasets.synthetic.SyntheticWorld, init_args: "
    "{num_episodes: 4, num_frames: 4, height: 32, width: 48, seed: 1000}}]",
    "--trainer.limit_val_batches=4",
]


def unet_params(cli) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in cli.model.predictor.denoiser.unet.named_parameters()}


def test_tiny_depthcrafter_learns_on_the_synthetic_world(in_tmp_cwd):
    before = main(["validate", *TINY, *VAL, "--trainer.enable_progress_bar=false"])
    untrained = float(before.trainer.callback_metrics["val/abs_rel"])
    cli = main(
        [
            "fit",
            *TINY,
            *VAL,
            "--trainer.enable_progress_bar=false",
            "--trainer.max_epochs=6",
            "--trainer.max_steps=48",
            "--trainer.limit_train_batches=8",
            "--trainer.num_sanity_val_steps=0",
        ]
    )
    trained = float(cli.trainer.callback_metrics["val/abs_rel"])
    assert cli.trainer.global_step >= 24
    assert trained < 0.8 * untrained, (untrained, trained)


@pytest.mark.parametrize("trainable", ["temporal", "spatial"])
def test_freezing_stops_updates_and_holds_no_gradients(trainable, in_tmp_cwd):
    cli = main(
        [
            "fit",
            *TINY,
            *QUIET,
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.callbacks=[{class_path: vdf.callbacks.freezing.StagedFreezing, "
            f"init_args: {{trainable: {trainable}}}}}]",
        ]
    )
    model = cli.model
    initial = main(["fit", *TINY, *QUIET, "--trainer.max_steps=0", "--trainer.limit_val_batches=0"])
    start = unet_params(initial)
    changed = {n for n, p in model.predictor.denoiser.unet.named_parameters() if not torch.equal(p.detach(), start[n])}
    frozen = {n for n, _ in model.predictor.denoiser.unet.named_parameters() if parameter_group(n) != trainable}
    assert changed and not (changed & frozen)
    for name, param in model.predictor.denoiser.unet.named_parameters():
        if name in frozen:
            assert not param.requires_grad and param.grad is None, name
    optimized = {id(p) for g in cli.trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in model.predictor.denoiser.unet.named_parameters() if n not in frozen}
    # VAE and image encoder never train.
    assert not any(p.requires_grad for p in model.predictor.denoiser.vae.parameters())


def test_stage_switch_mid_run_on_one_process(in_tmp_cwd):
    cli = main(
        [
            "fit",
            *TINY,
            *QUIET,
            "--trainer.max_steps=4",
            "--trainer.limit_val_batches=0",
            "--trainer.callbacks=[{class_path: vdf.callbacks.freezing.StagedFreezing, init_args: "
            "{stages: [{trainable: all, start_step: 0}, {trainable: temporal, start_step: 2}]}}]",
        ]
    )
    unet = cli.model.predictor.denoiser.unet
    temporal = [p for n, p in unet.named_parameters() if parameter_group(n) == "temporal"]
    assert all(p.requires_grad for p in temporal)
    assert not any(p.requires_grad for n, p in unet.named_parameters() if parameter_group(n) == "spatial")
    optimized = [p for g in cli.trainer.optimizers[0].param_groups for p in g["params"]]
    assert {id(p) for p in optimized} == {id(p) for p in temporal}


def test_stage_switch_refused_under_ddp():
    callback = StagedFreezing(stages=[FreezeStage("all", 0), FreezeStage("temporal", 10)])
    with pytest.raises(RuntimeError, match="its own `vdf fit`.*init_weights"):
        callback.setup(SimpleNamespace(world_size=2), SimpleNamespace(), "fit")
    with pytest.raises(ValueError, match="begin at 0"):
        StagedFreezing(stages=[FreezeStage("all", 5)])
    with pytest.raises(ValueError, match="trainable"):
        apply_trainable(torch.nn.Linear(2, 2), "everything")


# -- SegmentStitching on a scripted model --------------------------------------------------------


class ScriptedModel:
    """A latent diffusion predictor whose ``denoise`` returns the frames' conditioning plus the
    segment number, so stitching arithmetic is visible in the output. Records every call."""

    def __init__(self):
        self.objective = EDM()
        self.steps = 3
        self.device = torch.device("cpu")
        self.decode_chunk_size = 4
        self.calls: list[dict] = []

    def generator(self, offset: int = 0):
        return torch.Generator().manual_seed(offset)

    def noise_like(self, shape, generator=None):
        return torch.randn(shape, generator=generator)

    def condition(self, video, generator=None):
        latents = video[:, :, :1, ::2, ::2].repeat(1, 1, 4, 1, 1)  # (1,T,4,h,w), value = frame id
        return SVDCondition(latents, torch.zeros(1, video.shape[1], 1, 8), None)

    def denoise(self, cond, x, fixed=None, fixed_latents=None, position_ids=None, extra=None, steps=None):
        self.calls.append({"frames": cond.video_latents[0, :, 0, 0, 0].tolist(), "x": x.clone()})
        return cond.video_latents + 100.0 * len(self.calls)

    def decode(self, latents):
        return latents.mean(dim=2, keepdim=True).repeat_interleave(2, -1).repeat_interleave(2, -2)


def frames(n: int) -> list[torch.Tensor]:
    return [torch.full((3, 4, 4), float(i)) for i in range(n)]


@pytest.mark.parametrize("n", [1, 5, 8, 9, 13, 14, 30])
def test_segment_stitching_windows_and_counts(n):
    model = ScriptedModel()
    out = list(SegmentStitching(window=8, overlap=3, normalize=False)(model, frames(n)))
    assert len(out) == n
    # Segments as DepthCrafter's loop: starts 0, 5, 10, ... while the segment has a new frame.
    starts = [c["frames"][0] for c in model.calls]
    expected = [0]
    while expected[-1] + 8 < n:
        expected.append(expected[-1] + 5)
    assert starts == expected
    assert all(len(c["frames"]) == min(8, n - s) for c, s in zip(model.calls, expected))


def test_segment_stitching_blends_and_renoises_the_overlap():
    model = ScriptedModel()
    out = torch.stack(list(SegmentStitching(window=8, overlap=3, normalize=False)(model, frames(13))))
    values = out[:, 0, 0, 0]
    idx = torch.arange(13.0)
    # Frames 0-4: segment 1 only; 8-12: segment 2 only; 5-7: linear blend, new weight 0 -> 1.
    torch.testing.assert_close(values[:5], idx[:5] + 100)
    torch.testing.assert_close(values[8:], idx[8:] + 200)
    w = torch.linspace(0, 1, 3)
    torch.testing.assert_close(values[5:8], idx[5:8] + 100 * (1 - w) + 200 * w)
    # The overlap of segment 2 starts from segment 1's latents plus its own noise at σ_max.
    first, second = model.calls
    sigma_max = float(model.objective.schedule(3)[0])
    noise_first = first["x"][:, 5:8] / model.objective.init_noise_sigma
    expected_overlap = (idx[5:8] + 100).view(1, 3, 1, 1, 1) + sigma_max * noise_first
    torch.testing.assert_close(second["x"][:, :3], expected_overlap, rtol=1e-5, atol=1e-3)
    # New frames start from pure noise.
    assert second["x"][:, 3:].std() > 100


def test_segment_stitching_noise_is_the_official_rotation():
    """Segment k starts from the first window of noise rotated by k·overlap frames (DepthCrafter's
    ``cat([prev[-overlap:], prev[:stride]])``), the last segment from its first frames; one draw."""
    model = ScriptedModel()
    draws = []

    def noise_like(shape, generator=None):
        draws.append(torch.randn(shape, generator=generator))
        return draws[-1]

    model.noise_like = noise_like
    list(SegmentStitching(window=8, overlap=3, normalize=False)(model, frames(17)))
    assert [tuple(d.shape) for d in draws] == [(1, 8, 4, 2, 2)]
    ins = model.objective.init_noise_sigma
    sigma_max = float(model.objective.schedule(model.steps)[0])
    official = draws[0]
    for k, call in enumerate(model.calls):
        length = len(call["frames"])
        noise = official[:, :length]
        if k == 0:
            torch.testing.assert_close(call["x"], noise * ins)
        else:
            torch.testing.assert_close(call["x"][:, 3:], noise[:, 3:] * ins)
            tail = (torch.tensor(call["frames"][:3]) + 100.0 * k).view(1, 3, 1, 1, 1)
            torch.testing.assert_close(call["x"][:, :3], tail + sigma_max * noise[:, :3], rtol=1e-5, atol=1e-3)
        official = torch.cat([official[:, -3:], official[:, :5]], dim=1)
    assert [len(c["frames"]) for c in model.calls] == [8, 8, 7]


def test_segment_stitching_fresh_noise_option():
    model = ScriptedModel()
    list(SegmentStitching(window=8, overlap=3, normalize=False, fresh_noise=True)(model, frames(13)))
    first, second = model.calls
    ins = model.objective.init_noise_sigma
    # The first segment is the same; new frames of the second get noise never seen before.
    reference = ScriptedModel()
    list(SegmentStitching(window=8, overlap=3, normalize=False)(reference, frames(13)))
    torch.testing.assert_close(first["x"], reference.calls[0]["x"])
    new = second["x"][:, 3:] / ins
    assert not any(torch.allclose(new[:, i], first["x"][:, j] / ins) for i in range(5) for j in range(8))


def test_segment_stitching_video_wide_normalisation_streams_from_disk(tmp_path):
    model = ScriptedModel()
    raw = torch.stack(list(SegmentStitching(window=8, overlap=3, normalize=False)(ScriptedModel(), frames(20))))
    out = torch.stack(list(SegmentStitching(window=8, overlap=3, spill_dir=str(tmp_path))(model, frames(20))))
    torch.testing.assert_close(out, (raw - raw.min()) / (raw.max() - raw.min()))
    assert list(tmp_path.iterdir()) == []  # the spill file is removed


def test_segment_stitching_single_segment_equals_clip_forward(in_tmp_cwd):
    torch.manual_seed(0)
    model = vdf.load(TINY_CONFIGS, device="cpu")  # the tiny stage-1 predictor, random weights, eval mode
    video = torch.rand(1, 5, 3, 32, 48)
    clip = model.clip(video)[0]
    stitched = torch.stack(list(SegmentStitching(window=8, overlap=3)(model, iter(video[0]))))
    torch.testing.assert_close(stitched, (clip - clip.min()) / (clip.max() - clip.min()), atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match="not a latent diffusion model"):
        list(SegmentStitching()(SimpleNamespace(), iter(video[0])))
    # IndependentWindows runs the same model through its clip forward.
    assert len(list(IndependentWindows(window=3)(model, iter(video[0])))) == 5
