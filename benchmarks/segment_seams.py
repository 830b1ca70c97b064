"""Depth jumps at window seams: `SegmentStitching` against `IndependentWindows`, one model, one run.

Trains the tiny DepthCrafter (``configs/depthcrafter.yaml`` + ``depthcrafter/stage1.yaml`` + ``tiny/depthcrafter.yaml``) on the synthetic world
(or loads ``--ckpt``), then runs long synthetic videos through each strategy with the same window
and overlap. Each prediction gets the protocol's single disparity alignment to ground truth for
the whole video; the error of a frame transition ``t-1 -> t`` is the mean absolute difference
between the predicted and the true change of disparity, ``|Δpred_t - Δgt_t|`` over valid pixels.
Seam transitions are those inside or at the end of each overlap (where a new window takes over);
the others are "interior". A strategy that carries scale across windows has seam errors like its
interior errors; one that does not shows jumps. The scale jump is the mean relative change of the
least-squares disparity scale between consecutive spans of ``window - overlap`` frames, each
aligned alone: how far the prediction's scale drifts from one window to the next.

    python benchmarks/segment_seams.py --output seams.json

Prints a markdown table; ``--output`` also writes JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse import CLI

from vdf.data.datasets.synthetic import SyntheticWorld
from vdf.inference import IndependentWindows, SegmentStitching
from vdf.metrics import evaluate_sequence
from vdf.metrics.protocol import align_disparity

ROOT = Path(__file__).resolve().parents[1]
TINY = [str(ROOT / "configs" / f) for f in ("depthcrafter.yaml", "depthcrafter/stage1.yaml", "tiny/depthcrafter.yaml")]


def seam_transitions(length: int, window: int, overlap: int) -> list[int]:
    """Transitions ``t`` (from frame t-1 to t) where a later window takes over."""
    stride = window - overlap
    seams = set()
    start = stride
    while start < length - overlap:
        seams.update(range(start, min(start + overlap, length - 1) + 1) if overlap else [start])
        start += stride
    return sorted(t for t in seams if 0 < t < length)


def transition_errors(pred: torch.Tensor, depth: torch.Tensor, max_depth: float) -> torch.Tensor:
    """``(T-1,)`` mean ``|Δ aligned disparity - Δ true disparity|`` per transition."""
    valid = (depth > 1e-3) & (depth < max_depth)
    scale, shift = align_disparity(pred, depth, max_depth)
    aligned = scale * pred.double() + shift
    truth = torch.where(valid, 1 / depth.double().clamp_min(1e-3), torch.zeros_like(aligned))
    both = valid[1:] & valid[:-1]
    diff = ((aligned[1:] - aligned[:-1]) - (truth[1:] - truth[:-1])).abs()
    return (diff * both).flatten(1).sum(1) / both.flatten(1).sum(1).clamp_min(1)


def window_scale_jumps(pred: torch.Tensor, depth: torch.Tensor, max_depth: float, stride: int) -> float:
    """Mean relative change of the least-squares disparity scale between consecutive spans of
    ``stride`` frames (each span aligned to ground truth alone): how much the prediction's scale
    drifts from one window to the next."""
    scales = []
    for start in range(0, len(pred) - stride + 1, stride):
        scale, _ = align_disparity(pred[start : start + stride], depth[start : start + stride], max_depth)
        scales.append(scale)
    jumps = [abs(b / a - 1) for a, b in zip(scales[:-1], scales[1:]) if a != 0]
    return sum(jumps) / max(len(jumps), 1)


def tiny_model(root: str, epochs: int, ckpt: str | None):
    """The tiny DepthCrafter trained for ``epochs`` x 8 steps, or loaded from ``ckpt``."""
    from vdf.cli import main

    steps = 0 if ckpt else epochs * 8
    cli = main(
        [
            "fit",
            *[x for c in TINY for x in ("--config", c)],
            f"--trainer.max_epochs={epochs}",
            "--trainer.limit_train_batches=8",
            f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={root}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    if ckpt:
        cli.model.load_weights(ckpt)
    return cli.model.predictor.eval(), ckpt or cli.trainer.checkpoint_callback.last_model_path


def run(
    ckpt: str | None = None,
    epochs: int = 8,
    videos: int = 4,
    frames: int = 60,
    window: int = 8,
    overlap: int = 3,
    steps: int = 5,
    workdir: str = "runs/segment_seams",
    output: str | None = None,
) -> dict:
    """Seam and interior transition errors and AbsRel per strategy."""
    model, ckpt = tiny_model(workdir, epochs, ckpt)
    model.steps = steps  # DepthCrafter's 5: with fewer, the re-noised overlap keeps less of its anchor
    world = SyntheticWorld(num_episodes=videos, num_frames=frames, height=32, width=48, seed=3000)
    strategies = {
        f"SegmentStitching({window}, {overlap})": SegmentStitching(window=window, overlap=overlap),
        f"IndependentWindows({window}, {overlap})": IndependentWindows(window=window, overlap=overlap),
        f"IndependentWindows({window}, 0)": IndependentWindows(window=window, overlap=0),
    }
    results = {}
    for name, strategy in strategies.items():
        seam_err, inner_err, abs_rel, drift = [], [], [], []
        ov = overlap if "0)" not in name else 0
        seams = seam_transitions(frames, window, ov)
        for i in range(videos):
            sample = world.load(i, list(range(frames)))
            with torch.no_grad():
                pred = torch.stack(list(strategy(model, iter(sample["video"]))))[:, 0]
            depth = sample["depth"][:, 0]
            errors = transition_errors(pred, depth, world.max_depth)
            mask = torch.zeros(frames - 1, dtype=torch.bool)
            mask[[t - 1 for t in seams]] = True
            seam_err.append(errors[mask].mean())
            inner_err.append(errors[~mask].mean())
            abs_rel.append(evaluate_sequence(pred, depth, world.max_depth)["abs_rel"])
            drift.append(window_scale_jumps(pred, depth, world.max_depth, window - overlap))
        results[name] = {
            "seam_error": float(torch.stack(seam_err).mean()),
            "interior_error": float(torch.stack(inner_err).mean()),
            "abs_rel": float(sum(abs_rel) / len(abs_rel)),
            "scale_jump": float(sum(drift) / len(drift)),
        }
        results[name]["seam_to_interior"] = results[name]["seam_error"] / results[name]["interior_error"]
    print(f"{videos} synthetic videos of {frames} frames (32x48), tiny DepthCrafter from {ckpt}, {steps} steps\n")
    print("| strategy | seam error | interior error | seam / interior | scale jump between windows | AbsRel |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['seam_error']:.4f} | {r['interior_error']:.4f} | {r['seam_to_interior']:.2f} | "
            f"{r['scale_jump']:.3f} | {r['abs_rel']:.3f} |"
        )
    if output:
        Path(output).write_text(
            json.dumps(
                {"checkpoint": ckpt, "frames": frames, "videos": videos, "steps": steps, "results": results}, indent=2
            )
        )
    return results


if __name__ == "__main__":
    CLI(run)
