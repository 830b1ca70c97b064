"""ChronoDepth's and FlashDepth's evaluation readers on tiny fakes in their exact layouts, and one
`vdf test` over all thirteen sets of ``configs/data/paper_benchmarks.yaml`` writing one table."""

import json
import os
from pathlib import Path

import numpy as np
import paper_fakes as fakes
import pytest
import torch
import yaml
from PIL import Image

from vdf.data.datasets.eth3d import ETH3D
from vdf.data.datasets.frames import scale_intrinsics
from vdf.data.datasets.kitti360 import KITTI360, read_velodyne
from vdf.data.datasets.scannetpp import ScanNetPP
from vdf.data.datasets.sintel import Sintel
from vdf.data.datasets.unreal4k import Unreal4K
from vdf.data.datasets.urbansyn import UrbanSyn
from vdf.data.datasets.waymo import WAYMO_TEST_SEGMENTS, Waymo
from vdf.data.types import ClipRequest

ROOT = Path(__file__).resolve().parents[1]


def _contract(sample, t, h, w):
    assert sample["video"].shape == (t, 3, h, w) and sample["video"].dtype == torch.float32
    assert sample["depth"].shape == (t, 1, h, w) and sample["valid"].shape == (t, 1, h, w)
    assert (sample["depth"][~sample["valid"]] == 0).all()
    assert np.array_equal(sample["valid"].numpy(), sample["depth"].numpy() > 0)


# -- ChronoDepth -------------------------------------------------------------------------------


def test_kitti360_projects_lidar_selects_frames_300_to_500_and_reads_poses(tmp_path):
    truth, poses = fakes.kitti360(tmp_path)
    fakes.kitti360(
        tmp_path, drive="2013_05_28_drive_0002_sync", frames=(300,), posed=()
    )  # no poses: not a default drive
    (tmp_path / "data_poses/2013_05_28_drive_0002_sync/cam0_to_world.txt").unlink()
    ds = KITTI360(str(tmp_path))
    assert [s.name for s in ds.sequences] == [fakes.KITTI360_DRIVE] and ds.eval_space == "depth"
    sample = ds[0]
    _contract(sample, 2, 12, 16)
    assert sample["frame_index"].tolist() == [300, 301]
    for t, n in enumerate((300, 301)):
        np.testing.assert_allclose(sample["depth"][t, 0].numpy(), truth[n], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sample["intrinsics"][0].numpy(), fakes.KITTI360_P[:, :3])
    np.testing.assert_allclose(sample["cam_to_world"][1].numpy(), poses[301])
    # Explicit names and a frame without a pose: no cam_to_world for a clip holding it.
    ds = KITTI360(str(tmp_path), sequences=[fakes.KITTI360_DRIVE], first_frame=0, last_frame=None)
    assert ds[0]["frame_index"].tolist() == [299, 300, 301, 500] and "cam_to_world" not in ds[0]
    assert "cam_to_world" in ds[ClipRequest(0, (1, 2))]


