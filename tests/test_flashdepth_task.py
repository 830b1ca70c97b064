"""FlashDepthTask: streaming equals the clip forward; the loss trains every module group."""

import os

import pytest
import torch

from vdf.cli import main
from vdf.inference import Streaming

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("config", ["flashdepth_s", "flashdepth"])
def test_streaming_over_a_clip_equals_the_clip_forward(config, in_tmp_cwd):
    cli = main(["validate", "--config", os.path.join(ROOT, "configs", "tiny", f"{config}.yaml"),
                "--trainer.limit_val_batches", "0"])
    task = cli.model.eval()
    torch.manual_seed(0)
    # Make the temporal module (and the fusion) non-trivial: they start as exact identities.
    with torch.no_grad():
        for p in task.net.mamba.final_layer.parameters():
            p.normal_(0, 0.5)
        if task.net.hybrid_fusion is not None:
            for p in task.net.hybrid_fusion.parameters():
                p.add_(0.1 * torch.randn_like(p))
    video = torch.rand(1, 6, 3, 32, 48)
    with torch.no_grad():
        clip = task(video)[0]
    streamed = torch.stack(list(Streaming()(task, iter(video[0]))))
    assert streamed.shape == clip.shape == (6, 1, 32, 48)
    assert torch.allclose(streamed, clip, atol=1e-4, rtol=1e-4)
    # The recurrence matters: restarting the state every frame changes the later frames.
    restarted = torch.stack(list(Streaming(reset_every=1)(task, iter(video[0]))))
    assert torch.allclose(restarted[0], clip[0], atol=1e-4)
    stream_error = (streamed - clip).abs().max()
    assert (restarted[1:] - clip[1:]).abs().max() > 10 * stream_error + 1e-5


def test_training_steps_update_every_module_group(in_tmp_cwd):
    cli = main(["validate", "--config", os.path.join(ROOT, "configs", "tiny", "flashdepth.yaml"),
                "--trainer.limit_val_batches", "0"])
    task = cli.model.train()
    groups = {g["name"]: g for g in task.param_groups()}
    assert set(groups) == {"vit", "dpt", "mamba", "fusion"}
    assert groups["mamba"]["lr"] == 1e-3 and all(g["params"] for g in groups.values())
    teacher = [p for p in task.net.teacher_model.parameters()]
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
    for prefix in ("net.pretrained.", "net.depth_head.", "net.mamba.", "net.hybrid_fusion."):
        assert any(n.startswith(prefix) for n in changed), prefix
    assert not any(n.startswith("net.teacher_model.") for n in changed)
