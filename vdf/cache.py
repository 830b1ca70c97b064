"""``vdf cache-latents``: encode a training set's video latents and image embeddings once, to disk.

    vdf cache-latents --config configs/depthcrafter.yaml --config configs/depthcrafter/stage1.yaml --output latents/

The config is a ``vdf fit`` config (parsed as ``vdf`` parses it). Every ``data.train`` dataset is
encoded frame by frame with the model's frozen VAE and image encoder (the network the task
trains: Depth Any Video's interpolation task uses its interpolator's) into
``OUTPUT/<dataset name>/`` (`vdf.data.datasets.latent_cache`), and ``OUTPUT/data/latent_cache.yaml``
is written: a config overlay that wraps each train dataset in `LatentCache`, so that

    vdf fit --config ... --config OUTPUT/data/latent_cache.yaml

trains from the cache. A folder holding a cache made with other weights or settings is refused
(naming what differs); an interrupted run is resumed by running the same command again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ArgumentParser

from vdf.data.datasets.latent_cache import LatentCacheWriter


def build(configs: list[str], overrides: list[str] | None = None):
    """The `VDFCLI` of a ``vdf fit`` config (model and datamodule built, nothing run or written)."""
    from vdf.cli import VDFCLI, cli_options

    options = cli_options()
    options["trainer_defaults"] = {**options["trainer_defaults"], "logger": False, "callbacks": []}
    args = [x for c in configs for x in ("--config", c)] + list(overrides or [])
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        return VDFCLI(**options, run=False, args=[*args, "--trainer.logger", "false"])
    finally:
        sys.argv = argv


def _train_entries(cli) -> list[dict[str, Any]]:
    """The config's ``data.train`` entries as YAML mappings (class_path / init_args)."""
    from jsonargparse import Namespace

    entries = cli.config.get("data.train") or []
    out = []
    for entry in entries:
        out.append(entry.as_dict() if isinstance(entry, Namespace) else dict(entry))
    return out


def cache_latents(
    configs: list[str],
    output: str,
    overrides: list[str] | None = None,
    augmentation_seed: int = 0,
    storage_dtype: str = "float32",
    overwrite: bool = False,
    device: str = "cpu",
    limit_items: int | None = None,
) -> dict[str, Any]:
    """Encode every train dataset of ``configs`` into ``output``; returns a summary.

    ``limit_items`` stops after that many newly encoded items (the cache stays incomplete; a later
    run finishes it).
    """
    cli = build(configs, overrides)
    task, datamodule = cli.model, cli.datamodule
    network = getattr(task, "network", None)
    denoiser = getattr(network, "denoiser", None)
    if denoiser is None or not hasattr(denoiser, "vae"):
        raise ValueError(
            f"{type(task).__name__} has no VAE-encoded video conditioning to cache: vdf cache-latents is for the "
            "SVD families (DepthCrafter, ChronoDepth, Depth Any Video)"
        )
    datasets = datamodule.datasets["train"]
    if not datasets:
        raise ValueError("the config has no data.train datasets to cache")
    from vdf.models.latent_cache import encode_frames, encoder_key

    denoiser.to(device).eval()
    key = encoder_key(denoiser)
    names = datamodule.dataset_names("train")
    root = Path(output)
    summary: dict[str, Any] = {"output": str(root), "datasets": {}}
    overlay_entries = []
    encoded_total = 0
    start = time.perf_counter()
    for name, dataset, entry in zip(names, datasets, _train_entries(cli)):
        folder = root / name
        writer = LatentCacheWriter(folder, dataset, key, augmentation_seed, storage_dtype, overwrite)
        pending = writer.pending()
        done_before = len(dataset) - len(pending)
        encoded = 0
        for item in pending:
            if limit_items is not None and encoded_total >= limit_items:
                break
            length = dataset.sequence_length(item)
            sample = dataset.load(item, range(length))
            video = sample["video"]
            noise = writer.noise(item, range(length), video.shape[1:]) if denoiser.noise_aug_strength > 0 else None
            writer.write(item, encode_frames(denoiser, video.to(device), noise))
            encoded += 1
            encoded_total += 1
        complete = not writer.pending()
        if complete:
            writer.finish()
        print(
            f"{folder}: {len(dataset)} items, {done_before} already cached, {encoded} encoded"
            + ("" if complete else f", {len(writer.pending())} left (run the command again to finish)"),
            file=sys.stderr,
        )
        summary["datasets"][name] = {
            "folder": str(folder),
            "items": len(dataset),
            "cached_before": done_before,
            "encoded": encoded,
            "complete": complete,
        }
        overlay_entries.append(
            {
                "class_path": "vdf.data.datasets.latent_cache.LatentCache",
                "init_args": {"cache": str(folder), "dataset": entry},
            }
        )
    summary["seconds"] = time.perf_counter() - start
    # Under a folder named data/, so runs keep the recipe's name (`vdf.cli.run_name` skips data overlays).
    overlay = root / "data" / "latent_cache.yaml"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    from vdf.io.atomic import atomic_path

    header = (
        "# Train from the latent cache: add this file after the config's own --config files\n"
        f"#   (made by vdf cache-latents from {' + '.join(configs)})\n"
    )
    with atomic_path(overlay) as tmp:
        tmp.write_text(header + yaml.safe_dump({"data": {"train": overlay_entries}}, sort_keys=False))
    summary["overlay"] = str(overlay)
    print(
        f"train from the cache: vdf fit {' '.join('--config ' + c for c in configs)} --config {overlay}",
        file=sys.stderr,
    )
    return summary


