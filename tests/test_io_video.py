"""Streaming video input (`vdf.io.inputs`, `vdf.io.video`, `vdf.io.orientation`): every fixture is written
here with PyAV only."""

from __future__ import annotations

import gc
import pickle
import re
import tracemalloc
import warnings
import weakref
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vdf.io.inputs import VideoInputError, find_inputs, natural_sort_key, output_name
from vdf.io.orientation import frame_orientation, orient_frame, orientation_from_display_matrix
from vdf.io.video import VideoInfo, VideoSource, _pick_video_stream, output_size

# --------------------------------------------------------------------------------------------
# Fixture writers (PyAV only: CI has no ffmpeg binary)


def write_video(
    path,
    frames,
    codec="libx264",
    pix_fmt="yuv420p",
    in_format="rgb24",
    fps=10,
    rotation=None,
    hflip=False,
    pts_ms=None,
    container_options=None,
    codec_options=None,
):
    """Encode ``frames`` (list of arrays in ``in_format``) into ``path``; returns ``path``."""
    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=codec_options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if rotation is not None:
            stream.set_display_rotation(rotation, hflip=hflip)
        if pts_ms is not None:  # variable frame rate: explicit millisecond timestamps
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format=in_format)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path, array, in_format="rgb24", codec="png", pix_fmt=None):
    """One still image (png / mjpeg) through PyAV's image2 muxer."""
    path = Path(path)
    with av.open(str(path), "w", format="image2", options={"update": "1"}) as container:
        stream = container.add_stream(codec, rate=1)
        stream.height, stream.width = array.shape[:2]
        stream.pix_fmt = pix_fmt or in_format
        for packet in stream.encode(av.VideoFrame.from_ndarray(array, format=in_format)):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def gradient(h, w, t=0, n=1):
    """Smooth RGB uint8 frame (codec-friendly): a diagonal ramp shifted by time, plus a marker."""
    y, x = np.mgrid[0:h, 0:w]
    r = x * 255 // max(w - 1, 1)
    g = y * 255 // max(h - 1, 1)
    b = np.full_like(x, int(255 * t / max(n - 1, 1)))
    return np.stack([r, g, b], -1).astype(np.uint8)


def coded_frames(n, h=32, w=32):
    """Flat frames whose brightness encodes their index (robust to lossy codecs)."""
    return [np.full((h, w, 3), 10 + 12 * i, np.uint8) for i in range(n)]


def decode_index(frame: torch.Tensor) -> int:
    return round((frame.mean().item() * 255 - 10) / 12)


