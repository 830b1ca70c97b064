"""What a new user meets in the first hour: short errors, honest notes, run folders, fine-tuning from a run."""

import json
import os
import subprocess
import sys

import pytest
import torch
from checkout import changed_paths
from recipes import tiny_args

from vdf.cli import entrypoint, main

TINY = tiny_args("dav2")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
FAST_FIT = ["--trainer.limit_train_batches=2", "--trainer.max_steps=2", "--trainer.limit_val_batches=1", *QUIET]


@pytest.fixture
def demo_videos(in_tmp_cwd):
    from vdf.data.demo import write_demo_videos

    write_demo_videos(str(in_tmp_cwd / "videos"), episodes=1, frames=4, height=32, width=48)
    return in_tmp_cwd / "videos"


def _exit_code(args, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code, capsys.readouterr().err


# -- errors and help ----------------------------------------------------------------------------
def test_a_misspelt_key_is_one_line_with_the_closest_name(in_tmp_cwd, capsys):
    code, err = _exit_code(["fit", *TINY, "--model.init_args.predictor.init_args.net.init_args.encodr", "vits"], capsys)
    assert code == 2
    first = err.splitlines()[0]
    assert first == (
        "vdf fit: error: model.init_args.predictor.init_args.net.init_args.encodr: DepthAnythingV2 has no argument "
        "'encodr' (did you mean 'encoder'?)"
    )
    assert len(err.splitlines()) == 2  # the cause and where to find the options, no usage dump


def test_a_misspelt_key_in_a_yaml_file_names_the_key(in_tmp_cwd, capsys):
    (in_tmp_cwd / "bad.yaml").write_text("model:\n  init_args:\n    eval_max_dept: 10\n")
    code, err = _exit_code(["fit", *TINY, "--config", "bad.yaml"], capsys)
    assert code == 2
    assert "model.init_args.eval_max_dept: FrameDepthTask has no argument" in err
    assert "did you mean 'eval_max_depth'" in err


def test_abbreviated_options_are_refused(in_tmp_cwd, capsys):
    code, err = _exit_code(["fit", *TINY, "--trainer.max_step", "2"], capsys)
    assert code == 2
    assert "unknown option --trainer.max_step (did you mean '--trainer.max_steps'?)" in err


def test_help_lists_the_tools_and_predict_help_starts_with_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "bench" in top and "experiment" in top
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    head = capsys.readouterr().out.splitlines()[:30]
    for option in ("--input", "--output", "--overwrite"):
        assert any(option in line for line in head), option


def test_bench_with_a_missing_config_is_one_line(in_tmp_cwd, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["vdf", "bench", "configs/no_such.yaml"])
    with pytest.raises(SystemExit) as exit_info:
        entrypoint()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "vdf bench: error: config file not found: 'configs/no_such.yaml'"


def test_print_config_shows_the_run_name(in_tmp_cwd, capsys):
    with pytest.raises(SystemExit):
        main(["fit", *tiny_args("flashdepth", "s"), "--print_config"])
    assert "name: flashdepth_s" in capsys.readouterr().out


# -- notes a user should see ------------------------------------------------------------------
def test_random_weights_are_announced_and_a_checkpoint_silences_it(in_tmp_cwd, capsys, demo_videos):
    cli = main(["fit", *TINY, *FAST_FIT])
    ckpt = os.path.join(cli.trainer.log_dir, "checkpoints", "last.ckpt")
    capsys.readouterr()
    main(["predict", *TINY, *QUIET, "--input", str(demo_videos), "--output", "out_random"])
    assert "runs with random weights" in capsys.readouterr().err
    main(["predict", *TINY, *QUIET, "--input", str(demo_videos), "--output", "out_trained", "--ckpt_path", ckpt])
    assert "random weights" not in capsys.readouterr().err


def test_tiny_configs_train_the_steps_asked_for(in_tmp_cwd):
    # The tiny overlay's epoch is 4 batches; --trainer.max_steps beyond it runs further epochs.
    cli = main(["fit", *TINY, *QUIET, "--trainer.max_steps", "6", "--trainer.limit_val_batches=1"])
    assert cli.trainer.global_step == 6


# -- run folders --------------------------------------------------------------------------------
def test_predict_creates_no_run_folder(in_tmp_cwd, demo_videos):
    main(["predict", *TINY, *QUIET, "--input", str(demo_videos), "--output", "out"])
    assert (in_tmp_cwd / "out" / "manifest.json").is_file()
    assert not (in_tmp_cwd / "runs").exists()


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(in_tmp_cwd, monkeypatch):
    from vdf.tasks.base import VideoDepthTask

    def broken(self, batch, batch_idx):
        raise RuntimeError("broken step")

    monkeypatch.setattr(VideoDepthTask, "training_step", broken)
    with pytest.raises(RuntimeError, match="broken step"):
        main(["fit", *TINY, *FAST_FIT, "--trainer.num_sanity_val_steps=0"])
    assert list((in_tmp_cwd / "runs" / "dav2").glob("version_*")) == []


# -- predict outputs know where they came from ----------------------------------------------------
def test_another_model_into_the_same_folder_is_refused(in_tmp_cwd, demo_videos, capsys):
    main(["predict", *TINY, *QUIET, "--input", str(demo_videos), "--output", "out"])
    manifest = json.loads((in_tmp_cwd / "out" / "manifest.json").read_text())
    assert manifest["source"]["task"] == "vdf.tasks.FrameDepthTask"
    assert manifest["strategy"]["class"] == "PerFrame"
    per_video = json.loads((in_tmp_cwd / "out" / "episode_00000.json").read_text())
    assert per_video["source"]["fingerprint"] == manifest["source"]["fingerprint"]

    # The same model again: skipped, and the note says why.
    capsys.readouterr()
    main(["predict", *TINY, *QUIET, "--input", str(demo_videos), "--output", "out"])
    assert "complete from an earlier run of this model; --overwrite true redoes it" in capsys.readouterr().err

    flash = [*tiny_args("flashdepth", "s"), *QUIET, "--input", str(demo_videos), "--output", "out"]
    with pytest.raises(ValueError, match=r"out holds outputs of another model \(vdf.tasks.FrameDepthTask from .*dav2"):
        main(["predict", *flash])
    # --overwrite replaces them, and the folder then records the new model.
    main(["predict", *flash, "--overwrite", "true"])
    manifest = json.loads((in_tmp_cwd / "out" / "manifest.json").read_text())
    assert manifest["source"]["task"] == "vdf.tasks.FlashDepthTask"
    assert manifest["counts"]["ok"] == 1


# -- fine-tuning from a run -----------------------------------------------------------------------
def test_fine_tuning_from_a_runs_checkpoint_starts_from_its_weights_and_trains(in_tmp_cwd, capsys):
    first = main(["fit", *TINY, *FAST_FIT])
    ckpt = os.path.join(first.trainer.log_dir, "checkpoints", "last.ckpt")
    trained = torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"]

    start = main(["fit", *TINY, *QUIET, "--model.init_args.init_weights", ckpt, "--trainer.max_steps=0"])
    assert all(torch.equal(v, trained[k]) for k, v in start.model.state_dict().items())

    tuned = main(["fit", *TINY, *FAST_FIT, "--model.init_args.init_weights", ckpt])
    assert tuned.trainer.global_step == 2
    changed = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, trained[k])]
    assert changed

    # Resuming the finished run instead says what to do.
    capsys.readouterr()
    main(["fit", *TINY, *FAST_FIT, "--ckpt_path", ckpt])
    assert "--ckpt_path resumes that run, which has nothing left to do" in capsys.readouterr().err


def test_a_runs_checkpoint_as_network_weights_says_to_use_init_weights(in_tmp_cwd):
    from vdf.models.weights import StateDictMismatchError

    first = main(["fit", *TINY, *FAST_FIT])
    ckpt = os.path.join(first.trainer.log_dir, "checkpoints", "last.ckpt")
    with pytest.raises(StateDictMismatchError, match="checkpoint of a vdf run.*init_weights"):
        main(["validate", *TINY, *QUIET, "--model.init_args.predictor.init_args.net.init_args.weights", ckpt])


# -- the suite leaves the checkout as it found it -------------------------------------------------
def test_checkout_changes_are_found(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("runs/\n__pycache__/\n")
    before = changed_paths(repo)
    (repo / "runs" / "x" / "version_0").mkdir(parents=True)
    (repo / "runs" / "x" / "version_0" / "events").write_text("")
    (repo / "__pycache__").mkdir()
    (repo / "__pycache__" / "m.pyc").write_text("")
    assert changed_paths(repo) - before == {"runs/x/version_0/events"}