def test_kitti360_malformed_files_are_named(tmp_path):
    fakes.kitti360(tmp_path)
    scan = tmp_path / "data_3d_raw" / fakes.KITTI360_DRIVE / "velodyne_points/data/0000000301.bin"
    scan.write_bytes(scan.read_bytes()[:-4])
    with pytest.raises(ValueError, match=r"0000000301\.bin.*multiple of 4"):
        read_velodyne(scan)
    ds = KITTI360(str(tmp_path))
    with pytest.raises(ValueError, match=r"0000000301\.bin"):
        ds[0]
    scan.unlink()
    with pytest.raises(FileNotFoundError, match=r"0000000301\.bin"):
        KITTI360(str(tmp_path))
    (tmp_path / "calibration/perspective.txt").write_text("P_rect_00: 1 2 3\n")
    with pytest.raises(ValueError, match=r"perspective\.txt.*P_rect_00"):
        KITTI360(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data_2d_raw"):
        KITTI360(str(tmp_path / "nowhere"))


def test_scannetpp_split_first_frames_depth_grid_and_cameras(tmp_path):
    truth = fakes.scannetpp(tmp_path, n=4)
    ds = ScanNetPP(str(tmp_path), max_frames=3)
    assert [s.name for s in ds.sequences] == ["0a5c013435", "1ada7a0617"] and ds.eval_space == "depth"
    assert ds.frame_size(1) == (12, 16) and ds.sequence_length(1) == 3
    sample = ds[1]
    _contract(sample, 3, 12, 16)
    assert sample["frame_index"].tolist() == [0, 10, 20]
    mm, k, pose = truth["1ada7a0617", 2]
    expected = np.kron(mm / 1000.0, np.ones((2, 2)))  # each GT pixel an equal 2x2 block
    np.testing.assert_allclose(sample["depth"][2, 0].numpy(), expected, rtol=1e-6)
    assert not sample["valid"][2, 0, :2, :2].any()
    np.testing.assert_allclose(sample["intrinsics"][2].numpy(), scale_intrinsics(k, (24, 32), (12, 16)), rtol=1e-6)
    np.testing.assert_allclose(sample["cam_to_world"][2].numpy(), pose, atol=1e-7)
    gl = ScanNetPP(str(tmp_path), pose_convention="opengl", depth_upsample=1)[ClipRequest(0, (1,))]
    np.testing.assert_allclose(gl["cam_to_world"][0].numpy(), truth["0a5c013435", 1][2] @ np.diag([1, -1, -1, 1]))
    assert gl["depth"].shape[-2:] == (6, 8)
    meta = tmp_path / "data/0a5c013435/iphone/pose_intrinsic_imu.json"
    entries = json.loads(meta.read_text())
    del entries["frame_000010"]["aligned_pose"]
    meta.write_text(json.dumps(entries))
    with pytest.raises(ValueError, match=r"pose_intrinsic_imu\.json.*frame_000010.*aligned_pose"):
        ScanNetPP(str(tmp_path))
    meta.write_text("{not json")
    with pytest.raises(ValueError, match=r"pose_intrinsic_imu\.json.*not valid JSON"):
        ScanNetPP(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"splits/nvs_sem_val\.txt"):
        ScanNetPP(str(tmp_path / "nowhere"))


# -- FlashDepth --------------------------------------------------------------------------------


def test_unreal4k_depth_from_disparity_and_baseline(tmp_path):
    truth = fakes.unreal4k(tmp_path)
    ds = Unreal4K(str(tmp_path))
    assert ds.inference_size == (1148, 2044) and ds.max_depth == 70 and ds.boundary_f1
    sample = ds[0]
    _contract(sample, 3, 8, 12)
    for i in range(3):
        np.testing.assert_allclose(sample["depth"][i, 0].numpy(), truth[i], rtol=1e-5)
    assert not sample["valid"][:, 0, 0, :3].any()  # zero, infinite and negative disparity
    path = tmp_path / "unrealstereo4k/00000/Extrinsics1/00001.txt"
    path.write_text("1 2 3\n")
    with pytest.raises(ValueError, match=r"Extrinsics1/00001\.txt.*2 lines"):
        ds[0]


def test_eth3d_raw_float_depth(tmp_path):
    truth = fakes.eth3d(tmp_path)
    sample = ETH3D(str(tmp_path))[0]
    _contract(sample, 2, 8, 12)
    assert sample["frame_index"].tolist() == [3, 12]
    np.testing.assert_array_equal(sample["depth"][1, 0].numpy(), truth[12])
    assert not sample["valid"][1, 0, 1, 1]
    path = tmp_path / "eth3d/courtyard/ground_truth_depth/dslr_images/DSC_0012.JPG"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ValueError, match=r"DSC_0012\.JPG.*94 float32 values.*8x12"):
        ETH3D(str(tmp_path))[0]