def raw_decode(path):
    """Frames exactly as stored (no display matrix applied), uint8 (H, W, 3)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def as_uint8(frame: torch.Tensor) -> np.ndarray:
    return (frame.permute(1, 2, 0).numpy() * 255).round().astype(np.int32)


def collect(source):
    pairs = list(source.frames())
    return [i for i, _ in pairs], [f for _, f in pairs]


# --------------------------------------------------------------------------------------------
# Decoding: counts, sizes, values


def test_mp4_h264_roundtrip(tmp_path):
    frames = [gradient(48, 64, t, 12) for t in range(12)]
    path = write_video(tmp_path / "clip.mp4", frames)
    source = VideoSource(path)
    info = source.probe()
    assert info == VideoInfo(
        path=path,
        name="clip",
        kind="video",
        width=64,
        height=48,
        out_width=64,
        out_height=48,
        num_frames=12,
        fps=10.0,
        rotation=0,
        pix_fmt="yuv420p",
    )
    indices, out = collect(source)
    assert indices == list(range(12)) and len(source) == 12
    for written, got in zip(frames, out):
        assert got.shape == (3, 48, 64) and got.dtype == torch.float32
        assert got.min() >= 0 and got.max() <= 1
        assert np.abs(as_uint8(got) - written).mean() < 4  # lossy h264 on a smooth ramp


@pytest.mark.parametrize("ext,codec,pix_fmt", [("mkv", "ffv1", "bgr0"), ("mov", "png", "rgb24")])
@pytest.mark.parametrize("hw", [(61, 97), (97, 61)], ids=["odd-landscape", "odd-portrait"])
def test_lossless_odd_sizes_are_exact(tmp_path, ext, codec, pix_fmt, hw):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(3)]
    path = write_video(tmp_path / f"odd.{ext}", frames, codec=codec, pix_fmt=pix_fmt)
    source = VideoSource(path)
    assert (source.info.height, source.info.width) == hw
    _, out = collect(source)
    assert len(out) == 3
    for written, got in zip(frames, out):
        assert got.shape == (3, *hw)
        assert np.array_equal(as_uint8(got), written)


def test_ten_bit_is_decoded_at_full_precision(tmp_path):
    rng = np.random.default_rng(1)
    v10 = rng.integers(0, 1024, (2, 24, 40, 3)).astype(np.uint16)
    path = write_video(
        tmp_path / "ten.mkv", [v << 6 for v in v10], codec="ffv1", pix_fmt="gbrp10le", in_format="rgb48le"
    )
    source = VideoSource(path)
    assert source.info.pix_fmt == "gbrp10le"
    _, out = collect(source)
    for written, got in zip(v10, out):
        expected = torch.from_numpy(written / 1023.0).permute(2, 0, 1)
        assert torch.allclose(got.double(), expected, atol=2e-4)  # 8 bits would be off by ~2e-3
        assert got.unique().numel() > 256


def test_ten_bit_h264(tmp_path):
    ramp = np.linspace(0, 65535, 256)[None, :, None].repeat(16, 0).repeat(3, 2).astype(np.uint16)
    path = write_video(tmp_path / "ten.mp4", [ramp] * 2, pix_fmt="yuv420p10le", in_format="rgb48le")
    source = VideoSource(path)
    assert source.info.pix_fmt == "yuv420p10le"
    _, out = collect(source)
    got = out[0]
    assert torch.allclose(got, torch.from_numpy(ramp / 65535.0).permute(2, 0, 1).float(), atol=0.03)
    assert got[0].unique().numel() > 256  # a 256-wide ramp in 8 bits could hold at most 256 levels


def test_grayscale_becomes_three_equal_channels(tmp_path):
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (21, 33), dtype=np.uint8) for _ in range(2)]
    path = write_video(tmp_path / "gray.mkv", frames, codec="ffv1", pix_fmt="gray", in_format="gray")
    source = VideoSource(path)
    assert source.info.pix_fmt == "gray"
    _, out = collect(source)
    for written, got in zip(frames, out):
        assert got.shape == (3, 21, 33)
        assert torch.equal(got[0], got[1]) and torch.equal(got[1], got[2])
        assert np.array_equal(as_uint8(got)[..., 0], written)


@pytest.mark.parametrize("ext,codec,pix_fmt", [("mov", "png", "rgba"), ("mkv", "ffv1", "bgra")])
def test_alpha_is_dropped_colour_kept(tmp_path, ext, codec, pix_fmt):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (2, 20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = rng.choice([0, 128, 255], (2, 20, 30))  # fully transparent pixels keep their colour
    path = write_video(tmp_path / f"alpha.{ext}", list(rgba), codec=codec, pix_fmt=pix_fmt, in_format="rgba")
    source = VideoSource(path)
    assert source.info.pix_fmt == pix_fmt
    _, out = collect(source)
    for written, got in zip(rgba, out):
        assert got.shape == (3, 20, 30)
        assert np.array_equal(as_uint8(got), written[..., :3])


def test_variable_frame_rate(tmp_path):
    pts = [0, 33, 66, 200, 233, 500, 533, 566, 1000, 1033]
    path = write_video(tmp_path / "vfr.mp4", coded_frames(10), pts_ms=pts, fps=30)
    source = VideoSource(path)
    info = source.info
    assert info.num_frames == 10
    # average rate = frames / duration (~1.066 s), not the nominal 30
    assert 8 < info.fps < 16
    indices, out = collect(source)
    assert indices == list(range(10))  # one index per decoded frame, timestamps ignored
    assert [decode_index(f) for f in out] == list(range(10))


# --------------------------------------------------------------------------------------------
# Rotation


def ffmpeg_autorotate(raw: np.ndarray, matrix) -> np.ndarray:
    """Reference: the ffmpeg CLI's autorotate decision table (fftools), applied with numpy."""
    # get_rotation(): theta = -round(av_display_rotation_get(m)), normalised to [0, 360)
    theta = round(
        float(
            np.degrees(
                np.arctan2(matrix[1] / np.hypot(matrix[1], matrix[4]), matrix[0] / np.hypot(matrix[0], matrix[3]))
            )
        )
    )
    theta -= 360 * np.floor(theta / 360 + 0.9 / 360)
    clock, cclock = np.rot90(raw, -1), np.rot90(raw, 1)
    if abs(theta - 90) < 1:
        return np.swapaxes(raw, 0, 1) if matrix[3] > 0 else clock  # cclock_flip = transpose
    if abs(theta - 180) < 1:
        out = raw[:, ::-1] if matrix[0] < 0 else raw
        return out[::-1] if matrix[4] < 0 else out
    if abs(theta - 270) < 1:
        return np.rot90(np.swapaxes(raw, 0, 1), 2) if matrix[3] < 0 else cclock  # clock_flip
    return raw[::-1] if matrix[4] < 0 else raw


