"""``vdf demo``: a local web page that runs a model on an uploaded video (Gradio).

    vdf demo --config configs/dav2.yaml [--config OVERLAY ...] [--ckpt_path CKPT] [--host 127.0.0.1] [--port 7860]

The page takes a video, runs the config's predictor (`vdf.load`: no Lightning) with the long-video
strategy picked in a list (the config's own, or another of `vdf.inference` that the model supports,
with that class's defaults), and shows the result side by side (RGB | colourised depth) with the
npz, the EXR frames (a zip) and the colourised depth video to download. Every file is written by
`vdf.io.DepthVideoWriter`, exactly as ``vdf predict`` writes it. A file that is not a readable
video gets a message on the page.

`DepthDemo` is the page's model and its one action, usable without a browser; `build_app` makes
the page; `launch` serves it. Gradio (6 or later: the theme is a ``launch`` argument) is the
optional ``demo`` extra (``pip install -e ".[demo]"``).
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from vdf.inference import (
    IndependentWindows,
    LongVideoStrategy,
    PerFrame,
    SegmentStitching,
    SlidingWindowContext,
    Streaming,
)
from vdf.io import DepthVideoWriter, OutputOptions, VideoInputError, VideoSource, encoder_available
from vdf.predictors.base import Predictor

#: Strategies offered beside the config's own, each with its class's defaults, and the predictor
#: call it needs (None: the clip forward every predictor has). KeyframeInterpolation is offered only
#: as a config's own (Depth Any Video's): its keyframe layout is that family's.
OTHER_STRATEGIES: tuple[tuple[type[LongVideoStrategy], str | None], ...] = (
    (PerFrame, None),
    (IndependentWindows, None),
    (Streaming, "stream_step"),
    (SegmentStitching, "denoise"),
    (SlidingWindowContext, "denoise"),
)

#: System fonts: the page loads nothing from outside the machine.
_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
_MONO_FONTS = ["ui-monospace", "monospace"]


def describe_strategy(strategy: LongVideoStrategy) -> str:
    """``ClassName(arg=value, ...)`` with the constructor arguments that differ from their defaults."""
    args = []
    for name, param in inspect.signature(type(strategy).__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = getattr(strategy, name, param.default)
        if param.default is param.empty or value != param.default:
            args.append(f"{name}={value!r}")
    return f"{type(strategy).__name__}({', '.join(args)})"


@dataclass
class StrategyChoice:
    """One entry of the page's strategy list."""

    label: str
    strategy: LongVideoStrategy


def strategy_choices(predictor: Predictor) -> list[StrategyChoice]:
    """The config's own strategy first, then each of `OTHER_STRATEGIES` of another class that the
    predictor supports."""
    own = predictor.strategy
    choices = [StrategyChoice(f"{describe_strategy(own)}: the config's", own)]
    for cls, needs in OTHER_STRATEGIES:
        if isinstance(own, cls) or (needs is not None and not hasattr(predictor, needs)):
            continue
        strategy = cls()
        choices.append(StrategyChoice(describe_strategy(strategy), strategy))
    return choices


def _weight_files(configs: Sequence[str | Path]) -> list[str]:
    """The weight files the configs' model sections name (``weights`` / ``<part>_weights``; later
    files win), for the page's note on random weights."""
    from vdf.api import _read
    from vdf.models.weights import is_weights_argument

    found: dict[str, Any] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if is_weights_argument(str(k)) and (v is None or isinstance(v, str)):
                    found[f"{key}.{k}"] = v
                else:
                    walk(v, f"{key}.{k}")

    for path in configs:
        walk(_read(path).get("model"), "model")
    return [v for v in found.values() if v]


def _safe_name(upload: str) -> str:
    name = re.sub(r"[^\w.-]+", "_", Path(upload).stem).lstrip(".")
    return name[:80] or "video"


@dataclass
class DemoResult:
    """What one run produced: the side-by-side video, the downloads, and a line for the page."""

    side_by_side: str | None = None
    downloads: list[str] = field(default_factory=list)
    message: str = ""


