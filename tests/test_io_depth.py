"""vdf.io.depth: streamed depth outputs, written atomically, resumable."""

import json
import os
import shutil
import struct
import tracemalloc
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vdf.io import depth as depth_module
from vdf.io.codecs import encoder_available
from vdf.io.colour import colorize_disparity, lookup_table
from vdf.io.depth import DepthVideoWriter, OutputOptions, clean_partial, output_names, outputs_complete
from vdf.io.manifest import RUN_MANIFEST_NAME

T, H, W = 37, 33, 50  # odd H on purpose: yuv420p needs padding
FRAME_INDEX = [5 + 3 * t for t in range(T)]  # a stride-3 run starting at frame 5
HAS_EXR = encoder_available("exr")


def make_disparity(t: int) -> np.ndarray:
    """``(H,W)`` float32: a smooth ramp that changes over time, plus a little noise, range ~[0.5, 19.5]."""
    rng = np.random.default_rng(t)
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    ramp = 0.5 + 19.0 * (0.5 * (x / (W - 1) + y / (H - 1))) ** (1.0 + 0.02 * t)
    return (ramp + rng.normal(0, 0.01, (H, W))).astype(np.float32)


def make_rgb(t: int) -> torch.Tensor:
    """``(3,H,W)`` in [0,1], smooth (chroma subsampling would smear noise)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    return torch.stack([x, y, torch.full_like(x, (t % 10) / 10)])


ALL = OutputOptions(npz=True, png16=True, exr=HAS_EXR, depth_video=True, side_by_side=True)


def write_video(out_dir: Path, name: str = "clip", options: OutputOptions = ALL, frames: int = T) -> dict:
    with DepthVideoWriter(out_dir, name, options, fps=12.0) as writer:
        for t in range(frames):
            # Alternate torch and numpy inputs: both are accepted.
            d = make_disparity(t)
            writer.add(FRAME_INDEX[t], torch.from_numpy(d) if t % 2 else d, make_rgb(t))
        return writer.finish(
            {
                "input": Path("/videos/clip.mp4"),
                "model": "dav2",
                "strategy": "per_frame",
                "resolution": [H, W],
                "timing": {"predict_s": 1.5},
            }
        )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    # Small chunks so that the hand-written npz member is assembled from several, with a short tail.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(depth_module, "_CHUNK_BYTES", H * W * 2 * 5)
        paths = write_video(out)
    manifest = json.loads((out / "clip.json").read_text())
    return out, paths, manifest


def decode_video(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------- contents


def test_finish_returns_every_output_and_leaves_no_temp(written):
    out, paths, _ = written
    expected = ["npz", "png16", "depth_video", "side_by_side", "manifest"] + (["exr"] if HAS_EXR else [])
    assert sorted(paths) == sorted(expected)
    names = output_names("clip")
    assert all(Path(paths[k]) == out / names[k] and Path(paths[k]).exists() for k in expected)
    assert listing(out) == sorted(names[k] for k in expected)  # no dot-files: temps all gone


def test_npz_holds_float16_disparity_and_frame_index(written):
    out, _, _ = written
    with zipfile.ZipFile(out / "clip.npz") as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    with np.load(out / "clip.npz") as npz:
        assert sorted(npz.files) == ["disparity", "frame_index"]
        disparity, frame_index = npz["disparity"], npz["frame_index"]
    assert disparity.dtype == np.float16 and disparity.shape == (T, H, W)
    expected = np.stack([make_disparity(t) for t in range(T)]).astype(np.float16)
    np.testing.assert_array_equal(disparity, expected)
    assert frame_index.dtype == np.int64
    np.testing.assert_array_equal(frame_index, FRAME_INDEX)


def test_png16_decodes_and_maps_back_with_the_manifest_range(written):
    out, _, manifest = written
    folder = out / "clip_png16"
    assert listing(folder) == [f"{i:06d}.png" for i in FRAME_INDEX]
    norm = manifest["normalisation"]["png16"]
    everything = np.stack([make_disparity(t) for t in range(T)])
    assert norm["min"] == pytest.approx(float(everything.min()))
    assert norm["max"] == pytest.approx(float(everything.max()))
    step = (norm["max"] - norm["min"]) / 65535
    seen_min, seen_max = 65535, 0
    for t, index in enumerate(FRAME_INDEX):
        path = folder / f"{index:06d}.png"
        header = path.read_bytes()[:33]
        width, height, bit_depth, colour_type = struct.unpack(">IIBB", header[16:26])
        assert (width, height, bit_depth, colour_type) == (W, H, 16, 0)  # 16-bit greyscale
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
        value = frame.to_ndarray()
        assert frame.format.name == "gray16be" and value.dtype == np.uint16 and value.shape == (H, W)
        back = norm["min"] + value.astype(np.float64) / 65535 * (norm["max"] - norm["min"])
        assert np.abs(back - make_disparity(t)).max() <= 0.5 * step + 1e-5
        seen_min, seen_max = min(seen_min, int(value.min())), max(seen_max, int(value.max()))
    assert (seen_min, seen_max) == (0, 65535)  # the video-wide range uses all 16 bits


@pytest.mark.skipif(not HAS_EXR, reason="this PyAV / FFmpeg build has no EXR encoder")
def test_exr_holds_raw_float32_in_channel_y(written):
    out, _, _ = written
    folder = out / "clip_exr"
    assert listing(folder) == [f"{i:06d}.exr" for i in FRAME_INDEX]
    for t in (0, 17, T - 1):
        path = folder / f"{FRAME_INDEX[t]:06d}.exr"
        data = path.read_bytes()
        assert data[:4] == b"v/1\x01" and b"channels\x00chlist\x00" in data[:200]
        assert b"\x00Y\x00\x02\x00\x00\x00" in data[:200]  # one channel "Y", pixel type 2 = FLOAT
        with av.open(str(path)) as container:
            value = next(container.decode(video=0)).to_ndarray()
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, make_disparity(t))


def test_depth_video_has_every_frame_padded_and_colours_follow_disparity(written):
    out, _, manifest = written
    frames = decode_video(out / "clip_depth.mp4")
    assert len(frames) == T
    assert frames[0].shape == (H + 1, W, 3)  # 33 rows padded to 34 by repeating the last row
    colour = manifest["normalisation"]["colour"]
    lo, hi = colour["lo"], colour["hi"]
    everything = np.stack([make_disparity(t) for t in range(T)])
    assert lo == pytest.approx(np.percentile(everything, 2), rel=1e-3)
    assert hi == pytest.approx(np.percentile(everything, 98), rel=1e-3)
    lut = lookup_table(colour["colormap"]).astype(np.float32)
    for t in (0, 20, T - 1):
        decoded = frames[t].astype(np.float32)
        d = make_disparity(t)
        expected = colorize_disparity(d, lo, hi, "Spectral_r").astype(np.float32)
        assert np.abs(decoded[:H] - expected).mean() < 6.0  # lossy yuv420p; the reversed map is ~60 off
        np.testing.assert_allclose(decoded[H], decoded[H - 1], atol=12)  # edge replication, not black
        # Invert the colormap: the nearest of its 256 colours must give back the normalised disparity.
        nearest = np.argmin(((decoded[:H, :, None, :] - lut[None, None]) ** 2).sum(-1), axis=-1) / 255
        target = np.clip((d - lo) / (hi - lo), 0, 1)
        assert np.median(np.abs(nearest - target)) < 0.02
        assert np.corrcoef(nearest.ravel(), target.ravel())[0, 1] > 0.98


def test_side_by_side_is_rgb_left_and_depth_right(written):
    out, _, manifest = written
    frames = decode_video(out / "clip_side_by_side.mp4")
    assert len(frames) == T and frames[0].shape == (H + 1, 2 * W, 3)
    colour = manifest["normalisation"]["colour"]
    t = 11
    rgb = (make_rgb(t).permute(1, 2, 0).numpy() * 255).round()
    depth = colorize_disparity(make_disparity(t), colour["lo"], colour["hi"], colour["colormap"])
    assert np.abs(frames[t][:H, :W].astype(np.float32) - rgb).mean() < 4.0
    assert np.abs(frames[t][:H, W:].astype(np.float32) - depth).mean() < 4.0


def test_manifest_lists_every_output_with_its_size(written):
    out, _, manifest = written
    assert manifest["name"] == "clip" and manifest["frames"] == T
    assert (manifest["height"], manifest["width"], manifest["fps"]) == (H, W, 12.0)
    assert manifest["frame_index_range"] == [FRAME_INDEX[0], FRAME_INDEX[-1]]
    assert manifest["input"] == "/videos/clip.mp4" and manifest["model"] == "dav2"  # caller's keys kept
    assert manifest["timing"] == {"predict_s": 1.5} and manifest["resolution"] == [H, W]
    kinds = {e["kind"]: e for e in manifest["outputs"]}
    assert set(kinds) == set(ALL.kinds())
    for entry in kinds.values():
        path = out / entry["path"]
        if path.is_dir():
            files = list(path.iterdir())
            assert entry["files"] == T == len(files)
            assert entry["bytes"] == sum(f.stat().st_size for f in files)
        else:
            assert entry["bytes"] == path.stat().st_size > 0
    assert kinds["depth_video"]["height"] == H + 1 and kinds["side_by_side"]["width"] == 2 * W


def test_even_sizes_are_not_padded(tmp_path):
    options = OutputOptions(npz=False, depth_video=True)
    with DepthVideoWriter(tmp_path, "even", options) as writer:
        for t in range(3):
            writer.add(t, np.random.rand(32, 48).astype(np.float32))
        writer.finish({})
    assert decode_video(tmp_path / "even_depth.mp4")[0].shape == (32, 48, 3)


# --------------------------------------------------------------------------- completeness and resume


@pytest.fixture
def copy_of(written, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(written[0], out)
    return out


def test_outputs_complete_after_finish(written):
    assert outputs_complete(written[0], "clip")
    assert not outputs_complete(written[0], "other")


@pytest.mark.parametrize(
    "damage", ["delete_png", "truncate_npz", "delete_video", "no_manifest", "bad_manifest", "extra_png"]
)
def test_outputs_complete_detects_damage(copy_of, damage):
    out = copy_of
    assert outputs_complete(out, "clip")
    if damage == "delete_png":
        next((out / "clip_png16").iterdir()).unlink()
    elif damage == "truncate_npz":
        with open(out / "clip.npz", "r+b") as f:
            f.truncate((out / "clip.npz").stat().st_size - 1)
    elif damage == "delete_video":
        (out / "clip_depth.mp4").unlink()
    elif damage == "no_manifest":
        (out / "clip.json").unlink()
    elif damage == "bad_manifest":
        (out / "clip.json").write_text('{"outputs": [')
    elif damage == "extra_png":
        (out / "clip_png16" / "999999.png").write_bytes(b"x")
    assert not outputs_complete(out, "clip")


def test_exception_mid_stream_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="model crashed"):
        with DepthVideoWriter(tmp_path, "clip", ALL) as writer:
            for t in range(10):
                writer.add(t, make_disparity(t), make_rgb(t))
            assert any(name.startswith(".clip.") for name in listing(tmp_path))  # pass-1 temps exist
            raise RuntimeError("model crashed")
    assert listing(tmp_path) == []


def test_failure_inside_finish_leaves_nothing_and_keeps_an_earlier_complete_run(tmp_path, monkeypatch):
    write_video(tmp_path, options=OutputOptions(npz=True, depth_video=False), frames=4)
    before = {p: (tmp_path / p).read_bytes() for p in listing(tmp_path)}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    # The npz and the PNG folder are already written under temp names when the video fails.
    monkeypatch.setattr(depth_module, "write_mp4", broken)
    with pytest.raises(OSError, match="disk full"):
        write_video(tmp_path, options=OutputOptions(npz=True, png16=True, depth_video=True))
    assert {p: (tmp_path / p).read_bytes() for p in listing(tmp_path)} == before
    assert outputs_complete(tmp_path, "clip")


def test_leaving_without_finish_writes_nothing(tmp_path):
    with pytest.warns(UserWarning, match="without finish"):
        with DepthVideoWriter(tmp_path, "clip", ALL) as writer:
            writer.add(0, make_disparity(0), make_rgb(0))
    assert listing(tmp_path) == []


def test_rerun_replaces_outputs_and_drops_kinds_no_longer_requested(tmp_path):
    write_video(tmp_path, options=OutputOptions(npz=True, png16=True, depth_video=False), frames=5)
    write_video(tmp_path, options=OutputOptions(npz=True, png16=False, depth_video=False), frames=3)
    assert listing(tmp_path) == ["clip.json", "clip.npz"]
    with np.load(tmp_path / "clip.npz") as npz:
        assert npz["disparity"].shape == (3, H, W)
    assert outputs_complete(tmp_path, "clip")


def test_clean_partial_removes_a_killed_run(tmp_path):
    pid = 424242
    # What a run killed during pass 2 leaves: raw pass-1 files, a half-written npz, a PNG temp folder,
    # and, killed while moving outputs into place, one final-named output without a manifest.
    leftovers = [
        f".clip.disparity-f32.raw.tmp-{pid}",
        f".clip.rgb-u8.raw.tmp-{pid}",
        f".clip.npz.tmp-{pid}",
        f".clip_png16.tmp-{pid}",
        f".clip.json.tmp-{pid}",
        "clip_depth.mp4",
        "clip_exr",
    ]
    for name in leftovers:
        if name.endswith(f"png16.tmp-{pid}") or name == "clip_exr":
            (tmp_path / name).mkdir()
            (tmp_path / name / "000000.png").write_bytes(b"partial")
        else:
            (tmp_path / name).write_bytes(b"partial")
    # Other videos' files, including names that share the prefix, must survive.
    others = [
        "other.npz",
        f".other.npz.tmp-{pid}",
        "clip_depth.npz",
        f".clip_depth.npz.tmp-{pid}",
        "clip2.json",
        ".clip.npz.tmp-abc",
        RUN_MANIFEST_NAME,
    ]
    for name in others:
        (tmp_path / name).write_bytes(b"keep")
    removed = clean_partial(tmp_path, "clip")
    assert sorted(p.name for p in removed) == sorted(leftovers)
    assert listing(tmp_path) == sorted(others)
    assert clean_partial(tmp_path, "clip") == []
    assert clean_partial(tmp_path / "missing", "clip") == []


def test_clean_partial_keeps_a_complete_run(copy_of):
    out = copy_of
    (out / ".clip.npz.tmp-7").write_bytes(b"partial")
    (out / ".clip.disparity-f32.raw.tmp-7").write_bytes(b"partial")
    (out / "clip_side_by_side.mp4").rename(out / "keep.mp4")
    manifest = json.loads((out / "clip.json").read_text())
    manifest["outputs"] = [e for e in manifest["outputs"] if e["kind"] != "side_by_side"]
    (out / "clip.json").write_text(json.dumps(manifest))
    (out / "clip_side_by_side.mp4").write_bytes(b"stale, not listed")
    removed = clean_partial(out, "clip")
    assert sorted(p.name for p in removed) == [
        ".clip.disparity-f32.raw.tmp-7",
        ".clip.npz.tmp-7",
        "clip_side_by_side.mp4",
    ]
    assert outputs_complete(out, "clip")


def test_clean_partial_after_a_failed_replace(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace

    def replace_once(src, dst):  # the process "dies" after moving the first output into place
        if calls:
            raise KeyboardInterrupt
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(depth_module.os, "replace", replace_once)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path, options=OutputOptions(npz=True, png16=True, depth_video=False), frames=3)
    monkeypatch.undo()
    assert listing(tmp_path) == ["clip.npz"]  # temps removed by abort, no manifest
    assert not outputs_complete(tmp_path, "clip")
    assert [p.name for p in clean_partial(tmp_path, "clip")] == ["clip.npz"]
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------- memory and errors


def test_memory_stays_far_below_the_video_size(tmp_path):
    n, size = 500, 256
    video_bytes = n * size * size * 4
    base = np.random.default_rng(0).random((size, size), dtype=np.float32)
    writer = DepthVideoWriter(tmp_path, "long", OutputOptions(npz=True, depth_video=True))
    tracemalloc.start()
    try:
        for t in range(n):
            writer.add(t, base + 0.01 * t)
        _, add_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        writer.finish({})
        _, finish_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert add_peak < video_bytes / 50, add_peak  # about one frame, not a list of frames
    assert finish_peak < video_bytes / 10, finish_peak  # chunks of a few MiB, not the video
    with np.load(tmp_path / "long.npz") as npz:
        assert npz["disparity"].shape == (n, size, size)
        np.testing.assert_array_equal(npz["disparity"][-1], (base + 0.01 * (n - 1)).astype(np.float16))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_disparity_names_the_frame(tmp_path, bad):
    with pytest.raises(ValueError, match=r"frame 11\b"):
        with DepthVideoWriter(tmp_path, "clip", OutputOptions()) as writer:
            for t in (9, 10, 11):
                d = make_disparity(t)
                if t == 11:
                    d[3, 4] = bad
                writer.add(t, d)
    assert listing(tmp_path) == []


def test_invalid_input_is_rejected(tmp_path):
    writer = DepthVideoWriter(tmp_path, "clip", OutputOptions(side_by_side=True))
    with pytest.raises(ValueError, match="needs the rgb"):
        writer.add(0, make_disparity(0))
    writer.add(0, make_disparity(0), make_rgb(0))
    with pytest.raises(ValueError, match="strictly increasing"):
        writer.add(0, make_disparity(0), make_rgb(0))
    with pytest.raises(ValueError, match="size"):
        writer.add(1, np.zeros((H, W + 1), np.float32), make_rgb(0))
    with pytest.raises(ValueError, match="rgb of frame 1"):
        writer.add(1, make_disparity(1), torch.rand(3, H + 1, W))
    with pytest.raises(ValueError, match="float16"):
        writer.add(1, np.full((H, W), 1e6, np.float32), make_rgb(1))
    writer.add(1, make_disparity(1)[None], make_rgb(1).numpy())  # (1,H,W) and numpy rgb are fine
    writer.abort()
    assert listing(tmp_path) == []
    with pytest.raises(RuntimeError, match="aborted"):
        writer.add(2, make_disparity(2), make_rgb(2))
    with pytest.raises(ValueError, match="colormap"):
        DepthVideoWriter(tmp_path, "clip", OutputOptions(colormap="no_such_map"))
    with pytest.raises(ValueError, match="no output"):
        DepthVideoWriter(tmp_path, "clip", OutputOptions(npz=False, depth_video=False))
    for name in ["", ".hidden", "a/b", "manifest"]:
        with pytest.raises(ValueError):
            DepthVideoWriter(tmp_path, name)
    with pytest.raises(ValueError, match="no frame"):
        DepthVideoWriter(tmp_path, "empty").finish({})
    assert listing(tmp_path) == []


def test_colorize_disparity():
    lut = lookup_table("turbo")
    d = np.array([[0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    rgb = colorize_disparity(d, 1.0, 2.0, "turbo")
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0], lut[[0, 0, 255, 255]])  # ends, and clipping beyond them
    np.testing.assert_array_equal(
        colorize_disparity(torch.full((2, 2), 5.0), 5.0, 5.0, "turbo"), np.broadcast_to(lut[0], (2, 2, 3))
    )