def stored_display_matrix(path):
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        return np.frombuffer(bytes(frame.side_data["DISPLAYMATRIX"]), np.int32).tolist()


@pytest.mark.parametrize("ext,codec", [("mp4", "libx264"), ("mkv", "ffv1")])
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_is_applied(tmp_path, ext, codec, rotation):
    frames = [gradient(32, 48, t, 3) for t in range(3)]
    frames[0][:8, :12] = 255  # asymmetric marker: top-left block
    path = write_video(tmp_path / f"rot.{ext}", frames, codec=codec, rotation=rotation)
    source = VideoSource(path)
    info = source.info
    assert info.rotation == rotation  # counter-clockwise, as written by set_display_rotation
    assert (info.width, info.height) == ((32, 48) if rotation in (90, 270) else (48, 32))
    raw = raw_decode(path)
    assert raw[0].shape == (32, 48, 3)  # the decoder itself does not rotate
    _, out = collect(source)
    for stored, got in zip(raw, out):
        expected = np.rot90(stored, rotation // 90)
        assert np.array_equal(as_uint8(got), expected)
        assert np.array_equal(as_uint8(got), ffmpeg_autorotate(stored, stored_display_matrix(path)))


@pytest.mark.parametrize("rotation,hflip", [(0, True), (90, True), (180, True), (270, True), (-90, False)])
def test_display_matrix_with_mirror_matches_ffmpeg(tmp_path, rotation, hflip):
    frame = gradient(16, 24)
    frame[:4, :6] = 255
    path = write_video(tmp_path / "m.mp4", [frame], rotation=rotation, hflip=hflip)
    raw = raw_decode(path)[0]
    got = as_uint8(next(VideoSource(path).frames())[1])
    assert np.array_equal(got, ffmpeg_autorotate(raw, stored_display_matrix(path)))


def test_orient_frame_and_matrix_decoding():
    image = torch.arange(6).reshape(2, 3)
    assert torch.equal(orient_frame(image, 90), torch.from_numpy(np.rot90(image.numpy()).copy()))
    assert torch.equal(orient_frame(image, -90), orient_frame(image, 270))
    assert torch.equal(orient_frame(image, 0, mirrored=True), image.flip(-1))
    with pytest.raises(ValueError, match="multiple of 90"):
        orient_frame(image, 45)
    one = 1 << 16
    assert orientation_from_display_matrix([one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == (0, False, True)
    assert orientation_from_display_matrix([0, -one, 0, one, 0, 0, 0, 0, 1 << 30]) == (90, False, True)
    assert orientation_from_display_matrix([-one, 0, 0, 0, one, 0, 0, 0, 1 << 30]) == (0, True, True)
    c, s = int(one * np.cos(np.radians(80))), int(one * np.sin(np.radians(80)))
    rotation, mirrored, exact = orientation_from_display_matrix([c, -s, 0, s, c, 0, 0, 0, 1 << 30])
    assert (rotation, mirrored, exact) == (90, False, False)  # snapped to the nearest right angle


class _FakeFrame:
    """No display matrix on the frame: exercises the legacy `rotate` tag fallback."""

    side_data: dict = {}
    rotation = 0


class _UnlistableSideData:
    """PyAV 18 raises ValueError listing side data of a type it does not know (FFmpeg 8's EXIF)."""

    rotation = -90

    @property
    def side_data(self):
        raise ValueError("31 is not a valid Type")


def test_orientation_fallbacks():
    # Modern muxers (FFmpeg 8) ignore a "rotate" tag, so this path is tested without a file.
    assert frame_orientation(_FakeFrame(), {"rotate": "90"})[:2] == (270, False)  # tag is clockwise
    assert frame_orientation(_FakeFrame(), {"rotate": "180"})[:2] == (180, False)
    assert frame_orientation(_FakeFrame(), {})[:2] == (0, False)
    assert frame_orientation(_UnlistableSideData(), {})[:2] == (270, False)


# --------------------------------------------------------------------------------------------
# Selection and resizing


@pytest.fixture(scope="module")
def twenty_frames(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "twenty.mkv", coded_frames(20, 16, 16), codec="ffv1")


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 24), stride=st.integers(1, 7), max_frames=st.one_of(st.none(), st.integers(1, 8)))
def test_start_stride_max_frames(twenty_frames, start, stride, max_frames):
    source = VideoSource(twenty_frames, start_frame=start, stride=stride, max_frames=max_frames)
    expected = [i for i in range(20) if i >= start and (i - start) % stride == 0][:max_frames]
    indices, out = collect(source)
    assert indices == expected
    assert [decode_index(f) for f in out] == expected
    assert source.num_frames == len(expected) == len(source)


def test_output_size_rules():
    assert output_size(97, 61) == (97, 61)
    assert output_size(97, 61, max_size=200) == (97, 61)  # never upscaled
    assert output_size(1920, 1080, max_size=512) == (512, 288)  # long side capped, aspect kept
    assert output_size(1080, 1920, max_size=512) == (288, 512)
    assert output_size(97, 61, size_multiple=2) == (96, 60)  # rounded down
    assert output_size(97, 61, size_multiple=14) == (84, 56)
    assert output_size(5, 3, size_multiple=4) == (4, 4)  # but at least the multiple
    assert output_size(1000, 10, max_size=100, size_multiple=8) == (96, 8)
    for w, h in [(97, 61), (61, 97), (3000, 7), (640, 480)]:
        ow, oh = output_size(w, h, max_size=64, size_multiple=2)
        assert max(ow, oh) <= 64 and ow % 2 == 0 and oh % 2 == 0


def test_frames_are_resized_with_antialiased_bilinear(tmp_path):
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (61, 97, 3), dtype=np.uint8) for _ in range(2)]
    path = write_video(tmp_path / "big.mkv", frames, codec="ffv1", pix_fmt="bgr0")
    full = [f for _, f in VideoSource(path).frames()]
    source = VideoSource(path, max_size=40, size_multiple=2)
    info = source.info
    assert (info.width, info.height, info.out_width, info.out_height) == (97, 61, 40, 24)
    _, small = collect(source)
    for big, got in zip(full, small):
        assert got.shape == (3, 24, 40)
        ref = F.interpolate(big[None], size=(24, 40), mode="bilinear", antialias=True, align_corners=False)[0]
        assert torch.allclose(got, ref.clamp(0, 1), atol=1e-6)


