"""Training-set readers on tiny fakes written in each dataset's exact on-disk layout and formats."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from vdf.data.datamodule import VideoDepthDataModule
from vdf.data.datasets.dynamic_replica import DynamicReplica
from vdf.data.datasets.frames import FrameSequence, PerFrameDataset, numbered_frames, pinhole, set_cameras
from vdf.data.datasets.hypersim import Hypersim, distance_to_planar
from vdf.data.datasets.irs import IRS
from vdf.data.datasets.mvs_synth import MVSSynth
from vdf.data.datasets.pointodyssey import PointOdyssey
from vdf.data.datasets.spring import Spring
from vdf.data.datasets.tartanair import TartanAir
from vdf.data.datasets.vkitti2 import VirtualKITTI2
from vdf.data.readers import image_size, read_hdf5, read_npy, read_png16, read_rgb, read_scaled_png, read_table
from vdf.data.types import ClipRequest
from vdf.io.codecs import encoder_available

h5py = pytest.importorskip("h5py")

H, W = 6, 8


def _rgb(path, seed, size=(H, W), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format=fmt)


def _png16(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array, dtype=np.uint16)
    Image.frombytes("I;16", (array.shape[1], array.shape[0]), array.astype("<u2").tobytes()).save(path)


def _h5(path, key, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=np.asarray(array))


def _exr(path, array, rgb=False):
    """Write a float32 OpenEXR with PyAV's ``exr`` encoder (one channel, or RGB with G = array)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array, dtype=np.float32)
    fmt = "gbrpf32le" if rgb else "grayf32le"
    data = np.stack([array * 0 + 7.0, array, array * 0 - 3.0], -1) if rgb else array  # R, G, B
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("exr")
        stream.width, stream.height, stream.pix_fmt = array.shape[1], array.shape[0], fmt
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(data), format=fmt)):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


needs_exr = pytest.mark.skipif(not encoder_available("exr"), reason="this PyAV build has no OpenEXR encoder")


def _check_contract(sample, t, size):
    h, w = size
    assert sample["video"].shape == (t, 3, h, w) and sample["video"].dtype == torch.float32
    assert float(sample["video"].min()) >= 0 and float(sample["video"].max()) <= 1
    assert sample["depth"].shape == (t, 1, h, w) and sample["depth"].dtype == torch.float32
    assert sample["valid"].shape == (t, 1, h, w) and sample["valid"].dtype == torch.bool
    assert sample["frame_index"].dtype == torch.int64 and sample["frame_index"].shape == (t,)
    assert torch.all(sample["depth"][~sample["valid"]] == 0)
    assert torch.all(sample["depth"][sample["valid"]] > 0)
    if "intrinsics" in sample:
        assert sample["intrinsics"].shape == (t, 3, 3) and sample["intrinsics"].dtype == torch.float32
    if "cam_to_world" in sample:
        assert sample["cam_to_world"].shape == (t, 4, 4)


# -- Hypersim -----------------------------------------------------------------------------------


def test_distance_to_planar_recovers_a_fronto_parallel_plane():
    h, w, f, z = 12, 16, 13.86, 3.5
    # Independent computation: back-project pixel centres (u - cx, v - cy) at depth z, take the norm.
    u, v = np.meshgrid(np.arange(w) - (w - 1) / 2, np.arange(h) - (h - 1) / 2)
    points = np.stack([u * z / f, v * z / f, np.full_like(u, z)], -1)
    dist = np.linalg.norm(points, axis=-1).astype(np.float32)
    assert np.allclose(distance_to_planar(dist, f), z, rtol=1e-5)
    # The published constants: 1024x768, 60° horizontal field of view.
    assert math.isclose(512 / math.tan(math.radians(30)), 886.81, abs_tol=0.01)
    big = np.full((768, 1024), 2.0, np.float32)
    corner = float(distance_to_planar(big, 886.81)[0, 0])
    assert math.isclose(corner, 2.0 * 886.81 / math.sqrt(511.5**2 + 383.5**2 + 886.81**2), rel_tol=1e-5)
    nan = np.full((2, 2), np.nan, np.float32)
    assert np.isnan(distance_to_planar(nan, 10.0)).all()


