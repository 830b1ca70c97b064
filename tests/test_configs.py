"""Every config parses; every tiny config runs fit, validate and test in-process on CPU."""

import glob
import os

import pytest
import yaml

from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    if os.sep + "data" + os.sep not in p
)
DATA_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "data", "*.yaml")))
TINY_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "tiny", "*.yaml")))


def _rel(p):
    return os.path.relpath(p, ROOT)


def test_there_are_configs_and_every_recipe_has_a_tiny_twin():
    assert TINY_CONFIGS
    recipes = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml"))}
    tiny = {os.path.basename(p) for p in TINY_CONFIGS}
    assert recipes - {"quickstart.yaml"} <= tiny, f"recipes without a tiny twin: {recipes - tiny}"


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=_rel)
def test_config_parses_with_print_config(config, capsys, in_tmp_cwd):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("vdf.")
    assert resolved["seed_everything"] is not None


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=_rel)
def test_data_config_parses(config, capsys, in_tmp_cwd):
    tiny = os.path.join(ROOT, "configs", "tiny", "dav2.yaml")
    with pytest.raises(SystemExit):
        main(["fit", "--config", tiny, "--config", config, "--print_config"])
    resolved = yaml.safe_load(capsys.readouterr().out)["data"]
    with open(config) as f:
        layered = yaml.safe_load(f)["data"]
    # The data config replaces the model config's data section, key by key.
    for key, value in layered.items():
        if key in ("train", "val", "test", "predict"):
            assert [d["class_path"] for d in resolved[key]] == [d["class_path"] for d in value]
            for got, wanted in zip(resolved[key], value):
                for arg, setting in wanted.get("init_args", {}).items():
                    assert got["init_args"][arg] == setting, (key, arg)
        else:
            assert resolved[key] == value


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=_rel)
def test_tiny_config_fits_validates_and_tests(config, in_tmp_cwd):
    fast = ["--trainer.max_epochs", "1", "--trainer.max_steps", "-1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1"]
    cli = main(["fit", "--config", config, *fast])
    trainer = cli.trainer
    assert trainer.global_step == 2
    log_dir = trainer.log_dir
    assert os.path.isfile(os.path.join(log_dir, "config.yaml")), "resolved config is saved per run"
    ckpt = os.path.join(log_dir, "checkpoints", "last.ckpt")
    assert os.path.isfile(ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert "train/loss" in metrics and "val/abs_rel" in metrics
    for split in ("validate", "test"):
        cli = main([split, "--config", config, "--ckpt_path", ckpt, *fast])
        key = "val/abs_rel" if split == "validate" else "test/abs_rel"
        value = float(cli.trainer.callback_metrics[key])
        assert 0.0 <= value < 10.0