def test_rotation_happens_before_resize(tmp_path):
    frame = gradient(40, 64)
    path = write_video(tmp_path / "r.mp4", [frame], rotation=90)
    source = VideoSource(path, max_size=32)
    assert (source.info.width, source.info.height) == (40, 64)
    assert (source.info.out_width, source.info.out_height) == (20, 32)  # portrait after rotation
    assert next(source.frames())[1].shape == (3, 32, 20)


def test_invalid_options():
    for kwargs, words in [
        ({"stride": 0}, "stride"),
        ({"max_frames": 0}, "max_frames"),
        ({"start_frame": -1}, "start_frame"),
        ({"size_multiple": 0}, "size_multiple"),
        ({"max_size": 8, "size_multiple": 16}, "max_size"),
    ]:
        with pytest.raises(ValueError, match=words):
            VideoSource("x.mp4", **kwargs)


# --------------------------------------------------------------------------------------------
# Image sequences


def test_image_sequence_natural_order_and_formats(tmp_path):
    seq = tmp_path / "seq"
    seq.mkdir()
    numbers = [1, 2, 9, 10, 11, 100]
    for n in numbers:  # written out of order on purpose
        write_image(seq / f"frame{n}.png", np.full((12, 18, 3), n, np.uint8))
    write_image(seq / "._frame3.png", np.zeros((12, 18, 3), np.uint8))  # macOS resource fork: hidden
    (seq / "notes.txt").write_text("not a frame")
    source = VideoSource(seq, start_frame=1)
    info = source.info
    assert (info.kind, info.name, info.num_frames, info.fps) == ("images", "seq", 6, None)
    assert (info.width, info.height) == (18, 12)
    indices, out = collect(source)
    assert indices == [1, 2, 3, 4, 5]
    assert [round(f.mean().item() * 255) for f in out] == numbers[1:]
    assert sorted(["frame10", "frame2", "Frame1", "frame9"], key=natural_sort_key) == [
        "Frame1",
        "frame2",
        "frame9",
        "frame10",
    ]