def _hypersim(root, scene="ai_001_001", cam="cam_00", numbers=(0, 1, 2), z=2.0):
    images = root / scene / "images"
    f = (W / 2) / math.tan(math.radians(30))
    u, v = np.meshgrid(np.arange(W) - (W - 1) / 2, np.arange(H) - (H - 1) / 2)
    for i, n in enumerate(numbers):
        _rgb(images / f"scene_{cam}_final_preview" / f"frame.{n:04d}.color.jpg", n)
        depth = z + i
        dist = depth * np.sqrt(u**2 + v**2 + f**2) / f
        dist[0, 0] = np.nan
        _h5(
            images / f"scene_{cam}_geometry_hdf5" / f"frame.{n:04d}.depth_meters.hdf5",
            "dataset",
            dist.astype(np.float32),
        )
    return f


def test_hypersim_reads_planar_depth_and_selected_frames(tmp_path):
    f = _hypersim(tmp_path, numbers=(0, 4, 7))
    _hypersim(tmp_path, scene="ai_001_002", cam="cam_01", numbers=(3, 4))
    ds = Hypersim(str(tmp_path))
    assert len(ds) == 2 and ds.sequence_length(0) == 3 and ds.frame_size(0) == (H, W)
    s = ds[ClipRequest(0, (0, 2))]
    _check_contract(s, 2, (H, W))
    assert s["meta"]["sequence"] == "ai_001_001/cam_00" and s["meta"]["dataset"] == "hypersim"
    assert s["frame_index"].tolist() == [0, 7]
    assert not s["valid"][0, 0, 0, 0] and s["valid"].sum() == 2 * (H * W - 1)
    assert torch.allclose(s["depth"][0][s["valid"][0]], torch.tensor(2.0), rtol=1e-5)
    assert torch.allclose(s["depth"][1][s["valid"][1]], torch.tensor(4.0), rtol=1e-5)
    assert torch.allclose(s["intrinsics"][0], torch.tensor([[f, 0, 3.5], [0, f, 2.5], [0, 0, 1]], dtype=torch.float32))
    only = Hypersim(str(tmp_path), sequences=["ai_001_002/cam_01"], max_depth=2.5)
    assert len(only) == 1 and only[0]["frame_index"].tolist() == [3, 4]
    assert only[0]["valid"][1].sum() == 0  # 3 m > cap 2.5 m