class DepthDemo:
    """The page's model and its one action, `run`.

    Args:
        configs: config files, layered as repeated ``--config`` options.
        ckpt_path: a ``vdf fit`` checkpoint (its predictor weights); None: the weights the config names.
        device: default CUDA when available, else the CPU.
        max_size: cap on the long side of the decoded frames (the outputs' size); the model's own
            resolution rule still decides the size it sees.
        output_dir: where each run's files go (a folder per run); default a new temporary folder.
    """

    def __init__(
        self,
        configs: Sequence[str | Path],
        ckpt_path: str | None = None,
        device: str | None = None,
        max_size: int | None = 1024,
        output_dir: str | Path | None = None,
    ):
        from vdf.api import load

        self.configs = [str(c) for c in configs]
        self.ckpt_path = ckpt_path
        self.predictor = load(self.configs, ckpt=ckpt_path, device=device)
        self.choices = strategy_choices(self.predictor)
        self.max_size = max_size
        self.output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="vdf-demo-"))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.exr = encoder_available("exr")
        self.random_weights = ckpt_path is None and not _weight_files(self.configs)
        self._lock = threading.Lock()  # one run at a time: the model is shared
        self._runs = 0

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.choices]

    def _frames(self, source: VideoSource) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(index, value (H,W), rgb (3,H,W) uint8)`` of each predicted frame; the frames fed to the
        strategy but not yet predicted wait in a queue (at most its window), as 8-bit RGB."""
        pending: deque[tuple[int, torch.Tensor]] = deque()
        predictor = self.predictor

        def frames() -> Iterator[torch.Tensor]:
            for index, frame in source.frames():
                pending.append((index, frame.clamp(0, 1).mul(255).round().to(torch.uint8)))
                yield frame.to(predictor.device)

        with torch.inference_mode():
            for out in predictor.stream(frames()):
                index, rgb = pending.popleft()
                if out is not None:
                    yield index, out.reshape(out.shape[-2:]).float().cpu(), rgb

    def run(
        self, video: str | None, strategy: str | None = None, progress: Callable[[int, int | None], None] | None = None
    ) -> DemoResult:
        """Predict ``video`` (a file path) with the strategy labelled ``strategy`` (default the
        config's own) and write the outputs. A file that is not a readable video, or an unknown
        strategy, raises `ValueError` with a message for the page."""
        if not video:
            raise ValueError("Upload a video first.")
        choice = next((c for c in self.choices if c.label == strategy), None) if strategy else self.choices[0]
        if choice is None:
            raise ValueError(f"unknown strategy {strategy!r}; the choices: {', '.join(self.labels)}")
        source = VideoSource(video, max_size=self.max_size)
        info = source.probe()  # VideoInputError: not a video, empty, corrupt...
        name = _safe_name(str(video))
        with self._lock:
            self._runs += 1
            out_dir = self.output_dir / f"run_{self._runs:04d}"
            options = OutputOptions(npz=True, exr=self.exr, depth_video=True, side_by_side=True)
            previous, self.predictor.strategy = self.predictor.strategy, choice.strategy
            try:
                with DepthVideoWriter(
                    out_dir, name, options, fps=info.fps or None, space=self.predictor.output_space
                ) as writer:
                    for index, value, rgb in self._frames(source):
                        writer.add(index, value.numpy(), rgb.numpy())
                        if progress is not None:
                            progress(writer.num_frames, info.num_frames)
                    if writer.num_frames == 0:
                        raise ValueError(f"{choice.label} gave no frame of this video a prediction")
                    paths = writer.finish(
                        {
                            "input": Path(video).name,
                            "config": self.configs,
                            "checkpoint": self.ckpt_path,
                            "strategy": choice.label,
                        }
                    )
            finally:
                self.predictor.strategy = previous
        downloads = [paths["npz"]]
        if "exr" in paths:
            downloads.append(shutil.make_archive(paths["exr"], "zip", root_dir=paths["exr"]))
        downloads.append(paths["depth_video"])
        message = (
            f"{writer.num_frames} frames at {info.out_width}×{info.out_height}, {choice.label}; "
            f"relative {self.predictor.output_space} (one scale and shift for the whole video)."
        )
        return DemoResult(paths["side_by_side"], downloads, message)


def _header(demo: DepthDemo) -> str:
    predictor = demo.predictor
    lines = [
        "# vdf: video depth",
        f"Model: `{' + '.join(demo.configs)}` ({type(predictor).__name__}"
        + (f", checkpoint `{demo.ckpt_path}`" if demo.ckpt_path else "")
        + f"), relative {predictor.output_space}. Upload a video, pick the long-video strategy, and run.",
    ]
    if demo.random_weights:
        lines.append(
            "**Note:** this model has random weights (neither a checkpoint nor a weights file in its config), "
            "so its depth is not meaningful."
        )
    return "\n\n".join(lines)


def build_app(demo: DepthDemo):
    """The page (a ``gradio.Blocks``) around ``demo``."""
    import gradio as gr

    def predict(video, strategy, progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for progress)
        def report(done: int, total: int | None) -> None:
            progress((done, total) if total else None, desc="frames", unit="frames")

        try:
            result = demo.run(video, strategy, report)
        except VideoInputError as error:
            return None, None, f"**This file cannot be read as a video:** {error.reason}."
        except ValueError as error:
            return None, None, f"**{error}**"
        except Exception as error:  # shown on the page; the traceback goes to the server's log
            traceback.print_exc(file=sys.stderr)
            return None, None, f"**The model failed:** {type(error).__name__}: {error}"
        return result.side_by_side, result.downloads, result.message

    with gr.Blocks(title="vdf demo", analytics_enabled=False) as app:
        gr.Markdown(_header(demo))
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video", sources=["upload"], elem_id="vdf-video")
                strategy = gr.Dropdown(
                    demo.labels,
                    value=demo.labels[0],
                    label="Long-video strategy",
                    info="the config's own, or another of vdf.inference that this model supports (its class's defaults)",
                    elem_id="vdf-strategy",
                )
                button = gr.Button("Estimate depth", variant="primary", elem_id="vdf-run")
            with gr.Column():
                result = gr.Video(label="RGB | depth", interactive=False, elem_id="vdf-result")
                downloads = gr.File(
                    label="Downloads", file_count="multiple", interactive=False, elem_id="vdf-downloads"
                )
                status = gr.Markdown(elem_id="vdf-status")
        button.click(predict, [video, strategy], [result, downloads, status], api_name="predict")
    return app


def launch(app, demo: DepthDemo, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve ``app`` on ``host:port``; ``block=False`` returns at once (the server runs in a thread:
    ``app.close()`` stops it)."""
    import gradio as gr

    theme = gr.themes.Default(font=_FONTS, font_mono=_MONO_FONTS)
    return app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        allowed_paths=[str(demo.output_dir)],
        theme=theme,
        quiet=True,
    )


