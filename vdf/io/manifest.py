"""The run-level ``manifest.json`` of a ``vdf predict`` output folder.

Each video of a run has its own ``<name>.json`` (written by `vdf.io.depth.DepthVideoWriter`), whose
presence means that video's outputs are complete. The run manifest sits beside them and records,
for every video the run looked at, whether it was predicted (``ok``), failed (``failed``, with the
error message) or skipped (``skipped``, e.g. already complete from an earlier run), plus the
run-wide facts the caller passes (model, strategy, timing, ...). See ``docs/predict_outputs.md``.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vdf.io.atomic import write_json_atomic

__all__ = ["RUN_MANIFEST_NAME", "STATUSES", "RunManifest"]

RUN_MANIFEST_NAME = "manifest.json"
STATUSES = ("ok", "failed", "skipped")


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
        filename: the file in ``out_dir`` (each rank of a multi-process predict keeps its own,
            merged with `merge` at the end).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        info: dict[str, Any] | None = None,
        resume: bool = True,
        autosave: bool = True,
        filename: str = RUN_MANIFEST_NAME,
    ):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / filename
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
        """The file's content (see the class docstring)."""
        return {
            "format_version": 1,
            "created": self.created,
            "updated": _now(),
            **self.info,
            "counts": self.counts,
            "videos": list(self.videos.values()),
        }

    def merge(self, others: list[RunManifest]) -> None:
        """Take the video entries of ``others`` (e.g. the ranks' manifests of one run), in order."""
        for other in others:
            for name, entry in other.videos.items():
                self.videos.pop(name, None)
                self.videos[name] = entry

    def save(self) -> Path:
        """Write ``manifest.json`` atomically; returns its path."""
        return write_json_atomic(self.path, self.to_dict())
