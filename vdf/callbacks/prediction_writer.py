"""`DepthPredictionWriter`: the output side of ``vdf predict``.

Consumes each video's lazy `VideoPrediction` frame by frame into a `DepthVideoWriter` (npz, PNG16,
EXR, colourised mp4s, point clouds, per-video manifest), skips videos whose outputs are complete,
cleans what a killed run left half-written, keeps going when one input is bad, and ends with a
summary table and the run's ``manifest.json``.

Writing runs beside the model (``queue_frames > 0``, the default): the model's thread hands each
predicted frame to a background thread that appends it to the video's pass-1 files (at most
``queue_frames`` frames wait), and each finished video's outputs (pass 2: npz, PNG, EXR, mp4s,
point clouds, manifest) are written by a second background thread while the model goes on with
the next video (one video at a time). Results are recorded in input order either way.
``queue_frames = 0`` does all of it in the model's thread, video after video.

Metric outputs: with known depth (sparse LiDAR or dense maps, `vdf.io.known_depth`) or a given
scale and shift, each video's prediction is aligned with the metrics' own least-squares fit
(`vdf.metrics.fit_alignment`, one scale and shift per video, in the model's native space) and
written as depth in metres or disparity in 1/metres; the fit is recorded in the manifest.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from vdf.io import DepthVideoWriter, OutputOptions, RunManifest, clean_partial, outputs_complete
from vdf.io.depth import MetricValues
from vdf.io.known_depth import CameraSource, KnownDepth, known_path
from vdf.io.manifest import RUN_MANIFEST_NAME
from vdf.io.points import intrinsics_from_fov, scale_intrinsics
from vdf.io.prefetch import SerialWorker
from vdf.predictors.video import VideoPrediction

#: What one input can fail with (reported, recorded as failed; the run goes on with the others).
_INPUT_ERRORS = (ValueError, RuntimeError, OSError, KeyError)
#: Seconds an interrupted (or failed) run gives the background writer to complete the videos
#: whose frames were all predicted; what is not done by then is redone by the next run.
INTERRUPT_GRACE_SECONDS = 10.0


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
        known_depth: known metric depth to align each video to: a folder of per-frame maps
            (16-bit PNG, ``.npy``) or an ``.npz`` (`vdf.io.known_depth`); ``{name}`` is replaced by
            the video's output name (``lidar/{name}``, ``demo_videos/{name}_gt.npz``).
        known_depth_scale: metres per unit of 16-bit PNG maps (0.001: millimetres; KITTI 1/256).
        align_scale: a given alignment instead of known depth: ``metric = align_scale * pred +
            align_shift`` in the model's native space (disparity: 1/metres; depth: metres).
        align_shift: see ``align_scale``.
        max_depth: metres; known depth outside ``(1e-3, max_depth)`` is ignored and aligned depth
            is clipped to ``[1e-3, max_depth]`` (as the metrics do).
        space: what to write once aligned: ``depth`` (metres, the default then) or ``disparity``
            (1/metres). Without an alignment the raw prediction is written, and this must be unset.
        point_clouds: also write coloured point clouds of the aligned depth (``<name>_ply/``,
            ``<name>_points.npz``); needs an alignment and intrinsics.
        point_stride: every ``point_stride``-th pixel along both axes becomes a point.
        intrinsics: ``[fx, fy, cx, cy]`` in pixels of the source frames (scaled to the written size).
        fov: horizontal field of view in degrees, when the intrinsics are unknown.
        camera: an ``.npz`` (``{name}`` allowed) with ``intrinsics`` (T,3,3) in source pixels and/or
            ``cam_to_world`` (T,4,4) per frame (``demo_videos/{name}_gt.npz``); with poses the points
            are in world coordinates.
        queue_frames: write beside the model: at most this many predicted frames wait for the
            background writer (each holds its ``H*W`` float32 prediction, and its RGB frame when
            side_by_side or point clouds are on), and each finished video's outputs are written
            in the background while the next video is predicted. 0 writes everything in the
            model's thread. The files are the same either way.
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
        known_depth: str | None = None,
        known_depth_scale: float = 0.001,
        align_scale: float | None = None,
        align_shift: float | None = None,
        max_depth: float = 1000.0,
        space: Literal["depth", "disparity"] | None = None,
        point_clouds: bool = False,
        point_stride: int = 1,
        intrinsics: list[float] | None = None,
        fov: float | None = None,
        camera: str | None = None,
        queue_frames: int = 8,
    ):
        if queue_frames < 0:
            raise ValueError(f"queue_frames must be >= 0 (0: write in the model's thread), got {queue_frames}")
        if (align_scale is None) != (align_shift is None):
            raise ValueError("give both align_scale and align_shift (or neither)")
        if known_depth is not None and align_scale is not None:
            raise ValueError("align to known_depth or to a given align_scale / align_shift, not both")
        aligned = known_depth is not None or align_scale is not None
        if space not in (None, "depth", "disparity"):
            raise ValueError(f"space must be 'depth' or 'disparity', got {space!r}")
        if space is not None and not aligned:
            raise ValueError(
                "space: metric depth or disparity needs an alignment: give known_depth, or align_scale and align_shift"
            )
        if point_clouds and not aligned:
            raise ValueError("point_clouds need metric depth: give known_depth, or align_scale and align_shift")
        if point_clouds and intrinsics is None and fov is None and camera is None:
            raise ValueError("point_clouds need intrinsics: give intrinsics [fx, fy, cx, cy], fov, or a camera file")
        if intrinsics is not None and len(intrinsics) != 4:
            raise ValueError(f"intrinsics are [fx, fy, cx, cy], got {intrinsics}")
        if point_stride < 1:
            raise ValueError(f"point_stride must be >= 1, got {point_stride}")
        self.known_depth = known_depth
        self.known_depth_scale = known_depth_scale
        self.align_scale = align_scale
        self.align_shift = align_shift
        self.max_depth = max_depth
        self.space = space or ("depth" if aligned else None)
        self.intrinsics = intrinsics
        self.fov = fov
        self.camera = camera
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
            point_clouds=point_clouds,
            point_stride=point_stride,
        )
        self.progress = progress
        self.queue_frames = queue_frames
        self.results: list[dict[str, Any]] = []
        self._run: RunManifest | None = None
        #: What makes the outputs (config files, task, checkpoint, ``fingerprint``); ``vdf predict``
        #: sets it (`vdf.cli.run_source`), otherwise it is described from the module.
        self.source: dict[str, Any] | None = None
        self._rank: int | None = None  # this process's rank in a multi-process predict
        # The background writer: pass 1 of each frame, then pass 2 of each finished video.
        self._frames_worker = SerialWorker(0, "vdf-writer-frames")
        self._outputs_worker = SerialWorker(0, "vdf-writer-outputs")
        self._videos: set[_VideoJob] = set()  # videos whose outputs are not yet handed to pass 2
        self._videos_lock = threading.Lock()

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
        self._rank = trainer.global_rank if trainer.world_size > 1 else None
        filename = RUN_MANIFEST_NAME if self._rank is None else _rank_manifest(self._rank)
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
        self._start_workers()

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
        # Called in the outputs thread (or the model's thread when writing is synchronous): the
        # one place results are recorded, in the order the videos were handed to the writer.
        if self._rank is not None:
            info["rank"] = self._rank  # which process wrote it (multi-GPU predict)
        self.results.append({"name": name, "status": status, **info})
        assert self._run is not None
        self._run.add_result(name, status, info)

    def _report(self, name: str, status: str, message: str, **info: Any) -> None:
        """Print ``message`` and record the result, after everything handed to the writer before."""
        self._frames_worker.submit(self._outputs_worker.submit, self._say_and_record, message, name, status, info)

    def _say_and_record(self, message: str, name: str, status: str, info: dict[str, Any]) -> None:
        self._say(message)
        self._record(name, status, **info)

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
        try:
            self._write(source.name, str(source.path), describe, iter(prediction), prediction.strategy, pl_module, live)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # stops its background decoding, if any is still running

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

        This thread (the model's) iterates ``frames``; the writing happens in `_VideoJob`'s calls,
        submitted to the background writer (or run at once when ``queue_frames`` is 0).
        """
        out_dir = Path(self.output_dir)
        if not self.overwrite and outputs_complete(out_dir, name):
            earlier = _recorded_source(out_dir / f"{name}.json")
            if earlier is not None and earlier.get("fingerprint") != self.source["fingerprint"]:
                message = f"{label}: complete outputs of another model ({_say_source(earlier)}) are in the way"
                self._report(
                    name, "failed", f"[error] {message}; --overwrite true replaces them", input=label, error=message
                )
                return
            note = "complete from an earlier run of this model; --overwrite true redoes it"
            self._report(name, "skipped", f"[skip] {label}: {note}", input=label, note=note)
            return
        clean_partial(out_dir, name)
        video = _VideoJob(self, name, label, strategy, pl_module, live)
        try:
            video.open(*describe())
        except _INPUT_ERRORS as error:
            self._frames_worker.submit(video.fail, error, label=label)
            return
        with self._videos_lock:
            self._videos.add(video)
        interrupted: KeyboardInterrupt | None = None
        produced, last_report = 0, video.start
        try:
            for index, disparity, rgb in frames:
                if video.error is not None:
                    break  # the writer failed this video (and reports it): stop predicting it
                # A frame the writer reads later is a copy, never a view of the model's buffers.
                disparity = disparity.cpu() if self._frames_worker.synchronous else disparity.to("cpu", copy=True)
                rgb = rgb.cpu() if video.keep_rgb else None
                self._frames_worker.submit(video.add, index, disparity, rgb, label=label)
                produced += 1
                now = time.perf_counter()
                if now - last_report > 5.0:
                    self._say(f"  {name}: {_progress(produced, video.total, now - video.start)}")
                    last_report = now
        except KeyboardInterrupt as stop:
            if not live:
                video.cancel()  # the next run redoes this file whole
                raise
            interrupted = stop
        except _INPUT_ERRORS as error:
            # A bad frame of the input, or the model failing on it: this video fails, the run goes on.
            self._frames_worker.submit(video.fail, error, label=label)
            return
        except BaseException:
            video.cancel()
            raise
        self._frames_worker.submit(video.end, interrupted, label=label)
        if interrupted is not None:
            self._wait()  # a live input's outputs are complete before the run stops
            raise interrupted  # the record is saved (the run manifest saves every result)

    # -- the background writer ------------------------------------------------------------------
    def _start_workers(self) -> None:
        self._frames_worker = SerialWorker(self.queue_frames, "vdf-writer-frames")
        # Pass 2 of one video at a time: a second finished video waits (and so, once the frame
        # queue is full, does the model), so at most two videos' pass-1 files are on disk.
        self._outputs_worker = SerialWorker(1 if self.queue_frames else 0, "vdf-writer-outputs")
        self._videos = set()

    def _forget(self, video: _VideoJob) -> None:
        with self._videos_lock:
            self._videos.discard(video)

    def _wait(self) -> None:
        """Until everything handed to the writer is written (raises what failed in the background)."""
        self._frames_worker.wait()
        self._outputs_worker.wait()

    def _stop_workers(self, grace: float) -> None:
        """After an error or an interruption: the videos whose frames were all predicted are
        still written if that takes less than ``grace`` seconds; the rest is abandoned (its
        temporary files are removed, or left to the next run's clean-up if a thread is stuck)."""
        deadline = time.monotonic() + grace
        frames_done = self._frames_worker.close(timeout=grace)
        outputs_done = self._outputs_worker.close(timeout=max(0.0, deadline - time.monotonic()))
        if frames_done:
            with self._videos_lock:
                videos, self._videos = list(self._videos), set()
            for video in videos:
                video.abort()
        if not (frames_done and outputs_done):
            self._say(
                f"vdf: the background writer did not finish within {grace:.0f} s; the videos it was "
                "writing are redone by the next run"
            )

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if self._run is not None and trainer.state.fn == "predict":
            self._stop_workers(INTERRUPT_GRACE_SECONDS)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._run is None:
            return
        self._wait()
        self._frames_worker.close()
        self._outputs_worker.close()
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
            ranks = [out / _rank_manifest(r) for r in range(trainer.world_size)]
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


