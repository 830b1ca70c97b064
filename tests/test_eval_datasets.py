"""Evaluation-dataset readers on tiny fakes written in each dataset's own on-disk layout."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vdf.data.datasets.bonn import BONN_SEQUENCES, BonnRGBD
from vdf.data.datasets.kitti import KITTI_VAL_DRIVES, KITTIDepth
from vdf.data.datasets.nyuv2 import NYUv2
from vdf.data.datasets.scannet import ScanNet
from vdf.data.datasets.sintel import Sintel, read_cam, read_dpt
from vdf.data.types import ClipRequest

RNG = np.random.default_rng(0)


def _rgb(path: Path, h: int, w: int) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return array


def _png16(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint16)).save(path)


def _depth16(path: Path, h: int, w: int, low: int = 300, high: int = 60000) -> np.ndarray:
    raw = RNG.integers(low, high, (h, w)).astype(np.uint16)
    raw[0, 0] = 0  # one invalid pixel
    _png16(path, raw)
    return raw


def _write_dpt(path: Path, depth: np.ndarray, tag: float = 202021.25) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.array([tag], "<f4").tofile(f)
        np.array([depth.shape[1], depth.shape[0]], "<i4").tofile(f)
        depth.astype("<f4").tofile(f)


def _write_cam(path: Path, k: np.ndarray, n: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        np.array([202021.25], "<f4").tofile(f)
        k.astype("<f8").tofile(f)
        n.astype("<f8").tofile(f)


def _check_contract(sample, t, h, w):
    assert sample["video"].shape == (t, 3, h, w) and sample["video"].dtype == torch.float32
    assert sample["depth"].shape == (t, 1, h, w) and sample["depth"].dtype == torch.float32
    assert sample["valid"].shape == (t, 1, h, w) and sample["valid"].dtype == torch.bool
    assert sample["frame_index"].dtype == torch.int64 and sample["frame_index"].shape == (t,)
    assert (sample["depth"][~sample["valid"]] == 0).all()
    assert sample["video"].min() >= 0 and sample["video"].max() <= 1


# ------------------------------------------------------------------------------------- Sintel


def _fake_sintel(root: Path, seqs=("alley_1", "market_2"), n=3, h=12, w=16, cams=True):
    truth = {}
    for seq in seqs:
        for i in range(n):
            rgb = _rgb(root / "training/clean" / seq / f"frame_{i + 1:04d}.png", h, w)
            depth = RNG.uniform(0.5, 100, (h, w)).astype(np.float32)
            depth[0, 0], depth[0, 1], depth[0, 2] = np.inf, np.nan, 0.0
            _write_dpt(root / "training/depth" / seq / f"frame_{i + 1:04d}.dpt", depth)
            k = np.array([[100.0 + i, 0, 8], [0, 101.0, 6], [0, 0, 1]])
            n_ = np.hstack([np.eye(3), np.array([[i], [2.0], [3.0]])])
            if cams:
                _write_cam(root / "training/camdata_left" / seq / f"frame_{i + 1:04d}.cam", k, n_)
            truth[seq, i] = (rgb, depth, k, n_)
    return truth


def test_sintel_reads_dpt_rgb_and_cameras(tmp_path):
    truth = _fake_sintel(tmp_path)
    ds = Sintel(str(tmp_path))
    assert len(ds) == 2 and ds.max_depth == 70 and ds.name == "sintel"
    assert [s.name for s in ds.sequences] == ["alley_1", "market_2"]
    assert ds.sequence_length(0) == 3 and ds.frame_size(0) == (12, 16)
    sample = ds[ClipRequest(1, (0, 2))]
    _check_contract(sample, 2, 12, 16)
    assert sample["frame_index"].tolist() == [0, 2]
    assert sample["meta"]["sequence"] == "market_2" and sample["meta"]["dataset"] == "sintel"
    rgb, depth, k, n_ = truth["market_2", 2]
    assert torch.equal(sample["video"][1], torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    valid = np.isfinite(depth) & (depth > 0)
    assert np.array_equal(sample["valid"][1, 0].numpy(), valid)
    assert not sample["valid"][1, 0, 0, :3].any()
    assert sample["valid"][1, 0][
        torch.from_numpy(np.isfinite(depth) & (depth >= 70))
    ].all()  # far stays valid: the metric caps it
    assert np.array_equal(sample["depth"][1, 0].numpy(), np.where(valid, depth, 0))
    assert np.allclose(sample["intrinsics"][1].numpy(), k)
    expected_pose = np.linalg.inv(np.vstack([n_, [0, 0, 0, 1]]))
    assert np.allclose(sample["cam_to_world"][1].numpy(), expected_pose)
    assert np.allclose(sample["cam_to_world"][1, :3, 3].numpy(), [-2, -2, -3])


def test_sintel_selection_and_no_cameras(tmp_path):
    _fake_sintel(tmp_path, seqs=("a",), n=5, cams=False)
    ds = Sintel(str(tmp_path), sequences=["a"], start=1, stride=2, max_frames=2)
    sample = ds[0]
    assert sample["frame_index"].tolist() == [1, 3]
    assert "intrinsics" not in sample and "cam_to_world" not in sample
    assert Sintel(str(tmp_path)).sequence_length(0) == 5  # default max_frames 50 keeps short sequences whole


def test_sintel_malformed_files(tmp_path):
    path = tmp_path / "x.dpt"
    _write_dpt(path, np.ones((3, 4)), tag=1.0)
    with pytest.raises(ValueError, match="bad tag.*|x.dpt"):
        read_dpt(path)
    _write_dpt(path, np.ones((3, 4)))
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"x\.dpt.*truncated"):
        read_dpt(path)
    with open(path, "wb") as f:
        np.array([202021.25], "<f4").tofile(f)
        np.array([0, 5], "<i4").tofile(f)
    with pytest.raises(ValueError, match=r"x\.dpt.*wrong size"):
        read_dpt(path)
    _write_dpt(path, np.full((3, 4), 2.5))
    assert read_dpt(path).shape == (3, 4) and (read_dpt(path) == 2.5).all()
    cam = tmp_path / "c.cam"
    _write_cam(cam, np.eye(3), np.zeros((3, 4)))
    cam.write_bytes(cam.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"c\.cam.*truncated"):
        read_cam(cam)
    # a missing pair
    _fake_sintel(tmp_path / "ds", seqs=("a",), n=2)
    (tmp_path / "ds/training/clean/a/frame_0002.png").unlink()
    with pytest.raises(ValueError, match="missing pair"):
        Sintel(str(tmp_path / "ds"))


# -------------------------------------------------------------------------------------- KITTI


def _fake_kitti(root: Path, drive: str, gt_frames, h=7, w=9, raw_count=None):
    raw_count = raw_count or max(gt_frames) + 6
    rgb_dir = root / "raw_data" / drive[:10] / drive / "image_02" / "data"
    rgbs = {i: _rgb(rgb_dir / f"{i:010d}.png", h, w) for i in range(raw_count)}
    gt_dir = root / "data_depth_annotated/val" / drive / "proj_depth/groundtruth/image_02"
    gts = {i: _depth16(gt_dir / f"{i:010d}.png", h, w) for i in gt_frames}
    return rgbs, gts


def test_kitti_gt_list_selects_frames_and_even_crop(tmp_path):
    drive = KITTI_VAL_DRIVES[0]
    rgbs, gts = _fake_kitti(tmp_path, drive, range(5, 10))
    with pytest.raises(FileNotFoundError, match="groundtruth"):  # defaults want all 13 val drives
        KITTIDepth(str(tmp_path))
    ds = KITTIDepth(str(tmp_path), sequences=[drive], max_frames=3)
    assert len(KITTI_VAL_DRIVES) == 13 and ds.max_depth == 80
    assert ds.sequence_length(0) == 3 and ds.frame_size(0) == (6, 8)
    sample = ds[0]
    _check_contract(sample, 3, 6, 8)
    assert sample["frame_index"].tolist() == [5, 6, 7]
    raw = gts[6][:6, :8]
    assert np.array_equal(sample["depth"][1, 0].numpy(), (raw / 256.0).astype(np.float32))
    assert np.array_equal(sample["valid"][1, 0].numpy(), raw > 0) and not sample["valid"][1, 0, 0, 0]
    assert torch.equal(sample["video"][1], torch.from_numpy(rgbs[6][:6, :8]).permute(2, 0, 1).float() / 255)
    assert KITTIDepth(str(tmp_path), sequences=[drive], even_crop=False).frame_size(0) == (7, 9)
    assert KITTIDepth(str(tmp_path), sequences=[drive], stride=2).load(0, [1, 2])["frame_index"].tolist() == [7, 9]


def test_kitti_malformed_files(tmp_path):
    drive = KITTI_VAL_DRIVES[0]
    _, _gts = _fake_kitti(tmp_path, drive, [5, 6])
    gt_dir = tmp_path / "data_depth_annotated/val" / drive / "proj_depth/groundtruth/image_02"
    Image.fromarray(np.full((7, 9), 100, np.uint8)).save(gt_dir / "0000000005.png")  # 8-bit
    _png16(gt_dir / "0000000006.png", np.full((7, 9), 200))  # 16-bit but max <= 255
    ds = KITTIDepth(str(tmp_path), sequences=[drive])
    with pytest.raises(ValueError, match=r"0000000005\.png.*not a 16-bit"):
        ds.load(0, [0])
    with pytest.raises(ValueError, match=r"0000000006\.png.*<= 255"):
        ds.load(0, [1])
    (gt_dir / "0000000007.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)  # truncated
    (tmp_path / "raw_data" / drive[:10] / drive / "image_02/data/0000000007.png").unlink(missing_ok=True)
    _rgb(tmp_path / "raw_data" / drive[:10] / drive / "image_02/data/0000000007.png", 7, 9)
    with pytest.raises(ValueError, match=r"0000000007\.png"):
        KITTIDepth(str(tmp_path), sequences=[drive], check_range=False).load(0, [2])
    (tmp_path / "raw_data" / drive[:10] / drive / "image_02/data/0000000007.png").unlink()
    with pytest.raises(FileNotFoundError, match="no RGB pair"):
        KITTIDepth(str(tmp_path), sequences=[drive])


# --------------------------------------------------------------------------------------- Bonn


def _fake_bonn(root: Path, seq: str, n: int, h=5, w=7):
    rgbs = [_rgb(root / seq / "rgb" / f"{1548266469.0 + i * 0.033:.6f}.png", h, w) for i in range(n)]
    depths = [_depth16(root / seq / "depth" / f"{1548266469.01 + i * 0.033:.6f}.png", h, w) for i in range(n)]
    return rgbs, depths


def test_bonn_default_selection_and_pairing_by_position(tmp_path):
    for seq in BONN_SEQUENCES:
        _fake_bonn(tmp_path, seq, 33)
    _fake_bonn(tmp_path, "rgbd_bonn_other", 2)  # not one of the five published sequences
    ds = BonnRGBD(str(tmp_path))
    assert [s.name for s in ds.sequences] == BONN_SEQUENCES and ds.max_depth == 10
    assert ds.sequence_length(0) == 3 and ds.frame_size(0) == (4, 6)  # frames [30:140]; even crop of 5x7
    sample = ds[0]
    _check_contract(sample, 3, 4, 6)
    assert sample["frame_index"].tolist() == [30, 31, 32]


def test_bonn_values_and_errors(tmp_path):
    rgbs, depths = _fake_bonn(tmp_path, "s", 4, h=4, w=6)
    sample = BonnRGBD(str(tmp_path), sequences=["s"], start=1, stride=2)[0]
    assert sample["frame_index"].tolist() == [1, 3]
    assert np.array_equal(sample["depth"][1, 0].numpy(), (depths[3] / 5000.0).astype(np.float32))
    assert np.array_equal(sample["valid"][1, 0].numpy(), depths[3] > 0)
    assert torch.equal(sample["video"][0], torch.from_numpy(rgbs[1]).permute(2, 0, 1).float() / 255)
    next((tmp_path / "s/rgb").glob("*.png")).unlink()
    with pytest.raises(ValueError, match="missing pair"):
        BonnRGBD(str(tmp_path), sequences=["s"], start=0)


# ------------------------------------------------------------------------------------ ScanNet


def _fake_scannet(root: Path, scene: str, n: int, h=20, w=26, poses=True):
    folder = root / "scans_test" / scene
    rgbs, depths, pose_list = [], [], []
    for i in range(n):
        rgbs.append(_rgb(folder / "color" / f"{i}.jpg", h, w))
        depths.append(_depth16(folder / "depth" / f"{i}.png", h, w, low=1, high=12000))
        pose = np.eye(4)
        pose[:3, 3] = [i, 0.5, -1]
        pose_list.append(pose)
        if poses:
            (folder / "pose").mkdir(exist_ok=True)
            np.savetxt(folder / "pose" / f"{i}.txt", pose)
    (folder / "intrinsic").mkdir(exist_ok=True)
    k = np.array([[577.6, 0, 319.5, 0], [0, 578.7, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(folder / "intrinsic" / "intrinsic_depth.txt", k)
    return rgbs, depths, pose_list, k


def test_scannet_selection_crop_intrinsics_and_poses(tmp_path):
    for s in range(3):
        _fake_scannet(tmp_path, f"scene07{s:02d}_00", 1)
    _, depths, poses, k = _fake_scannet(tmp_path, "scene0700_01", 11)
    ds = ScanNet(str(tmp_path), num_scenes=2)
    assert [s.name for s in ds.sequences] == ["scene0700_00", "scene0700_01"] and ds.max_depth == 10
    assert len(ScanNet(str(tmp_path))) == 4  # default: the first 100 sorted scenes
    assert ds.sequence_length(1) == 4 and ds.frame_size(1) == (4, 4)  # [:270:3] of 11 -> 0,3,6,9; 20x26 cropped
    sample = ds[1]
    _check_contract(sample, 4, 4, 4)
    assert sample["frame_index"].tolist() == [0, 3, 6, 9]
    raw = depths[6][8:-8, 11:-11]
    assert np.array_equal(sample["depth"][2, 0].numpy(), (raw / 1000.0).astype(np.float32))
    assert np.array_equal(sample["valid"][2, 0].numpy(), raw > 0)
    assert np.allclose(sample["intrinsics"][0].numpy(), [[577.6, 0, 308.5], [0, 578.7, 231.5], [0, 0, 1]])
    assert np.allclose(sample["cam_to_world"][2].numpy(), poses[6])
    unshifted = ScanNet(str(tmp_path), sequences=["scene0700_01"], shift_intrinsics=False).load(0, [0])
    assert np.allclose(unshifted["intrinsics"][0].numpy(), k[:3, :3])  # the published TAE code's K
    full = ScanNet(str(tmp_path), sequences=["scene0700_01"], crop=None, stride=1, max_frames=None)
    assert full.sequence_length(0) == 11 and full.frame_size(0) == (20, 26)


def test_scannet_errors(tmp_path):
    _fake_scannet(tmp_path, "scene0707_00", 2, poses=False)
    sample = ScanNet(str(tmp_path), stride=1)[0]
    assert "cam_to_world" not in sample and "intrinsics" in sample
    (tmp_path / "scans_test/scene0707_00/depth/1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1\.jpg.*no depth pair"):
        ScanNet(str(tmp_path), stride=1)
    with pytest.raises(FileNotFoundError, match="scans_test"):
        ScanNet(str(tmp_path / "nowhere"))


# -------------------------------------------------------------------------------------- NYUv2


def _fake_nyu(root: Path, names, h=480, w=640):
    lines, truth = [], {}
    for scene, i in names:
        rel = Path("test") / scene
        rgb = _rgb(root / rel / f"rgb_{i:04d}.png", h, w)
        raw = _depth16(root / rel / f"depth_{i:04d}.png", h, w, low=0, high=9000)
        filled = _depth16(root / rel / f"filled_{i:04d}.png", h, w, low=500, high=9000)
        lines.append(f"{rel}/rgb_{i:04d}.png {rel}/depth_{i:04d}.png {rel}/filled_{i:04d}.png")
        truth[scene, i] = (rgb, raw, filled)
    (root / "filename_list_test.txt").write_text("\n".join(lines) + "\n")
    return truth


def test_nyuv2_filled_column_and_eigen_crop_at_real_size(tmp_path):
    truth = _fake_nyu(tmp_path, [("bathroom", 45), ("kitchen", 7)])
    ds = NYUv2(str(tmp_path))
    assert len(ds) == 2 and ds.max_depth == 10 and ds.sequence_length(1) == 1
    assert ds.frame_size(0) == (426, 560)
    sample = ds[1]
    _check_contract(sample, 1, 426, 560)
    rgb, _raw, filled = truth["kitchen", 7]
    assert sample["frame_index"].tolist() == [0] and sample["meta"]["sequence"] == "test/kitchen/rgb_0007"
    crop = filled[45:471, 41:601]
    assert np.array_equal(sample["depth"][0, 0].numpy(), (crop / 1000.0).astype(np.float32))
    assert torch.equal(sample["video"][0], torch.from_numpy(rgb[45:471, 41:601]).permute(2, 0, 1).float() / 255)
    raw_ds = NYUv2(str(tmp_path), depth_column=1, max_images=1)
    assert len(raw_ds) == 1
    assert np.array_equal(raw_ds[0]["valid"][0, 0].numpy(), truth["bathroom", 45][1][45:471, 41:601] > 0)


def test_nyuv2_errors(tmp_path):
    _fake_nyu(tmp_path, [("a", 1)], h=6, w=8)
    assert NYUv2(str(tmp_path), crop=None).frame_size(0) == (6, 8)
    (tmp_path / "filename_list_test.txt").write_text("test/a/rgb_0001.png test/a/depth_0001.png\n")
    with pytest.raises(ValueError, match="filename_list_test.txt.*line 1"):
        NYUv2(str(tmp_path))
    (tmp_path / "filename_list_test.txt").write_text("test/a/rgb_0001.png test/a/depth_0001.png test/a/x.png\n")
    with pytest.raises(FileNotFoundError, match=r"x\.png"):
        NYUv2(str(tmp_path))
    _rgb(tmp_path / "test/a/x.png", 6, 8)  # an RGB image where 16-bit depth is expected
    with pytest.raises(ValueError, match=r"x\.png.*not a 16-bit"):
        NYUv2(str(tmp_path), crop=None)[0]
    _png16(tmp_path / "test/a/x.png", np.ones((5, 8)))
    with pytest.raises(ValueError, match=r"rgb_0001\.png.*6x8.*x\.png.*5x8"):
        NYUv2(str(tmp_path), crop=None)[0]
