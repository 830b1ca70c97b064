"""``vdf experiment FOLDER``: run an ablation grid, resume it, and write its tables and plots.

    vdf experiment experiments/flashdepth_temporal           # full mode (GPU-scale configs)
    vdf experiment experiments/flashdepth_temporal --tiny    # tiny mode: the configs' tiny overlays, on CPU

An experiment is a folder holding ``grid.yaml`` (schema in ``docs/experiments.md``): base configs,
axes mapping a name to labelled *overlays*, the *stages* each cell runs (``vdf fit``, ``vdf test``
... with placeholders such as ``{fit.ckpt}`` for an earlier stage's checkpoint), the metrics to
collect, an optional speed measurement (`vdf.bench`), and a ``tiny:`` section. The cells are the
product of the axes (or the union of several such products, ``grids:``).

Every stage runs in-process through `vdf.cli.main` in ``<output>/stages/<stage>-<hash>/``, the hash
being that of its exact command line, so cells that share a stage (the same training run tested
with two strategies, DepthCrafter's stage 1 under stages 1+2 and 1+2+3) run it once; a stage with a
``stage.json`` is done. A cell writes ``<output>/cells/<id>/cell.json`` (its commands, metrics from
the ``vdf test`` results file, frames/s and memory) and is skipped when that exists. At the end
``results.md``, ``results.csv`` and PNG plots (each metric against frames/s, and against the
``steps`` axis when there is one) are written to ``<output>`` (default ``FOLDER/results/tiny`` or
``FOLDER/results/full``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from jsonargparse import ActionYesNo, ArgumentParser

from vdf.io import write_json_atomic

GRID_FILE = "grid.yaml"
DEFAULT_STAGES = [
    {"name": "fit", "command": "fit"},
    {"name": "test", "command": "test", "args": {"ckpt_path": "{fit.ckpt}"}},
]
COMMANDS = ("fit", "validate", "test", "predict")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\.(ckpt|dir)\}")
_HEADERS = {"abs_rel": "AbsRel ↓", "delta1": "δ1 ↑", "rmse": "RMSE ↓", "tae": "TAE ↓", "boundary_f1": "boundary F1 ↑"}


# --------------------------------------------------------------------------- grid


@dataclass
class Overlay:
    """What an axis label adds to a cell: config files, dotted overrides, and optionally its stages."""

    configs: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    stages: list[str] | None = None

    def merge(self, other: Overlay) -> Overlay:
        return Overlay(
            self.configs + other.configs,
            {**self.overrides, **other.overrides},
            other.stages if other.stages is not None else self.stages,
        )


@dataclass
class Cell:
    id: str
    labels: dict[str, str]
    base: list[str]
    overlay: Overlay


def parse_overlay(value: Any, where: str) -> Overlay:
    """An overlay: a config path, a mapping of dotted overrides (reserved keys ``config`` and
    ``stages``), ``null``/``{}`` for nothing, or a list of these merged in order."""
    if value is None:
        return Overlay()
    if isinstance(value, str):
        return Overlay(configs=[value])
    if isinstance(value, list):
        out = Overlay()
        for item in value:
            out = out.merge(parse_overlay(item, where))
        return out
    if isinstance(value, dict):
        value = dict(value)
        configs = value.pop("config", None) or []
        stages = value.pop("stages", None)
        if stages is not None and not isinstance(stages, list):
            raise ValueError(f"{where}: 'stages' must be a list of stage names, got {stages!r}")
        return Overlay(configs=[configs] if isinstance(configs, str) else list(configs), overrides=value, stages=stages)
    raise ValueError(f"{where}: an overlay is a config path, a mapping of dotted overrides or a list, got {value!r}")


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", str(label))


def expand(grid: dict[str, Any]) -> list[Cell]:
    """The cells of a grid: the product of ``axes`` (or the union of the products of ``grids``)."""
    base = grid.get("base") or []
    subgrids = grid.get("grids") or [{"axes": grid.get("axes") or {}}]
    cells: dict[str, Cell] = {}
    for sub in subgrids:
        axes = sub.get("axes") or {}
        sub_base = sub.get("base", base)
        sub_base = [sub_base] if isinstance(sub_base, str) else list(sub_base)
        names = list(axes)
        choices = []
        for name in names:
            labels = axes[name]
            if not isinstance(labels, dict) or not labels:
                raise ValueError(f"axis {name!r} must map labels to overlays, got {labels!r}")
            choices.append(
                [(str(label), parse_overlay(v, f"axis {name}, label {label}")) for label, v in labels.items()]
            )
        for combo in itertools.product(*choices):
            overlay = Overlay()
            labels = {}
            for name, (label, item) in zip(names, combo):
                overlay = overlay.merge(item)
                labels[name] = label
            cell_id = "__".join(f"{_safe(n)}={_safe(l)}" for n, l in labels.items()) or "default"
            if cell_id in cells:
                continue
            cells[cell_id] = Cell(cell_id, labels, sub_base, overlay)
    return list(cells.values())


_PREDICTOR = "model.init_args.predictor"


def _grouped(overrides: dict[str, Any]) -> list[tuple[str, Any]]:
    """The overrides as command-line pairs, those of the predictor's settings gathered into one
    ``--model.init_args.predictor {"init_args": {...}}`` layer (`vdf.api.nest_dotted`: a ``null``
    stays ``null``)."""
    from vdf.api import nest_dotted

    prefix = _PREDICTOR + ".init_args."
    pairs: list[tuple[str, Any]] = [(k, v) for k, v in overrides.items() if not k.startswith(prefix)]
    predictor = {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
    if predictor:
        # Placed where the first predictor setting stood: the other overrides are other keys.
        first = next(i for i, k in enumerate(overrides) if k.startswith(prefix))
        pairs.insert(first, (_PREDICTOR, {"init_args": nest_dotted(predictor)}))
    return pairs


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


# --------------------------------------------------------------------------- runner


class Experiment:
    """A grid folder and where its runs go. ``run()`` runs every cell (resuming) and writes the tables."""

    def __init__(self, folder: str, tiny: bool = False, output: str | None = None, only: list[str] | None = None):
        self.folder = Path(folder)
        grid_file = self.folder / GRID_FILE
        if not grid_file.is_file():
            raise FileNotFoundError(
                f"no {GRID_FILE} in {str(self.folder)!r}: an experiment is a folder holding {GRID_FILE}"
            )
        self.grid = yaml.safe_load(grid_file.read_text()) or {}
        self.tiny = tiny
        self.tiny_section = self.grid.get("tiny") or {}
        mode = "tiny" if tiny else "full"
        self.output = Path(output) if output else self.folder / "results" / mode
        self.cells = expand(self.grid)
        if only:
            unknown = set(only) - {c.id for c in self.cells}
            if unknown:
                raise ValueError(f"unknown cells {sorted(unknown)}; the grid has {[c.id for c in self.cells]}")
            self.cells = [c for c in self.cells if c.id in only]
        self.stages = self.grid.get("stages") or DEFAULT_STAGES
        names = [s["name"] for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        for stage in self.stages:
            if stage.get("command") not in COMMANDS:
                raise ValueError(
                    f"stage {stage['name']!r}: command must be one of {COMMANDS}, got {stage.get('command')!r}"
                )
        self.metrics = list(self.grid.get("metrics") or ["abs_rel", "delta1"])
        self.counts = {"cells_run": 0, "cells_skipped": 0, "stages_run": 0, "stages_skipped": 0}
        self._done: dict[str, dict[str, Any]] = {}

    # -- paths ----------------------------------------------------------------------------------
    def _find(self, path: str) -> str | None:
        """``path`` relative to the experiment folder, the working directory, or a folder above
        the experiment (the repository root holding ``configs/``), first found."""
        candidates = [self.folder / path, Path(path), *(parent / path for parent in self.folder.resolve().parents)]
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        return None

    def resolve_config(self, path: str) -> str:
        """A config file of the grid (see `_find`); in tiny mode, the ``tiny.configs`` mapping applies."""
        if self.tiny:
            path = (self.tiny_section.get("configs") or {}).get(path, path)
        found = self._find(path)
        if found is None:
            raise FileNotFoundError(
                f"config file not found: {path!r} (looked in {str(self.folder)!r}, the working directory and above the folder)"
            )
        return found

    def config_args(self, configs: list[str]) -> list[str]:
        """``--config`` arguments of ``configs``; in tiny mode with each recipe's tiny overlay
        (``configs/tiny/<family>.yaml``, `vdf.cli.tiny_configs`)."""
        from vdf.cli import tiny_configs

        paths = [self.resolve_config(c) for c in configs]
        if self.tiny:
            paths = tiny_configs(paths)
        return [x for path in paths for x in ("--config", path)]

    def stage_list(self, cell: Cell) -> list[dict[str, Any]]:
        if cell.overlay.stages is None:
            return self.stages
        by_name = {s["name"]: s for s in self.stages}
        missing = [n for n in cell.overlay.stages if n not in by_name]
        if missing:
            raise ValueError(f"cell {cell.id}: unknown stages {missing}; grid.yaml defines {list(by_name)}")
        return [by_name[n] for n in cell.overlay.stages]

    # -- commands -------------------------------------------------------------------------------
    def _placeholder(self, cell: Cell, ran: dict[str, dict[str, Any]], previous: str | None, match: re.Match) -> str:
        ref, what = match.group(1), match.group(2)
        if ref == "prev":
            if previous is None:
                raise ValueError(f"cell {cell.id}: {{prev.{what}}} in the first stage")
            ref = previous
        if "/" in ref:  # another cell's stage: "<cell id>/<stage>"
            other_id, stage = ref.rsplit("/", 1)
            info = self.run_cell(self._cell(other_id))["stages"].get(stage)
        else:
            info = ran.get(ref)
        if info is None:
            raise ValueError(f"cell {cell.id}: placeholder {match.group(0)} names a stage that has not run before it")
        if what == "ckpt":
            if not info.get("ckpt"):
                raise ValueError(f"cell {cell.id}: {match.group(0)}: stage wrote no checkpoint")
            return info["ckpt"]
        return info["dir"]

    def _cell(self, cell_id: str) -> Cell:
        for c in expand(self.grid):
            if c.id == cell_id:
                return c
        raise ValueError(f"unknown cell {cell_id!r} in a placeholder")

    def stage_args(
        self, cell: Cell, stage: dict[str, Any], ran: dict[str, dict[str, Any]], previous: str | None
    ) -> list[str]:
        """The command line of one stage of one cell (without the run-directory arguments).

        Order (later wins): base configs, the stage's configs, the cell's overlay configs, the
        cell's overrides, the stage's ``args``, the ``tiny.overrides`` in tiny mode.
        """
        stage_configs = stage.get("config") or []
        stage_configs = [stage_configs] if isinstance(stage_configs, str) else list(stage_configs)
        configs = [*cell.base, *stage_configs, *cell.overlay.configs]
        args = [stage["command"], *self.config_args(configs)]
        overrides = {**cell.overlay.overrides, **(stage.get("args") or {})}
        if self.tiny:
            overrides.update(self.tiny_section.get("overrides") or {})
        for key, value in _grouped(overrides):
            value = _cli_value(value)
            value = _PLACEHOLDER.sub(lambda m: self._placeholder(cell, ran, previous, m), value)
            args += [f"--{key}", value]
        return args

    def run_stage(self, args: list[str], name: str) -> dict[str, Any]:
        from vdf.cli import main

        digest = hashlib.sha1(json.dumps(args).encode()).hexdigest()[:10]
        directory = self.output / "stages" / f"{_safe(name)}-{digest}"
        marker = directory / "stage.json"
        if marker.is_file():
            self.counts["stages_skipped"] += 1
            return json.loads(marker.read_text())
        run_dir = [
            "--trainer.logger.init_args.save_dir",
            str(directory),
            "--trainer.logger.init_args.name",
            "",
            "--trainer.logger.init_args.version",
            "",
        ]
        cli = main([*args, *run_dir])
        log_dir = Path(cli.trainer.log_dir or directory)
        ckpt = log_dir / "checkpoints" / "last.ckpt"
        results = log_dir / "results.json"
        info = {
            "command": "vdf " + " ".join(_quote(a) for a in args),
            "dir": str(log_dir),
            "ckpt": str(ckpt) if ckpt.is_file() else None,
            "results": str(results) if results.is_file() and args[0] == "test" else None,
        }
        write_json_atomic(marker, info)
        self.counts["stages_run"] += 1
        return info

    def bench_args(self, cell: Cell) -> list[str]:
        """The model a cell measures: its configs and overrides (those that are not run paths)."""
        args = self.config_args([*cell.base, *cell.overlay.configs])
        for key, value in _grouped(cell.overlay.overrides):
            if key.split(".")[0] in ("model", "seed_everything"):
                args += [f"--{key}", _cli_value(value)]
        return args

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        if cell.id in self._done:
            return self._done[cell.id]
        path = self.output / "cells" / cell.id / "cell.json"
        if path.is_file():
            self.counts["cells_skipped"] += 1
            self._done[cell.id] = json.loads(path.read_text())
            return self._done[cell.id]
        ran: dict[str, dict[str, Any]] = {}
        previous = None
        stages = self.stage_list(cell)
        for stage in stages:
            args = self.stage_args(cell, stage, ran, previous)
            ran[stage["name"]] = self.run_stage(args, stage["name"])
            previous = stage["name"]
        result_stage = next((s["name"] for s in reversed(stages) if s.get("results")), None)
        if result_stage is None:
            result_stage = next((s["name"] for s in reversed(stages) if s["command"] == "test"), None)
        rows: list[dict[str, Any]] = []
        if result_stage is not None and ran[result_stage].get("results"):
            rows = json.loads(Path(ran[result_stage]["results"]).read_text()).get("rows", [])
        metrics = {}
        for key in [*self.metrics, "frames_per_second"]:
            values = [r[key] for r in rows if r.get(key) is not None]
            if values:
                metrics[key] = statistics.fmean(values)
        record: dict[str, Any] = {
            "id": cell.id,
            "labels": cell.labels,
            "configs": self.config_args([*cell.base, *cell.overlay.configs])[1::2],
            "overrides": cell.overlay.overrides,
            "stages": ran,
            "results_stage": result_stage,
            "rows": rows,
            "metrics": metrics,
            "fps": metrics.get("frames_per_second"),
            "fps_source": "vdf test" if "frames_per_second" in metrics else None,
            "peak_memory_mb": None,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
        self.counts["cells_run"] += 1
        self._done[cell.id] = record
        return record

    def bench(self, records: list[dict[str, Any]]) -> int:
        """Speed (and memory) of the cells not yet measured, side by side in one `vdf.bench` run.

        Round robin over the cells, so their frames/s are comparable; the result is stored in
        each ``cell.json`` (a resumed run measures only the new cells). Returns how many ran.
        """
        bench = self._bench_settings()
        todo = [r for r in records if bench is not None and "bench" not in r]
        if not todo:
            return 0
        from vdf.bench import BenchSpec, measure

        settings, isolate = bench
        by_id = {c.id: c for c in expand(self.grid)}
        specs = [BenchSpec(name=r["id"], args=self.bench_args(by_id[r["id"]])) for r in todo]
        results = measure(specs, settings, isolate=isolate)
        sound_memory = isolate or settings.device.startswith("cuda")
        for record, result in zip(todo, results):
            record.update(
                fps=result.fps,
                fps_source="vdf bench",
                peak_memory_mb=result.peak_memory_mb if sound_memory else None,
                bench={
                    "settings": dict(settings.__dict__),
                    "isolate": isolate,
                    "strategy": result.strategy,
                    "seconds": result.seconds,
                    "frames_counted": result.frames_counted,
                    "peak_memory_mb": result.peak_memory_mb,
                    "memory_kind": result.memory_kind,
                },
            )
            write_json_atomic(self.output / "cells" / record["id"] / "cell.json", record)
        return len(todo)

    def _bench_settings(self):
        from vdf.bench import BenchSettings

        section = self.grid.get("bench")
        if not section:
            return None
        section = dict(section)
        if self.tiny:
            section.update(self.tiny_section.get("bench") or {})
        isolate = bool(section.pop("isolate", False))
        return BenchSettings(**section), isolate

    def run(self) -> list[dict[str, Any]]:
        records = [self.run_cell(cell) for cell in self.cells]
        self.bench(records)
        self.write_tables(records)
        self.write_plots(records)
        return records

    # -- outputs --------------------------------------------------------------------------------
    def axes(self) -> list[str]:
        names: list[str] = []
        for cell in self.cells:
            for n in cell.labels:
                if n not in names:
                    names.append(n)
        return names

    def rows(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for rec in records:
            row = {"cell": rec["id"], **{a: rec["labels"].get(a, "") for a in self.axes()}}
            for m in self.metrics:
                row[m] = rec["metrics"].get(m)
            row["frames_per_second"] = rec.get("fps")
            row["peak_memory_mb"] = rec.get("peak_memory_mb")
            row["configs"] = " ".join(rec["configs"])
            rows.append(row)
        return rows

    def command(self) -> str:
        return f"vdf experiment {self.folder.as_posix()}" + (" --tiny" if self.tiny else "")

    def write_tables(self, records: list[dict[str, Any]]) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        rows = self.rows(records)
        axes = self.axes()
        has_memory = any(r["peak_memory_mb"] is not None for r in rows)
        head = (
            [*axes, *[_HEADERS.get(m, m) for m in self.metrics], "frames/s"]
            + (["peak MB"] if has_memory else [])
            + ["configs"]
        )
        lines = [
            f"{self.grid.get('title', self.folder.name)} — {'tiny' if self.tiny else 'full'} mode, produced by `{self.command()}`",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for row, rec in zip(rows, records):
            links = ", ".join(
                f"[{Path(c).name}](/{Path(c).as_posix().lstrip('/')})" for c in _repo_relative(rec["configs"])
            )
            cells = (
                [row[a] or "–" for a in axes] + [_fmt(row[m]) for m in self.metrics] + [_fmt(row["frames_per_second"])]
            )
            if has_memory:
                cells.append(_fmt(row["peak_memory_mb"]))
            cells.append(links)
            lines.append("| " + " | ".join(cells) + " |")
        overrides = [(rec["id"], rec["overrides"]) for rec in records if rec["overrides"]]
        if overrides:
            lines += ["", "Overrides per cell (on top of the configs):", ""]
            lines += [
                f"- `{cid}`: " + ", ".join(f"`{k}={_cli_value(v)}`" for k, v in o.items()) for cid, o in overrides
            ]
        (self.output / "results.md").write_text("\n".join(lines) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["cell"])
        writer.writeheader()
        writer.writerows(rows)
        (self.output / "results.csv").write_text(buffer.getvalue())

    def publish(self) -> Path:
        """Copy ``results.md`` into the grid's docs ``page`` (between ``<!-- results:MODE:start -->``
        and ``<!-- results:MODE:end -->``) and the plots to ``docs/assets/<folder>/<mode>/``."""
        import shutil

        page_name = self.grid.get("page")
        page = self._find(page_name) if page_name else None
        if page is None:
            raise FileNotFoundError(f"--publish needs the grid's `page:` (a docs page); got {page_name!r}")
        mode = "tiny" if self.tiny else "full"
        start, end = f"<!-- results:{mode}:start -->", f"<!-- results:{mode}:end -->"
        text = Path(page).read_text()
        if start not in text or end not in text:
            raise ValueError(f"{page} has no {start} ... {end} block to fill")
        table = (self.output / "results.md").read_text().strip()
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        Path(page).write_text(f"{head}{start}\n{table}\n{end}{tail}")
        docs = next((p for p in Path(page).resolve().parents if p.name == "docs"), Path(page).resolve().parent)
        assets = docs / "assets" / self.folder.resolve().name / mode
        assets.mkdir(parents=True, exist_ok=True)
        for png in self.output.glob("*.png"):
            shutil.copy(png, assets / png.name)
        return Path(page)

    def write_plots(self, records: list[dict[str, Any]]) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        written = []
        for metric in self.metrics:
            points = [
                (r["fps"], r["metrics"].get(metric), " / ".join(r["labels"].values()) or r["id"]) for r in records
            ]
            points = [p for p in points if p[0] is not None and p[1] is not None]
            if not points:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.scatter([p[0] for p in points], [p[1] for p in points])
            for x, y, label in points:
                ax.annotate(label, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("frames/s")
            ax.set_ylabel(_HEADERS.get(metric, metric))
            ax.set_title(f"{metric} vs frames/s")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = self.output / f"{metric}_vs_fps.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
            if "steps" in self.axes():
                series: dict[str, list[tuple[float, float]]] = {}
                for r in records:
                    step = _number(r["labels"].get("steps"))
                    value = r["metrics"].get(metric)
                    if step is None or value is None:
                        continue
                    key = ", ".join(f"{a}={l}" for a, l in r["labels"].items() if a != "steps") or metric
                    series.setdefault(key, []).append((step, value))
                if series:
                    fig, ax = plt.subplots(figsize=(6, 4))
                    for key, pts in series.items():
                        pts.sort()
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=key)
                    ax.set_xlabel("steps")
                    ax.set_ylabel(_HEADERS.get(metric, metric))
                    ax.set_title(f"{metric} vs steps")
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=6)
                    fig.tight_layout()
                    path = self.output / f"{metric}_vs_steps.png"
                    fig.savefig(path, dpi=100)
                    plt.close(fig)
                    written.append(path)
        return written


def _number(label: Any) -> float | None:
    match = re.search(r"\d+(\.\d+)?", str(label)) if label is not None else None
    return float(match.group(0)) if match else None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _repo_relative(paths: list[str]) -> list[str]:
    out = []
    for p in paths:
        try:
            out.append(os.path.relpath(p))
        except ValueError:
            out.append(p)
    return out


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``vdf experiment FOLDER [--tiny] [--output DIR] [--cells "[ID, ...]"]``."""
    parser = ArgumentParser(
        prog="vdf experiment", description="Run an ablation grid (grid.yaml), resuming completed cells."
    )
    parser.add_argument("folder", help="experiment folder holding grid.yaml")
    parser.add_argument(
        "--tiny",
        action=ActionYesNo,
        default=False,
        help="tiny mode: the recipes' tiny overlays (configs/tiny/) and the grid's tiny overrides (CPU)",
    )
    parser.add_argument(
        "--output",
        type=Optional[str],
        default=None,
        help="where cells, tables and plots go (default FOLDER/results/{tiny,full})",
    )
    parser.add_argument("--cells", type=Optional[list[str]], default=None, help="run only these cell ids")
    parser.add_argument(
        "--list", action=ActionYesNo, default=False, help="print the cells and their stage commands, run nothing"
    )
    parser.add_argument(
        "--publish", action=ActionYesNo, default=False, help="copy the table and plots into the grid's docs page"
    )
    cfg = parser.parse_args(args)
    experiment = Experiment(cfg.folder, tiny=cfg.tiny, output=cfg.output, only=cfg.cells)
    if cfg.list:
        for cell in experiment.cells:
            print(cell.id)
            previous = None
            for stage in experiment.stage_list(cell):
                print("   ", stage["name"], ":", " ".join(experiment.stage_args(cell, stage, _Echo(), previous)))
                previous = stage["name"]
        return {"cells": [c.id for c in experiment.cells]}
    records = experiment.run()
    print((experiment.output / "results.md").read_text())
    if cfg.publish:
        print(f"published to {experiment.publish()}")
    return {"records": records, "counts": experiment.counts, "output": str(experiment.output)}


class _Echo(dict):
    """Placeholders left as written (``--list``)."""

    def get(self, key, default=None):
        return {"ckpt": f"<{key}.ckpt>", "dir": f"<{key}.dir>"}


if __name__ == "__main__":
    main()