class _VideoJob:
    """The writing of one video. The model's thread creates it (`open`) and feeds it; `add`,
    `fail` and `end` run in the frames thread and `finish` in the outputs thread (all in the model's
    thread when ``queue_frames`` is 0), each after every call submitted before it."""

    def __init__(self, owner: DepthPredictionWriter, name: str, label: str, strategy: Any, pl_module: Any, live: bool):
        self.owner, self.name, self.label, self.live = owner, name, label, live
        self.start = time.perf_counter()
        self.seconds = 0.0  # prediction (and pass 1) time, when every frame is added
        self.total: int | None = None
        self.fields: dict[str, Any] = {}
        self.info = {"model": type(pl_module).__name__, "strategy": _describe(strategy)}
        self.space = getattr(pl_module, "output_space", "disparity")
        self.keep_rgb = owner.options.side_by_side or owner.options.point_clouds
        self.writer: DepthVideoWriter | None = None
        self.extras: _VideoExtras | None = None
        self.added = 0
        self.error: str | None = None  # set when the video failed (the model's thread stops feeding it)
        self.cancelled = False

    def open(self, fps: float | None, fields: dict[str, Any]) -> None:
        """Model's thread: the video's facts, then its writer (raises for a bad input or option)."""
        self.fields = dict(fields)
        self.total = self.fields.pop("total_frames", None)
        self.owner._say(f"[start] {self.label}: {self.total if self.total else 'an unknown number of'} frames")
        self.extras = _VideoExtras(self.owner, self.name, self.space)
        self.writer = DepthVideoWriter(
            Path(self.owner.output_dir), self.name, self.owner.options, fps=fps, space=self.space
        )

    def cancel(self) -> None:
        """Model's thread, on an interruption: frames still queued are dropped; the writer's
        temporary files are removed when the background writer stops (`_stop_workers`)."""
        self.cancelled = True

    def add(self, index: int, disparity: torch.Tensor, rgb: torch.Tensor | None) -> None:
        if self.error is not None or self.cancelled:
            return
        try:
            self.writer.add(index, disparity, rgb)
            source_hw = tuple(self.fields.get("source_resolution") or disparity.shape[-2:])
            self.extras.add(index, disparity, source_hw)
        except _INPUT_ERRORS as error:
            self.fail(error)
            return
        except BaseException:
            self.abort()
            raise
        self.added += 1

    def fail(self, error: BaseException) -> None:
        """The video failed: nothing of it is kept; the error line names the file and the cause."""
        message = str(error)
        if not message.startswith(self.label):
            message = f"{self.label}: {message}"
        self.error = message
        self.abort()
        info = {"input": self.label, "error": message, "frames": self.added}
        self.owner._outputs_worker.submit(self.owner._say_and_record, f"[error] {message}", self.name, "failed", info)

    def end(self, interrupted: KeyboardInterrupt | None) -> None:
        """Every frame is added: pass 2 is handed to the outputs thread."""
        if self.error is not None or self.cancelled:
            return
        self.seconds = time.perf_counter() - self.start
        self.owner._outputs_worker.submit(self.finish, interrupted, label=self.label)
        self.owner._forget(self)

    def finish(self, interrupted: KeyboardInterrupt | None) -> None:
        owner = self.owner
        try:
            if self.added == 0:
                raise ValueError("no frames to predict (check start_frame / max_frames)")
            self.writer.finish(
                {
                    "input": self.label,
                    "model": self.info["model"],
                    "source": owner.source,
                    "strategy": self.info["strategy"],
                    **self.fields,
                    "timing": {"seconds": self.seconds, "frames_per_second": self.added / max(self.seconds, 1e-9)},
                    **({"stopped_by": str(interrupted) or "Ctrl-C"} if interrupted is not None else {}),
                },
                metric=self.extras.metric(),
                intrinsics=self.extras.intrinsics(),
                cam_to_world=self.extras.poses(),
            )
        except _INPUT_ERRORS as error:
            message = str(error)
            if not message.startswith(self.label):
                message = f"{self.label}: {message}"
            self.abort()
            info = {"input": self.label, "error": message, "frames": self.added}
            owner._say_and_record(f"[error] {message}", self.name, "failed", info)
            return
        except BaseException:
            self.abort()
            raise
        seconds = time.perf_counter() - self.start
        fps = self.added / max(seconds, 1e-9)
        owner._say(f"[done] {self.label}: {self.added} frames in {seconds:.1f} s ({fps:.1f} frames/s)")
        owner._record(self.name, "ok", input=self.label, frames=self.added, seconds=seconds, frames_per_second=fps)

    def abort(self) -> None:
        """Remove the video's temporary files (nothing once it is finished)."""
        if self.writer is not None:
            self.writer.abort()
        self.owner._forget(self)


