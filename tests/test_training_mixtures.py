"""Every paper-scale training recipe on fakes of every dataset of its mixture (exact layouts, tiny
sizes): the mixture files and the recipes agree, the datasets are found through ``data.roots``,
batches come at the mixture's crop sizes and carry each sample's dataset name, draws follow the
weights, and ``vdf fit`` with the family's tiny model runs one step."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import yaml
from dataset_fakes import write_fake
from jsonargparse import ArgumentParser

from vdf.cli import main
from vdf.data.datamodule import VideoDepthDataModule
from vdf.data.datasets.mixed import MixedVideoDataset, TrainView, cover_size
from vdf.data.roots import resolve_roots
from vdf.data.types import ClipRequest
from vdf.io.codecs import encoder_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
pytestmark = pytest.mark.skipif(not encoder_available("exr"), reason="this PyAV build has no OpenEXR encoder")

#: (family, recipe files after the family base, mixture) of every paper-scale training recipe.
RECIPES = [
    ("flashdepth", [], "flashdepth_stage2"),
    ("flashdepth", ["flashdepth/s.yaml"], "flashdepth_stage1"),
    ("flashdepth", ["flashdepth/l.yaml"], "flashdepth_stage1"),
    ("chronodepth", ["chronodepth/stage1.yaml"], "chronodepth_stage1"),
    ("chronodepth", ["chronodepth/stage2.yaml"], "chronodepth_stage2"),
    ("depthcrafter", ["depthcrafter/stage1.yaml"], "depthcrafter_stage1"),
    ("depthcrafter", ["depthcrafter/stage2.yaml"], "depthcrafter_stage2"),
    ("depthcrafter", ["depthcrafter/stage3.yaml"], "depthcrafter_stage3"),
    ("depthanyvideo", ["depthanyvideo/train.yaml"], "depthanyvideo"),
]
MIXTURES = sorted({m for _, _, m in RECIPES})
#: One recipe per family for `vdf fit`; together their mixtures hold every dataset (the batches of
#: every mixture are checked by the datamodule test below, a fit step costs seconds of CPU).
FIT_RECIPES = [RECIPES[1], RECIPES[4], RECIPES[7], RECIPES[8]]
MIX_KEYS = ("roots", "train", "train_weights", "num_frames", "frame_stride", "frame_dropout")


def _load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def _mixture(name):
    return _load(os.path.join(CONFIGS, "data", "train", f"{name}.yaml"))["data"]


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    """``{root name: (folder, items)}``: one fake of every dataset any mixture names."""
    base = tmp_path_factory.mktemp("datasets")
    names = sorted({k for m in MIXTURES for k in _mixture(m)["roots"]})
    return {name: (str(base / name), write_fake(name, base / name)) for name in names}


def _datamodule(data: dict, fakes) -> VideoDepthDataModule:
    """The datamodule of a ``data`` section, built as ``vdf`` builds it, its roots on the fakes."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(VideoDepthDataModule, "data")
    data = dict(data, roots={k: fakes[k][0] for k in data["roots"]}, num_workers=0)
    config = parser.parse_object({"data": data})
    resolve_roots(config.data)
    return parser.instantiate_classes(config).data


def test_every_training_recipe_uses_its_mixture_file_and_the_file_lists_its_roots():
    fitted = {k for _, _, m in FIT_RECIPES for k in _mixture(m)["roots"]}
    assert fitted == {k for m in MIXTURES for k in _mixture(m)["roots"]}
    assert sorted(os.listdir(os.path.join(CONFIGS, "data", "train"))) == sorted(f"{m}.yaml" for m in MIXTURES)
    for family, overlays, mixture in RECIPES:
        recipe = _load(os.path.join(CONFIGS, overlays[-1] if overlays else f"{family}.yaml"))["data"]
        wanted = _mixture(mixture)
        assert {k: recipe.get(k) for k in MIX_KEYS} == {k: wanted.get(k) for k in MIX_KEYS}, (overlays, mixture)
        text = yaml.safe_dump(wanted["train"])
        # Every root is one ${name} setting of data.roots, and every such setting is used.
        assert sorted(wanted["roots"]) == sorted(
            {e["init_args"]["dataset"]["init_args"]["root"][2:-1] for e in wanted["train"]}
        )
        assert "data/" not in text
        assert len(wanted["train_weights"]) == len(wanted["train"]) and abs(sum(wanted["train_weights"]) - 1) < 1e-9