def test_image_sequence_alpha_sixteen_bit_gray_jpeg(tmp_path):
    rng = np.random.default_rng(5)
    seq = tmp_path / "mixed"
    seq.mkdir()
    rgba = rng.integers(0, 256, (9, 13, 4), dtype=np.uint8)
    deep = rng.integers(0, 65536, (9, 13, 3)).astype(np.uint16)
    gray = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    write_image(seq / "f0.png", rgba, "rgba")
    write_image(seq / "f1.png", deep, "rgb48le", pix_fmt="rgb48be")
    write_image(seq / "f2.png", gray, "gray")
    write_image(seq / "f3.jpg", np.full((9, 13, 3), 200, np.uint8), codec="mjpeg", pix_fmt="yuvj420p")
    _, out = collect(VideoSource(seq))
    assert np.array_equal(as_uint8(out[0]), rgba[..., :3])
    assert torch.allclose(out[1], torch.from_numpy(deep / 65535.0).permute(2, 0, 1).float(), atol=1e-6)
    assert np.array_equal(as_uint8(out[2]), np.repeat(gray[..., None], 3, -1))
    assert np.abs(as_uint8(out[3]) - 200).max() <= 2


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert a minimal EXIF APP1 segment (one IFD entry: Orientation) right after SOI."""
    tiff = b"II*\x00" + (8).to_bytes(4, "little") + (1).to_bytes(2, "little")
    tiff += (0x0112).to_bytes(2, "little") + (3).to_bytes(2, "little") + (1).to_bytes(4, "little")
    tiff += orientation.to_bytes(2, "little") + b"\x00\x00" + (0).to_bytes(4, "little")
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_jpeg_exif_orientation_is_applied(tmp_path):
    seq = tmp_path / "phone"
    seq.mkdir()
    image = np.zeros((16, 24, 3), np.uint8)
    image[:8, :8] = 255  # white block top-left
    plain = write_image(tmp_path / "plain.jpg", image, codec="mjpeg", pix_fmt="yuvj444p").read_bytes()
    for i in range(2):
        (seq / f"IMG_{i}.jpg").write_bytes(with_exif_orientation(plain, 6))  # 6: turn 90 deg clockwise
    source = VideoSource(seq)
    assert (source.info.width, source.info.height, source.info.rotation) == (16, 24, 270)
    _, out = collect(source)
    got = as_uint8(out[0])[..., 0]
    assert got.shape == (24, 16)
    assert got[:8, -8:].mean() > 200 and got[-8:, :8].mean() < 50  # the block is now top-right


def test_image_sequence_errors(tmp_path):
    seq = tmp_path / "shots"
    seq.mkdir()
    for i in range(4):
        write_image(seq / f"img_{i}.png", np.zeros((8, 8, 3), np.uint8))
    (seq / "img_2.png").write_text("this is not a png")
    indices = []
    with pytest.raises(VideoInputError) as err:
        for i, _ in VideoSource(seq).frames():
            indices.append(i)
    assert indices == [0, 1]
    assert err.value.path == seq / "img_2.png"
    assert "frame 2 of image sequence 'shots': not a readable image" in str(err.value)
    assert str(err.value).startswith(str(seq / "img_2.png") + ": ")

    (seq / "img_2.png").write_bytes(b"")
    with pytest.raises(VideoInputError, match="frame 2 .*empty file"):
        list(VideoSource(seq).frames())

    write_image(seq / "img_2.png", np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(VideoInputError, match="frame 2 .* is 10x8 but the first frame is 8x8"):
        list(VideoSource(seq).frames())
    assert [i for i, _ in VideoSource(seq, stride=3).frames()] == [0, 3]  # frame 2 is never read

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VideoInputError, match="holds no images"):
        VideoSource(empty).probe()


# --------------------------------------------------------------------------------------------
# Failures


def test_missing_empty_and_not_a_video(tmp_path):
    with pytest.raises(VideoInputError, match="no such file"):
        VideoSource(tmp_path / "nope.mp4").probe()
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoInputError) as err:
        VideoSource(tmp_path / "zero.mp4").probe()
    assert str(err.value) == f"{tmp_path / 'zero.mp4'}: empty file (0 bytes)"
    (tmp_path / "notes.mp4").write_text("shopping list: milk, eggs\n" * 20)
    with pytest.raises(VideoInputError, match=r"notes\.mp4: not a video FFmpeg can read \(Invalid data"):
        VideoSource(tmp_path / "notes.mp4").probe()


def test_audio_only_file(tmp_path):
    path = tmp_path / "voice.mp4"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            c.mux(packet)
    with pytest.raises(VideoInputError, match="no video stream .*audio"):
        VideoSource(path).probe()


class _FakeStream:
    def __init__(self, disposition):
        self.disposition = disposition


def test_cover_art_stream_is_skipped():
    cover, video = _FakeStream(av.stream.Disposition.attached_pic), _FakeStream(av.stream.Disposition(0))
    assert _pick_video_stream([cover, video]) is video
    assert _pick_video_stream([cover]) is cover  # nothing else: better than failing
    assert _pick_video_stream([]) is None


def cut(path, dst, fraction=0.5):
    data = Path(path).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


@pytest.fixture(scope="module")
def forty_frames(tmp_path_factory):
    """The same 40 noisy frames (noise keeps every frame's bytes large) in several containers."""
    rng = np.random.default_rng(6)
    frames = [rng.integers(0, 256, (32, 48, 3), dtype=np.uint8) for _ in range(40)]
    folder = tmp_path_factory.mktemp("forty")
    return {
        "mp4": write_video(folder / "a.mp4", frames),
        "faststart.mp4": write_video(folder / "fs.mp4", frames, container_options={"movflags": "faststart"}),
        "faststart.mov": write_video(
            folder / "fs.mov", frames, codec="mpeg4", container_options={"movflags": "faststart"}
        ),
        "avi": write_video(folder / "a.avi", frames, codec="mpeg4"),
        "mkv": write_video(folder / "a.mkv", frames, codec="ffv1"),
        "png.mov": write_video(folder / "p.mov", frames, codec="png", pix_fmt="rgb24"),
    }


def test_mp4_cut_before_its_index(tmp_path, forty_frames):
    path = cut(forty_frames["mp4"], tmp_path / "cut.mp4")  # moov is at the end: gone
    with pytest.raises(VideoInputError, match="truncated or incomplete MP4/MOV: it has no 'moov'"):
        VideoSource(path).probe()


@pytest.mark.parametrize("kind", ["faststart.mp4", "faststart.mov", "avi"])
def test_truncated_file_raises_naming_the_frame(tmp_path, forty_frames, kind):
    path = cut(forty_frames[kind], tmp_path / f"cut.{kind}")
    source = VideoSource(path)
    assert source.info.num_frames == 40  # the container still declares 40
    indices = []
    with pytest.raises(VideoInputError) as err:
        for i, _ in source.frames():
            indices.append(i)
    assert 5 < len(indices) < 40 and indices == list(range(len(indices)))  # early frames do come out
    message = str(err.value)
    assert message.startswith(f"{path}: truncated")
    assert re.search(rf"decoding stopped at frame {len(indices)} of 40", message)


def test_complete_files_pass_the_truncation_check(forty_frames):
    for kind in ("mp4", "faststart.mp4", "faststart.mov", "avi", "mkv"):
        assert len(list(VideoSource(forty_frames[kind]).frames())) == 40, kind


def test_truncated_mkv_ends_early_with_a_warning(tmp_path, forty_frames):
    # Matroska declares no frame count: only the duration estimate says something is missing.
    path = cut(forty_frames["mkv"], tmp_path / "cut.mkv")
    source = VideoSource(path)
    assert source.info.num_frames == 40  # estimated from duration x fps
    with pytest.warns(UserWarning, match="may be truncated"):
        n = len(list(source.frames()))
    assert 5 < n < 40


def test_decoding_error_midway_names_the_frame(tmp_path, forty_frames):
    data = bytearray(forty_frames["png.mov"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0x55 for b in data[middle : middle + 64])  # break one PNG
    path = tmp_path / "broken.mov"
    path.write_bytes(bytes(data))
    indices = []
    with pytest.raises(VideoInputError) as err:
        for i, _ in VideoSource(path).frames():
            indices.append(i)
    assert 5 < len(indices) < 40
    assert f"truncated or corrupt: decoding stopped at frame {len(indices)} of 40 (" in str(err.value)


def test_error_is_a_picklable_value_error():
    err = VideoInputError("/data/clip.mp4", "empty file (0 bytes)")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.path, again.reason, str(again)) == (
        Path("/data/clip.mp4"),
        "empty file (0 bytes)",
        "/data/clip.mp4: empty file (0 bytes)",
    )


# --------------------------------------------------------------------------------------------
# Streaming memory


def test_frames_stream_in_constant_memory(tmp_path):
    frames = [np.full((64, 64, 3), i % 256, np.uint8) for i in range(300)]
    path = write_video(tmp_path / "long.mp4", frames, codec="mpeg4")
    source = VideoSource(path)
    source.probe()
    frame_bytes = 64 * 64 * 3 * 4
    refs = []
    gc.collect()
    tracemalloc.start()
    try:
        count = 0
        for _, frame in source.frames():
            refs.append(weakref.ref(frame))
            count += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del frame
    gc.collect()
    assert count == 300
    assert peak < 8 * frame_bytes + 256 * 1024  # a list of 300 frames would need ~14 MB
    assert all(r() is None for r in refs)  # the generator keeps no frame alive
    first = next(source.frames())[1]
    assert first.untyped_storage().nbytes() == frame_bytes  # not a view into a bigger buffer


class _CountingContainer:
    """Wraps a PyAV input container and counts the frames its decoder has produced."""

    def __init__(self, container, counter):
        self._container, self._counter = container, counter

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._container.__exit__(*exc)

    def decode(self, *args, **kwargs):
        for frame in self._container.decode(*args, **kwargs):
            self._counter.append(1)
            yield frame


def test_first_frame_arrives_before_the_video_is_decoded(tmp_path, monkeypatch):
    frames = [np.full((16, 16, 3), i % 256, np.uint8) for i in range(200)]
    path = write_video(tmp_path / "long.mp4", frames, codec="mpeg4")
    source = VideoSource(path)
    source.probe()
    decoded: list[int] = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: _CountingContainer(real_open(*a, **k), decoded))
    frames = source.frames()
    index, _ = next(frames)
    assert index == 0 and len(decoded) < 10  # decoder look-ahead only, not the 200 frames
    frames.close()


