"""`VideoDepthFolder` (your own videos) and `MatrixCity` on tiny fakes in their documented layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dataset_fakes import H, W, matrixcity
from PIL import Image
from test_train_datasets import _exr, _png16, _rgb, needs_exr

from vdf.data.datasets.generic import VideoDepthFolder
from vdf.data.datasets.matrixcity import MatrixCity
from vdf.data.types import ClipRequest
from vdf.io.codecs import encoder_available


def _frames(seq, n=3):
    for i in range(n):
        _rgb(seq / "rgb" / f"{i:06d}.png", i)


def _depth(i):
    d = np.full((H, W), 2.0 + i, np.float32)
    d[0, 0] = 0.0  # unknown
    return d


def test_png16_depth_with_scale_mask_intrinsics_and_poses(tmp_path):
    seq = tmp_path / "scene" / "cam0"
    _frames(seq)
    for i in range(3):
        _png16(seq / "depth" / f"{i:06d}.png", np.round(_depth(i) * 256))
        mask = np.full((H, W), 255, np.uint8)
        mask[-1, :] = 0
        (seq / "mask").mkdir(exist_ok=True)
        Image.fromarray(mask).save(seq / "mask" / f"{i:06d}.png")
    (seq / "intrinsics.txt").write_text("100 110 3.5 2.5\n")
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 2, 3] = [0.0, 1.0, 2.0]
    np.savetxt(seq / "poses.txt", poses.reshape(3, 16))
    ds = VideoDepthFolder(str(tmp_path), name="mine", png_scale=256.0)
    s = ds[ClipRequest(0, (0, 2))]
    assert s["meta"]["dataset"] == "mine" and s["meta"]["sequence"] == "scene/cam0"
    assert s["video"].shape == (2, 3, H, W) and s["frame_index"].tolist() == [0, 2]
    assert torch.allclose(s["depth"][1, 0, 1, 1], torch.tensor(4.0))
    assert not s["valid"][:, 0, 0, 0].any() and not s["valid"][:, 0, -1].any()  # zero depth, mask 0
    assert int(s["valid"].sum()) == 2 * (H * W - 1 - W)
    assert s["intrinsics"][0].tolist() == [[100, 0, 3.5], [0, 110, 2.5], [0, 0, 1]]
    assert s["cam_to_world"][:, 2, 3].tolist() == [0.0, 2.0]
    # Resized output scales the intrinsics; a caps drops far depth.
    small = VideoDepthFolder(str(tmp_path), png_scale=256.0, size=(3, 4), max_depth=3.5)[ClipRequest(0, (2,))]
    assert small["video"].shape == (1, 3, 3, 4) and not small["valid"].any()  # depth 4 m > 3.5 m cap
    assert math.isclose(float(small["intrinsics"][0, 0, 0]), 50.0)


@pytest.mark.parametrize("fmt", ["npy", "npz", pytest.param("exr", marks=needs_exr)])
def test_float_depth_formats(tmp_path, fmt):
    seq = tmp_path / "a"
    _frames(seq, 2)
    for i in range(2):
        path = seq / "depth" / f"{i:06d}.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "npy":
            np.save(path, _depth(i))
        elif fmt == "npz":
            np.savez(path, depth=_depth(i), other=np.zeros(3))
        else:
            _exr(path, _depth(i))
    s = VideoDepthFolder(str(tmp_path))[0]
    assert torch.equal(s["depth"][:, 0], torch.from_numpy(np.stack([_depth(0), _depth(1)])))
    assert int(s["valid"].sum()) == 2 * (H * W - 1)


def test_disparity_becomes_depth(tmp_path):
    seq = tmp_path / "a"
    _frames(seq, 1)
    disp = np.full((H, W), 4.0, np.float32)
    disp[0, 0] = 0.0  # sky: invalid
    (seq / "disparity").mkdir(parents=True)
    np.save(seq / "disparity" / "000000.npy", disp)
    s = VideoDepthFolder(str(tmp_path), disparity_scale=10.0)[0]
    assert torch.allclose(s["depth"][0, 0, 1, 1], torch.tensor(2.5)) and not s["valid"][0, 0, 0, 0]


@pytest.mark.skipif(not encoder_available("libx264") and not encoder_available("mpeg4"), reason="no video encoder")
def test_a_video_instead_of_frames_pairs_frame_k_with_file_k(tmp_path):
    import av

    seq = tmp_path / "v"
    seq.mkdir()
    codec = "libx264" if encoder_available("libx264") else "mpeg4"
    levels = [40, 120, 200]
    with av.open(str(seq / "rgb.mp4"), "w") as out:
        stream = out.add_stream(codec, rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for v in levels:
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), v, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    for i in range(3):
        (seq / "depth").mkdir(exist_ok=True)
        np.save(seq / "depth" / f"{i:06d}.npy", np.full((16, 16), 1.0 + i, np.float32))
    s = VideoDepthFolder(str(tmp_path))[ClipRequest(0, (1, 2))]
    assert s["video"].shape == (2, 3, 16, 16) and s["frame_index"].tolist() == [1, 2]
    assert abs(float(s["video"][0].mean()) * 255 - 120) < 8 and abs(float(s["video"][1].mean()) * 255 - 200) < 8
    assert torch.all(s["depth"][1] == 3.0)


def test_exclude_holds_sequences_out(tmp_path):
    for name in ("a", "b", "c"):
        _frames(tmp_path / name, 1)
        (tmp_path / name / "depth").mkdir()
        np.save(tmp_path / name / "depth" / "000000.npy", _depth(0))
    assert [s.name for s in VideoDepthFolder(str(tmp_path), exclude=["b"]).sequences] == ["a", "c"]
    assert [s.name for s in VideoDepthFolder(str(tmp_path), sequences=["b"]).sequences] == ["b"]
    with pytest.raises(ValueError, match=r"\['z'\]"):
        VideoDepthFolder(str(tmp_path), exclude=["z"])


def test_malformed_input_is_named(tmp_path):
    seq = tmp_path / "a"
    _frames(seq, 2)
    (seq / "depth").mkdir()
    np.save(seq / "depth" / "000000.npy", _depth(0))
    with pytest.raises(FileNotFoundError, match="frame 1 .*000001.png.*no depth file"):
        VideoDepthFolder(str(tmp_path))
    np.save(seq / "depth" / "000001.npy", np.zeros((H, W, 2), np.float32))  # not (H, W)
    with pytest.raises(ValueError, match="000001.npy"):
        VideoDepthFolder(str(tmp_path))[0]
    np.save(seq / "depth" / "000001.npy", _depth(1))
    (seq / "intrinsics.txt").write_text("1 2 3\n")
    with pytest.raises(ValueError, match="intrinsics.txt.*fx fy cx cy"):
        VideoDepthFolder(str(tmp_path))
    (seq / "intrinsics.txt").unlink()
    np.savetxt(seq / "poses.txt", np.tile(np.eye(4).reshape(1, 16), (3, 1)))
    with pytest.raises(ValueError, match="poses.txt.*3 rows.*2 rows"):
        VideoDepthFolder(str(tmp_path))
    (seq / "poses.txt").unlink()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(seq / "depth" / "000001.png")  # two files, frame 1
    with pytest.raises(ValueError, match="both hold frame 1"):
        VideoDepthFolder(str(tmp_path))
    (seq / "depth" / "000001.npy").unlink()
    with pytest.raises(ValueError, match="000001.png.*16-bit"):  # an 8-bit PNG is not depth
        VideoDepthFolder(str(tmp_path))[0]
    (seq / "depth" / "000001.png").unlink()
    np.save(seq / "depth" / "000001.npy", _depth(1))
    (seq / "mask").mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((2, 2), np.uint8)).save(seq / "mask" / f"{i:06d}.png")
    with pytest.raises(ValueError, match="mask .*000000.png.* is 2x2"):
        VideoDepthFolder(str(tmp_path))[0]
    (seq / "disparity").mkdir()
    with pytest.raises(FileNotFoundError, match="exactly one of depth/ and disparity/"):
        VideoDepthFolder(str(tmp_path))


@needs_exr
def test_matrixcity_centimetres_sky_and_nerf_poses(tmp_path):
    matrixcity(tmp_path, frames=2)
    ds = MatrixCity(str(tmp_path))
    assert [s.name for s in ds.sequences] == ["small_city/street/train/block_1"]
    s = ds[0]
    assert torch.allclose(s["depth"][1, 0, 2, 2], torch.tensor(16.0))
    assert not s["valid"][:, 0, 0, :2].any() and s["valid"][:, 0, 0, 2:].all()
    f = (W / 2) / math.tan(0.6)
    assert math.isclose(float(s["intrinsics"][0, 0, 0]), f, rel_tol=1e-6)
    # NeRF camera (y up, z back) -> OpenCV (y down, z forward); rotation scale 100 removed.
    c2w = s["cam_to_world"][1].double()
    assert torch.allclose(c2w[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    assert c2w[:3, 3].tolist() == [1.0, 0.0, 2.0]
    # The block layout with depth/ beside the frames reads the same.
    block = tmp_path / "other" / "blk"
    _rgb(block / "0000.png", 1)
    _exr(block / "depth" / "0000.exr", np.full((H, W), 250.0, np.float32))
    t = MatrixCity(str(tmp_path / "other"))[0]
    assert torch.all(t["depth"] == 2.5) and "intrinsics" not in t


def test_written_folder_reads_back_and_splits_by_sequence(tmp_path):
    from vdf.data.datasets.generic import write_folder
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=5, num_frames=3, height=8, width=12, seed=3)
    write_folder(world, tmp_path)
    train = VideoDepthFolder(str(tmp_path), split="train", held_out_every=2)
    held = VideoDepthFolder(str(tmp_path), split="held_out", held_out_every=2)
    assert [s.name for s in train.sequences] == ["seq_0000", "seq_0002", "seq_0004"]
    assert [s.name for s in held.sequences] == ["seq_0001", "seq_0003"]
    back, orig = held[0], world[1]
    assert torch.allclose(back["video"], orig["video"], atol=1 / 255)
    ok = orig["valid"] & (orig["depth"] * 1000 < 65535)
    assert torch.allclose(back["depth"][ok], orig["depth"][ok], atol=5e-4)
    assert torch.allclose(back["intrinsics"], orig["intrinsics"], atol=1e-4)
    assert torch.allclose(back["cam_to_world"], orig["cam_to_world"], atol=1e-5)
    with pytest.raises(ValueError, match="split"):
        VideoDepthFolder(str(tmp_path), split="test")
