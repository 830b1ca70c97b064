"""Colourised depth to TensorBoard: RGB | ground truth | prediction, as an image grid of a few
frames and as a short depth video of the whole clip."""

from __future__ import annotations

from typing import Any

import lightning as L
import matplotlib
import torch


def colorize(disparity: torch.Tensor, valid: torch.Tensor | None = None, cmap: str = "Spectral_r") -> torch.Tensor:
    """``(T,1,H,W)`` disparity -> ``(T,3,H,W)`` RGB in [0,1], one min-max over the whole clip.

    One normalisation per clip (not per frame) so that flicker in scale stays visible.
    Pixels outside ``valid`` are black.
    """
    d = disparity.detach().float().cpu()
    m = torch.ones_like(d, dtype=torch.bool) if valid is None else valid.detach().cpu().bool()
    if m.any():
        lo, hi = d[m].min(), d[m].max()
    else:
        lo, hi = d.min(), d.max()
    x = ((d - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    lut = torch.tensor(matplotlib.colormaps[cmap](torch.linspace(0, 1, 256).numpy())[:, :3], dtype=torch.float32)
    rgb = lut[(x[:, 0] * 255).round().long()].permute(0, 3, 1, 2)
    return rgb * m.float()


def gif_summary(tag: str, frames: torch.Tensor, fps: float):
    """A TensorBoard image summary holding an animated GIF of ``frames`` ``(T,3,H,W)`` in [0,1].

    TensorBoard's image dashboard plays animated GIFs; this is what ``add_video`` writes, without
    its moviepy dependency (Pillow encodes the GIF).
    """
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a) for a in array]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    h, w = frames.shape[-2:]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=buffer.getvalue())
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class DepthVisualizer(L.Callback):
    """Logs the first validation clip of every ``every_n_epochs`` epoch to TensorBoard.

    ``val/depth`` is an image grid: rows are frames (up to ``max_frames``, spread over the clip);
    columns are the RGB frame, the ground-truth disparity and the predicted disparity, each
    coloured with one clip-wide range. ``val/depth_video`` plays the clip's first
    ``max_video_frames`` frames with the same three columns (an animated GIF at ``video_fps``;
    0 frames turns it off).
    """

    def __init__(
        self, every_n_epochs: int = 1, max_frames: int = 4, max_video_frames: int = 32, video_fps: float = 8.0
    ):
        self.every_n_epochs = every_n_epochs
        self.max_frames = max_frames
        self.max_video_frames = max_video_frames
        self.video_fps = video_fps

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: dict[str, Any],
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if trainer.current_epoch % self.every_n_epochs or not isinstance(outputs, dict):
            return
        experiment = getattr(trainer.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_image"):
            return
        video, depth, valid = batch["video"][0], batch["depth"][0], batch["valid"][0]
        pred = outputs["disparity"][0]
        t = video.shape[0]
        frames = torch.linspace(0, t - 1, min(t, self.max_frames)).round().long()
        gt = torch.where(valid & (depth > 0), 1.0 / depth.clamp_min(1e-6), torch.zeros_like(depth))
        columns = [video.detach().float().cpu().clamp(0, 1), colorize(gt, valid), colorize(pred)]
        rows = [torch.cat([c[i] for c in columns], dim=-1) for i in frames.tolist()]
        grid = torch.cat(rows, dim=-2)
        experiment.add_image("val/depth", grid, global_step=trainer.global_step)
        writer = getattr(experiment, "_get_file_writer", None)
        # Lightning's stand-in logger (fast_dev_run) answers every call with None: no file writer.
        writer = writer() if writer is not None else None
        if self.max_video_frames > 1 and t > 1 and writer is not None:
            clip = torch.cat([c[: self.max_video_frames] for c in columns], dim=-1)
            writer.add_summary(gif_summary("val/depth_video", clip, self.video_fps), trainer.global_step)
