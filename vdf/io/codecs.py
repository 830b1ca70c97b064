"""Encoders: the one choice of video codec, mp4 writing, and single images (PNG, EXR).

Every mp4 vdf writes (colourised depth videos, synthetic-world episodes) goes through
`write_mp4`, with the codec `video_codec` picks: H.264 (``libx264``, CRF 17) where FFmpeg was
built with GPL codecs, else the always-present ``mpeg4`` at about one byte per pixel; both
yuv420p, so odd sizes are padded (`pad_even`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import av
import numpy as np

__all__ = ["VIDEO_CODECS", "ImageEncoder", "encoder_available", "pad_even", "video_codec", "video_rate", "write_mp4"]

VIDEO_CODECS: tuple[str, ...] = ("libx264", "mpeg4")
"""Video encoders in order of preference."""


def encoder_available(codec: str) -> bool:
    """True if this PyAV / FFmpeg build has the encoder ``codec`` (``"libx264"``, ``"exr"``, ...)."""
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:  # av raises UnknownCodecError (a ValueError) on builds without it
        return False


def video_codec() -> str:
    """The first encoder of `VIDEO_CODECS` this build has; raises RuntimeError if it has none."""
    for codec in VIDEO_CODECS:
        if encoder_available(codec):
            return codec
    raise RuntimeError(f"this PyAV / FFmpeg build has none of the video encoders {', '.join(VIDEO_CODECS)}")


def video_rate(fps: float) -> Fraction:
    """Frame rate as the stream's exact fraction: 29.97002997 (NTSC as a float) -> 30000/1001; 24.0 -> 24."""
    return Fraction(fps).limit_denominator(1001)


def pad_even(image: np.ndarray) -> np.ndarray:
    """``(H,W,3)`` -> ``(H+H%2, W+W%2, 3)``, repeating the last row / column (yuv420p needs even sizes)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(
    path: str | os.PathLike, frames: Iterable[np.ndarray], height: int, width: int, fps: float, codec: str | None = None
) -> dict[str, Any]:
    """Encode ``(height, width, 3)`` uint8 RGB frames, consumed one at a time, into an mp4 at ``path``.

    Args:
        path: the file to write (any name: the container is mp4 whatever the suffix).
        frames: the frames, an iterable (a generator keeps one frame in memory at a time).
        height, width: the frames' size; odd sizes are padded by `pad_even`.
        fps: frame rate (`video_rate` makes it an exact fraction).
        codec: the encoder; ``None`` picks `video_codec`.

    Returns:
        ``{"codec", "height", "width"}`` of the stream written (the padded size).
    """
    codec = video_codec() if codec is None else codec
    h, w = height + height % 2, width + width % 2
    with av.open(os.fspath(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=video_rate(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "17", "preset": "medium"}
        else:
            stream.bit_rate = int(8 * w * h * float(fps))  # ~1 byte/pixel keeps mpeg4 close to lossless
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(pad_even(frame)), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return {"codec": codec, "height": h, "width": w}


class ImageEncoder:
    """Encodes same-sized frames one by one into single-image files' bytes (PNG, EXR, ...).

    Args:
        codec: an intra-only FFmpeg encoder, e.g. ``"png"`` or ``"exr"``.
        pix_fmt: the pixel format of the arrays given to `encode` (``"gray16be"``, ``"grayf32le"``).
        height, width: the frames' size.
        options: encoder options, e.g. ``{"compression": "zip16"}`` for EXR.
    """

    def __init__(self, codec: str, pix_fmt: str, height: int, width: int, options: dict[str, str] | None = None):
        self.pix_fmt = pix_fmt
        self._ctx = av.CodecContext.create(codec, "w")
        self._ctx.width, self._ctx.height, self._ctx.pix_fmt = width, height, pix_fmt
        self._ctx.time_base = Fraction(1, 1)
        if options:
            self._ctx.options = options

    def encode(self, image: np.ndarray) -> bytes:
        """``(height, width)`` array in ``pix_fmt`` -> the bytes of one image file."""
        # Intra-only: one packet per frame, so the context is reused without flushing.
        packets = self._ctx.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self.pix_fmt))
        return b"".join(bytes(p) for p in packets)
