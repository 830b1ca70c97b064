"""Writing the depth predictions of one video: frames streamed in, every output file atomic.

``vdf predict`` produces per-frame relative disparity (larger is nearer, one unknown scale and shift
for the whole video) one frame at a time, for videos of any length. ``DepthVideoWriter`` takes them
one by one and never holds the video in memory:

- **pass 1** (``add``): each frame is appended as float32 to a raw temp file in the output folder
  (``.<name>.disparity-f32.raw.tmp-<pid>``; RGB as uint8 to ``.<name>.rgb-u8.raw.tmp-<pid>`` only
  when the side-by-side video is asked for), and the running min / max are kept. The frame count
  is not known in advance, so the files simply grow.
- **pass 2** (``finish``): the raw file is read back frame by frame (or in chunks of a few MiB)
  to write every requested output under a temporary name ``.<final name>.tmp-<pid>``
  (frame folders are built the same way and renamed as a whole), then each is moved into place with
  ``os.replace``, and the per-video manifest ``<name>.json`` is written **last**, atomically: its
  presence means the outputs it lists are complete (``outputs_complete``).

The raw temp file is float32, not float16, so that the EXR files hold the raw values and the 16-bit
PNGs are quantised from full precision (float16 has only 11 significant bits).

Outputs of video ``name`` (formats, normalisation and how to map values back: docs/predict_outputs.md):

| kind | path | content |
|---|---|---|
| ``npz`` | ``<name>.npz`` | ``disparity`` float16 (T,H,W), ``frame_index`` int64 (T,) |
| ``png16`` | ``<name>_png16/<frame_index:06d>.png`` | 16-bit grey, min-max of the video -> [0, 65535] |
| ``exr`` | ``<name>_exr/<frame_index:06d>.exr`` | float32 raw disparity, one channel ``Y`` |
| ``depth_video`` | ``<name>_depth.mp4`` | colourised, 2nd-98th percentiles of the video |
| ``side_by_side`` | ``<name>_side_by_side.mp4`` | RGB on the left, colourised depth on the right |
| ``ply`` | ``<name>_ply/<frame_index:06d>.ply`` | coloured point cloud per frame, binary PLY (metric values only) |
| ``points`` | ``<name>_points.npz`` | every frame's points: ``xyz`` float32 (N,3), ``rgb`` uint8 (N,3), ``offsets`` |
| (manifest) | ``<name>.json`` | written last: normalisation ranges, outputs with sizes |

By default the values are the raw prediction. ``finish(metric=MetricValues(...))`` writes metric
values instead (depth in metres or disparity in 1/metres, after an alignment fitted on the whole
video, which pass 1 makes possible) and enables the point clouds.
"""

from __future__ import annotations

import array
import json
import math
import operator
import os
import shutil
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vdf.io.atomic import fsync_dir, fsync_file, remove_path, tmp_base, tmp_name, write_bytes_synced, write_json_atomic
from vdf.io.codecs import ImageEncoder, encoder_available, video_codec, write_mp4
from vdf.io.colour import DEPTH_VIDEO_PERCENTILES, colorize_disparity, lookup_table, robust_range
from vdf.io.manifest import RUN_MANIFEST_NAME
from vdf.io.points import depth_to_points, ply_bytes

__all__ = [
    "FLOAT16_MAX",
    "OUTPUT_KINDS",
    "PNG16_MAX",
    "DepthVideoWriter",
    "MetricValues",
    "OutputOptions",
    "clean_partial",
    "output_names",
    "outputs_complete",
]

OUTPUT_KINDS = ("npz", "png16", "exr", "depth_video", "side_by_side", "ply", "points")
PNG16_MAX = 65535
FLOAT16_MAX = float(np.finfo(np.float16).max)
_CHUNK_BYTES = 4 << 20  # npz member written in chunks of this size, whatever the video length
_FORMAT_VERSION = 1