def test_hypersim_errors_name_the_file(tmp_path):
    _hypersim(tmp_path)
    bad = tmp_path / "ai_001_001/images/scene_cam_00_geometry_hdf5/frame.0001.depth_meters.hdf5"
    _h5(bad, "wrong_key", np.zeros((H, W), np.float32))
    ds = Hypersim(str(tmp_path))
    with pytest.raises(KeyError, match="frame.0001.depth_meters.hdf5"):
        ds[ClipRequest(0, (1,))]
    bad.unlink()
    with pytest.raises(FileNotFoundError, match="frame.0001.depth_meters.hdf5"):
        Hypersim(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no sequences"):
        Hypersim(str(tmp_path / "ai_001_001" / "images"))


# -- Virtual KITTI 2 ----------------------------------------------------------------------------


def _vkitti(root, scene="Scene01", variation="clone", frames=3, text=True):
    base = root / scene / variation
    for cam in (0, 1):
        for n in range(frames):
            _rgb(base / "frames/rgb" / f"Camera_{cam}" / f"rgb_{n:05d}.jpg", n + 10 * cam)
            depth = np.full((H, W), 1234 + 100 * n + 1000 * cam, np.uint16)
            depth[0, :] = 65535  # sky
            depth[1, 0] = 9000  # 90 m, beyond the 80 m cap
            _png16(base / "frames/depth" / f"Camera_{cam}" / f"depth_{n:05d}.png", depth)
    if text:
        intr = ["frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"]
        extr = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
        for n in range(frames):
            for cam in (0, 1):
                intr.append(f"{n} {cam} {725.0 + cam} 725.0 620.5 187.0")
                w2c = np.eye(4)
                w2c[:3, 3] = [0.5 * cam, 0.0, -float(n)]  # camera n is at z = n in the world
                extr.append(f"{n} {cam} " + " ".join(f"{v:g}" for v in w2c.reshape(-1)))
        (base / "intrinsic.txt").write_text("\n".join(intr) + "\n")
        (base / "extrinsic.txt").write_text("\n".join(extr) + "\n")


def test_vkitti2_units_sky_cap_and_cameras(tmp_path):
    _vkitti(tmp_path)
    _vkitti(tmp_path, variation="fog", text=False)
    ds = VirtualKITTI2(str(tmp_path))
    names = [s.name for s in ds.sequences]
    assert names == ["Scene01/clone/Camera_0", "Scene01/clone/Camera_1", "Scene01/fog/Camera_0", "Scene01/fog/Camera_1"]
    s = ds[ClipRequest(1, (0, 2))]
    _check_contract(s, 2, (H, W))
    assert s["frame_index"].tolist() == [0, 2]
    assert not s["valid"][:, 0, 0].any() and not s["valid"][:, 0, 1, 0].any()
    assert torch.allclose(s["depth"][0, 0, 2:], torch.tensor(22.34)) and torch.allclose(
        s["depth"][1, 0, 2:], torch.tensor(24.34)
    )
    assert torch.allclose(s["intrinsics"][0], torch.tensor([[726.0, 0, 620.5], [0, 725.0, 187.0], [0, 0, 1]]))
    assert torch.allclose(s["cam_to_world"][1, :3, 3], torch.tensor([-0.5, 0.0, 2.0]))
    fog = ds[ClipRequest(2, (0,))]
    assert "intrinsics" not in fog and "cam_to_world" not in fog
    wide = VirtualKITTI2(str(tmp_path), max_depth=100.0)[ClipRequest(0, (0,))]
    assert wide["valid"][0, 0, 1, 0] and math.isclose(float(wide["depth"][0, 0, 1, 0]), 90.0, rel_tol=1e-6)


def test_vkitti2_rejects_8bit_depth_and_bad_text(tmp_path):
    _vkitti(tmp_path, frames=2)
    path = tmp_path / "Scene01/clone/frames/depth/Camera_0/depth_00001.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)
    with pytest.raises(ValueError, match="depth_00001.png.*16-bit"):
        VirtualKITTI2(str(tmp_path))[ClipRequest(0, (1,))]
    (tmp_path / "Scene01/clone/intrinsic.txt").write_text("0 0 1 2 3 4\n")
    with pytest.raises(ValueError, match="intrinsic.txt.*header"):
        VirtualKITTI2(str(tmp_path))


# -- TartanAir ----------------------------------------------------------------------------------


def _tartanair(root, env="abandonedfactory", level="Easy", traj="P001", frames=3):
    base = root / env / level / traj
    poses = []
    for n in range(frames):
        _rgb(base / "image_left" / f"{n:06d}_left.png", n)
        depth = np.full((H, W), 5.0 + n, np.float32)
        depth[0] = 1e4  # sky
        depth[1, 0] = np.inf
        (base / "depth_left").mkdir(parents=True, exist_ok=True)
        np.save(base / "depth_left" / f"{n:06d}_left_depth.npy", depth)
        poses.append([float(n), 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])  # moving forward along NED x
    np.savetxt(base / "pose_left.txt", np.array(poses))


def test_tartanair_depth_sky_intrinsics_and_poses(tmp_path):
    _tartanair(tmp_path)
    ds = TartanAir(str(tmp_path))
    assert len(ds) == 1 and ds.sequences[0].name == "abandonedfactory/Easy/P001"
    s = ds[ClipRequest(0, (1, 2))]
    _check_contract(s, 2, (H, W))
    assert s["frame_index"].tolist() == [1, 2]
    assert not s["valid"][:, 0, 0].any() and not s["valid"][:, 0, 1, 0].any()
    assert torch.all(s["depth"][0, 0, 2:] == 6.0) and torch.all(s["depth"][1, 0, 2:] == 7.0)
    assert torch.equal(s["intrinsics"][0], torch.tensor([[320.0, 0, 320], [0, 320, 240], [0, 0, 1]]))
    # NED forward (+x) is OpenCV forward (+z); identity rotation stays identity.
    assert torch.allclose(
        s["cam_to_world"][1], torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]])
    )