def test_waymo_test_segments_and_point_rasterisation(tmp_path):
    truth = fakes.waymo(tmp_path)
    assert len(WAYMO_TEST_SEGMENTS) == 30 and len(set(WAYMO_TEST_SEGMENTS)) == 30
    with pytest.raises(FileNotFoundError, match="segment-10837554759555844344"):
        Waymo(str(tmp_path))  # the default is the 30 test segments; the fake has one
    ds = Waymo(str(tmp_path), sequences=[WAYMO_TEST_SEGMENTS[0]])
    sample = ds[0]
    _contract(sample, 3, 8, 12)
    np.testing.assert_array_equal(sample["depth"][2, 0].numpy(), truth[2])
    np.save(tmp_path / "waymo/val" / WAYMO_TEST_SEGMENTS[0] / "FRONT/depth/1.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"depth/1\.npy.*\(N,3\)"):
        ds[0]


def test_urbansyn_scale_and_sky(tmp_path):
    truth = fakes.urbansyn(tmp_path)
    fakes.urbansyn(tmp_path, scene="10", n=1)
    ds = UrbanSyn(str(tmp_path), max_frames=2)
    assert [s.name for s in ds.sequences] == ["3", "10"]  # integer order
    sample = ds[0]
    _contract(sample, 2, 8, 12)
    assert sample["frame_index"].tolist() == [1, 2]
    np.testing.assert_allclose(sample["depth"][1, 0].numpy(), truth[2], rtol=1e-6)
    assert not sample["valid"][:, 0, 0].any() and sample["valid"][:, 0, 1].all()
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp_path / "urbansyn/3/ss/ss_0002.png")
    with pytest.raises(ValueError, match=r"ss_0002\.png.*single-channel"):
        ds[0]


def test_sintel_in_flashdepths_layout(tmp_path):
    truth = fakes.sintel_flashdepth(tmp_path)
    ds = Sintel(
        str(tmp_path),
        image_dir="sintel/images/training/clean",
        depth_dir="sintel/depth/training/depth",
        max_frames=None,
        inference_size=(434, 1022),
        boundary_f1=True,
    )
    assert ds.inference_size == (434, 1022) and ds.boundary_f1 and ds.eval_space is None
    np.testing.assert_array_equal(ds[0]["depth"][2, 0].numpy(), truth[2])


# -- one table for all thirteen ----------------------------------------------------------------


def _depthcrafter_fakes(root: Path) -> None:
    """DepthCrafter's five sets, one short sequence each, in their layouts."""
    h, w = 12, 16
    for i in range(2):  # Sintel, with cameras
        fakes.rgb(root / "sintel/training/clean/alley_1" / f"frame_{i + 1:04d}.png", h, w)
        depth = fakes.RNG.uniform(1, 60, (h, w)).astype("<f4")
        path = root / "sintel/training/depth/alley_1" / f"frame_{i + 1:04d}.dpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.array([202021.25], "<f4").tofile(f)
            np.array([w, h], "<i4").tofile(f)
            depth.tofile(f)
        cam = root / "sintel/training/camdata_left/alley_1" / f"frame_{i + 1:04d}.cam"
        cam.parent.mkdir(parents=True, exist_ok=True)
        with open(cam, "wb") as f:
            np.array([202021.25], "<f4").tofile(f)
            np.array([[20.0, 0, 7.5], [0, 20, 5.5], [0, 0, 1]], "<f8").tofile(f)
            np.c_[np.eye(3), [0.1 * i, 0, 0]].astype("<f8").tofile(f)
    drive = "2011_09_26_drive_0002_sync"
    for i in (5, 6):
        fakes.rgb(root / "kitti/raw_data" / drive[:10] / drive / "image_02/data" / f"{i:010d}.png", h, w)
        fakes.png16(
            root / "kitti/data_depth_annotated/val" / drive / "proj_depth/groundtruth/image_02" / f"{i:010d}.png",
            fakes.RNG.integers(300, 20000, (h, w)),
        )
    rgb, depth = root / "bonn/rgb.png", root / "bonn/depth.png"
    fakes.rgb(rgb, h, w)
    fakes.png16(depth, fakes.RNG.integers(2000, 40000, (h, w)))
    for sub in ("rgb", "depth"):
        (root / "bonn/rgbd_bonn_balloon2" / sub).mkdir(parents=True)
    for i in range(32):  # the protocol keeps frames 30..: links to one pair
        os.link(rgb, root / "bonn/rgbd_bonn_balloon2/rgb" / f"{1548266469.0 + i * 0.033:.6f}.png")
        os.link(depth, root / "bonn/rgbd_bonn_balloon2/depth" / f"{1548266469.01 + i * 0.033:.6f}.png")
    for i in (0, 3):  # ScanNet: frames [:270:3]
        fakes.rgb(root / "scannet/scans_test/scene0707_00/color" / f"{i}.jpg", 20, 28, fmt="JPEG")
        fakes.png16(
            root / "scannet/scans_test/scene0707_00/depth" / f"{i}.png", fakes.RNG.integers(500, 9000, (20, 28))
        )
    rel = Path("test/bathroom")
    fakes.rgb(root / "nyuv2" / rel / "rgb_0001.png", h, w)
    for kind in ("depth", "filled"):
        fakes.png16(root / "nyuv2" / rel / f"{kind}_0001.png", fakes.RNG.integers(500, 9000, (h, w)))
    (root / "nyuv2/filename_list_test.txt").write_text(
        f"{rel}/rgb_0001.png {rel}/depth_0001.png {rel}/filled_0001.png\n"
    )


