import glob
import os

import torch
from recipes import tiny_args
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vdf.callbacks.visualization import colorize
from vdf.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_colorize_uses_one_range_per_clip_and_blacks_out_invalid_pixels():
    disparity = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])
    valid = torch.ones_like(disparity, dtype=torch.bool)
    valid[1, 0, 0, 0] = False
    rgb = colorize(disparity, valid)
    assert rgb.shape == (2, 3, 2, 2) and rgb.min() >= 0 and rgb.max() <= 1
    # Frame 0 is the clip's minimum and frame 1 its maximum: different colours (no per-frame rescale).
    assert not torch.allclose(rgb[0, :, 1, 1], rgb[1, :, 1, 1])
    assert torch.equal(rgb[1, :, 0, 0], torch.zeros(3))


def test_fit_logs_scalars_and_a_depth_grid_to_tensorboard(in_tmp_cwd):
    cli = main(["fit", *tiny_args("dav2"), "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"])
    events = EventAccumulator(glob.glob(os.path.join(cli.trainer.log_dir, "events.out.tfevents.*"))[0])
    events.Reload()
    assert {"train/loss", "val/abs_rel", "val/synthetic_world/delta1"} <= set(events.Tags()["scalars"])
    assert "val/depth" in events.Tags()["images"]
    image = events.Images("val/depth")[0]
    # Rows are frames (up to 4 of a 4-frame clip), columns RGB | GT | prediction of 32x48 frames.
    assert (image.height, image.width) == (4 * 32, 3 * 48)
    # The depth video of the same clip: an animated GIF with every frame, RGB | GT | prediction.
    import io

    from PIL import Image

    assert "val/depth_video" in events.Tags()["images"]
    gif = Image.open(io.BytesIO(events.Images("val/depth_video")[0].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.size == (3 * 48, 32)
