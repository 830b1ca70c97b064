"""`vdf test`: every family x every data config, on fakes in each benchmark's layout at its native size.

Each family runs at its own resolution rule (`vdf.predictors.resolution`) and its prediction is
scored at the ground truth's size; a rule that honours protocol sizes runs a benchmark at its fixed
inference size.
"""

import glob
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from vdf.cli import main, tiny_configs
from vdf.data.datasets.bonn import BONN_SEQUENCES
from vdf.data.datasets.kitti import KITTI_VAL_DRIVES

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["dav2", "flashdepth", "depthcrafter", "chronodepth", "depthanyvideo", "vda"]
# The single-dataset data configs (DepthCrafter's benchmark and its variants). The multi-set configs
# of the papers' own evaluations (chronodepth_eval, flashdepth_eval, paper_benchmarks) run in
# tests/test_paper_benchmarks.py on small fakes of their sets.
DATA_CONFIGS = sorted(
    Path(p).stem
    for p in glob.glob(str(ROOT / "configs" / "data" / "*.yaml"))
    if len(yaml.safe_load(Path(p).read_text())["data"]["test"]) == 1
)


def _smooth_rgb(path: Path, h: int, w: int, seed: int) -> None:
    # Smooth frames compress well, so native-size fakes stay small and quick to write.
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack(
        [
            (x * 255 // max(w - 1, 1) + seed * 17) % 256,
            (y * 255 // max(h - 1, 1)) % 256,
            np.full_like(x, (seed * 53) % 256),
        ],
        -1,
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _depth_png(path: Path, h: int, w: int, low: int, high: int) -> None:
    y, x = np.mgrid[0:h, 0:w]
    depth = (low + (high - low) * (x + y) / (h + w)).astype(np.uint16)
    depth[0, 0] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth).save(path)


def _sintel(root: Path) -> None:
    h, w = 436, 1024
    for i in range(2):
        _smooth_rgb(root / "training/clean/alley_1" / f"frame_{i + 1:04d}.png", h, w, i)
        depth = np.linspace(1, 60, h * w, dtype=np.float32).reshape(h, w)
        path = root / "training/depth/alley_1" / f"frame_{i + 1:04d}.dpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.array([202021.25], np.float32).tofile(f)
            np.array([w, h], np.int32).tofile(f)
            depth.tofile(f)


def _kitti(root: Path) -> None:
    h, w = 375, 1242
    for drive in KITTI_VAL_DRIVES:
        for i in (5, 6):
            _smooth_rgb(root / "raw_data" / drive[:10] / drive / "image_02/data" / f"{i:010d}.png", h, w, i)
            _depth_png(
                root / "data_depth_annotated/val" / drive / "proj_depth/groundtruth/image_02" / f"{i:010d}.png",
                h,
                w,
                300,
                60000,
            )


def _bonn(root: Path) -> None:
    # The protocol keeps frames 30.. of each sequence: 32 frames, all links to one image pair.
    rgb, depth = root / "rgb.png", root / "depth.png"
    _smooth_rgb(rgb, 480, 640, 0)
    _depth_png(depth, 480, 640, 2000, 40000)
    for seq in BONN_SEQUENCES:
        (root / seq / "rgb").mkdir(parents=True)
        (root / seq / "depth").mkdir(parents=True)
        for i in range(32):
            os.link(rgb, root / seq / "rgb" / f"{1548266469.0 + i * 0.033:.6f}.png")
            os.link(depth, root / seq / "depth" / f"{1548266469.01 + i * 0.033:.6f}.png")


def _scannet(root: Path, frames: int = 12) -> None:
    folder = root / "scans_test" / "scene0707_00"
    for i in range(frames):
        _smooth_rgb(folder / "color" / f"{i}.jpg", 480, 640, i)
        _depth_png(folder / "depth" / f"{i}.png", 480, 640, 500, 9000)
        pose = np.eye(4)
        pose[:3, 3] = [0.01 * i, 0, 0]
        (folder / "pose").mkdir(exist_ok=True)
        np.savetxt(folder / "pose" / f"{i}.txt", pose)
    (folder / "intrinsic").mkdir(exist_ok=True)
    np.savetxt(
        folder / "intrinsic" / "intrinsic_depth.txt",
        np.array([[577.6, 0, 319.5, 0], [0, 578.7, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
    )


def _nyuv2(root: Path) -> None:
    rel = Path("test") / "bathroom"
    _smooth_rgb(root / rel / "rgb_0001.png", 480, 640, 1)
    _depth_png(root / rel / "depth_0001.png", 480, 640, 500, 9000)
    _depth_png(root / rel / "filled_0001.png", 480, 640, 500, 9000)
    (root / "filename_list_test.txt").write_text(f"{rel}/rgb_0001.png {rel}/depth_0001.png {rel}/filled_0001.png\n")


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    _sintel(root / "data/sintel")
    _kitti(root / "data/kitti")
    _bonn(root / "data/bonn")
    _scannet(root / "data/scannet")
    _nyuv2(root / "data/nyuv2")
    return root


def _all_test_datasets(tmp_path: Path) -> tuple[Path, list[str]]:
    """One data config holding the ``test`` datasets of every data config (one model build per family)."""
    datasets, roots = [], {}
    for name in DATA_CONFIGS:
        data = yaml.safe_load((ROOT / "configs" / "data" / f"{name}.yaml").read_text())["data"]
        datasets += data["test"]
        roots.update(data.get("roots") or {})
    path = tmp_path / "all_benchmarks.yaml"
    path.write_text(yaml.safe_dump({"data": {"roots": roots, "test": datasets, "eval_num_frames": 2}}))
    return path, datasets


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_tests_on_every_data_config(family, benchmark_root, tmp_path, monkeypatch):
    monkeypatch.chdir(benchmark_root)
    config, datasets = _all_test_datasets(tmp_path)
    assert len(datasets) == len(DATA_CONFIGS)
    seen = []
    from vdf.tasks.base import VideoDepthTask

    update = VideoDepthTask._eval_step

    def recording(self, batch, dataloader_idx, stream=False, test=False):
        out = update(self, batch, dataloader_idx, stream, test)
        seen.append((dataloader_idx, tuple(batch["video"].shape[-2:]), tuple(out["disparity"].shape[-2:])))
        return out

    monkeypatch.setattr(VideoDepthTask, "_eval_step", recording)
    recipe = tiny_configs([str(ROOT / "configs" / f"{family}.yaml")])  # the family base, then its tiny overlay
    assert len(recipe) == 2
    cli = main(
        [
            "test",
            *[x for c in recipe for x in ("--config", c)],
            "--config",
            str(config),
            "--trainer.limit_test_batches",
            "1",
            "--trainer.logger",
            "false",
        ]
    )
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    names = cli.datamodule.dataset_names("test")
    for name in names:
        assert np.isfinite(metrics[f"test/{name}/abs_rel"]), (name, metrics)
    # Every dataset ran once, and was scored at the ground truth's (native) size whatever size the
    # model ran at.
    assert sorted(i for i, _, _ in seen) == list(range(len(DATA_CONFIGS)))
    assert all(video == pred for _, video, pred in seen), seen


def test_a_rule_with_protocol_sizes_runs_the_benchmark_at_its_fixed_size(benchmark_root, monkeypatch):
    monkeypatch.chdir(benchmark_root)
    from vdf.predictors.frame import FramePredictor

    sizes = []
    clip = FramePredictor.clip

    def recording(self, video, frame_index=None):
        sizes.append(tuple(video.shape[-2:]))
        return clip(self, video, frame_index)

    monkeypatch.setattr(FramePredictor, "clip", recording)
    rule = (
        '{"class_path": "vdf.predictors.resolution.RoundToMultiple", '
        '"init_args": {"max_size": 1024, "multiple": 64, "protocol_sizes": true}}'
    )
    main(
        [
            "test",
            "--config",
            str(ROOT / "configs/dav2.yaml"),
            "--config",
            str(ROOT / "configs/tiny/dav2.yaml"),
            "--config",
            str(ROOT / "configs/data/sintel.yaml"),
            "--model.init_args.predictor.init_args.resolution",
            rule,
            "--data.eval_num_frames",
            "2",
            "--trainer.limit_test_batches",
            "1",
            "--trainer.logger",
            "false",
        ]
    )
    # DepthCrafter's benchmark size for Sintel (436x1024 frames run at 448x1024).
    assert sizes and set(sizes) == {(448, 1024)}
