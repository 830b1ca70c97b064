"""`vdf predict` in metres: each video aligned to sparse known depth ("LiDAR") with the metrics' own
least-squares fit, written as depth or disparity, recorded in the manifest, and turned into point
clouds placed by the episode's poses."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from recipes import tiny_args

from vdf.cli import main
from vdf.data.datasets.synthetic import SYNTHETIC_MAX_DEPTH, SyntheticWorld
from vdf.data.demo import write_sparse_depth
from vdf.io import write_episodes
from vdf.io.points import read_ply
from vdf.metrics import evaluate_sequence

NAME = "episode_00000"
T, H, W = 6, 32, 48


def read_exr(folder) -> np.ndarray:
    frames = []
    for path in sorted(folder.iterdir()):
        with av.open(str(path)) as container:
            frames.append(next(container.decode(video=0)).to_ndarray().astype(np.float32))
    return np.stack(frames)


def read_png16(folder) -> np.ndarray:
    frames = []
    for path in sorted(folder.iterdir()):
        with av.open(str(path)) as container:
            frames.append(next(container.decode(video=0)).to_ndarray())
    return np.stack(frames)


def predict(inp, out, *extra) -> dict:
    main(
        ["predict", *tiny_args("dav2"), "--input", str(inp), "--output", str(out), "--writer.exr", "true"]
        + ["--writer.depth_video", "false", "--writer.progress", "false", *extra]
    )
    return json.loads((out / f"{NAME}.json").read_text())


@pytest.fixture(scope="module")
def episode(tmp_path_factory):
    """One synthetic-world episode (mp4 + exact GT), 1% of its pixels as 16-bit PNG "LiDAR" (mm),
    and the raw prediction of the tiny model (float32, from the EXR frames)."""
    root = tmp_path_factory.mktemp("metric")
    write_episodes(SyntheticWorld(num_episodes=1, num_frames=T, height=H, width=W, seed=5), root / "videos")
    with np.load(root / "videos" / f"{NAME}_gt.npz") as gt:
        depth = gt["depth"]
    write_sparse_depth(root / "videos" / f"{NAME}_gt.npz", root / "lidar" / NAME, 0.01)
    lidar_mm = read_png16(root / "lidar" / NAME)
    raw_out = root / "raw"
    manifest = predict(root / "videos", raw_out)
    assert manifest["space"] == "disparity" and manifest["units"] is None
    raw = read_exr(raw_out / f"{NAME}_exr")
    lidar = lidar_mm.astype(np.float32) * 0.001  # metres, as the reader makes them
    return root, depth, lidar, raw


def test_aligned_prediction_in_metres_scores_as_the_metrics_align_it(episode, tmp_path):
    root, depth, lidar, raw = episode
    assert 0.005 < (lidar > 0).mean() < 0.02
    manifest = predict(
        root / "videos",
        tmp_path / "out",
        "--writer.known_depth",
        str(root / "lidar" / "{name}"),
        "--writer.max_depth",
        str(SYNTHETIC_MAX_DEPTH),
    )
    metres = read_exr(tmp_path / "out" / f"{NAME}_exr")
    assert manifest["space"] == "depth" and manifest["units"] == "m"
    alignment = manifest["alignment"]
    assert alignment["points"] == int((lidar > 0).sum()) and alignment["fit_space"] == "disparity"

    # The metrics, aligning the raw prediction on the LiDAR pixels and scoring there ...
    on_lidar = evaluate_sequence(raw, lidar, SYNTHETIC_MAX_DEPTH, valid=lidar > 0)
    assert on_lidar["scale"] == pytest.approx(alignment["scale"], rel=1e-9)
    assert on_lidar["shift"] == pytest.approx(alignment["shift"], rel=1e-9, abs=1e-12)
    # ... give the AbsRel of the written metres at those pixels, with no further alignment.
    mask = lidar > 0
    per_frame = [np.mean(np.abs(metres[t][mask[t]] - lidar[t][mask[t]]) / lidar[t][mask[t]]) for t in range(T)]
    assert float(np.mean(per_frame)) == pytest.approx(on_lidar["abs_rel"], rel=1e-5)
    # Against the dense ground truth, 1% of the pixels align nearly as well as all of them.
    dense = evaluate_sequence(raw, depth, SYNTHETIC_MAX_DEPTH)
    sparse = np.mean([np.mean(np.abs(metres[t] - depth[t]) / depth[t]) for t in range(T)])
    assert sparse < dense["abs_rel"] * 1.25 + 0.01, (sparse, dense["abs_rel"])


def test_given_scale_disparity_space_and_world_point_clouds(episode, tmp_path):
    root, _, _, raw = episode
    scale, shift = 0.5, 0.1
    gt = str(root / "videos" / "{name}_gt.npz")
    extra = ["--writer.align_scale", str(scale), "--writer.align_shift", str(shift), "--writer.space", "disparity"]
    extra += ["--writer.point_clouds", "true", "--writer.camera", gt]
    manifest = predict(root / "videos", tmp_path / "out", *extra)
    out = tmp_path / "out"
    assert manifest["space"] == "disparity" and manifest["units"] == "1/m"
    assert manifest["alignment"]["method"] == "given scale and shift"
    written = read_exr(out / f"{NAME}_exr")
    np.testing.assert_allclose(written, np.maximum(scale * np.maximum(raw, 1e-3) + shift, 1e-3), rtol=1e-5)
    with np.load(out / f"{NAME}_points.npz") as points:
        assert points["xyz"].shape == (T * H * W, 3) and points["rgb"].dtype == np.uint8
        offsets = points["offsets"]
        xyz0 = points["xyz"][offsets[0] : offsets[1]]
    ply_xyz, ply_rgb = read_ply(out / f"{NAME}_ply" / "000000.ply")
    assert np.array_equal(ply_xyz, xyz0) and ply_rgb.shape == (H * W, 3)
    # World coordinates: frame 0's points are its depth back-projected and moved by its pose.
    with np.load(root / "videos" / f"{NAME}_gt.npz") as f:
        K, pose = f["intrinsics"][0].astype(np.float64), f["cam_to_world"][0].astype(np.float64)
    z = 1.0 / written[0].astype(np.float64)
    v, u = np.mgrid[0:H, 0:W]
    camera = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
    np.testing.assert_allclose(xyz0, camera @ pose[:3, :3].T + pose[:3, 3], rtol=1e-4, atol=1e-4)


def test_metric_options_are_checked_before_any_work():
    from vdf.callbacks.prediction_writer import DepthPredictionWriter

    with pytest.raises(ValueError, match="needs an alignment"):
        DepthPredictionWriter(space="depth")
    with pytest.raises(ValueError, match="point_clouds need metric depth"):
        DepthPredictionWriter(point_clouds=True, fov=60)
    with pytest.raises(ValueError, match="need intrinsics"):
        DepthPredictionWriter(point_clouds=True, align_scale=1.0, align_shift=0.0)
    with pytest.raises(ValueError, match="both align_scale and align_shift"):
        DepthPredictionWriter(align_scale=1.0)


def test_known_depth_sources_and_camera_files(tmp_path):
    from vdf.io.known_depth import CameraSource, KnownDepth

    depth = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 10
    folder = tmp_path / "maps"
    folder.mkdir()
    np.save(folder / "frame_7.npy", depth[0])
    known = KnownDepth(folder)
    assert np.array_equal(known(7), np.where(depth[0] > 0, depth[0], 0)) and known(0) is None
    valid = np.ones_like(depth, dtype=bool)
    valid[1, 0, 0] = False
    np.savez(tmp_path / "k.npz", depth=depth[:, None], frame_index=np.array([4, 9]), valid=valid)
    known = KnownDepth(tmp_path / "k.npz")
    assert known(9)[0, 0] == 0 and known(9)[0, 1] == depth[1, 0, 1] and known(5) is None
    poses = np.stack([np.eye(4), 2 * np.eye(4)])
    np.savez(tmp_path / "cam.npz", cam_to_world=poses, intrinsics=np.eye(3), frame_index=np.array([4, 9]))
    camera = CameraSource(tmp_path / "cam.npz")
    assert np.array_equal(camera.get("cam_to_world", 9), poses[1]) and np.array_equal(
        camera.get("intrinsics", 1), np.eye(3)
    )
    with pytest.raises(KeyError, match="frame 5"):
        camera.get("cam_to_world", 5)
    with pytest.raises(ValueError, match="no 'depth'"):
        np.savez(tmp_path / "bad.npz", d=depth)
        KnownDepth(tmp_path / "bad.npz")
