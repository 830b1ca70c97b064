"""`DepthPredictionWriter`: the output side of ``vdf predict``.

Consumes each video's lazy `VideoPrediction` frame by frame into a `DepthVideoWriter` (npz, PNG16,
EXR, colourised mp4s, per-video manifest), skips videos whose outputs are complete, cleans what a
killed run left half-written, keeps going when one input is bad, and ends with a summary table
and the run's ``manifest.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from vdf.io import DepthVideoWriter, OutputOptions, RunManifest, clean_partial, outputs_complete
from vdf.io.manifest import RUN_MANIFEST_NAME
from vdf.predictors.video import VideoPrediction


class DepthPredictionWriter(L.Callback):
    """Writes what ``vdf predict`` predicts (``--output``, ``--overwrite`` are aliases).

    Args:
        output_dir: folder for the outputs (created); ``vdf predict`` without ``--output`` writes
            beside its input (``clip.mp4`` -> ``clip_depth/``, ``videos/`` -> ``videos_depth/``).
        overwrite: redo videos whose outputs are already complete (otherwise they are skipped).
        npz: write ``<name>.npz`` (float16 disparity ``(T,H,W)`` and ``frame_index``).
        png16: write ``<name>_png16/`` 16-bit PNG frames (video-wide min-max in the manifest).
        exr: write ``<name>_exr/`` float32 OpenEXR frames (raw disparity).
        depth_video: write ``<name>_depth.mp4``, colourised with one video-wide range.
        side_by_side: write ``<name>_side_by_side.mp4`` (RGB | depth).
        colormap: matplotlib colormap of the colourised videos.
        fps: frame rate of written videos when the input has none (image sequences).
        progress: print per-video progress (frames/s).
    """

    def __init__(
        self,
        output_dir: str | None = None,
        overwrite: bool = False,
        npz: bool = True,
        png16: bool = False,
        exr: bool = False,
        depth_video: bool = True,
        side_by_side: bool = False,
        colormap: str = "Spectral_r",
        fps: float = 24.0,
        progress: bool = True,
    ):
        self.output_dir = output_dir
        self.overwrite = overwrite
        self.options = OutputOptions(
            npz=npz,
            png16=png16,
            exr=exr,
            depth_video=depth_video,
            side_by_side=side_by_side,
            colormap=colormap,
            fps=fps,
        )
        self.progress = progress
        self.results: list[dict[str, Any]] = []
        self._run: RunManifest | None = None
        #: What makes the outputs (config files, task, checkpoint, ``fingerprint``); ``vdf predict``
        #: sets it (`vdf.cli.run_source`), otherwise it is described from the module.
        self.source: dict[str, Any] | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r["status"] == "failed"]

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.results = []
        if self.output_dir is None:
            source = getattr(trainer.datamodule, "predict_input", None)
            if source is None:
                return  # predictions of the predict datasets are returned, not written
            # No --output: a folder beside the input (clip.mp4 -> clip_depth/, videos/ -> videos_depth/).
            from vdf.io.live import is_live_input

            if is_live_input(source):
                raise ValueError(f"a live input ({source}) needs an output folder: add --output DIR")
            path = Path(source)
            stem = path.stem if path.is_file() else path.name
            self.output_dir = str(path.resolve().with_name(f"{stem}_depth"))
            self._say(f"writing to {self.output_dir} (--output chooses another folder)")
        if self.source is None:
            self.source = _module_source(pl_module, trainer)
        out = Path(self.output_dir)
        earlier = _recorded_source(out / "manifest.json")
        if not self.overwrite and earlier is not None and earlier.get("fingerprint") != self.source["fingerprint"]:
            # Skipping complete outputs of another model would leave them under this run's name.
            raise ValueError(
                f"{out} holds outputs of another model ({_say_source(earlier)}); this run is "
                f"{_say_source(self.source)}. Write to another --output, or pass --overwrite true to replace them"
            )
        out.mkdir(parents=True, exist_ok=True)
        # Several ranks each keep their own record (no two processes write one file); rank 0
        # merges them into manifest.json at the end.
        filename = f".manifest.rank{trainer.global_rank}.json" if trainer.world_size > 1 else RUN_MANIFEST_NAME
        self._rank = trainer.global_rank if trainer.world_size > 1 else None
        self._run = RunManifest(
            self.output_dir,
            filename=filename,
            resume=trainer.world_size == 1,
            info={
                "model": type(pl_module).__name__,
                "strategy": _describe(getattr(getattr(pl_module, "predictor", None), "strategy", None)),
                "input": getattr(trainer.datamodule, "predict_input", None),
                "source": self.source,
            },
        )

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._run is None:
            return
        if isinstance(outputs, VideoPrediction):
            self._write_video(outputs, pl_module)
        elif isinstance(outputs, dict) and "disparity" in outputs and isinstance(batch, dict):
            self._write_clips(outputs, batch, pl_module)

    def _record(self, name: str, status: str, **info: Any) -> None:
        if getattr(self, "_rank", None) is not None:
            info["rank"] = self._rank  # which process wrote it (multi-GPU predict)
        self.results.append({"name": name, "status": status, **info})
        assert self._run is not None
        self._run.add_result(name, status, info)

    def _write_video(self, prediction: VideoPrediction, pl_module: L.LightningModule) -> None:
        source = prediction.source

        def describe() -> tuple[float | None, dict[str, Any]]:
            info = source.probe()  # raises VideoInputError for an unreadable input
            rule = prediction.resolution
            # Every stride-th frame is written: the output plays at the source's speed.
            fps = info.fps / source.stride if info.fps else None
            return fps, {
                "total_frames": source.num_frames,
                "resolution": [info.out_height, info.out_width],
                "source_resolution": [info.height, info.width],
                "inference_resolution": list(rule.size(info.out_height, info.out_width)),
                "resolution_rule": rule.describe(),
            }

        live = getattr(source, "spec", None) is not None  # a LiveSource: camera, stream URL or pipe
        self._write(source.name, str(source.path), describe, iter(prediction), prediction.strategy, pl_module, live)

    def _write_clips(self, outputs: dict[str, Any], batch: dict[str, Any], pl_module: L.LightningModule) -> None:
        """Predictions of the ``predict`` datasets (whole decoded sequences, one per batch item)."""
        for b, meta in enumerate(outputs["meta"]):
            name = "__".join(_safe(str(meta.get(k, "x"))) for k in ("dataset", "sequence"))
            disparity, video = outputs["disparity"][b], batch["video"][b]
            # Frames the strategy gives no prediction come back as NaN and get no output.
            frames = (
                (i, d, v)
                for i, d, v in zip(outputs["frame_index"][b].tolist(), disparity[:, 0], video)
                if not bool(torch.isnan(d).all())
            )
            shape = {"resolution": list(disparity.shape[-2:])}
            label = (meta.get("paths") or [f"{meta.get('dataset')}/{meta.get('sequence')}"])[0]
            self._write(name, label, lambda: (None, shape), frames, pl_module.predictor.strategy, pl_module)

    def _write(
        self,
        name: str,
        label: str,
        describe,
        frames,
        strategy: Any,
        pl_module: L.LightningModule,
        live: bool = False,
    ) -> None:
        """Stream ``(frame_index, disparity (H,W), rgb (3,H,W))`` into the outputs of ``name``.

        ``describe()`` returns ``(fps or None, manifest fields)`` and may raise for a bad input.
        Errors are reported with ``label`` (the input's path) and recorded; the run goes on.
        ``live``: the input has no end of its own (camera, stream): an interruption (Ctrl-C,
        SIGTERM) completes the outputs with the frames so far before the run stops.
        """
        out_dir = Path(self.output_dir)
        if not self.overwrite and outputs_complete(out_dir, name):
            earlier = _recorded_source(out_dir / f"{name}.json")
            if earlier is not None and earlier.get("fingerprint") != self.source["fingerprint"]:
                message = f"{label}: complete outputs of another model ({_say_source(earlier)}) are in the way"
                self._say(f"[error] {message}; --overwrite true replaces them")
                self._record(name, "failed", input=label, error=message)
                return
            note = "complete from an earlier run of this model; --overwrite true redoes it"
            self._say(f"[skip] {label}: {note}")
            self._record(name, "skipped", input=label, note=note)
            return
        clean_partial(out_dir, name)
        start = time.perf_counter()
        count = 0
        interrupted: KeyboardInterrupt | None = None
        try:
            fps, fields = describe()
            total = fields.pop("total_frames", None)
            self._say(f"[start] {label}: {total if total else 'an unknown number of'} frames")
            space = getattr(pl_module, "output_space", "disparity")
            with DepthVideoWriter(out_dir, name, self.options, fps=fps, space=space) as writer:
                last_report = start
                try:
                    for index, disparity, rgb in frames:
                        writer.add(index, disparity.cpu(), rgb.cpu() if self.options.side_by_side else None)
                        count += 1
                        now = time.perf_counter()
                        if now - last_report > 5.0:
                            self._say(f"  {name}: {_progress(count, total, now - start)}")
                            last_report = now
                except KeyboardInterrupt as stop:
                    if not live:
                        raise  # a file is redone whole by the next run
                    interrupted = stop
                if count == 0:
                    raise ValueError("no frames to predict (check start_frame / max_frames)")
                seconds = time.perf_counter() - start
                writer.finish(
                    {
                        "input": label,
                        "model": type(pl_module).__name__,
                        "source": self.source,
                        "strategy": _describe(strategy),
                        **fields,
                        "timing": {"seconds": seconds, "frames_per_second": count / max(seconds, 1e-9)},
                        **({"stopped_by": str(interrupted) or "Ctrl-C"} if interrupted is not None else {}),
                    }
                )
        except (ValueError, RuntimeError, OSError) as error:
            # One bad input must not stop the others; the error line names the file and the cause.
            message = str(error)
            if not message.startswith(label):
                message = f"{label}: {message}"
            self._say(f"[error] {message}")
            self._record(name, "failed", input=label, error=message, frames=count)
            return
        seconds = time.perf_counter() - start
        fps = count / max(seconds, 1e-9)
        self._say(f"[done] {label}: {count} frames in {seconds:.1f} s ({fps:.1f} frames/s)")
        self._record(name, "ok", input=label, frames=count, seconds=seconds, frames_per_second=fps)
        if interrupted is not None:
            self._run.save()
            raise interrupted

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._run is None:
            return
        self._run.save()
        if trainer.world_size > 1:
            self._merge_ranks(trainer)
            if not trainer.is_global_zero:
                return
        self._say(summary_table(self.results))

    def _merge_ranks(self, trainer: L.Trainer) -> None:
        """Rank 0 folds every rank's record into ``manifest.json`` (and the summary) once all are done."""
        trainer.strategy.barrier("vdf-predict-manifests")
        if trainer.is_global_zero:
            out = Path(self.output_dir)
            ranks = [out / f".manifest.rank{r}.json" for r in range(trainer.world_size)]
            records = [RunManifest(out, filename=p.name) for p in ranks]
            run = RunManifest(out, info=self._run.info, autosave=False)
            run.merge(records)
            run.save()
            self.results = [
                {k: v for k, v in entry.items() if k != "updated"}
                for record in records
                for entry in record.videos.values()
            ]
            for path in ranks:
                path.unlink(missing_ok=True)
        trainer.strategy.barrier("vdf-predict-merged")


def _progress(count: int, total: int | None, seconds: float) -> str:
    """``"120/1000 frames (12%), 14.2 frames/s, ETA 1:02"`` (without the total when unknown)."""
    rate = count / max(seconds, 1e-9)
    if not total:
        return f"{count} frames, {rate:.1f} frames/s"
    left = max(0, total - count) / max(rate, 1e-9)
    minutes, secs = divmod(round(left), 60)
    return f"{count}/{total} frames ({100 * count / total:.0f}%), {rate:.1f} frames/s, ETA {minutes}:{secs:02d}"


def _recorded_source(manifest: Path) -> dict[str, Any] | None:
    """The ``source`` an earlier run recorded in a manifest (None when absent or unreadable)."""
    import json

    try:
        source = json.loads(manifest.read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, dict) and "fingerprint" in source else None


def _say_source(source: dict[str, Any]) -> str:
    configs = "+".join(source.get("config") or []) or "no config file"
    checkpoint = source.get("checkpoint") or "no checkpoint"
    return f"{source.get('task')} from {configs}, {checkpoint}"


def _module_source(pl_module: L.LightningModule, trainer: L.Trainer) -> dict[str, Any]:
    """``source`` of a run not started by ``vdf predict``: the module's classes and the checkpoint."""
    import hashlib

    predictor = getattr(pl_module, "predictor", None)
    task = f"{type(pl_module).__module__}.{type(pl_module).__qualname__}"
    ckpt = getattr(trainer, "ckpt_path", None)
    identity = repr((task, type(predictor).__qualname__, sorted(pl_module.hparams.items()), ckpt))
    return {
        "config": [],
        "task": task,
        "checkpoint": str(Path(ckpt).resolve()) if ckpt else None,
        "weights": [],
        "fingerprint": hashlib.sha256(identity.encode()).hexdigest()[:16],
    }


def _safe(text: str) -> str:
    """A file-name-safe version of a dataset or sequence name."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return cleaned or "x"


def _describe(strategy: Any) -> dict[str, Any] | None:
    if strategy is None:
        return None
    params = {
        k: v for k, v in vars(strategy).items() if not k.startswith("_") and isinstance(v, (int, float, bool, str))
    }
    params["window"] = strategy.window
    return {"class": type(strategy).__name__, **params}


def summary_table(results: list[dict[str, Any]]) -> str:
    """A plain-text table: one row per video with status, frames, speed and the error if any."""
    rows = [("video", "status", "frames", "frames/s", "note")]
    for r in results:
        rows.append(
            (
                r["name"],
                r["status"],
                str(r.get("frames", "")),
                f"{r['frames_per_second']:.1f}" if "frames_per_second" in r else "",
                (r.get("error") or r.get("note") or "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = {s: sum(r["status"] == s for r in results) for s in ("ok", "skipped", "failed")}
    lines.append(f"{counts['ok']} written, {counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)


__all__ = ["DepthPredictionWriter", "summary_table"]
