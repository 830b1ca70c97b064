"""JSON written atomically, and the run-level ``manifest.json`` of a ``vdf predict`` output folder.

Each video of a run has its own ``<name>.json`` (written by ``vdf.inference.outputs``), whose
presence means that video's outputs are complete. The run manifest sits beside them and records,
for every video the run looked at, whether it was predicted (``ok``), failed (``failed``, with the
error message) or skipped (``skipped``, e.g. already complete from an earlier run), plus the
run-wide facts the caller passes (model, strategy, timing, ...). See ``docs/predict_outputs.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

RUN_MANIFEST_NAME = "manifest.json"
STATUSES = ("ok", "failed", "skipped")


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy / torch scalars and arrays, paths, tuples, sets and dataclasses made JSON.

    Non-finite floats become ``None``: strict JSON has no NaN, and a manifest must stay readable by
    every JSON parser (``jq``, browsers), not only Python's.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (np.generic, np.ndarray)):
        return to_jsonable(obj.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "tolist"):  # torch.Tensor, without importing torch here
        return to_jsonable(obj.tolist())
    return str(obj)


def fsync_dir(path: Path) -> None:
    # Makes a rename itself durable; not every platform can open a directory, hence best effort.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` so that readers see the old file or the new one.

    The text goes to ``.<file name>.tmp-<pid>`` in the same folder, is fsynced, and is renamed over
    ``path`` (``os.replace`` is atomic within one filesystem). Values pass through ``to_jsonable``.
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(to_jsonable(obj), f, indent=2, allow_nan=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunManifest:
    """The ``manifest.json`` of one predict output folder: one entry per video, latest result wins.

    File layout::

        {"format_version": 1, "created": ISO time, "updated": ISO time,
         <info: model, strategy, config, ... as given>,
         "counts": {"ok": n, "failed": n, "skipped": n},
         "videos": [{"name": str, "status": "ok"|"failed"|"skipped", <info>, "updated": ISO time}, ...]}

    Args:
        out_dir: the output folder (created if missing).
        info: run-wide facts (model, strategy, checkpoint, options, ...), stored at the top level.
        resume: when ``manifest.json`` already exists, keep its video entries (a resumed run then
            records only what changed); otherwise start empty.
        autosave: save after every ``add_result``, so a killed run still leaves an up-to-date record.
    """

    def __init__(self, out_dir: str | os.PathLike, info: dict[str, Any] | None = None, resume: bool = True,
                 autosave: bool = True):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RUN_MANIFEST_NAME
        self.info: dict[str, Any] = dict(info or {})
        self.autosave = autosave
        self.created = _now()
        self.videos: dict[str, dict[str, Any]] = {}
        if resume and self.path.is_file():
            try:
                previous = json.loads(self.path.read_text(encoding="utf-8"))
                entries = previous.get("videos", [])
                self.created = previous.get("created", self.created)
                self.videos = {e["name"]: dict(e) for e in entries if isinstance(e, dict) and "name" in e}
            except (OSError, ValueError, AttributeError, TypeError):
                self.videos = {}  # unreadable manifest of an older run: start a fresh record

    def add_result(self, name: str, status: str, info: dict[str, Any] | None = None) -> None:
        """Record the outcome for video ``name``; ``status`` is ``ok``, ``failed`` or ``skipped``.

        ``info`` holds anything worth keeping: ``error`` (the message, for ``failed``), ``timing``,
        ``frames``, ``outputs``, ``input``, ... It replaces the video's earlier entry, if any.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        entry = {"name": name, "status": status, **(info or {}), "updated": _now()}
        self.videos.pop(name, None)  # re-insert so the file lists videos in the order last handled
        self.videos[name] = entry
        if self.autosave:
            self.save()

    @property
    def counts(self) -> dict[str, int]:
        """Number of videos per status."""
        counts = {s: 0 for s in STATUSES}
        for entry in self.videos.values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": 1, "created": self.created, "updated": _now(), **self.info,
                "counts": self.counts, "videos": list(self.videos.values())}

    def save(self) -> Path:
        """Write ``manifest.json`` atomically; returns its path."""
        return write_json_atomic(self.path, self.to_dict())
