"""The long-video strategy protocol.

A strategy turns a stream of frames into a stream of per-frame predictions, whatever the video's
length, holding at most its window in memory. It talks to a predictor (`vdf.predictors`) through
the few calls the predictor exposes; the first of them, which every predictor has, is the clip
forward::

    predict_clip(video: (1,T,3,H,W) float in [0,1]) -> (1,T,1,H,W) relative disparity

Strategies are part of a predictor's config (``predictor.init_args.strategy: {class_path: ...}``),
so any predictor and strategy that share the calls can be compared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch


class ClipModel(Protocol):
    def predict_clip(self, video: torch.Tensor) -> torch.Tensor:
        """``(1,T,3,H,W)`` in [0,1] -> ``(1,T,1,H,W)`` relative disparity."""


class LatentDiffusionModel(Protocol):
    """The calls latent-diffusion strategies use (`vdf.predictors.LatentDiffusionPredictor` provides them).

    Latents are ``(B,T,C,h,w)``; a condition holds a window's video latents and image embeddings
    and offers ``frames(start, stop)``, ``select(index)`` and ``cat(parts)``.
    """

    objective: Any  # vdf.diffusion.DiffusionObjective
    steps: int
    device: torch.device
    decode_chunk_size: int

    def generator(self, offset: int = 0) -> torch.Generator | None: ...

    def noise_like(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor: ...

    def condition(self, video: torch.Tensor, generator: torch.Generator | None = None) -> Any: ...

    def denoise(
        self,
        cond: Any,
        x: torch.Tensor,
        fixed: torch.Tensor | None = None,
        fixed_latents: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def require_latent_model(model: Any, strategy: str) -> None:
    """A clear error when a latent-diffusion strategy is given another kind of model."""
    if not hasattr(model, "denoise"):
        raise TypeError(
            f"{type(model).__name__} is not a latent diffusion model (no denoise): {strategy} needs one such as "
            "DepthCrafter, ChronoDepth or Depth Any Video; use PerFrame or IndependentWindows instead"
        )


class LongVideoStrategy(ABC):
    """Frames ``(3,H,W)`` in, per-frame predictions ``(1,H,W)`` out: exactly one item per input
    frame, in order.

    The item is ``None`` for a frame the strategy's algorithm gives no prediction (Depth Any
    Video's official layout drops the first frame and the frames from its last keyframe on);
    ``vdf predict`` writes no output for such a frame and evaluation does not score it.
    """

    @abstractmethod
    def __call__(self, model: ClipModel, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor | None]: ...

    @property
    def window(self) -> int:
        """Frames held at once (the memory bound), for manifests and benchmarks."""
        return 1


def chunks(frames: Iterable[torch.Tensor], size: int) -> Iterator[list[torch.Tensor]]:
    """Consecutive lists of up to ``size`` frames."""
    chunk: list[torch.Tensor] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_clip(model: ClipModel, frames: list[torch.Tensor]) -> torch.Tensor:
    """Stack ``frames`` into one clip, run the model, return ``(T,1,H,W)``."""
    return model.predict_clip(torch.stack(frames).unsqueeze(0))[0]


def fit_scale_shift(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares ``(s, b)`` minimising ``||s*source + b - target||`` over all elements (float64).

    A constant ``source`` has no defined scale: it gets ``s = 1`` and the shift of the means.
    """
    x = source.double().flatten()
    y = target.double().flatten()
    xc, yc = x - x.mean(), y - y.mean()
    var = (xc * xc).sum()
    if var <= 1e-12 * max(float((x * x).sum()), 1e-300):
        return torch.ones((), dtype=torch.float64), y.mean() - x.mean()
    scale = (xc * yc).sum() / var
    return scale, y.mean() - scale * x.mean()