@pytest.mark.parametrize("mixture", MIXTURES)
def test_mixture_batches_carry_dataset_names_at_crop_size_and_draws_follow_the_weights(mixture, fakes):
    data = _mixture(mixture)
    dm = _datamodule(dict(data, batch_size=1, samples_per_epoch=len(data["train"])), fakes)
    loader = dm.train_dataloader()
    mixed: MixedVideoDataset = loader.dataset
    names = [d.name for d in mixed.datasets]
    assert [len(d) for d in mixed.datasets] == [fakes[k][1] for k in data["roots"]]
    # One clip of every dataset at the paper's crop size, naming the dataset it came from.
    for entry, dataset in zip(data["train"], mixed.datasets):
        sample = dataset[ClipRequest(0, (1,))]
        assert tuple(sample["video"].shape) == (1, 3, *entry["init_args"]["crop"])
        assert sample["depth"].shape[-2:] == sample["video"].shape[-2:] and sample["valid"].any()
        assert sample["meta"]["dataset"] == dataset.name
    # The loader's batches carry each sample's dataset name.
    batch = next(iter(loader))
    assert [m["dataset"] for m in batch["meta"]] and all(m["dataset"] in names for m in batch["meta"])
    # Share of draws per dataset over many draws (indices only, nothing decoded): within 2 points.
    sampler = loader.batch_sampler
    sampler.samples_per_epoch = 40000
    items = sampler._draw_items(sampler._generator(0))
    which = np.searchsorted(np.asarray(mixed._offsets), items, side="right") - 1  # = mixed.locate(i)[0]
    assert [int(which[i]) for i in range(5)] == [mixed.locate(int(items[i]))[0] for i in range(5)]
    drawn = np.bincount(which, minlength=len(names)) / len(items)
    weights = np.asarray(data["train_weights"]) / sum(data["train_weights"])
    assert np.all(np.abs(drawn - weights) < 0.02), (drawn, weights)


def _tiny_model_overlay(family: str, path) -> str:
    """The family's tiny overlay without its training data (the synthetic world): trainer, model,
    evaluation data (2-frame validation episodes) and batch budget stay."""
    tiny = _load(os.path.join(CONFIGS, "tiny", f"{family}.yaml"))
    size = tiny["data"]["train"][0]["init_args"]
    size = (size["height"], size["width"]) if "height" in size else tuple(size["sizes"][0])
    for key in MIX_KEYS:
        tiny["data"].pop(key, None)
    for entry in tiny["data"].get("val") or []:  # fast_dev_run validates one batch: keep it short
        entry["init_args"]["num_frames"] = 2
    path.write_text(yaml.safe_dump(tiny))
    return str(path), size


@pytest.mark.parametrize("family,overlays,mixture", FIT_RECIPES, ids=lambda v: v if isinstance(v, str) else "+".join(v))
def test_fit_runs_with_the_tiny_model_on_every_dataset_of_the_mixture(family, overlays, mixture, fakes, in_tmp_cwd):
    model_overlay, size = _tiny_model_overlay(family, in_tmp_cwd / "tiny_model.yaml")
    # The recipe as it is, but each mixture entry cropped at the tiny model's size (a paper-size
    # crop is too large for a CPU step; the test above checks the batches at the paper sizes).
    recipe = _load(os.path.join(CONFIGS, overlays[-1] if overlays else f"{family}.yaml"))
    for entry in recipe["data"]["train"]:
        entry["init_args"]["crop"] = list(size)
    small = in_tmp_cwd / "recipe.yaml"
    small.write_text(yaml.safe_dump(recipe))
    files = [os.path.join(CONFIGS, f"{family}.yaml"), str(small)] if overlays else [str(small)]
    roots = [a for k in recipe["data"]["roots"] for a in (f"--data.roots.{k}", fakes[k][0])]
    seen = []
    cli = main(
        ["fit", *[a for f in [*files, model_overlay] for a in ("--config", f)], *roots]
        + ["--trainer.fast_dev_run", "true", "--data.batch_size", "null", "--data.num_workers", "0"]
    )
    assert cli.trainer.global_step == 1
    loader = cli.datamodule.train_dataloader()
    for batch in loader:
        seen += [m["dataset"] for m in batch["meta"]]
        assert tuple(batch["video"].shape[-2:]) == size and torch.isfinite(batch["video"]).all()
        break
    assert seen and set(seen) <= {d.name for d in loader.dataset.datasets}


def test_train_view_center_crop_matches_the_official_sizes_and_moves_intrinsics(fakes):
    from vdf.data.datasets.mvs_synth import MVSSynth

    # FlashDepth stage 1 on a 1080x1920 MVS-Synth frame: x0.5 -> 540x960 -> cover 518 -> 518x920.
    assert cover_size(540, 960, (518, 518)) == (518, 920)
    assert cover_size(1080, 1920, (1078, 1918), upscale_only=True) == (1080, 1920)  # no enlargement
    assert cover_size(540, 960, (1078, 1918), upscale_only=True) == (1078, 1918)  # 2x, truncated
    view = TrainView(MVSSynth(fakes["mvs_synth"][0], depth_scale=0.1), resize_factor=0.5, crop=(4, 4))
    # 6x8 -> x0.5 = 3x4 -> cover 4x4: scale 4/3 -> 4x5 -> centre crop columns 0..4.
    assert view.resized_size(0) == (4, 5) and view.crop_offset(0, (0, 1)) == (0, 0)
    sample = view[0]
    assert sample["video"].shape == (3, 3, 4, 4) and sample["meta"]["dataset"] == "mvs_synth"
    k = sample["intrinsics"][0].double()
    sy, sx = 4 / 6, 5 / 8
    assert torch.allclose(k[0, 0], torch.tensor(20.0 * sx, dtype=torch.float64))
    assert torch.allclose(k[1, 1], torch.tensor(20.0 * sy, dtype=torch.float64))
    assert torch.allclose(k[0, 2], torch.tensor((4.0 + 0.5) * sx - 0.5, dtype=torch.float64))
    # Sky (inf in the EXR) stays invalid through the resize; depth / 10 as metres.
    assert not sample["valid"][0, 0, 0, 0] and torch.allclose(sample["depth"][0, 0, -1, -1], torch.tensor(12.0))