def test_tartanair_ned_rotation_maps_axes():
    from vdf.data.datasets.tartanair import ned_poses_to_opencv

    # Yaw of +90° about NED down (z): the body's forward turns from north (x) to east (y).
    q = [0, 0, math.sin(math.pi / 4), math.cos(math.pi / 4)]
    c2w = ned_poses_to_opencv(np.array([[0, 0, 0, *q]]))[0]
    forward_cv_world = c2w[:3, :3] @ np.array([0, 0, 1.0])  # camera z axis in the (permuted) world
    # NED east (y) in the permuted world frame is its x axis.
    assert np.allclose(forward_cv_world, [1, 0, 0], atol=1e-9)
    assert np.allclose(c2w[:3, :3] @ [0, 1.0, 0], [0, 1, 0], atol=1e-9)  # camera down stays down


# -- PointOdyssey -------------------------------------------------------------------------------


def _pointodyssey(root, split="train", seq="ani", frames=3):
    base = root / split / seq
    for n in range(frames):
        _rgb(base / "rgbs" / f"rgb_{n:05d}.jpg", n)
        depth = np.full((H, W), 655 * (n + 1), np.uint16)  # ~ 10 m, 20 m, 30 m
        depth[0, 0] = 0
        _png16(base / "depths" / f"depth_{n:05d}.png", depth)
    k = np.tile(np.array([[100.0, 0, 4], [0, 100, 3], [0, 0, 1]]), (frames, 1, 1))
    ext = np.tile(np.eye(4), (frames, 1, 1))
    ext[:, 0, 3] = -np.arange(frames)
    np.savez(base / "anno.npz", intrinsics=k, extrinsics=ext)


def test_pointodyssey_units_and_annotations(tmp_path):
    _pointodyssey(tmp_path)
    s = PointOdyssey(str(tmp_path))[ClipRequest(0, (0, 2))]
    _check_contract(s, 2, (H, W))
    assert s["meta"]["sequence"] == "train/ani"
    assert not s["valid"][0, 0, 0, 0] and s["valid"].sum() == 2 * (H * W - 1)
    assert math.isclose(float(s["depth"][0, 0, 1, 1]), 655 / 65535 * 1000, rel_tol=1e-6)
    assert math.isclose(float(s["depth"][1, 0, 1, 1]), 3 * 655 / 65535 * 1000, rel_tol=1e-6)
    assert float(s["intrinsics"][0, 0, 0]) == 100.0 and float(s["cam_to_world"][1, 0, 3]) == 2.0


# -- DynamicReplica -----------------------------------------------------------------------------


def _dynamic_replica(root, seq="009850-3_obj_source_left", frames=3):
    base = root / seq
    for n in range(frames):
        _rgb(base / "images" / f"{seq}_{n:04d}.png", n)
        depth = np.full((H, W), 1.5 + n, np.float16)
        depth[0, 0], depth[0, 1], depth[0, 2], depth[0, 3] = np.inf, np.nan, 0, -1
        _png16(base / "depths" / f"{seq}_{n:04d}.geometric.png", depth.view(np.uint16))


def test_dynamic_replica_float16_bits(tmp_path):
    _dynamic_replica(tmp_path)
    ds = DynamicReplica(str(tmp_path))
    s = ds[ClipRequest(0, (2,))]
    _check_contract(s, 1, (H, W))
    assert s["frame_index"].tolist() == [2]
    assert not s["valid"][0, 0, 0, :4].any() and s["valid"].sum() == H * W - 4
    assert torch.all(s["depth"][0, 0, 1:] == 3.5)