def _rank_manifest(rank: int) -> str:
    """The record one rank keeps in the output folder during a multi-process predict."""
    return f".manifest.rank{rank}.json"


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


class _VideoExtras:
    """What one video's metric outputs need, gathered while its frames stream past: the
    prediction at the pixels of known depth (for the fit) and each frame's camera."""

    def __init__(self, writer: DepthPredictionWriter, name: str, native_space: str):
        self.writer = writer
        self.native = native_space
        self.known = None
        if writer.known_depth is not None:
            self.known = KnownDepth(known_path(writer.known_depth, name), writer.known_depth_scale)
        self.camera = CameraSource(known_path(writer.camera, name)) if writer.camera is not None else None
        self.pred: list[np.ndarray] = []
        self.gt: list[np.ndarray] = []
        self.frames_with_depth = 0
        self.K: list[np.ndarray] = []
        self.cam_to_world: list[np.ndarray] = []

    def add(self, index: int, disparity: torch.Tensor, source_hw: tuple[int, int]) -> None:
        d = disparity.float().numpy().reshape(disparity.shape[-2:])
        H, W = d.shape
        if self.known is not None:
            g = self.known(index)
            rows, cols = np.nonzero(g > 0) if g is not None else ((), ())
            if len(rows):
                # A map of another size is matched pixel centre to pixel centre (nearest), so sparse
                # points stay single points rather than being smeared by a resize.
                h, w = g.shape
                r = np.minimum(((rows + 0.5) * (H / h)).astype(np.int64), H - 1)
                c = np.minimum(((cols + 0.5) * (W / w)).astype(np.int64), W - 1)
                self.pred.append(d[r, c])
                self.gt.append(g[rows, cols])
                self.frames_with_depth += 1
        if self.writer.options.point_clouds:
            self.K.append(self._intrinsics(index, (H, W), source_hw))
            pose = self.camera.get("cam_to_world", index) if self.camera is not None else None
            if pose is not None:
                self.cam_to_world.append(pose)

    def _intrinsics(self, index: int, size: tuple[int, int], source_hw: tuple[int, int]) -> np.ndarray:
        w = self.writer
        if w.intrinsics is not None:
            fx, fy, cx, cy = w.intrinsics
            return scale_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), source_hw, size)
        K = self.camera.get("intrinsics", index) if self.camera is not None else None
        if K is not None:
            return scale_intrinsics(K, source_hw, size)
        if w.fov is None:
            raise ValueError(f"camera file {self.camera.path} has no intrinsics: give intrinsics or fov as well")
        return intrinsics_from_fov(w.fov, *size)

    def metric(self) -> MetricValues | None:
        """The alignment of the whole video, or None when none is asked for."""
        from vdf.metrics import apply_alignment, fit_alignment

        w = self.writer
        if w.align_scale is not None:
            scale, shift = float(w.align_scale), float(w.align_shift)
            record: dict[str, Any] = {"method": "given scale and shift", "fit_space": self.native}
        elif self.known is not None:
            if not self.pred:
                raise ValueError(f"known depth {self.known.path} has no depth for any predicted frame")
            pred, gt = np.concatenate(self.pred), np.concatenate(self.gt)
            # The metrics' own fit (one scale and shift for the whole video, float64, in the
            # model's native space), on the known pixels as if they were the ground truth.
            scale, shift = fit_alignment(pred[None, None], gt[None, None], w.max_depth, space=self.native)
            used = (gt > 1e-3) & (gt < w.max_depth)
            aligned = apply_alignment(pred[used], scale, shift, w.max_depth, self.native).numpy()
            record = {
                "method": "least squares to known depth (vdf.metrics.fit_alignment)",
                "known_depth": str(self.known.path),
                "fit_space": self.native,
                "points": int(used.sum()),
                "frames_with_known_depth": self.frames_with_depth,
                "known_abs_rel": float(np.mean(np.abs(aligned - gt[used]) / gt[used])),
            }
            self.known.close()
        else:
            return None
        record.update({"scale": scale, "shift": shift, "max_depth": w.max_depth})
        native, max_depth = self.native, w.max_depth
        return MetricValues(
            # A copy: the raw frames are read-only buffers, which torch warns about.
            to_depth=lambda raw: apply_alignment(np.array(raw), scale, shift, max_depth, native).numpy(),
            space=w.space,
            max_depth=max_depth,
            record=record,
        )

    def intrinsics(self) -> np.ndarray | None:
        return np.stack(self.K) if self.K else None

    def poses(self) -> np.ndarray | None:
        if not self.cam_to_world:
            return None
        if len(self.cam_to_world) != len(self.K):
            raise ValueError(f"camera file {self.camera.path} has poses for some frames only")
        return np.stack(self.cam_to_world)


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
