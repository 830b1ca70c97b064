"""Results tables of ``vdf test`` runs, and collecting several runs into one comparison.

    python -m vdf.results runs/*/version_*/results.json --output comparison.md

prints one markdown table (a row per run and dataset) and writes it (and a CSV beside it).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

from jsonargparse import ArgumentParser

#: Metric keys, in table order, as logged under ``test/<dataset>/<key>``.
METRIC_COLUMNS = ("abs_rel", "delta1", "rmse", "tae", "mfc", "boundary_f1", "unet_evals_per_frame")
_HEADERS = {
    "abs_rel": "AbsRel ↓",
    "delta1": "δ1 ↑",
    "rmse": "RMSE ↓",
    "tae": "TAE ↓",
    "mfc": "MFC ↓",
    "boundary_f1": "boundary F1 ↑",
    "unet_evals_per_frame": "UNet evals/frame",
    "frames_per_second": "frames/s",
}


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    present = [k for k in (*METRIC_COLUMNS, "frames_per_second") if any(k in r for r in rows)]
    return present


def rows_to_markdown(rows: list[dict[str, Any]], run: dict[str, Any] | None = None, label: bool = False) -> str:
    """A markdown table; with ``label`` a first column names each row's run."""
    cols = _columns(rows)
    head = (["run"] if label else []) + ["dataset"] + [_HEADERS[c] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ([r.get("run", "")] if label else []) + [r["dataset"]] + [_fmt(r.get(c)) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    if run is not None and not label:
        lines.insert(0, f"{run.get('model')} with {run.get('strategy')}, checkpoint {run.get('checkpoint')}\n")
    return "\n".join(lines) + "\n"


def rows_to_csv(rows: list[dict[str, Any]], run: dict[str, Any] | None = None) -> str:
    cols = ["run", "dataset", *_columns(rows)] if any("run" in r for r in rows) else ["dataset", *_columns(rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: r.get(c, "") for c in cols})
    return buffer.getvalue()


def collect(results: list[str], output: str | None = None) -> str:
    """One comparison table from several ``results.json`` files (a row per run and dataset).

    Args:
        results: ``results.json`` files written by ``vdf test`` (or their run folders).
        output: write the markdown table here (and the CSV beside it, ``.csv``).
    """
    rows = []
    for item in results:
        path = Path(item)
        if path.is_dir():
            path = path / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"no results file {str(path)!r} (run `vdf test` first)")
        run = json.loads(path.read_text())
        label = f"{run.get('model')}/{run.get('strategy')} ({Path(run.get('log_dir') or path.parent).name})"
        for row in run.get("rows", []):
            rows.append({"run": label, **row})
    table = rows_to_markdown(rows, label=True)
    print(table)
    if output:
        out = Path(output)
        out.write_text(table)
        out.with_suffix(".csv").write_text(rows_to_csv(rows))
    return table


def main(args: list[str] | None = None) -> str:
    """``python -m vdf.results RESULTS... [--output FILE]``."""
    parser = ArgumentParser(description="Collect vdf test results into one comparison table.")
    parser.add_argument("results", nargs="+", help="results.json files or run folders")
    parser.add_argument("--output", type=Optional[str], default=None, help="markdown file to write (and .csv)")
    cfg = parser.parse_args(args)
    return collect(cfg.results, output=cfg.output)


if __name__ == "__main__":
    main()