# --------------------------------------------------------------------------------------------
# Finding inputs and naming outputs


def make_tree(root: Path, files: list[str]):
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")  # find_inputs only looks at names
    return root


TREE = [
    "a.mp4",
    "B.MOV",
    "clip10.mkv",
    "clip9.webm",
    "notes.txt",
    ".hidden.mp4",
    ".cache/x.mp4",
    "sub/c.avi",
    "sub/seq/frame1.png",
    "sub/seq/frame2.png",
    "seq2/0001.jpg",
    "seq2/0002.JPEG",
    "mixed/take.mp4",
    "mixed/poster.png",
    "deep/er/est/d.mp4",
    "empty_dir/readme.md",
]


def test_find_inputs_tree(tmp_path):
    root = make_tree(tmp_path / "data", TREE)
    rel = lambda paths: [p.relative_to(root).as_posix() for p in paths]
    assert rel(find_inputs(root)) == [
        "a.mp4",
        "B.MOV",
        "clip9.webm",
        "clip10.mkv",
        "deep/er/est/d.mp4",
        "mixed/take.mp4",
        "seq2",
        "sub/c.avi",
        "sub/seq",
    ]
    assert rel(find_inputs(root, glob="*.mp4")) == ["a.mp4", "deep/er/est/d.mp4", "mixed/take.mp4"]
    assert rel(find_inputs(root, glob="sub/*")) == ["sub/c.avi", "sub/seq"]
    assert rel(find_inputs(root, glob="seq*")) == ["seq2", "sub/seq"]
    assert rel(find_inputs(root, glob="**/d.mp4")) == ["deep/er/est/d.mp4"]
    assert rel(find_inputs(root, glob="*.mov")) == ["B.MOV"]  # case-insensitive
    assert rel(find_inputs(root, recursive=False)) == ["a.mp4", "B.MOV", "clip9.webm", "clip10.mkv", "seq2"]
    assert find_inputs(root / "sub" / "seq") == [root / "sub" / "seq"]  # an image folder itself
    assert find_inputs(root / "a.mp4") == [root / "a.mp4"]
    assert find_inputs(root / "empty_dir") == []
    with pytest.raises(VideoInputError, match="no such file"):
        find_inputs(root / "missing")


