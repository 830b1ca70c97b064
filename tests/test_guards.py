"""Numerical guard and configuration errors: each stops with one line saying what and how to fix."""

import os

import pytest
import torch
from recipes import tiny_args
from torch import nn

from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = tiny_args("dav2")


class NaNAfter(nn.Module):
    """A loss that turns NaN from its ``steps``-th call on (a diverging run, reproducibly)."""

    def __init__(self, steps: int = 2):
        super().__init__()
        self.steps = steps
        self.calls = 0

    def forward(self, pred, depth, valid):
        self.calls += 1
        loss = (pred - 1.0 / depth.clamp_min(0.1)).abs().mean()
        return loss * float("nan") if self.calls > self.steps else loss


def test_nonfinite_loss_stops_naming_step_and_sequences_after_saving_the_last_good_state(in_tmp_cwd):
    with pytest.raises(FloatingPointError) as error:
        main(["fit", *TINY, "--model.init_args.loss", f"{__name__}.NaNAfter", "--model.init_args.loss.steps", "2"])
    message = str(error.value)
    assert "global step 2" in message and "synthetic_world/episode_" in message
    path = message.split("saved in ")[1].split(" (resume")[0]
    assert os.path.isfile(path)
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_checkpoint_of_another_architecture_is_one_clear_error(in_tmp_cwd):
    cli = main(
        ["fit", *tiny_args("flashdepth", "s"), "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"]
    )
    ckpt = os.path.join(cli.trainer.log_dir, "checkpoints", "last.ckpt")
    with pytest.raises(
        ValueError,
        match=r"was trained with vdf.tasks.FlashDepthTask, but the config builds "
        r"vdf.tasks.FrameDepthTask: use the config the checkpoint was trained with",
    ):
        main(["validate", *TINY, "--ckpt_path", ckpt, "--trainer.limit_val_batches", "1"])


def test_checkpoint_of_the_same_task_with_other_widths_is_one_clear_error(in_tmp_cwd):
    cli = main(["fit", *TINY, "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0"])
    ckpt = os.path.join(cli.trainer.log_dir, "checkpoints", "last.ckpt")
    with pytest.raises(
        ValueError, match=r"does not fit FrameDepthTask as configured: .* missing keys .*Use the config"
    ):
        main(
            [
                "validate",
                *TINY,
                "--ckpt_path",
                ckpt,
                "--trainer.limit_val_batches",
                "1",
                "--model.init_args.predictor.init_args.net.init_args.depth",
                "5",
            ]
        )