# -- Spring -------------------------------------------------------------------------------------


def _spring(root, seq="0001", frames=3):
    base = root / "train" / seq
    rows = []
    for n in range(1, frames + 1):
        _rgb(base / "frame_left" / f"frame_left_{n:04d}.png", n)
        disp = np.full((2 * H, 2 * W), 2.0 * n, np.float32)
        disp[0, 0], disp[0, 2] = 0.0, np.nan
        disp[1::2, 1::2] = 999.0  # dropped by the [::2, ::2] subsampling
        _h5(base / "disp1_left" / f"disp1_left_{n:04d}.dsp5", "disparity", disp)
        rows.append([1000.0 * n, 1000.0 * n, 4.0, 3.0])
    (base / "cam_data").mkdir(parents=True, exist_ok=True)
    np.savetxt(base / "cam_data" / "intrinsics.txt", np.array(rows))


def test_spring_disparity_to_depth(tmp_path):
    _spring(tmp_path)
    ds = Spring(str(tmp_path))
    assert ds.sequences[0].name == "train/0001"
    s = ds[ClipRequest(0, (0, 2))]
    _check_contract(s, 2, (H, W))
    assert s["frame_index"].tolist() == [1, 3]
    assert not s["valid"][:, 0, 0, 0].any() and not s["valid"][:, 0, 0, 1].any()
    assert s["valid"].sum() == 2 * (H * W - 2)
    # frame 3: fx = 3000, disp = 6 -> 3000 * 0.065 / 6 = 32.5 m
    assert torch.allclose(s["depth"][1, 0, 1:], torch.tensor(32.5))
    assert torch.allclose(s["depth"][0, 0, 1:], torch.tensor(1000 * 0.065 / 2))
    assert float(s["intrinsics"][1, 0, 0]) == 3000.0


def test_spring_needs_intrinsics(tmp_path):
    _spring(tmp_path)
    (tmp_path / "train/0001/cam_data/intrinsics.txt").unlink()
    with pytest.raises(FileNotFoundError, match="intrinsics.txt"):
        Spring(str(tmp_path))


# -- IRS and MVS-Synth (OpenEXR) ----------------------------------------------------------------


