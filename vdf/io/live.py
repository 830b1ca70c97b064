"""`LiveSource`: a camera, a network stream or a pipe, read once as its frames arrive.

A file can be opened twice (probe, then decode) and has an end the container declares; a live
input has neither. `LiveSource` opens it once, keeps the first decoded frame from the probe for
the frame loop, and ends when the stream ends (or the run is interrupted). It has the interface
of `VideoSource` that predict uses (``name``, ``path``, ``probe``, ``num_frames``, ``stride``,
``frames``), so any predictor and strategy read it; a streaming one (FlashDepth's `Streaming`)
returns each frame's depth as soon as the frame arrives.

What is live (`is_live_input`): ``-`` (standard input, e.g. ``ffmpeg ... -f mpegts - | vdf
predict --input -``), URLs of FFmpeg's network protocols (``rtsp://``, ``rtmp://``, ``http(s)://``,
``udp://``, ``tcp://``, ``srt://``) and capture devices (``/dev/video0``; on other systems give
FFmpeg's device format, e.g. ``avfoundation`` or ``dshow``, as ``live_format``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import torch

from vdf.io.prefetch import ReadAhead
from vdf.io.video import (
    VideoInfo,
    VideoInputError,
    _ffmpeg_message,
    _frame_to_tensor,
    _pick_video_stream,
    check_decode_options,
    frame_orientation,
    output_size,
)

#: URL schemes FFmpeg reads as live streams.
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://", "pipe:")


def is_live_input(spec: str | None) -> bool:
    """Whether ``spec`` names a live input (stdin ``-``, a stream URL, a capture device) rather than files."""
    if spec is None:
        return False
    spec = str(spec)
    return spec == "-" or spec.lower().startswith(LIVE_SCHEMES) or spec.startswith("/dev/video")


class LiveSource:
    """One live input, decoded frame by frame as it arrives.

    Args:
        spec: ``-`` (standard input), a stream URL, or a capture device (see `is_live_input`).
        name: name of the outputs (default ``stream_<start time>``, or the device's name and the time).
        max_size, size_multiple, stride, max_frames, start_frame, prefetch_frames: as `VideoSource`
            (with ``prefetch_frames``, a background thread takes frames off the stream while the
            model works, so the input's buffer does not fill up behind a slow frame).
        live_format: FFmpeg input format to force (``v4l2`` is used for ``/dev/video*``;
            ``mpegts`` for a pipe whose format FFmpeg cannot guess).
        open_timeout: seconds to wait for the stream to open and for each read (network inputs).
    """

    def __init__(
        self,
        spec: str,
        name: str | None = None,
        max_size: int | None = None,
        size_multiple: int = 1,
        stride: int = 1,
        max_frames: int | None = None,
        start_frame: int = 0,
        live_format: str | None = None,
        open_timeout: float = 30.0,
        prefetch_frames: int = 0,
    ):
        check_decode_options(max_size, size_multiple, stride, max_frames, start_frame, prefetch_frames)
        self.spec = str(spec)
        self.path = self.spec  # what messages and manifests name
        # A live input has no name of its own, and each session is new content: the start time names it.
        device = Path(self.spec).name if self.spec.startswith("/dev/") else "stream"
        self.name = name or f"{device}_{time.strftime('%Y%m%d-%H%M%S')}"
        self.max_size, self.size_multiple = max_size, size_multiple
        self.stride, self.max_frames, self.start_frame = stride, max_frames, start_frame
        self.live_format = live_format or ("v4l2" if self.spec.startswith("/dev/video") else None)
        self.open_timeout = open_timeout
        self.prefetch_frames = prefetch_frames
        self._reader: ReadAhead | None = None
        self._container = None
        self._stream = None
        self._first = None
        self._info: VideoInfo | None = None
        self._rotation, self._mirrored = 0, False
        self._read = False

    def __repr__(self) -> str:
        return f"LiveSource({self.spec!r}, name={self.name!r}, stride={self.stride}, max_frames={self.max_frames})"

    @property
    def num_frames(self) -> int | None:
        """Unknown for a live input (``max_frames`` when it caps the run)."""
        return self.max_frames

    def _open(self):
        options = {}
        if self.spec.lower().startswith(LIVE_SCHEMES) and not self.spec.startswith("pipe:"):
            # FFmpeg's network timeouts are in microseconds; a dead stream must not hang predict.
            options["rw_timeout"] = str(int(self.open_timeout * 1e6))
        target = sys.stdin.buffer if self.spec == "-" else self.spec
        try:
            return av.open(
                target, format=self.live_format, options=options, metadata_errors="replace", timeout=self.open_timeout
            )
        except (av.FFmpegError, OSError) as err:
            raise VideoInputError(self.spec, f"could not open the live input ({_ffmpeg_message(err)})") from err

    def probe(self) -> VideoInfo:
        """Open the input and decode its first frame (kept for `frames`); cached."""
        if self._info is not None:
            return self._info
        container = self._open()
        try:
            stream = _pick_video_stream(container.streams.video)
            if stream is None:
                raise VideoInputError(self.spec, "no video stream in the live input")
            try:
                first = next(iter(container.decode(stream)), None)
            except av.FFmpegError as err:
                raise VideoInputError(self.spec, f"could not decode the first frame ({_ffmpeg_message(err)})") from err
            if first is None:
                raise VideoInputError(self.spec, "the stream ended before its first frame")
        except VideoInputError:
            container.close()
            raise
        self._container, self._stream, self._first = container, stream, first
        self._rotation, self._mirrored, _ = frame_orientation(first, stream.metadata)
        h, w = first.height, first.width
        if self._rotation in (90, 270):
            h, w = w, h
        out_w, out_h = output_size(w, h, self.max_size, self.size_multiple)
        rate = stream.average_rate or stream.guessed_rate
        self._info = VideoInfo(
            path=Path(self.name),
            name=self.name,
            kind="live",
            width=w,
            height=h,
            out_width=out_w,
            out_height=out_h,
            num_frames=None,
            fps=float(rate) if rate else None,
            rotation=self._rotation,
            pix_fmt=first.format.name,
        )
        return self._info

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        return self.frames()

    def frames(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(index, frame)`` as frames arrive, until the stream ends; one pass only."""
        if self._read:
            raise VideoInputError(self.spec, "a live input can be read only once")
        self._read = True
        if self.prefetch_frames > 0:
            self._reader = ReadAhead(self._decoded, self.prefetch_frames, label=self.spec)
            return self._reader
        return self._decoded()

    def _decoded(self) -> Iterator[tuple[int, torch.Tensor]]:
        info = self.probe()
        out_hw = (info.out_height, info.out_width)

        def decoded():
            yield self._first
            self._first = None
            yield from self._container.decode(self._stream)

        emitted = 0
        try:
            for index, frame in enumerate(decoded()):
                if index < self.start_frame or (index - self.start_frame) % self.stride:
                    continue
                image = _frame_to_tensor(frame, self._rotation, self._mirrored, out_hw)
                yield index, image
                emitted += 1
                if self.max_frames is not None and emitted >= self.max_frames:
                    return
        except av.FFmpegError:
            # A live stream ends by dropping: what arrived is the video.
            return
        finally:
            self._close_container()  # in the thread that decodes

    def close(self) -> None:
        """Stop reading and close the input. A background reader is stopped first; one stuck in a
        read (a stream that sends nothing) is left to its read timeout and closes the input itself."""
        reader, self._reader = self._reader, None
        if reader is not None and not reader.close():
            return
        self._close_container()

    def _close_container(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


__all__ = ["LIVE_SCHEMES", "LiveSource", "is_live_input"]
