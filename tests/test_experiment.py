"""`vdf experiment`: grid expansion, overlays, stages and placeholders, resume, tables and plots."""

import csv
import json
import os

import pytest
import yaml
from recipes import tiny_files

from vdf.cli import run
from vdf.experiment import Experiment, Overlay, expand, parse_overlay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAV2 = tiny_files("dav2")
FAST = {
    "trainer.limit_train_batches": 1,
    "trainer.limit_val_batches": 1,
    "trainer.limit_test_batches": 1,
    "trainer.max_epochs": 1,
}
PNG = b"\x89PNG\r\n\x1a\n"


def write_grid(folder, grid):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    return folder


def test_overlays_parse_and_merge_in_order():
    a = parse_overlay(["x.yaml", {"model.init_args.optimizer.init_args.lr": 1.0, "config": ["y.yaml"]}], "t")
    assert (
        a.configs == ["x.yaml", "y.yaml"]
        and a.overrides == {"model.init_args.optimizer.init_args.lr": 1.0}
        and a.stages is None
    )
    b = a.merge(parse_overlay({"model.init_args.optimizer.init_args.lr": 2.0, "stages": ["test"]}, "t"))
    assert (
        b.overrides["model.init_args.optimizer.init_args.lr"] == 2.0
        and b.stages == ["test"]
        and b.configs == ["x.yaml", "y.yaml"]
    )
    assert parse_overlay(None, "t") == Overlay()
    with pytest.raises(ValueError, match="overlay"):
        parse_overlay(3, "axis a, label b")


def test_grid_expands_to_the_product_and_unions_subgrids():
    grid = {
        "base": ["b.yaml"],
        "axes": {"m": {"x": "x.yaml", "y": {}}, "steps": {"1": {"a": 1}, "2": {"a": 2}, "4": {"a": 4}}},
    }
    cells = expand(grid)
    assert len(cells) == 6
    assert cells[0].id == "m=x__steps=1" and cells[0].labels == {"m": "x", "steps": "1"}
    assert cells[0].overlay.configs == ["x.yaml"] and cells[0].base == ["b.yaml"]
    assert cells[-1].overlay.overrides == {"a": 4}
    union = expand(
        {
            "grids": [
                {"axes": {"m": {"x": {}}, "t": {"on": {}, "off": {}}}},
                {"axes": {"m": {"x": {}, "z": {}}, "t": {"on": {}}}},
            ]
        }
    )
    assert [c.id for c in union] == ["m=x__t=on", "m=x__t=off", "m=z__t=on"], "duplicates across sub-grids run once"


def test_tiny_mode_adds_each_recipes_tiny_overlay(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    folder = write_grid(
        tmp_path / "exp", {"axes": {"m": {"dav2": "configs/dav2.yaml"}}, "stages": [{"name": "t", "command": "test"}]}
    )
    tiny = Experiment(str(folder), tiny=True)
    assert tiny.config_args(["configs/dav2.yaml"]) == [
        "--config",
        "configs/dav2.yaml",
        "--config",
        os.path.join("configs", "tiny", "dav2.yaml"),
    ]
    # After the recipe's stage overlay, before a data overlay; never twice.
    stage = ["configs/depthcrafter.yaml", "configs/depthcrafter/stage2.yaml", "configs/data/sintel.yaml"]
    assert tiny.config_args(stage)[1::2] == [
        stage[0],
        stage[1],
        os.path.join("configs", "tiny", "depthcrafter.yaml"),
        stage[2],
    ]
    assert tiny.config_args(["configs/dav2.yaml", "configs/tiny/dav2.yaml"])[1::2] == [
        "configs/dav2.yaml",
        "configs/tiny/dav2.yaml",
    ]
    assert Experiment(str(folder), tiny=False).config_args(["configs/dav2.yaml"]) == ["--config", "configs/dav2.yaml"]
    # From elsewhere, configs/ is found above an experiment folder inside the repository.
    inside = write_grid(tmp_path / "repo" / "experiments" / "e", {"axes": {"m": {"x": {}}}})
    (tmp_path / "repo" / "configs" / "tiny").mkdir(parents=True)
    (tmp_path / "repo" / "configs" / "a.yaml").write_text("{}")
    (tmp_path / "repo" / "configs" / "tiny" / "a.yaml").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert Experiment(str(inside), tiny=True).config_args(["configs/a.yaml"])[1::2] == [
        str(tmp_path / "repo" / "configs" / "a.yaml"),
        str(tmp_path / "repo" / "configs" / "tiny" / "a.yaml"),
    ]
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        Experiment(str(folder)).resolve_config("configs/missing.yaml")


def test_runs_cells_resumes_and_writes_table_csv_and_plots(tmp_path):
    folder = write_grid(
        tmp_path / "exp",
        {
            "title": "toy",
            "base": DAV2,
            "axes": {
                "lr": {
                    "low": {"model.init_args.optimizer.init_args.lr": 1.0e-4},
                    "high": {"model.init_args.optimizer.init_args.lr": 1.0e-3},
                },
                "steps": {"1": {"trainer.max_steps": 1}, "2": {"trainer.max_steps": 2}},
            },
            "stages": [{"name": "test", "command": "test", "args": FAST}],
            "metrics": ["abs_rel", "delta1"],
        },
    )
    out = tmp_path / "out"
    first = run(["experiment", str(folder), "--output", str(out)])
    assert first["counts"] == {"cells_run": 4, "cells_skipped": 0, "stages_run": 4, "stages_skipped": 0}
    for cell in ("lr=low__steps=1", "lr=high__steps=2"):
        record = json.loads((out / "cells" / cell / "cell.json").read_text())
        assert record["rows"] and 0 < record["metrics"]["abs_rel"] < 10 and record["fps"] > 0
    # Resume: nothing runs again, the tables are rewritten from cell.json.
    (out / "results.md").unlink()
    second = run(["experiment", str(folder), "--output", str(out)])
    assert second["counts"] == {"cells_run": 0, "cells_skipped": 4, "stages_run": 0, "stages_skipped": 0}
    table = (out / "results.md").read_text()
    assert "| lr | steps | AbsRel ↓ | δ1 ↑ | frames/s | configs |" in table
    assert table.count("| low |") == 2 and "[dav2.yaml](" in table
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["cell"] for r in rows] == ["lr=low__steps=1", "lr=low__steps=2", "lr=high__steps=1", "lr=high__steps=2"]
    assert rows[0]["abs_rel"] == str(
        json.loads((out / "cells" / rows[0]["cell"] / "cell.json").read_text())["metrics"]["abs_rel"]
    )
    for name in ("abs_rel_vs_fps.png", "delta1_vs_fps.png", "abs_rel_vs_steps.png", "delta1_vs_steps.png"):
        assert (out / name).read_bytes()[:8] == PNG, name