@needs_exr
def test_irs_exr_disparity(tmp_path):
    base = tmp_path / "Home" / "ArchVizInterior03Data"
    for n in (1, 2, 10):
        _rgb(base / f"l_{n}.png", n)
        disp = np.full((H, W), 4.8 * n, np.float32)  # depth 10 m / n
        disp[0, 0], disp[0, 1], disp[0, 2] = 0.0, np.nan, 0.1  # inf, nan, 480 m > 200 m
        _exr(base / f"d_{n}.exr", disp, rgb=(n == 2))
    ds = IRS(str(tmp_path))
    assert ds.sequences[0].name == "Home/ArchVizInterior03Data" and ds.sequence_length(0) == 3
    s = ds[ClipRequest(0, (1, 2))]
    _check_contract(s, 2, (H, W))
    assert s["frame_index"].tolist() == [2, 10]
    assert not s["valid"][:, 0, 0, :3].any() and s["valid"].sum() == 2 * (H * W - 3)
    assert torch.allclose(s["depth"][0, 0, 1:], torch.tensor(5.0)) and torch.allclose(
        s["depth"][1, 0, 1:], torch.tensor(1.0)
    )
    assert torch.equal(s["intrinsics"][0], torch.tensor([[480.0, 0, W // 2], [0, 480, H // 2], [0, 0, 1]]))


@needs_exr
def test_mvs_synth_exr_depth_scale_and_poses(tmp_path):
    base = tmp_path / "GTAV_1080" / "0003"
    for n in range(2):
        _rgb(base / "images" / f"{n:04d}.png", n)
        depth = np.full((H, W), 12.0 + n, np.float32)
        depth[0, 0] = np.inf
        _exr(base / "depths" / f"{n:04d}.exr", depth)
        w2c = np.eye(4)
        w2c[2, 3] = -10.0 * n
        cam = {"f_x": 50.0, "f_y": 51.0, "c_x": 4.0, "c_y": 3.0, "extrinsic": w2c.tolist()}
        (base / "poses").mkdir(parents=True, exist_ok=True)
        (base / "poses" / f"{n:04d}.json").write_text(json.dumps(cam))
    s = MVSSynth(str(tmp_path))[ClipRequest(0, (1,))]
    _check_contract(s, 1, (H, W))
    assert s["meta"]["sequence"] == "0003" and not s["valid"][0, 0, 0, 0]
    assert torch.allclose(s["depth"][0, 0, 1:], torch.tensor(13.0))
    assert float(s["intrinsics"][0, 1, 1]) == 51.0 and float(s["cam_to_world"][0, 2, 3]) == 10.0
    tenth = MVSSynth(str(tmp_path), depth_scale=0.1)[ClipRequest(0, (1,))]
    assert torch.allclose(tenth["depth"][0, 0, 1:], torch.tensor(1.3)) and float(tenth["cam_to_world"][0, 2, 3]) == 1.0
    (base / "poses" / "0001.json").write_text("{}")
    with pytest.raises(ValueError, match="0001.json"):
        MVSSynth(str(tmp_path))


# -- resize and the datamodule ------------------------------------------------------------------


def test_resize_keeps_mask_consistent_and_scales_intrinsics(tmp_path):
    _tartanair(tmp_path)
    s = TartanAir(str(tmp_path), size=(12, 16))[ClipRequest(0, (0,))]
    _check_contract(s, 1, (12, 16))
    assert not s["valid"][0, 0, :2].any() and s["valid"][0, 0, 4:].all()
    assert torch.allclose(s["intrinsics"][0], torch.tensor([[640.0, 0, 640.5], [0, 640, 480.5], [0, 0, 1]]))


def test_two_readers_mixed_in_the_datamodule(tmp_path):
    _vkitti(tmp_path / "vkitti")
    _pointodyssey(tmp_path / "po", frames=4)
    a = VirtualKITTI2(str(tmp_path / "vkitti"), size=(8, 12))
    b = PointOdyssey(str(tmp_path / "po"), size=(8, 12))
    dm = VideoDepthDataModule(
        train=[a, b],
        train_weights=[0.5, 0.5],
        num_frames=[2],
        batch_size=2,
        max_frames_per_batch=None,
        samples_per_epoch=4,
        seed=0,
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 2, 3, 8, 12) and batch["depth"].shape == (2, 2, 1, 8, 12)
    assert batch["valid"].dtype == torch.bool and batch["frame_index"].shape == (2, 2)
    assert {m["dataset"] for m in batch["meta"]} <= {"vkitti2", "pointodyssey"}


# -- the per-frame base and the file readers -----------------------------------------------------


class _NpyFolders(PerFrameDataset):
    """root/<seq>/NNN.png + NNN.npy (metres), one shared K: the smallest reader of the base."""

    def discover(self, names):
        out = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            frames = numbered_frames(folder.glob("*.png"), lambda image, _: image.with_suffix(".npy"))
            set_cameras(frames, intrinsics=pinhole(10.0, 10.0, 3.5, 2.5))
            out.append(FrameSequence(folder.name, frames))
        return out

    def read_depth(self, frame):
        return read_npy(frame.depth, ndim=2)


def _npy_folders(root):
    for seq in ("a", "b"):
        for n in range(10, 16):
            _rgb(root / seq / f"{n:03d}.png", n)
            depth = np.full((H, W), float(n), np.float32)
            depth[1, 2] = np.nan  # the crop's top-left pixel
            np.save(root / seq / f"{n:03d}.npy", depth)


def test_base_selects_crops_resizes_and_caps_in_order(tmp_path):
    _npy_folders(tmp_path)
    ds = _NpyFolders(
        str(tmp_path),
        "folders",
        ["a"],
        start=1,
        stride=2,
        max_frames=2,
        crop=(1, -1, 2, 8),
        size=(8, 12),
        max_depth=12.5,
    )
    assert len(ds) == 1 and ds.sequence_length(0) == 2 and ds.frame_size(0) == (8, 12) and ds.max_depth == 12.5
    s = ds[0]
    _check_contract(s, 2, (8, 12))
    assert s["frame_index"].tolist() == [11, 13] and s["meta"]["sequence"] == "a"
    assert not s["valid"][0, 0, :2, :2].any() and s["valid"][0].sum() == 8 * 12 - 4  # NaN, 2x nearest
    assert torch.all(s["depth"][0][s["valid"][0]] == 11.0) and not s["valid"][1].any()  # 13 m > 12.5 m
    # crop moves the principal point by (2, 1), then the 2x resize scales it: (c + 0.5)·2 − 0.5
    assert torch.allclose(s["intrinsics"][0], torch.tensor([[20.0, 0, 3.5], [0, 20, 3.5], [0, 0, 1]]))
    plain = _NpyFolders(str(tmp_path), "folders", crop=(1, -1, 2, 8), even_crop=True, shift_intrinsics=False)
    assert len(plain) == 2 and plain.frame_size(1) == (4, 6) and plain.max_depth == 80.0
    p = plain.load(1, [5])
    assert p["valid"][0, 0].sum() == 4 * 6 - 1 and float(p["depth"][0, 0, 1, 1]) == 15.0  # no cap: 15 m valid
    assert torch.allclose(p["intrinsics"][0, :2, 2], torch.tensor([3.5, 2.5]))
    with pytest.raises(ValueError, match=r"\['c'\] not found"):
        _NpyFolders(str(tmp_path), "folders", ["c"])
    with pytest.raises(ValueError, match="none left after start=6"):
        _NpyFolders(str(tmp_path), "folders", start=6)
    (tmp_path / "b" / "012.npy").unlink()
    assert len(_NpyFolders(str(tmp_path), "folders", ["a"])) == 1  # only the kept sequences need pairs
    with pytest.raises(FileNotFoundError, match=r"012\.png' has no depth pair .*012\.npy"):
        _NpyFolders(str(tmp_path), "folders")


def test_readers_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.png' does not exist"):
        read_rgb(tmp_path / "nothing.png")
    _rgb(tmp_path / "rgb.png", 0)
    assert image_size(tmp_path / "rgb.png") == (H, W) and read_rgb(tmp_path / "rgb.png").shape == (H, W, 3)
    with pytest.raises(ValueError, match=r"rgb\.png' is not a 16-bit single-channel PNG \(PIL mode 'RGB'\)"):
        read_png16(tmp_path / "rgb.png")
    _png16(tmp_path / "d.png", np.array([[0, 500], [65535, 1]]))
    assert read_png16(tmp_path / "d.png").dtype == np.uint16
    assert np.array_equal(read_scaled_png(tmp_path / "d.png", 1000.0), np.float32([[0, 0.5], [65.535, 0.001]]))
    _png16(tmp_path / "low.png", np.full((2, 2), 200))
    with pytest.raises(ValueError, match=r"low\.png' has maximum value 200 <= 255"):
        read_scaled_png(tmp_path / "low.png", 256.0, check_range=True)
    _h5(tmp_path / "x.h5", "a", np.zeros((2, 3, 4)))
    with pytest.raises(KeyError, match=r"x\.h5' has no key 'b'"):
        read_hdf5(tmp_path / "x.h5", "b")
    with pytest.raises(ValueError, match=r"x\.h5' key 'a' has shape \(2, 3, 4\); expected 2 dimensions"):
        read_hdf5(tmp_path / "x.h5", "a", ndim=2)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"cannot read NPY file .*bad\.npy"):
        read_npy(tmp_path / "bad.npy")
    (tmp_path / "t.txt").write_text("1 2\n3 x\n")
    with pytest.raises(ValueError, match=r"t\.txt"):
        read_table(tmp_path / "t.txt")
    (tmp_path / "t.txt").write_text("1 2 3\n")
    assert read_table(tmp_path / "t.txt").shape == (1, 3)
