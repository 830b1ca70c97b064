"""`vdf test` writes results files; `python -m vdf.results` collects runs into one table."""

import csv
import json
import os

import pytest
from recipes import tiny_args

from vdf.cli import main
from vdf.results import collect
from vdf.results import main as main_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vdf_test_writes_results_and_runs_collect_into_one_table(in_tmp_cwd):
    dirs = []
    for name, recipe in (("dav2", tiny_args("dav2")), ("flashdepth_s", tiny_args("flashdepth", "s"))):
        cli = main(["test", *recipe, "--model.init_args.tae", "true", "--trainer.limit_test_batches", "1"])
        dirs.append(cli.trainer.log_dir)
        run = json.loads(open(os.path.join(cli.trainer.log_dir, "results.json")).read())
        (row,) = run["rows"]
        logged = cli.trainer.callback_metrics
        assert row["dataset"] == "synthetic_world"
        assert row["abs_rel"] == pytest.approx(float(logged["test/synthetic_world/abs_rel"]))
        assert row["tae"] == pytest.approx(float(logged["test/synthetic_world/tae"]))
        assert row["frames_per_second"] > 0 and row["sequences"] == 1
        assert run["strategy"] == ("PerFrame" if name == "dav2" else "Streaming")
        with open(os.path.join(cli.trainer.log_dir, "results.csv")) as f:
            (csv_row,) = list(csv.DictReader(f))
        assert float(csv_row["delta1"]) == pytest.approx(row["delta1"])
        assert "| synthetic_world |" in open(os.path.join(cli.trainer.log_dir, "results.md")).read()
    table = main_results([*dirs, "--output", "comparison.md"])
    lines = [line for line in table.splitlines() if "synthetic_world" in line]
    assert len(lines) == 2 and "FrameDepthTask/PerFrame" in lines[0] and "FlashDepthTask/Streaming" in lines[1]
    assert "TAE ↓" in table and os.path.isfile("comparison.csv")
    with pytest.raises(FileNotFoundError, match="run `vdf test` first"):
        collect(["nowhere/results.json"])
