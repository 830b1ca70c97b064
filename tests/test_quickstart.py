"""The quickstart recipe learns: a short run cuts validation AbsRel well below the untrained model's."""

import os

from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")


def test_quickstart_training_lowers_validation_abs_rel(in_tmp_cwd):
    before = main(["validate", "--config", QUICKSTART]).trainer.callback_metrics["val/abs_rel"].item()
    # Two epochs instead of ten keep the suite fast; the full recipe goes further (docs/quickstart.md).
    cli = main(["fit", "--config", QUICKSTART, "--trainer.max_epochs", "2"])
    after = cli.trainer.callback_metrics["val/abs_rel"].item()
    assert before > 0.2, before
    assert after < 0.7 * before, (before, after)
