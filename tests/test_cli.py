"""The `vdf` command itself: entry points, run layout, and clear errors for bad configuration."""

import os
import subprocess
import sys

import pytest
from recipes import tiny_args

from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = tiny_args("dav2")


def test_python_dash_m_vdf_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "vdf", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for sub in ("fit", "validate", "test", "predict"):
        assert sub in out.stdout


def test_dotted_overrides_reach_the_objects(in_tmp_cwd):
    cli = main(
        [
            "validate",
            *TINY,
            "--model.init_args.predictor.init_args.input_size",
            "28",
            "--data.val.init_args.num_frames",
            "3",
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    assert cli.model.predictor.input_size == 28
    # The run is named after its config file and the resolved config is saved beside the logs.
    assert os.path.basename(os.path.dirname(cli.trainer.log_dir)) == "dav2"


def test_unknown_dataset_root_names_the_path(in_tmp_cwd):
    with pytest.raises(FileNotFoundError, match="'no_such_dataset' does not exist"):
        main(
            [
                "validate",
                *TINY,
                "--data.val",
                '[{"class_path": "vdf.data.datasets.episodes.EpisodeFolder", "init_args": {"root": "no_such_dataset"}}]',
            ]
        )


def test_missing_weights_file_names_the_file_and_its_origin(in_tmp_cwd):
    with pytest.raises(FileNotFoundError, match="missing_vits.pth"):
        main(["validate", *TINY, "--model.init_args.predictor.init_args.net.init_args.weights", "missing_vits.pth"])


def test_wrong_class_path_is_reported(in_tmp_cwd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *TINY, "--model.class_path", "vdf.tasks.NoSuchTask"])
    assert exit_info.value.code != 0
    assert "NoSuchTask" in capsys.readouterr().err


def test_command_line_wins_over_checkpoint_hyperparameters(in_tmp_cwd):
    """`vdf test --ckpt_path` takes the weights from the checkpoint and the settings from the command line."""
    fit = main(
        [
            "fit",
            *TINY,
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "0",
            "--model.init_args.eval_max_depth",
            "50",
        ]
    )
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    cli = main(
        [
            "test",
            *TINY,
            "--ckpt_path",
            ckpt,
            "--trainer.limit_test_batches",
            "1",
            "--model.init_args.eval_max_depth",
            "30",
        ]
    )
    assert cli.model.eval_max_depth == 30
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    for name, value in cli.model.state_dict().items():
        assert torch.equal(value.cpu(), state[name]), name
