"""FlashDepthTask: streaming equals the clip forward; the loss trains every module group."""

import os

import pytest
import torch
from recipes import tiny_args

from vdf.cli import main
from vdf.inference import Streaming

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configs(name: str) -> list[str]:
    """``--config`` options of a tiny FlashDepth recipe (``flashdepth_s``: with the S overlay)."""
    return tiny_args("flashdepth", *(["s"] if name == "flashdepth_s" else []))


@pytest.mark.parametrize("config", ["flashdepth_s", "flashdepth"])
def test_streaming_over_a_clip_equals_the_clip_forward(config, in_tmp_cwd):
    cli = main(["validate", *_configs(config), "--trainer.limit_val_batches", "0"])
    task = cli.model.eval()
    torch.manual_seed(0)
    # Make the temporal module (and the fusion) non-trivial: they start as exact identities.
    with torch.no_grad():
        for p in task.predictor.net.mamba.final_layer.parameters():
            p.normal_(0, 0.5)
        if task.predictor.net.hybrid_fusion is not None:
            for p in task.predictor.net.hybrid_fusion.parameters():
                p.add_(0.1 * torch.randn_like(p))
    video = torch.rand(1, 6, 3, 32, 48)
    with torch.no_grad():
        clip = task(video)[0]
    streamed = torch.stack(list(Streaming()(task.predictor, iter(video[0]))))
    assert streamed.shape == clip.shape == (6, 1, 32, 48)
    assert torch.allclose(streamed, clip, atol=1e-4, rtol=1e-4)
    # The recurrence matters: restarting the state every frame changes the later frames.
    restarted = torch.stack(list(Streaming(reset_every=1)(task.predictor, iter(video[0]))))
    assert torch.allclose(restarted[0], clip[0], atol=1e-4)
    stream_error = (streamed - clip).abs().max()
    assert (restarted[1:] - clip[1:]).abs().max() > 10 * stream_error + 1e-5


def test_training_steps_update_every_module_group(in_tmp_cwd):
    cli = main(["validate", *_configs("flashdepth"), "--trainer.limit_val_batches", "0"])
    task = cli.model.train()
    groups = {g["name"]: g for g in task.param_groups()}
    assert set(groups) == {"vit", "dpt", "mamba", "fusion"}
    assert groups["mamba"]["lr"] == 1e-3 and all(g["params"] for g in groups.values())
    teacher = [p for p in task.predictor.net.teacher_model.parameters()]
    assert teacher and not any(p.requires_grad for p in teacher)
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    opt = torch.optim.AdamW([g for g in task.param_groups()], lr=1e-3)
    batch = cli.datamodule.train_dataloader()
    sample = next(iter(batch))
    for _ in range(2):
        opt.zero_grad()
        task.loss(task(sample["video"]), sample["depth"], sample["valid"]).backward()
        opt.step()
    changed = {n for n, p in task.named_parameters() if not torch.equal(p, before[n])}
    for prefix in (
        "predictor.net.pretrained.",
        "predictor.net.depth_head.",
        "predictor.net.mamba.",
        "predictor.net.hybrid_fusion.",
    ):
        assert any(n.startswith(prefix) for n in changed), prefix
    assert not any(n.startswith("predictor.net.teacher_model.") for n in changed)


def test_training_runs_at_the_data_size_and_inference_at_the_official_size(in_tmp_cwd):
    # The config's resolution rule (the official reader: long side capped at 2044, sides rounded
    # up to multiples of 14) applies at test and predict time; the clip forward used in training
    # keeps a crop that is already a multiple of 14 as it is.
    from vdf.predictors.resolution import CapThenRoundToMultiple

    cli = main(["validate", *_configs("flashdepth_s"), "--trainer.limit_val_batches", "0"])
    task = cli.model.eval()
    assert isinstance(task.predictor.resolution, CapThenRoundToMultiple) and task.predictor.input_size is None
    seen = []
    # The ViT sees the network's input (its patch embedding runs on the frames).
    task.predictor.net.pretrained.patch_embed.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(args[0].shape[-2:]))
    )
    with torch.no_grad():
        assert task(torch.rand(1, 2, 3, 28, 42)).shape == (1, 2, 1, 28, 42)
        assert seen == [(28, 42)]
        seen.clear()
        # Not a multiple of 14: rounded up, as the official preprocessing of every frame.
        assert task(torch.rand(1, 2, 3, 32, 48)).shape == (1, 2, 1, 32, 48)
        assert seen == [(42, 56)]
        seen.clear()
        # Over the cap: 20 x 2100 -> 19 x 2044 -> 28 x 2044, and back to the input size.
        pred, present = task.predictor.run(torch.rand(2, 3, 20, 2100))
    assert seen == [(28, 2044)] * 2 and pred.shape == (2, 1, 20, 2100)
    assert torch.isfinite(pred).all() and present.all()


def test_input_size_and_a_resizing_resolution_rule_do_not_combine(in_tmp_cwd):
    with pytest.raises(ValueError, match="would both resize"):
        main(
            [
                "validate",
                *_configs("flashdepth_s"),
                "--model.init_args.predictor.init_args.input_size",
                "28",
                "--trainer.limit_val_batches",
                "0",
            ]
        )