def main(args: list[str] | None = None) -> dict[str, Any]:
    """``vdf cache-latents --config C [--config O ...] --output DIR [options] [--key value ...]``."""
    parser = ArgumentParser(
        prog="vdf cache-latents",
        description="Encode a training set's video latents and image embeddings once, to disk (SVD families).",
    )
    parser.add_argument("--config", type=str, action="append", required=True, help="config file, repeated to layer")
    parser.add_argument("--output", type=str, required=True, help="cache folder (one subfolder per train dataset)")
    parser.add_argument("--augmentation_seed", type=int, default=0, help="seed of the per-frame noise augmentation")
    parser.add_argument("--storage_dtype", type=str, default="float32", help="float32, float16 or bfloat16")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace a cache made with other settings")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--limit_items", type=int | None, default=None, help="encode at most this many items now")
    parser.add_argument("--tiny", type=bool, default=False, help="add the recipe's tiny overlay (configs/tiny/)")
    argv = list(sys.argv[1:] if args is None else args)
    # Anything else (--data.train ..., --model....) is a config override, passed to the vdf parser.
    own, rest = _split(argv, {a.dest for a in parser._actions if a.dest != "help"})
    cfg = parser.parse_args(own)
    configs = list(cfg.config)
    if cfg.tiny:
        from vdf.cli import tiny_configs

        configs = tiny_configs(configs)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: CUDA is not available on this machine")
    return cache_latents(
        configs,
        cfg.output,
        rest,
        augmentation_seed=cfg.augmentation_seed,
        storage_dtype=cfg.storage_dtype,
        overwrite=cfg.overwrite,
        device=cfg.device,
        limit_items=cfg.limit_items,
    )


def _split(argv: list[str], names: set[str]) -> tuple[list[str], list[str]]:
    """Split a command line into this tool's options (``--name value`` / ``--name=value``) and the rest."""
    own, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else None
        target = own if name in names or arg in ("-h", "--help") else rest
        target.append(arg)
        if "=" not in arg and name is not None and i + 1 < len(argv) and arg not in ("-h", "--help"):
            target.append(argv[i + 1])
            i += 1
        i += 1
    return own, rest


if __name__ == "__main__":
    main()
