"""Rendering speed of the synthetic world on this machine's CPU.

    python benchmarks/bench_synthetic.py

Prints frames per second for 16-frame episodes at 128x192 and 64x96 (best of a few repeats, so
that a busy machine disturbs the number less), with one intra-op thread (as in a DataLoader worker)
and with torch's default thread count.
"""

import time

import torch

from vdf.data.datasets.synthetic import SyntheticWorld


def frames_per_second(height: int, width: int, num_frames: int = 16, episodes: int = 8, repeats: int = 3) -> float:
    ds = SyntheticWorld(num_episodes=episodes, num_frames=num_frames, height=height, width=width)
    ds[0]  # warm-up: first-call allocations and lazy initialisation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(episodes):
            ds[i]
        best = min(best, time.perf_counter() - start)
    return episodes * num_frames / best


def main() -> None:
    default_threads = torch.get_num_threads()
    print(f"torch {torch.__version__}")
    for threads in sorted({1, default_threads}):
        torch.set_num_threads(threads)
        for h, w in [(128, 192), (64, 96)]:
            print(f"{threads} thread(s), {h}x{w}, T=16: {frames_per_second(h, w):.0f} frames/s")
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