def test_vdf_test_writes_one_table_for_all_thirteen_sets(tmp_path, monkeypatch):
    from recipes import tiny_files

    from vdf.cli import main

    data = tmp_path / "data"
    _depthcrafter_fakes(data)
    fakes.kitti360(data / "kitti360", h=12, w=16)
    fakes.scannetpp(data / "scannetpp", scenes=("0a5c013435",), n=2)
    fd = data / "flashdepth"
    fakes.unreal4k(fd, n=2)
    fakes.eth3d(fd)
    fakes.waymo(fd, n=2)
    fakes.urbansyn(fd, n=2)
    fakes.sintel_flashdepth(fd, n=2)
    config = yaml.safe_load((ROOT / "configs/data/paper_benchmarks.yaml").read_text())
    # The shipped config, with only what a one-sequence fake needs changed: single named sequences
    # where the default is a fixed list, and a crop that fits 12x16 NYUv2 frames.
    small = {
        "KITTIDepth": {"sequences": ["2011_09_26_drive_0002_sync"]},
        "BonnRGBD": {"sequences": ["rgbd_bonn_balloon2"]},
        "Waymo": {"sequences": [WAYMO_TEST_SEGMENTS[0]]},
        "NYUv2": {"crop": [1, -1, 1, -1]},
    }
    for entry in config["data"]["test"]:
        entry["init_args"].update(small.get(entry["class_path"].rsplit(".", 1)[1], {}))
    path = tmp_path / "thirteen.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)
    args = ["test", *[x for c in tiny_files("dav2") for x in ("--config", c)], "--config", str(path)]
    cli = main(
        [*args, "--model.init_args.tae", "true", "--model.init_args.mfc", "true", "--data.eval_num_frames", "2"]
        + ["--trainer.default_root_dir", str(tmp_path / "runs")]
    )
    names = cli.datamodule.dataset_names("test")
    assert len(names) == 13 and len(set(names)) == 13
    spaces = {n: cli.model.eval_metrics[n].align_space for n in names}
    assert {n for n, s in spaces.items() if s == "depth"} == {"kitti360", "scannetpp", "sintel_chronodepth"}
    results = json.loads((Path(cli.trainer.log_dir) / "results.json").read_text())
    rows = {r["dataset"]: r for r in results["rows"]}
    assert list(rows) == names
    assert all(np.isfinite(r["abs_rel"]) and np.isfinite(r["delta1"]) for r in rows.values())
    with_mfc = {n for n, r in rows.items() if "mfc" in r}
    assert {"kitti360", "scannetpp", "sintel", "sintel_chronodepth"} <= with_mfc  # the sets with poses
    assert not with_mfc & {"unreal4k", "eth3d", "waymo", "urbansyn", "nyuv2"}
    assert {n for n, r in rows.items() if "boundary_f1" in r} == {
        "unreal4k",
        "eth3d",
        "waymo",
        "urbansyn",
        "sintel_flashdepth",
    }
    table = (Path(cli.trainer.log_dir) / "results.md").read_text()
    assert "MFC ↓" in table and all(f"| {n} |" in table for n in names)
    assert len((Path(cli.trainer.log_dir) / "results.csv").read_text().splitlines()) == 14