def main(args: list[str] | None = None) -> None:
    """``vdf demo --config CONFIG [--config OVERLAY ...] [options]``."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(
        prog="vdf demo", description="A local web page that runs a vdf model on an uploaded video (Gradio)."
    )
    parser.add_argument(
        "--config", type=str, action="append", required=True, help="model config (repeat to layer overlays)"
    )
    parser.add_argument("--ckpt_path", type=Optional[str], default=None, help="a vdf fit checkpoint")
    parser.add_argument("--host", type=str, default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("--device", type=Optional[str], default=None, help="cpu, cuda or cuda:N (default: CUDA if any)")
    parser.add_argument(
        "--max_size", type=Optional[int], default=1024, help="cap on the long side of the decoded frames"
    )
    parser.add_argument(
        "--output_dir", type=Optional[str], default=None, help="where runs are written (default: a temp folder)"
    )
    cfg = parser.parse_args(args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('vdf demo needs Gradio: pip install -e ".[demo]"') from None
    demo = DepthDemo(cfg.config, cfg.ckpt_path, cfg.device, cfg.max_size, cfg.output_dir)
    app = build_app(demo)
    try:
        launch(app, demo, cfg.host, cfg.port, block=False)
    except OSError as error:
        raise ValueError(f"cannot serve on {cfg.host}:{cfg.port} ({error})") from None
    print(f"vdf demo: http://{cfg.host}:{cfg.port}/ (runs written to {demo.output_dir}; Ctrl-C stops)", file=sys.stderr)
    app.block_thread()