def test_train_view_random_crop_is_reproducible_varies_and_stays_inside(fakes):
    from vdf.data.datasets.tartanair import TartanAir

    view = TrainView(TartanAir(fakes["tartanair"][0]), crop=(3, 3), crop_mode="random", seed=1)
    assert view.resized_size(0) == (6, 8)  # large enough: not resized
    offsets = {view.crop_offset(0, (f, f + 1)) for f in range(40)}
    assert len(offsets) > 4 and all(0 <= y <= 3 and 0 <= x <= 5 for y, x in offsets)
    assert view.crop_offset(0, (0, 1)) == view.crop_offset(0, (0, 1))
    full = TartanAir(fakes["tartanair"][0])[0]
    y, x = view.crop_offset(0, (0, 1, 2))
    crop = view[0]
    assert torch.equal(crop["video"], full["video"][..., y : y + 3, x : x + 3])
    assert torch.allclose(crop["intrinsics"][:, 0, 2], full["intrinsics"][:, 0, 2] - x)
    with pytest.raises(ValueError, match="crop_mode"):
        TrainView(TartanAir(fakes["tartanair"][0]), crop=(3, 3), crop_mode="corner")


def test_entries_own_clip_lengths_and_strides_replace_the_datamodule_lists(fakes):
    from vdf.data.datasets.hypersim import Hypersim
    from vdf.data.datasets.tartanair import TartanAir
    from vdf.data.sampler import MixedLengthBatchSampler

    mixed = MixedVideoDataset(
        [
            TrainView(Hypersim(fakes["hypersim"][0]), num_frames=[1]),
            TrainView(TartanAir(fakes["tartanair"][0]), frame_stride=[2]),
        ],
        [0.5, 0.5],
    )
    sampler = MixedLengthBatchSampler(
        mixed, num_frames=[2], frame_stride=[1], batch_size=1, item_weights=mixed.item_weights(), samples_per_epoch=50
    )
    clips = [c for batch in sampler.plan_epoch(0) for c in batch]
    by_dataset = {d: [c.frames for c in clips if mixed.locate(c.index)[0] == d] for d in (0, 1)}
    assert by_dataset[0] and all(len(f) == 1 for f in by_dataset[0])  # Hypersim: single frames
    assert by_dataset[1] and all(f[1] - f[0] == 2 for f in by_dataset[1])  # TartanAir: 2 frames at stride 2


def test_an_unknown_root_name_is_refused_with_the_known_names():
    from jsonargparse import Namespace

    data = Namespace(roots={"spring": "/x"}, train=[{"init_args": {"root": "${sprung}"}}])
    with pytest.raises(ValueError, match=r"\$\{sprung\}.*--data.roots.sprung.*spring"):
        resolve_roots(data)
    data.train = [{"init_args": {"root": "${spring}/train"}}]
    resolve_roots(data)
    assert data.train[0]["init_args"]["root"] == "/x/train"


def test_a_mixture_file_is_a_data_overlay_not_a_recipe():
    from vdf.cli import run_name, tiny_configs

    mixture = os.path.join(CONFIGS, "data", "train", "flashdepth_stage1.yaml")
    recipe = [os.path.join(CONFIGS, "flashdepth.yaml"), os.path.join(CONFIGS, "flashdepth", "s.yaml")]
    assert run_name([*recipe, mixture]) == "flashdepth_s"
    assert tiny_configs([*recipe, mixture]) == [*recipe, os.path.join(CONFIGS, "tiny", "flashdepth.yaml"), mixture]
    assert run_name(["/srv/data/configs/flashdepth.yaml"]) == "flashdepth"  # a checkout inside a data/ folder


def test_a_benchmark_layered_on_a_training_recipe_keeps_the_recipes_roots():
    from jsonargparse import Namespace

    from vdf.cli import layered_roots

    files = [os.path.join(ROOT, "configs/depthcrafter/stage3.yaml"), os.path.join(ROOT, "configs/data/sintel.yaml")]
    # What the parser holds after the two files and one command-line setting: the last file's dict.
    parsed = {"sintel": "/datasets/sintel"}
    roots = layered_roots(files, parsed)
    assert roots == {
        "dynamic_replica": "data/dynamic_replica",
        "matrixcity": "data/matrixcity",
        "sintel": "/datasets/sintel",
    }
    data = Namespace(
        roots=roots,
        train=[{"init_args": {"root": "${matrixcity}"}}],
        test=[{"init_args": {"root": "${sintel}"}}],
    )
    resolve_roots(data)
    assert data.train[0]["init_args"]["root"] == "data/matrixcity"
    assert data.test[0]["init_args"]["root"] == "/datasets/sintel"