@dataclass
class OutputOptions:
    """Which files ``vdf predict`` writes for each video, and how (see docs/predict_outputs.md).

    Args:
        npz: ``<name>.npz`` with ``disparity`` float16 (T,H,W) and ``frame_index`` int64 (T,).
        png16: ``<name>_png16/<frame_index:06d>.png``, 16-bit greyscale; the disparity min / max
            over the whole video map to 0 / 65535 (both stored in the manifest to map values back).
        exr: ``<name>_exr/<frame_index:06d>.exr``, float32 raw disparity in the single channel ``Y``
            (zip-compressed, lossless).
        depth_video: ``<name>_depth.mp4``, disparity colourised with ``colormap``; the video-wide
            2nd and 98th percentiles (of a subsample) map to the two ends of the colormap.
        side_by_side: ``<name>_side_by_side.mp4``, the RGB frame left of the colourised depth
            (needs ``rgb`` in every ``DepthVideoWriter.add``).
        colormap: a matplotlib colormap name; ``Spectral_r`` draws near (large disparity) red and
            far blue, the convention of the depth papers' figures.
        fps: frame rate of the two videos when the writer is not given the source's.
        point_clouds: ``<name>_ply/<frame_index:06d>.ply`` (binary, coloured) and
            ``<name>_points.npz`` (all frames); needs metric values (``finish(metric=...)``) and
            intrinsics, and the RGB of every frame.
        point_stride: keep every ``point_stride``-th pixel along both axes in the point clouds.
    """

    npz: bool = True
    png16: bool = False
    exr: bool = False
    depth_video: bool = True
    side_by_side: bool = False
    colormap: str = "Spectral_r"
    fps: float = 24.0
    point_clouds: bool = False
    point_stride: int = 1

    def kinds(self) -> list[str]:
        """The requested output kinds, in ``OUTPUT_KINDS`` order."""
        wanted = {kind: bool(getattr(self, kind, False)) for kind in OUTPUT_KINDS}
        wanted["ply"] = wanted["points"] = self.point_clouds
        return [kind for kind in OUTPUT_KINDS if wanted[kind]]


@dataclass
class MetricValues:
    """What the writer writes instead of the raw prediction: metric values, from a conversion
    fitted on the whole video (e.g. `vdf.metrics.fit_alignment` to known depth).

    Args:
        to_depth: raw ``(H,W)`` float32 prediction -> metric depth ``(H,W)`` in metres, in
            ``[1e-3, max_depth]`` (`vdf.metrics.apply_alignment`).
        space: ``depth`` (metres, written as is) or ``disparity`` (``1 / depth``, in 1/metres).
        max_depth: the conversion's depth clip; pixels at it (sky, clipped) get no point.
        record: how the values were obtained, stored in the manifest under ``alignment``.
    """

    to_depth: Callable[[np.ndarray], np.ndarray]
    space: str = "depth"
    max_depth: float = 1000.0
    record: dict[str, Any] | None = None

    def values(self, raw: np.ndarray) -> np.ndarray:
        depth = np.asarray(self.to_depth(raw), dtype=np.float64)
        return (depth if self.space == "depth" else 1.0 / depth).astype(np.float32)


class _MappedFrames:
    """``(T,H,W)`` frames of another frame array passed through ``fn`` frame by frame."""

    def __init__(self, frames: Any, fn: Callable[[np.ndarray], np.ndarray]):
        self._frames, self._fn = frames, fn
        self.shape = frames.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][key[1:]]
        if isinstance(key, slice):
            chunk = self._frames[key]
            if not len(chunk):
                return np.zeros((0, *self.shape[1:]), np.float32)
            return np.stack([self._fn(f) for f in chunk])
        return self._fn(self._frames[key])


def output_names(name: str) -> dict[str, str]:
    """File / folder name of every output kind of video ``name``, plus ``manifest`` (``<name>.json``)."""
    return {
        "npz": f"{name}.npz",
        "png16": f"{name}_png16",
        "exr": f"{name}_exr",
        "depth_video": f"{name}_depth.mp4",
        "side_by_side": f"{name}_side_by_side.mp4",
        "ply": f"{name}_ply",
        "points": f"{name}_points.npz",
        "manifest": f"{name}.json",
    }


def _raw_names(name: str) -> tuple[str, str]:
    # Base names of the pass-1 files; their temp names follow the same ".<base>.tmp-<pid>" pattern.
    return f"{name}.disparity-f32.raw", f"{name}.rgb-u8.raw"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"invalid video name {name!r}: must be non-empty and not start with '.'")
    if "/" in name or "\\" in name or "\0" in name or os.sep in name:
        raise ValueError(f"invalid video name {name!r}: must not contain path separators")
    if f"{name}.json" == RUN_MANIFEST_NAME:
        raise ValueError(f"video name {name!r} would collide with the run manifest {RUN_MANIFEST_NAME}")