def test_stage_chain_shares_stages_between_cells(tmp_path):
    """DepthCrafter-style: stage 1, 1+2 and 1+2+3, each stage starting from the previous checkpoint."""
    # `ckpt_path` resumes the previous stage's run: each stage trains one epoch further.
    fit = {"command": "fit"}
    folder = write_grid(
        tmp_path / "exp",
        {
            "base": DAV2,
            "axes": {
                "training": {
                    "s1": {"stages": ["s1", "test"]},
                    "s12": {"stages": ["s1", "s2", "test"]},
                    "s123": {"stages": ["s1", "s2", "s3", "test"]},
                }
            },
            "stages": [
                {"name": "s1", "command": "fit", "args": FAST},
                {"name": "s2", **fit, "args": {**FAST, "trainer.max_epochs": 2, "ckpt_path": "{prev.ckpt}"}},
                {"name": "s3", **fit, "args": {**FAST, "trainer.max_epochs": 3, "ckpt_path": "{prev.ckpt}"}},
                {"name": "test", "command": "test", "args": {**FAST, "ckpt_path": "{prev.ckpt}"}},
            ],
        },
    )
    out = tmp_path / "out"
    result = run(["experiment", str(folder), "--output", str(out)])
    # s1 runs once for three cells, s2 once for two: 3 fits + 3 tests.
    assert result["counts"]["stages_run"] == 6 and result["counts"]["stages_skipped"] == 3
    s123 = json.loads((out / "cells" / "training=s123" / "cell.json").read_text())
    s12 = json.loads((out / "cells" / "training=s12" / "cell.json").read_text())
    assert s123["stages"]["s1"] == s12["stages"]["s1"]
    assert s123["stages"]["s2"]["ckpt"] in s123["stages"]["s3"]["command"]
    assert s123["stages"]["s3"]["ckpt"] in s123["stages"]["test"]["command"]
    assert s123["results_stage"] == "test" and s123["rows"]


def test_bench_section_measures_cells_side_by_side(tmp_path):
    folder = write_grid(
        tmp_path / "exp",
        {
            "base": DAV2,
            "axes": {
                "size": {
                    "small": {"model.init_args.predictor.init_args.input_size": 28},
                    "big": {"model.init_args.predictor.init_args.input_size": 56},
                }
            },
            "stages": [{"name": "test", "command": "test", "args": FAST}],
            "bench": {"height": 28, "width": 42, "frames": 4, "warmup": 1, "repeats": 1, "video": "random"},
        },
    )
    out = tmp_path / "out"
    run(["experiment", str(folder), "--output", str(out)])
    for cell in ("size=small", "size=big"):
        record = json.loads((out / "cells" / cell / "cell.json").read_text())
        assert record["fps_source"] == "vdf bench" and record["bench"]["frames_counted"] == [4]
        assert record["peak_memory_mb"] is None, "in-process CPU memory is not reported as a measurement"


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="grid.yaml"):
        run(["experiment", str(tmp_path)])
    folder = write_grid(tmp_path / "e", {"axes": {"a": {"x": {"stages": ["nope"]}}}})
    with pytest.raises(ValueError, match="unknown stages"):
        Experiment(str(folder)).run()
    folder = write_grid(tmp_path / "f", {"axes": {"a": {"x": {}}}, "stages": [{"name": "s", "command": "train"}]})
    with pytest.raises(ValueError, match="command must be one of"):
        Experiment(str(folder))


def test_publish_fills_the_docs_page_and_copies_plots(tmp_path):
    docs = tmp_path / "docs" / "recipes"
    docs.mkdir(parents=True)
    page = docs / "toy.md"
    page.write_text("# Toy\n\n<!-- results:tiny:start -->\nold\n<!-- results:tiny:end -->\n\nafter\n")
    folder = write_grid(
        tmp_path / "experiments" / "toy",
        {
            "page": str(page),
            "base": DAV2,
            "axes": {"m": {"a": {}}},
            "stages": [{"name": "test", "command": "test", "args": FAST}],
        },
    )
    run(["experiment", str(folder), "--tiny", "--output", str(tmp_path / "out"), "--publish"])
    text = page.read_text()
    assert "old" not in text and "| m | AbsRel ↓ |" in text and text.endswith("after\n")
    assert (tmp_path / "docs" / "assets" / "toy" / "tiny" / "abs_rel_vs_fps.png").read_bytes()[:8] == PNG
