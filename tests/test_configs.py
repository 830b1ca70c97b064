"""Every recipe parses, at paper scale and with its tiny overlay; every tiny recipe runs fit, validate
and test in-process on CPU. Recipes are composed: a family base (``configs/<family>.yaml``), its
stage overlays (``configs/<family>/<stage>.yaml``), one tiny overlay per family
(``configs/tiny/<family>.yaml``) and the data overlays (``configs/data/*.yaml``)."""

import glob
import os

import pytest
import yaml
from recipes import tiny_files

from vdf.cli import carried_init_args, main, tiny_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
# A recipe: its family base, then one stage overlay (or none).
RECIPES = [[os.path.join(ROOT, "configs", f"{f}.yaml")] for f in FAMILIES] + [
    [os.path.join(ROOT, "configs", f"{os.path.basename(os.path.dirname(p))}.yaml"), p]
    for p in sorted(glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml")))
    if os.path.basename(os.path.dirname(p)) in FAMILIES
]
DATA_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "data", "*.yaml")))
TINY_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "tiny", "*.yaml")))


def _rel(p):
    if isinstance(p, list):
        return "+".join(_rel(x) for x in p)
    return os.path.relpath(p, ROOT)


def _args(configs):
    return [x for c in configs for x in ("--config", c)]


def test_every_family_has_one_tiny_overlay_and_every_overlay_a_family():
    tiny = {os.path.splitext(os.path.basename(p))[0] for p in TINY_CONFIGS}
    assert set(FAMILIES) - {"quickstart"} == tiny
    folders = {os.path.basename(os.path.dirname(p)) for p in glob.glob(os.path.join(ROOT, "configs", "*", "*.yaml"))}
    assert folders - {"tiny", "data", "strategy"} <= set(FAMILIES), "a stage folder without its family base"


@pytest.mark.parametrize("recipe", RECIPES, ids=_rel)
def test_recipe_parses_at_paper_scale_and_with_its_tiny_overlay(recipe, capsys, in_tmp_cwd):
    for configs in (recipe, tiny_configs(recipe)):
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *_args(configs), "--print_config"])
        assert exit_info.value.code in (0, None)
        resolved = yaml.safe_load(capsys.readouterr().out)
        assert resolved["model"]["class_path"].startswith("vdf.")
        assert resolved["model"]["init_args"]["predictor"]["class_path"].startswith("vdf.predictors.")
        assert resolved["seed_everything"] is not None
        # No overlay silently carries a replaced class's arguments over to another class.
        assert carried_init_args(configs) == []


@pytest.mark.parametrize("config", DATA_CONFIGS, ids=_rel)
def test_data_config_parses(config, capsys, in_tmp_cwd):
    base = tiny_files("dav2")
    with pytest.raises(SystemExit):
        main(["fit", *_args(base), "--config", config, "--print_config"])
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


@pytest.mark.parametrize("recipe", [r for r in RECIPES if tiny_configs(r) != r], ids=_rel)
def test_tiny_recipe_fits_validates_and_tests(recipe, in_tmp_cwd):
    config = _args(tiny_configs(recipe))
    fast = [
        "--trainer.max_epochs",
        "1",
        "--trainer.max_steps",
        "-1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.limit_test_batches",
        "1",
    ]
    cli = main(["fit", *config, *fast])
    trainer = cli.trainer
    assert trainer.global_step == 2
    log_dir = trainer.log_dir
    assert os.path.isfile(os.path.join(log_dir, "config.yaml")), "resolved config is saved per run"
    ckpt = os.path.join(log_dir, "checkpoints", "last.ckpt")
    assert os.path.isfile(ckpt)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert "train/loss" in metrics and "val/abs_rel" in metrics
    for split in ("validate", "test"):
        cli = main([split, *config, "--ckpt_path", ckpt, *fast])
        key = "val/abs_rel" if split == "validate" else "test/abs_rel"
        value = float(cli.trainer.callback_metrics[key])
        assert 0.0 <= value < 10.0