def test_output_names_are_unique_and_safe(tmp_path):
    root = make_tree(
        tmp_path / "data",
        [
            "sub/clip.mp4",
            "sub__clip.mp4",
            "clip.mp4",
            "clip.mov",
            "Clip.mkv",
            "a b.mp4",
            "a_b.mp4",
            "seq1/f1.png",
            "seq1.mp4",
            "x/seq1/f1.png",
            "vidéo.mp4",
            "-dash.mp4",
            "ok.name.mp4",
            "long" + "x" * 200 + ".mp4",
        ],
    )
    inputs = find_inputs(root)
    names = [output_name(p, root) for p in inputs]
    assert len(set(names)) == len(names) == 14
    assert len({n.casefold() for n in names}) == 14  # also on case-insensitive file systems
    for name in names:
        assert re.fullmatch(r"[\w.\-]+", name) and not name.startswith((".", "-")) and len(name) <= 130
    by_rel = {p.relative_to(root).as_posix(): n for p, n in zip(inputs, names)}
    assert by_rel["sub/clip.mp4"] == "sub__clip"
    assert by_rel["x/seq1"] == "x__seq1"
    assert by_rel["a_b.mp4"] == "a_b"
    assert by_rel["vidéo.mp4"] == "vidéo"
    assert by_rel["ok.name.mp4"] == "ok.name"
    assert re.fullmatch(r"a_b-[0-9a-f]{8}", by_rel["a b.mp4"])
    assert re.fullmatch(r"clip-[0-9a-f]{8}", by_rel["clip.mp4"])  # clip.mov / Clip.mkv are twins
    assert re.fullmatch(r"seq1-[0-9a-f]{8}", by_rel["seq1"])  # seq1.mp4 is a twin
    assert output_name(root / "sub" / "clip.mp4", root) == "sub__clip"  # deterministic
    assert output_name(root / "a_b.mp4", root / "a_b.mp4") == "a_b"
    with pytest.raises(ValueError, match="not inside"):
        output_name(tmp_path / "elsewhere.mp4", root)


def test_default_name_and_probe_cache(tmp_path):
    path = write_video(tmp_path / "Take 1.mov", coded_frames(2), codec="mpeg4")
    source = VideoSource(path)
    assert source.name == "Take 1" and VideoSource(path, name="t1").info.name == "t1"
    assert source.probe() is source.probe()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file warns about nothing
        assert [i for i, _ in source] == [0, 1]
