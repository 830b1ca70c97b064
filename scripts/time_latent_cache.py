"""Training-step time with and without the latent cache, on the same clips (alternating A/B).

    python scripts/time_latent_cache.py --config configs/depthcrafter.yaml --config configs/depthcrafter/stage1.yaml \
        --config configs/tiny/depthcrafter.yaml --steps 20 --frames 5 --batch 2

Builds the task as ``vdf fit`` does, caches its first train dataset into a temporary folder
(``vdf cache-latents``), then times ``load the batch + training_loss + backward + optimizer step``
alternately from the source dataset (on-the-fly VAE / CLIP encoding) and from the cache, on the
same clip requests; prints the median seconds per step of each.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
from jsonargparse import ArgumentParser

from vdf.cache import build, cache_latents
from vdf.data.collate import collate_clips
from vdf.data.datasets.latent_cache import LatentCache
from vdf.models.latent_cache import encoder_key


def main(args: list[str] | None = None) -> dict[str, float]:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=str, action="append", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    cfg = parser.parse_args(args)
    with tempfile.TemporaryDirectory() as folder:
        summary = cache_latents(cfg.config, folder)
        cli = build(cfg.config)
        task = cli.model.train()
        source = cli.datamodule.datasets["train"][0]
        cache = LatentCache(next(iter(summary["datasets"].values()))["folder"], source)
        cache.check_encoder(encoder_key(task.network.denoiser))  # the same weights as the cache's
        optimizer = torch.optim.AdamW([p for g in task.param_groups() for p in g["params"]], lr=1e-5)
        g = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {"on the fly": [], "cached": []}
        for step in range(cfg.steps + 1):
            items = torch.randint(len(source), (cfg.batch,), generator=g).tolist()
            requests = []
            for i in items:
                start = int(torch.randint(source.sequence_length(i) - cfg.frames + 1, (1,), generator=g))
                requests.append((i, range(start, start + cfg.frames)))
            for name, dataset in (("on the fly", source), ("cached", cache))[:: 1 if step % 2 else -1]:
                begin = time.perf_counter()
                batch = collate_clips([dataset.load(i, f) for i, f in requests])
                loss = task.training_loss(batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:  # the first round warms up
                    times[name].append(time.perf_counter() - begin)
    out = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{cfg.steps} steps each, batch {cfg.batch} x {cfg.frames} frames, {torch.get_num_threads()} threads: "
        + ", ".join(f"{name} {seconds * 1000:.1f} ms/step (median)" for name, seconds in out.items())
        + f"; cached / on the fly = {out['cached'] / out['on the fly']:.2f}"
    )
    return out


if __name__ == "__main__":
    main()
