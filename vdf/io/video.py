"""Reading one video or image sequence frame by frame: `VideoSource`.

`VideoSource.probe` opens the input and decodes its first frame, so a broken file fails early;
`VideoSource.frames` then yields ``(index, frame)`` pairs one at a time straight from PyAV's
decoder — a video is never decoded whole into memory. What counts as an input, and how inputs are
found and named, is in `vdf.io.inputs`.

Every frame comes out as float32 ``(3, H, W)`` RGB in [0, 1], upright (the container's display
matrix / rotation is applied, `vdf.io.orientation`), at the output size given by `output_size`.
Anything wrong with the input raises `VideoInputError`, whose message names the file and says what
is wrong.
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
import torch
import torch.nn.functional as F

from vdf.io.inputs import VideoInputError, image_files
from vdf.io.orientation import frame_orientation, orient_frame
from vdf.io.prefetch import ReadAhead

__all__ = ["VideoInfo", "VideoSource", "output_size"]


@dataclass(frozen=True)
class VideoInfo:
    """What `VideoSource.probe` learns about an input.

    Attributes:
        path: the video file or image folder.
        name: the source's name (see `VideoSource`).
        kind: ``"video"`` for a container file, ``"images"`` for a folder of frames.
        width, height: display size in pixels, after rotation, before resizing.
        out_width, out_height: size of the frames that `VideoSource.frames` yields.
        num_frames: exact for image sequences; for videos the count the container declares, else an
            estimate from duration x fps, else ``None``. Not reduced by start/stride/max_frames.
        fps: average frame rate (total frames / duration; see "variable frame rate" in the docs),
            ``None`` for image sequences or when the container does not say.
        rotation: counter-clockwise degrees (0, 90, 180, 270) applied to the stored frames to show
            them upright, from the display matrix (or the legacy ``rotate`` tag).
        pix_fmt: FFmpeg pixel format of the decoded first frame (``"yuv420p10le"``, ``"rgba"``...).
    """

    path: Path
    name: str
    kind: Literal["video", "images"]
    width: int
    height: int
    out_width: int
    out_height: int
    num_frames: int | None
    fps: float | None
    rotation: int
    pix_fmt: str | None


def check_decode_options(
    max_size: int | None,
    size_multiple: int,
    stride: int,
    max_frames: int | None,
    start_frame: int,
    prefetch_frames: int = 0,
) -> None:
    """Raise ``ValueError`` for decoding options `VideoSource` (or `vdf.io.live.LiveSource`) cannot honour."""
    if max_size is not None and max_size < 1:
        raise ValueError(f"max_size must be at least 1 (or None), got {max_size}")
    if size_multiple < 1:
        raise ValueError(f"size_multiple must be at least 1, got {size_multiple}")
    if max_size is not None and max_size < size_multiple:
        raise ValueError(f"max_size ({max_size}) must be at least size_multiple ({size_multiple})")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1 (or None), got {max_frames}")
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    if prefetch_frames < 0:
        raise ValueError(f"prefetch_frames must be >= 0 (0: decode in the model's thread), got {prefetch_frames}")


def output_size(width: int, height: int, max_size: int | None = None, size_multiple: int = 1) -> tuple[int, int]:
    """Output ``(width, height)`` for a ``width x height`` frame.

    1. ``max_size`` caps the long side: larger frames are scaled down keeping their aspect ratio
       (sides rounded to the nearest pixel, at least 1); smaller frames are never scaled up.
    2. ``size_multiple`` then rounds each side *down* to a multiple of it, but never below the
       multiple itself (so a side shorter than the multiple is rounded up to it). Frames are
       resized, not cropped, to this size, so the aspect ratio changes by less than one multiple.
    """
    if width < 1 or height < 1:
        raise ValueError(f"frame size must be positive, got {width}x{height}")
    w, h = width, height
    if max_size is not None and max(w, h) > max_size:
        scale = max_size / max(w, h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
    if size_multiple > 1:
        w = max(size_multiple, w // size_multiple * size_multiple)
        h = max(size_multiple, h // size_multiple * size_multiple)
    return w, h


# --------------------------------------------------------------------------------------------
# Decoding helpers


def _ffmpeg_message(err: BaseException) -> str:
    return getattr(err, "strerror", None) or str(err)


def _check_file(path: Path) -> None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoInputError(path, "no such file or folder") from None
    except OSError as err:
        raise VideoInputError(path, f"cannot read the file ({err.strerror or err})") from err
    if size == 0:
        raise VideoInputError(path, "empty file (0 bytes)")


def _top_level_boxes(path: Path, limit: int = 64) -> list[bytes]:
    """Types of the top-level ISO-BMFF (MP4/MOV) boxes, read from their headers only."""
    types: list[bytes] = []
    size_total = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos + 8 <= size_total and len(types) < limit:
            f.seek(pos)
            head = f.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if size == 1 and len(head) >= 16:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = size_total - pos
            if size < 8 or not kind.isascii():
                break
            types.append(kind)
            pos += size
    return types


def _open_failure_reason(path: Path, err: BaseException) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file or folder"
    if isinstance(err, PermissionError):
        return "permission denied"
    try:
        boxes = _top_level_boxes(path)
    except OSError:
        boxes = []
    if boxes[:1] == [b"ftyp"] and b"moov" not in boxes:
        return (
            "truncated or incomplete MP4/MOV: it has no 'moov' index box (the file was probably "
            f"cut short while recording or copying; FFmpeg: {_ffmpeg_message(err)})"
        )
    return f"not a video FFmpeg can read ({_ffmpeg_message(err)})"


def _open_container(path: Path) -> av.container.InputContainer:
    try:
        # metadata_errors="replace": real footage carries non-UTF-8 tags; they must not stop us.
        return av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError) as err:
        raise VideoInputError(path, _open_failure_reason(path, err)) from err


def _is_high_bit_depth(frame: av.VideoFrame) -> bool:
    return any(c.bits > 8 for c in frame.format.components)


def _frame_to_tensor(frame: av.VideoFrame, rotation: int, mirrored: bool, out_hw: tuple[int, int]) -> torch.Tensor:
    """Decoded ``frame`` -> float32 ``(3, out_h, out_w)`` RGB in [0, 1], upright, resized if needed.

    >8-bit sources are converted at 16 bits (``rgb48le``) so no precision is lost; alpha is dropped
    (colour taken as stored, not composited); grey is replicated to three channels.
    """
    if _is_high_bit_depth(frame):
        array = frame.to_ndarray(format="rgb48le")  # (H, W, 3) uint16
        image = torch.from_numpy(array.astype(np.float32)).mul_(1.0 / 65535.0)
    else:
        array = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
        image = torch.from_numpy(array)
    # Orient while still (H, W, 3): dims -3, -2 are the image rows and columns.
    image = orient_frame(image.movedim(-1, 0), rotation, mirrored).contiguous()  # (3, H', W')
    if image.dtype == torch.uint8:
        image = image.to(torch.float32).mul_(1.0 / 255.0)
    if tuple(image.shape[-2:]) != out_hw:
        image = F.interpolate(image[None], size=out_hw, mode="bilinear", antialias=True, align_corners=False)[0]
        image = image.clamp_(0.0, 1.0)
    return image


def _pick_video_stream(streams: Sequence) -> object | None:
    """The first video stream that is not cover art (``attached_pic``), else the first one."""
    for stream in streams:
        if av.stream.Disposition.attached_pic not in stream.disposition:
            return stream
    return streams[0] if streams else None


def _average_fps(stream: av.video.stream.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _stream_end_seconds(stream: av.video.stream.VideoStream) -> float | None:
    if not stream.duration or stream.time_base is None:
        return None
    return float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base)


# --------------------------------------------------------------------------------------------
# The source


class VideoSource:
    """One video file or image-sequence folder, read frame by frame.

    Args:
        path: a video file (anything FFmpeg reads; `find_inputs` only picks ``VIDEO_EXTENSIONS``)
            or a folder of ``.png/.jpg/.jpeg`` frames (natural sort order).
        name: name for logs and outputs; defaults to the file's stem or the folder's name (use
            `output_name` for names that are unique across a folder tree).
        max_size: cap on the long side of the output, in pixels (downscale only, aspect kept).
        size_multiple: round the output height and width down to a multiple of this (at least the
            multiple), e.g. 2 for yuv420p video outputs or 14 for a ViT patch grid.
        stride: yield every ``stride``-th frame (every frame is still decoded: video codecs need it).
        max_frames: stop after yielding this many frames (``None``: all).
        start_frame: index of the first frame to consider; earlier frames are decoded and dropped
            (exact, unlike seeking to a keyframe), so a large value costs decoding time.
        prefetch_frames: decode in a background thread, at most this many frames ahead of the
            consumer (`vdf.io.prefetch.ReadAhead`; each costs ``3 * out_height * out_width * 4``
            bytes); 0 decodes in the consumer's thread. The frames are the same either way.

    The frames yielded are ``start_frame, start_frame + stride, ...`` (original indices), at most
    ``max_frames`` of them, each float32 ``(3, out_height, out_width)`` in [0, 1].
    """

    def __init__(
        self,
        path: str | Path,
        name: str | None = None,
        max_size: int | None = None,
        size_multiple: int = 1,
        stride: int = 1,
        max_frames: int | None = None,
        start_frame: int = 0,
        prefetch_frames: int = 0,
    ):
        check_decode_options(max_size, size_multiple, stride, max_frames, start_frame, prefetch_frames)
        self.path = Path(path)
        self.name = name if name is not None else (self.path.name if self.path.is_dir() else self.path.stem)
        self.max_size = max_size
        self.size_multiple = size_multiple
        self.stride = stride
        self.max_frames = max_frames
        self.start_frame = start_frame
        self.prefetch_frames = prefetch_frames
        self._readers: weakref.WeakSet[ReadAhead] = weakref.WeakSet()  # the frames() iterators in use
        self._info: VideoInfo | None = None
        # Orientation decided at probe time and applied to every frame, so all frames share a size.
        self._rotation, self._mirrored = 0, False
        self._declared_frames: int | None = None
        self._images: list[Path] = []
        self._stream_index = 0

    def __repr__(self) -> str:
        return (
            f"VideoSource({str(self.path)!r}, name={self.name!r}, max_size={self.max_size}, "
            f"size_multiple={self.size_multiple}, stride={self.stride}, max_frames={self.max_frames}, "
            f"start_frame={self.start_frame}, prefetch_frames={self.prefetch_frames})"
        )

    # ---- metadata

    @property
    def info(self) -> VideoInfo:
        """`probe`'s result (probing on first access)."""
        return self.probe()

    def probe(self) -> VideoInfo:
        """Open the input, read its metadata and decode its first frame (cached after the first call).

        Raises:
            VideoInputError: missing / empty / unreadable file, no video stream, first frame not
                decodable, image folder without images.
        """
        if self._info is None:
            self._info = self._probe_images() if self.path.is_dir() else self._probe_video()
        return self._info

    def _make_info(self, kind, width, height, num_frames, fps, pix_fmt) -> VideoInfo:
        out_w, out_h = output_size(width, height, self.max_size, self.size_multiple)
        return VideoInfo(
            path=self.path,
            name=self.name,
            kind=kind,
            width=width,
            height=height,
            out_width=out_w,
            out_height=out_h,
            num_frames=num_frames,
            fps=fps,
            rotation=self._rotation,
            pix_fmt=pix_fmt,
        )

    def _probe_video(self) -> VideoInfo:
        _check_file(self.path)
        with _open_container(self.path) as container:
            stream = _pick_video_stream(container.streams.video)
            if stream is None:
                kinds = sorted({s.type for s in container.streams}) or ["no streams at all"]
                raise VideoInputError(self.path, f"no video stream (the file holds: {', '.join(kinds)})")
            self._stream_index = stream.index
            try:
                first = next(iter(container.decode(stream)), None)
            except av.FFmpegError as err:
                raise VideoInputError(self.path, f"could not decode the first frame ({_ffmpeg_message(err)})") from err
            if first is None:
                raise VideoInputError(self.path, "no frame could be decoded (empty or corrupt video stream)")
            self._rotation, self._mirrored, note = frame_orientation(first, stream.metadata)
            if note:
                warnings.warn(f"{self.path}: {note}", stacklevel=3)
            fps = _average_fps(stream)
            self._declared_frames = stream.frames if stream.frames and stream.frames > 0 else None
            num_frames = self._declared_frames
            if num_frames is None and fps is not None:
                seconds = _stream_end_seconds(stream)
                if seconds is None and container.duration:
                    seconds = container.duration / av.time_base
                if seconds:
                    num_frames = max(1, round(seconds * fps))
            h, w = first.height, first.width
            if self._rotation in (90, 270):
                h, w = w, h
            return self._make_info("video", w, h, num_frames, fps, first.format.name)

    def _probe_images(self) -> VideoInfo:
        images = image_files(self.path)
        if not images:
            raise VideoInputError(
                self.path,
                "folder holds no images (.png/.jpg/.jpeg) and is not a video "
                "(use find_inputs() to scan a folder of videos)",
            )
        frame, rotation, mirrored = self._decode_image(images[0], 0)
        self._rotation, self._mirrored = rotation, mirrored
        h, w = frame.height, frame.width
        if rotation in (90, 270):
            h, w = w, h
        self._images = images
        return self._make_info("images", w, h, len(images), None, frame.format.name)

    @property
    def num_frames(self) -> int | None:
        """How many frames `frames` will yield, from ``info.num_frames`` (exact for image sequences,
        the container's count or an estimate for videos) and start/stride/max_frames; ``None`` if
        the container gives no count and no duration."""
        total = self.probe().num_frames
        if total is None:
            return None
        count = math.ceil(max(0, total - self.start_frame) / self.stride)
        return count if self.max_frames is None else min(count, self.max_frames)

    def __len__(self) -> int:
        count = self.num_frames
        if count is None:
            raise TypeError(
                f"{self.path}: the number of frames is unknown (the container declares no "
                "frame count or duration); use num_frames, which may be None"
            )
        return count

    # ---- frames

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        return self.frames()

    def frames(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(index, frame)``: the frame's original index and float32 ``(3, H, W)`` in [0, 1].

        ``H, W = info.out_height, info.out_width``. Frames come in the order the decoder outputs
        them (presentation order); ``index`` counts decoded frames from 0, so a variable-frame-rate
        video's indices ignore its timestamps (nothing is duplicated or dropped to a constant rate).
        Holds one decoded frame at a time, plus up to ``prefetch_frames`` decoded ahead in a
        background thread (stopped by `close`, or when the iterator is dropped).

        Raises:
            VideoInputError: as in `probe`; and when decoding fails part-way, or the video ends
                before the frame count its container declares (see `_check_complete`).
        """
        if self.prefetch_frames > 0:
            reader = ReadAhead(self._decoded, self.prefetch_frames, label=str(self.path))
            self._readers.add(reader)
            return reader
        return self._decoded()

    def close(self) -> None:
        """Stop the background decoding of `frames` iterators (with ``prefetch_frames``), if any."""
        for reader in list(self._readers):
            reader.close()

    def _decoded(self) -> Iterator[tuple[int, torch.Tensor]]:
        info = self.probe()
        out_hw = (info.out_height, info.out_width)
        if info.kind == "images":
            yield from self._image_frames(out_hw)
        else:
            yield from self._video_frames(out_hw)

    def _wanted(self, index: int) -> bool:
        return index >= self.start_frame and (index - self.start_frame) % self.stride == 0

    def _video_frames(self, out_hw: tuple[int, int]) -> Iterator[tuple[int, torch.Tensor]]:
        with _open_container(self.path) as container:
            stream = container.streams[self._stream_index]
            stream.thread_type = "AUTO"  # frame + slice threads: decoding dominates the cost
            decoded = iter(container.decode(stream))
            index, emitted, last_end = -1, 0, None
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    break
                except av.FFmpegError as err:
                    of = f" of {self._declared_frames}" if self._declared_frames else ""
                    raise VideoInputError(
                        self.path,
                        f"truncated or corrupt: decoding stopped at frame {index + 1}{of} ({_ffmpeg_message(err)})",
                    ) from err
                index += 1
                if frame.time is not None:
                    last_end = frame.time + float((frame.duration or 0) * (frame.time_base or 0))
                if not self._wanted(index):
                    continue
                image = _frame_to_tensor(frame, self._rotation, self._mirrored, out_hw)
                del frame  # hold no decoder buffer while the consumer works on the image
                yield index, image
                emitted += 1
                if self.max_frames is not None and emitted >= self.max_frames:
                    return
            self._check_complete(index + 1, last_end, stream)

    def _check_complete(self, decoded: int, last_end: float | None, stream) -> None:
        """Raise if the video ended before the frame count its container declares.

        Only containers that declare a count can be checked (MP4/MOV/AVI; Matroska/WebM written by
        FFmpeg do not: for them a shortfall of more than 10% against the duration estimate only
        warns). A shortfall is forgiven when the last frame reaches the stream's declared
        duration (within 1.5 frames): edit lists and undecodable leading B-frames legitimately
        yield fewer frames than the container's sample count, a cut-off file does not reach its end.
        """
        declared = self._declared_frames
        if declared is None:
            estimate = self._info.num_frames if self._info is not None else None
            if estimate and decoded < 0.9 * estimate - 1:
                # Only a duration-based estimate: too weak to fail on, worth a word.
                warnings.warn(
                    f"{self.path}: decoded {decoded} frames but the duration suggests about "
                    f"{estimate}; the file may be truncated",
                    stacklevel=4,
                )
            return
        if decoded >= declared:
            return
        end = _stream_end_seconds(stream)
        fps = self._info.fps if self._info is not None else None
        if end is not None and last_end is not None and fps:
            if last_end >= end - 1.5 / fps:
                return
        raise VideoInputError(
            self.path, f"truncated: decoding stopped at frame {decoded} of {declared} declared by the container"
        )

    def _decode_image(self, image_path: Path, index: int) -> tuple[av.VideoFrame, int, bool]:
        where = f"frame {index} of image sequence '{self.path.name}'"
        try:
            if image_path.stat().st_size == 0:
                raise VideoInputError(image_path, f"{where}: empty file (0 bytes)")
        except OSError as err:
            raise VideoInputError(image_path, f"{where}: cannot read the file ({err.strerror or err})") from err
        try:
            with av.open(str(image_path), metadata_errors="replace") as container:
                frame = next(iter(container.decode(video=0)), None)
        except (av.FFmpegError, OSError, IndexError) as err:
            raise VideoInputError(image_path, f"{where}: not a readable image ({_ffmpeg_message(err)})") from err
        if frame is None:
            raise VideoInputError(image_path, f"{where}: not a readable image (no picture decoded)")
        rotation, mirrored, note = frame_orientation(frame, {})
        if note:
            warnings.warn(f"{image_path}: {note}", stacklevel=3)
        return frame, rotation, mirrored

    def _image_frames(self, out_hw: tuple[int, int]) -> Iterator[tuple[int, torch.Tensor]]:
        info = self._info
        emitted = 0
        for index, image_path in enumerate(self._images):
            if not self._wanted(index):
                continue  # skipped frames are not even read
            frame, rotation, mirrored = self._decode_image(image_path, index)
            # Each image carries its own orientation (EXIF); sizes must agree once upright.
            h, w = (frame.width, frame.height) if rotation in (90, 270) else (frame.height, frame.width)
            if (w, h) != (info.width, info.height):
                raise VideoInputError(
                    image_path,
                    f"frame {index} of image sequence '{self.path.name}' is {w}x{h} but the "
                    f"first frame is {info.width}x{info.height} (all frames must share a size)",
                )
            image = _frame_to_tensor(frame, rotation, mirrored, out_hw)
            del frame
            yield index, image
            emitted += 1
            if self.max_frames is not None and emitted >= self.max_frames:
                return