class _RawFrames:
    """A read-only ``(T, *frame_shape)`` array stored in a raw file, read with ``os.pread``.

    Supports ``x[t]``, ``x[a:b]`` and ``x[t, ...]``. The file is deliberately not memory-mapped:
    every mapped page a pass touches counts towards the process's resident memory until it is
    unmapped, so a memmap pass over a long video grows RSS with the video's length.
    """

    def __init__(self, path: Path, dtype: np.dtype | str, shape: tuple[int, ...]):
        self.dtype = np.dtype(dtype)
        self.shape = tuple(shape)
        self._frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        count = max(stop - start, 0)
        data = os.pread(self._fd, count * self._frame_bytes, start * self._frame_bytes)
        if len(data) != count * self._frame_bytes:
            raise OSError(f"raw prediction file is shorter than its {self.shape[0]} frames")
        return np.frombuffer(data, dtype=self.dtype).reshape((count, *self.shape[1:]))

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            return self[key[0]][key[1:]]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step != 1:
                raise IndexError("raw frames support contiguous slices only")
            return self._read(start, stop)
        t = int(key) + (self.shape[0] if int(key) < 0 else 0)
        if not 0 <= t < self.shape[0]:
            raise IndexError(f"frame {key} out of range for {self.shape[0]} frames")
        return self._read(t, t + 1)[0]

    def close(self) -> None:
        os.close(self._fd)


def _write_npz(path: Path, disparity: np.ndarray, frame_index: np.ndarray, key: str = "disparity") -> None:
    """``<name>.npz`` with ``key`` float16 ``(T,H,W)`` from the float32 raw frames, chunk by chunk.

    ``np.savez`` would need a float16 copy of the whole video, so the ``.npy`` member is written by
    hand: the ``numpy.lib.format`` header, then the data in chunks of ``_CHUNK_BYTES``, into an
    uncompressed (``ZIP_STORED``, like ``np.savez``) zip64 entry. ``np.load`` reads it as usual.
    """
    T, H, W = disparity.shape
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f2")), "fortran_order": False, "shape": (T, H, W)}
    step = max(1, _CHUNK_BYTES // (H * W * 2))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for start in range(0, T, step):
                chunk = np.ascontiguousarray(disparity[start : start + step], dtype="<f2")
                f.write(memoryview(chunk.reshape(-1).view(np.uint8)))
                del chunk  # else the next chunk is allocated while this one is still alive
        with zf.open("frame_index.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(frame_index, dtype="<i8"), allow_pickle=False)
    fsync_file(path)


def _to_disparity(disparity: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(disparity, torch.Tensor):
        disparity = disparity.detach().to("cpu", torch.float32).numpy()
    d = np.ascontiguousarray(disparity, dtype=np.float32)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"disparity must be (H,W) (or (1,H,W)), got shape {tuple(d.shape)}")
    return d


def _to_rgb_uint8(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(3,H,W)`` float in [0,1] (or uint8) -> ``(H,W,3)`` uint8."""
    if isinstance(rgb, torch.Tensor):
        rgb = rgb.detach().cpu().numpy()
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise ValueError(f"rgb must be (3,H,W), got shape {tuple(rgb.shape)}")
    if rgb.dtype != np.uint8:
        rgb = np.rint(np.clip(np.nan_to_num(rgb.astype(np.float32), nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))


# --------------------------------------------------------------------------- writer


class DepthVideoWriter:
    """Streams the disparity of one video to disk and writes the requested outputs atomically.

    Usage::

        with DepthVideoWriter(out_dir, "clip", OutputOptions(png16=True), fps=30) as writer:
            for index, disparity, rgb in predictions:   # (H,W) float, (3,H,W) in [0,1]
                writer.add(index, disparity, rgb)
            paths = writer.finish({"input": ..., "model": ..., "strategy": ..., "timing": ...})

    An exception inside the ``with`` block (or leaving it without ``finish``) calls ``abort``:
    no temp file stays behind and no output is created. Frames must have one ``(H,W)`` and strictly
    increasing ``frame_index`` (the original indices in the source video; frame files are named by it).

    Args:
        out_dir: the output folder (created if missing).
        name: the video's name, the stem of every output (``<name>.npz``, ``<name>_depth.mp4``, ...).
        options: which outputs to write.
        fps: the source video's frame rate for the mp4 outputs; ``None`` uses ``options.fps``.
        space: what the values are: ``disparity`` (larger is nearer) or relative ``depth``
            (larger is farther; ChronoDepth). It names the npz member, is recorded in the manifest,
            and the colourised videos draw near red either way.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        name: str,
        options: OutputOptions | None = None,
        fps: float | None = None,
        space: str = "disparity",
    ):
        _check_name(name)
        if space not in ("disparity", "depth"):
            raise ValueError(f"space must be 'disparity' or 'depth', got {space!r}")
        self.space = space
        self.options = OutputOptions() if options is None else options
        self.kinds = self.options.kinds()
        if not self.kinds:
            raise ValueError("OutputOptions requests no output at all")
        self.fps = float(self.options.fps if fps is None else fps)
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"fps must be a positive number, got {fps if fps is not None else self.options.fps}")
        # Every capability is checked now, not after an hour of inference.
        self._colour = self.options.depth_video or self.options.side_by_side
        if self._colour:
            lookup_table(self.options.colormap)
            self._video_codec = video_codec()
        for kind, codec in (("png16", "png"), ("exr", "exr")):
            if getattr(self.options, kind) and not encoder_available(codec):
                raise RuntimeError(
                    f"{kind} output requested, but this PyAV / FFmpeg build has no {codec!r} "
                    "encoder; turn the option off or install a PyAV wheel built with it"
                )

        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        raw_disparity, raw_rgb = _raw_names(name)
        self._disparity_path = self.out_dir / tmp_name(raw_disparity)
        self._rgb_path = self.out_dir / tmp_name(raw_rgb)
        self._disparity_file = None
        self._rgb_file = None
        self._frame_index = array.array("q")  # 8 bytes a frame, not a Python list of ints
        self._shape: tuple[int, int] | None = None
        self._min = math.inf
        self._max = -math.inf
        self._temps: list[Path] = []  # pass-2 outputs under temporary names, removed by abort
        self._state = "open"

    # ------------------------------------------------------------------ pass 1

    @property
    def num_frames(self) -> int:
        return len(self._frame_index)

    def add(
        self, frame_index: int, disparity: torch.Tensor | np.ndarray, rgb: torch.Tensor | np.ndarray | None = None
    ) -> None:
        """Append one frame.

        Args:
            frame_index: the frame's index in the source video; strictly increasing across calls.
            disparity: ``(H,W)`` (or ``(1,H,W)``) float relative disparity; must be finite.
            rgb: ``(3,H,W)`` float in [0,1] (or uint8), the input frame; required when
                ``side_by_side`` is on, ignored otherwise.
        """
        if self._state != "open":
            raise RuntimeError(f"{self.name}: add() after the writer was {self._state}")
        index = operator.index(frame_index)
        d = _to_disparity(disparity)
        # Everything is validated before anything is written, so a rejected frame leaves no trace.
        if self._shape is None:
            if d.shape[0] < 1 or d.shape[1] < 1:
                raise ValueError(f"{self.name}: frame {index} is empty ({d.shape})")
        elif d.shape != self._shape:
            raise ValueError(f"{self.name}: frame {index} has size {d.shape}, earlier frames {self._shape}")
        if index < 0 or (self._frame_index and index <= self._frame_index[-1]):
            previous = self._frame_index[-1] if self._frame_index else None
            raise ValueError(
                f"{self.name}: frame_index must be non-negative and strictly increasing, got {index} after {previous}"
            )
        finite = np.isfinite(d)
        if not finite.all():
            bad = d[~finite]
            raise ValueError(
                f"{self.name}: disparity of frame {index} has {int(np.isnan(bad).sum())} NaN and "
                f"{int(np.isinf(bad).sum())} infinite values"
            )
        lo, hi = float(d.min()), float(d.max())
        if self.options.npz and max(-lo, hi) > FLOAT16_MAX:
            raise ValueError(
                f"{self.name}: disparity of frame {index} reaches {max(-lo, hi):g}, beyond float16 "
                f"({FLOAT16_MAX:g}) used by the npz output; rescale the prediction or turn npz off"
            )
        image = None
        if self.options.side_by_side or self.options.point_clouds:
            if rgb is None:
                kind = "side_by_side" if self.options.side_by_side else "point_clouds"
                raise ValueError(f"{self.name}: {kind} needs the rgb frame, frame {index} has none")
            image = _to_rgb_uint8(rgb)
            if image.shape[:2] != d.shape:
                raise ValueError(f"{self.name}: rgb of frame {index} is {image.shape[:2]}, disparity {d.shape}")

        if self._disparity_file is None:
            self._disparity_file = open(self._disparity_path, "wb")
            if image is not None:
                self._rgb_file = open(self._rgb_path, "wb")
        self._disparity_file.write(memoryview(d).cast("B"))
        if image is not None:
            self._rgb_file.write(memoryview(image).cast("B"))
        self._shape = d.shape
        self._frame_index.append(index)
        self._min, self._max = min(self._min, lo), max(self._max, hi)

    # ------------------------------------------------------------------ pass 2

    def finish(
        self,
        manifest: dict[str, Any] | None = None,
        metric: MetricValues | None = None,
        intrinsics: np.ndarray | None = None,
        cam_to_world: np.ndarray | None = None,
    ) -> dict[str, str]:
        """Write every requested output, then ``<name>.json`` last; returns ``{kind: path}``.

        ``metric`` turns the raw prediction into metric values (depth in metres or disparity in
        1/metres) before anything is written; the manifest then records ``space``, ``units`` and
        ``alignment``. The point clouds need it, and ``intrinsics`` ``(T,3,3)`` (or one ``(3,3)``)
        in pixels of the written frames; with ``cam_to_world`` ``(T,4,4)`` their points are in world
        coordinates, otherwise in each frame's camera coordinates.

        ``manifest`` holds the caller's facts (input, model, strategy, resolution, timing, ...); the
        writer adds ``name``, ``frames``, ``height``, ``width``, ``fps``, ``frame_index_range``,
        ``disparity_range``, ``normalisation``, ``outputs`` (kind, path relative to the folder,
        bytes; ``files`` for frame folders) and ``format_version``, which win over the caller's keys.
        The returned map also has ``manifest``. Final-named outputs of this video that this run
        does not produce (left by an earlier run with other options) are removed. On any error
        everything not yet in place is removed and the manifest is not written.
        """
        if self._state != "open":
            raise RuntimeError(f"{self.name}: finish() after the writer was {self._state}")
        if not self._frame_index:
            self.abort()
            raise ValueError(f"{self.name}: no frame was added, nothing to write")
        if self.options.point_clouds and (metric is None or intrinsics is None):
            self.abort()
            raise ValueError(
                f"{self.name}: point clouds need metric values and intrinsics (finish(metric=..., intrinsics=...))"
            )
        try:
            return self._finish(dict(manifest or {}), metric, intrinsics, cam_to_world)
        except BaseException:
            self.abort()
            raise

    def _finish(
        self,
        manifest: dict[str, Any],
        metric: MetricValues | None,
        intrinsics: np.ndarray | None,
        cam_to_world: np.ndarray | None,
    ) -> dict[str, str]:
        self._close_raw()
        T, (H, W) = len(self._frame_index), self._shape
        frame_index = np.frombuffer(self._frame_index, dtype=np.int64)
        disparity = _RawFrames(self._disparity_path, np.float32, (T, H, W))
        keep_rgb = self.options.side_by_side or self.options.point_clouds
        rgb = _RawFrames(self._rgb_path, np.uint8, (T, H, W, 3)) if keep_rgb else None
        try:
            values: Any = disparity
            if metric is not None:
                if metric.space not in ("depth", "disparity"):
                    raise ValueError(f"metric space must be 'depth' or 'disparity', got {metric.space!r}")
                values = _MappedFrames(disparity, metric.values)
                # The ranges the outputs normalise by are the written values'.
                self._min, self._max = math.inf, -math.inf
                for t in range(T):
                    v = values[t]
                    self._min, self._max = min(self._min, float(v.min())), max(self._max, float(v.max()))
                self.space = metric.space
                manifest.update({"units": "m" if metric.space == "depth" else "1/m", "alignment": metric.record or {}})
            else:
                manifest.setdefault("units", None)
            written, normalisation, details = self._write_outputs(values, rgb, frame_index)
            if self.options.point_clouds:
                K = np.asarray(intrinsics, dtype=np.float64)
                K = np.broadcast_to(K, (T, 3, 3)) if K.ndim == 2 else K
                poses = None if cam_to_world is None else np.asarray(cam_to_world, dtype=np.float64)
                for kind, arr, shape in (("intrinsics", K, (3, 3)), ("cam_to_world", poses, (4, 4))):
                    if arr is not None and arr.shape != (T, *shape):
                        raise ValueError(f"{self.name}: {kind} has shape {arr.shape}, expected {(T, *shape)}")
                details.update(self._write_points(written, disparity, rgb, frame_index, metric, K, poses))
                manifest["point_clouds"] = {
                    "coordinates": "world (cam_to_world)"
                    if poses is not None
                    else "camera (OpenCV: x right, y down, z forward)",
                    "units": "m",
                    "stride": self.options.point_stride,
                    "intrinsics_first_frame": K[0].tolist(),
                }
        finally:
            disparity.close()
            if rgb is not None:
                rgb.close()
        return self._publish(written, normalisation, details, frame_index, manifest)

    def _write_outputs(
        self, disparity: _RawFrames, rgb: _RawFrames | None, frame_index: np.ndarray
    ) -> tuple[list[tuple[str, Path]], dict[str, Any], dict[str, dict[str, Any]]]:
        """Pass 2: every requested output under a temporary name."""
        T, H, W = disparity.shape
        names = output_names(self.name)
        normalisation: dict[str, Any] = {}
        details: dict[str, dict[str, Any]] = {}
        written: list[tuple[str, Path]] = []

        def temp_for(kind: str) -> Path:
            path = self.out_dir / tmp_name(names[kind])
            remove_path(path)  # a leftover of a killed process that had our pid
            self._temps.append(path)
            written.append((kind, path))
            return path

        if self.options.npz:
            _write_npz(temp_for("npz"), disparity, frame_index, key=self.space)
        if self.options.png16:
            span = self._max - self._min
            scale = PNG16_MAX / span if span > 0 else 0.0
            normalisation["png16"] = {
                "min": self._min,
                "max": self._max,
                "levels": PNG16_MAX,
                "to_disparity": "disparity = min + value / 65535 * (max - min)",
            }

            def quantise(d: np.ndarray) -> np.ndarray:
                q = np.rint((d.astype(np.float64) - self._min) * scale)
                return np.clip(q, 0, PNG16_MAX).astype(np.uint16)

            self._write_frames(temp_for("png16"), ".png", disparity, frame_index, "png", "gray16be", quantise)
        if self.options.exr:
            self._write_frames(
                temp_for("exr"),
                ".exr",
                disparity,
                frame_index,
                "exr",
                "grayf32le",
                lambda d: np.asarray(d, dtype=np.float32),
                {"compression": "zip16"},
            )
        if self._colour:
            lo, hi = robust_range(disparity)
            normalisation["colour"] = {
                "lo": lo,
                "hi": hi,
                "method": "percentiles 2 and 98 of a subsample of the video",
                "percentiles": list(DEPTH_VIDEO_PERCENTILES),
                "colormap": self.options.colormap,
            }
            cmap = self.options.colormap
            if self.space == "depth":
                # Depth grows with distance: colour its negation so that near is drawn alike.
                def colour(t: int) -> np.ndarray:
                    return colorize_disparity(-np.asarray(disparity[t]), -hi, -lo, cmap)
            else:

                def colour(t: int) -> np.ndarray:
                    return colorize_disparity(disparity[t], lo, hi, cmap)

            if self.options.depth_video:
                frames = (colour(t) for t in range(T))
                details["depth_video"] = self._write_video(temp_for("depth_video"), frames, H, W)
            if self.options.side_by_side:
                frames = (np.concatenate([rgb[t], colour(t)], axis=1) for t in range(T))
                details["side_by_side"] = self._write_video(temp_for("side_by_side"), frames, H, 2 * W)
        return written, normalisation, details

    def _write_points(
        self,
        written: list[tuple[str, Path]],
        raw: _RawFrames,
        rgb: _RawFrames,
        frame_index: np.ndarray,
        metric: MetricValues,
        K: np.ndarray,
        poses: np.ndarray | None,
    ) -> dict[str, dict[str, Any]]:
        """``<name>_ply/`` and ``<name>_points.npz`` under temporary names; returns their details."""
        names = output_names(self.name)
        T = raw.shape[0]
        stride = max(1, int(self.options.point_stride))

        def frame(t: int) -> tuple[np.ndarray, np.ndarray]:
            depth = np.asarray(metric.to_depth(raw[t]), dtype=np.float64)
            keep = depth < metric.max_depth  # clipped to the far limit: sky, not a surface
            xyz, index = depth_to_points(depth, K[t], None if poses is None else poses[t], keep, stride)
            return xyz, rgb[t].reshape(-1, 3)[index]

        folder = self.out_dir / tmp_name(names["ply"])
        remove_path(folder)
        self._temps.append(folder)
        written.append(("ply", folder))
        folder.mkdir()
        counts = []
        for t in range(T):
            xyz, colours = frame(t)
            counts.append(len(xyz))
            write_bytes_synced(folder / f"{int(frame_index[t]):06d}.ply", ply_bytes(xyz, colours))
        fsync_dir(folder)

        path = self.out_dir / tmp_name(names["points"])
        remove_path(path)
        self._temps.append(path)
        written.append(("points", path))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(offsets[-1])
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            # Frame by frame, twice (xyz, then rgb): memory stays at one frame's points.
            for member, dtype, part in (("xyz", "<f4", 0), ("rgb", "u1", 1)):
                header = {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": (total, 3),
                }
                with zf.open(f"{member}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(f, header)
                    for t in range(T):
                        f.write(np.ascontiguousarray(frame(t)[part], dtype=dtype).tobytes())
            for member, array in (("frame_index", np.asarray(frame_index, "<i8")), ("offsets", offsets)):
                with zf.open(f"{member}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
        fsync_file(path)
        return {"ply": {"points": total}, "points": {"points": total}}

    def _publish(
        self,
        written: list[tuple[str, Path]],
        normalisation: dict[str, Any],
        details: dict[str, dict[str, Any]],
        frame_index: np.ndarray,
        manifest: dict[str, Any],
    ) -> dict[str, str]:
        """Move the outputs into place, then write the manifest that marks them complete."""
        T, (H, W) = len(frame_index), self._shape
        names = output_names(self.name)

        outputs = []
        for kind, path in written:
            entry: dict[str, Any] = {"kind": kind, "path": names[kind]}
            if path.is_dir():
                files = sorted(path.iterdir())
                entry.update(bytes=sum(f.stat().st_size for f in files), files=len(files))
            else:
                entry["bytes"] = path.stat().st_size
            entry.update(details.get(kind, {}))
            outputs.append(entry)

        # From here the old manifest must be gone: it would vouch for files being replaced.
        manifest_path = self.out_dir / names["manifest"]
        manifest_path.unlink(missing_ok=True)
        for kind in OUTPUT_KINDS:
            if kind not in self.kinds:
                remove_path(self.out_dir / names[kind])
        for kind, path in written:
            final = self.out_dir / names[kind]
            if final.is_dir() and not final.is_symlink():
                shutil.rmtree(final)  # os.replace cannot replace a non-empty folder
            os.replace(path, final)
            self._temps.remove(path)
        fsync_dir(self.out_dir)
        self._remove_raw()

        manifest.update(
            {
                "format_version": _FORMAT_VERSION,
                "name": self.name,
                "frames": T,
                "height": H,
                "width": W,
                "fps": self.fps,
                "frame_index_range": [int(frame_index[0]), int(frame_index[-1])],
                "space": self.space,
                "disparity_range": {"min": self._min, "max": self._max},
                "normalisation": normalisation,
                "options": asdict(self.options),
                "outputs": outputs,
            }
        )
        write_json_atomic(manifest_path, manifest)
        self._state = "finished"
        paths = {kind: str(self.out_dir / names[kind]) for kind, _ in written}
        paths["manifest"] = str(manifest_path)
        return paths

    def _write_frames(
        self,
        folder: Path,
        suffix: str,
        disparity: np.ndarray,
        frame_index: np.ndarray,
        codec: str,
        pix_fmt: str,
        convert: Callable[[np.ndarray], np.ndarray],
        options: dict[str, str] | None = None,
    ) -> None:
        """One image per frame, ``<frame_index:06d><suffix>``, into ``folder`` (renamed as a whole later)."""
        folder.mkdir()
        T, H, W = disparity.shape
        encoder = ImageEncoder(codec, pix_fmt, H, W, options)
        for t in range(T):
            write_bytes_synced(folder / f"{int(frame_index[t]):06d}{suffix}", encoder.encode(convert(disparity[t])))
        fsync_dir(folder)

    def _write_video(self, path: Path, frames: Iterator[np.ndarray], height: int, width: int) -> dict[str, Any]:
        """Encode ``(height, width, 3)`` uint8 frames into the mp4 ``path``, fsynced; returns its stream facts."""
        details = write_mp4(path, frames, height, width, self.fps, self._video_codec)
        fsync_file(path)
        return details

    # ------------------------------------------------------------------ cleanup

    def _close_raw(self) -> None:
        for f in (self._disparity_file, self._rgb_file):
            if f is not None and not f.closed:
                f.close()

    def _remove_raw(self) -> None:
        self._disparity_path.unlink(missing_ok=True)
        self._rgb_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Remove every temp file and folder of this writer; final-named outputs are not touched."""
        if self._state == "finished":
            return
        self._close_raw()
        self._remove_raw()
        for path in self._temps:
            remove_path(path)
        self._temps.clear()
        self._state = "aborted"

    def __enter__(self) -> DepthVideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._state == "open":
            if exc_type is None:
                warnings.warn(f"{self.name}: DepthVideoWriter left without finish(); nothing was written", stacklevel=2)
            self.abort()

    def __del__(self) -> None:
        # A writer dropped mid-stream (e.g. by a generator that was closed) leaves no temp files.
        try:
            if getattr(self, "_state", None) == "open":
                self.abort()
        except Exception:
            pass


# --------------------------------------------------------------------------- resume


def _read_manifest(out_dir: Path, name: str) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out_dir / output_names(name)["manifest"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def outputs_complete(out_dir: str | os.PathLike, name: str) -> bool:
    """True when ``<name>.json`` exists, parses, and every output it lists is there with its size.

    Frame folders are checked by file count and total bytes.
    """
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir, name)
    if manifest is None or not isinstance(manifest.get("outputs"), list) or not manifest["outputs"]:
        return False
    names = output_names(name)
    try:
        for entry in manifest["outputs"]:
            kind = entry["kind"]
            if kind not in OUTPUT_KINDS or entry["path"] != names[kind]:
                return False
            path = out_dir / names[kind]
            if "files" in entry:
                if not path.is_dir():
                    return False
                files = [f for f in path.iterdir() if not f.name.startswith(".")]
                if len(files) != entry["files"] or sum(f.stat().st_size for f in files) != entry["bytes"]:
                    return False
            elif not path.is_file() or path.stat().st_size != entry["bytes"]:
                return False
    except (KeyError, TypeError, OSError):
        return False
    return True


def clean_partial(out_dir: str | os.PathLike, name: str) -> list[Path]:
    """Delete what a killed or failed run left for video ``name``; returns the removed paths.

    Removes every temp file / folder of any process (``.<output>.tmp-<pid>``, the raw pass-1 files)
    and every final-named output not vouched for by a complete manifest: all of them, and the
    manifest, when ``outputs_complete`` is false; only those the manifest does not list otherwise.
    Do not call it while another process writes the same video into the same folder.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    names = output_names(name)
    bases = set(names.values()) | set(_raw_names(name))
    removed = []
    for entry in sorted(os.listdir(out_dir)):
        if tmp_base(entry) in bases:
            if remove_path(out_dir / entry):
                removed.append(out_dir / entry)
    if outputs_complete(out_dir, name):
        listed = {e["kind"] for e in _read_manifest(out_dir, name)["outputs"]}
        stale = [names[kind] for kind in OUTPUT_KINDS if kind not in listed]
    else:
        stale = [names["manifest"]] + [names[kind] for kind in OUTPUT_KINDS]  # manifest first: never vouch
    for base in stale:
        path = out_dir / base
        if path.exists() or path.is_symlink():
            remove_path(path)
            removed.append(path)
    return removed
