"""Golden fixtures for Depth Any Video from its official inference code (``DAVPipeline`` as ``run_infer.py`` drives it).

Usage::

    pip install easydict   # imported at the top of the official run_infer.py (not needed by this script)
    python scripts/fidelity/depthanyvideo.py --official /path/to/DepthAnyVideo   # a Nightmare-n/DepthAnyVideo checkout
    python -m pytest tests/test_fidelity_depthanyvideo.py -q -p no:cacheprovider  # vdf against the fixtures

What it does: builds two tiny random UNets from the official class
``dav.models.UNetSpatioTemporalRopeConditionModel`` (``unet``: 8 input channels; ``unet_interp``:
16; block channels (32, 32), one layer per block, cross-attention width 1024 because the
pipeline feeds ``zeros(B, 1, 1024)``), ``FlowMatchEulerDiscreteScheduler(shift=3)`` and vdf's
shipped tiny VAE (``vdf/models/assets/tiny_svd_vae``, /2 downsampling; not copied), assembles the
official ``DAVPipeline`` from them and runs what ``run_infer.py`` runs on a video:

1. at most ``(num_interp_frames + 2 - num_overlap_frames) * (num_frames // 2)`` frames are read
   (192 with the defaults; ``run_infer.py`` passes this to ``img_utils.read_video``);
2. ``img_utils.imresize_max(frames, max_resolution)`` then ``img_utils.imcrop_multi(frames)``;
3. ``frame.transpose(2, 0, 1) / 255.0`` stacked into one tensor;
4. ``pipe(image, num_frames, num_overlap_frames, num_interp_frames, decode_chunk_size,
   num_inference_steps)`` with ``run_infer.py``'s defaults (32, 6, 16, 16, 3 steps) unless a
   case says otherwise.

Differences from a real run, all needed to compute on a CPU in float32: no CUDA autocast, and the
pipeline's ``self.vae.to(dtype=torch.float16)`` is neutralised (the VAE stays float32). Every
``torch.randn_like`` draw (the initial noise of the keyframe pass, then of each interpolation
window, in order) is recorded as ``noise.<k>``; the keyframe positions the pipeline passes to
``single_infer`` are recorded to name the frames it outputs.

Written under ``tests/fixtures/fidelity/depthanyvideo/``:

- ``unet/``, ``unet_interp/``, ``scheduler/``: the Hugging Face repo's layout
  (``save_pretrained``; weights rounded to float16 and stored as float16);
- per pipeline case ``<case>.safetensors`` (``video``: the frames as read, ``(T,3,H,W)`` uint8 at
  the raw size; the noise draws; ``disparity``: the official output ``(n,h,w)`` at the cropped
  size; ``frames``: the indices of the frames it belongs to) and ``<case>.json`` (settings, the
  crop box in the raw frame, the keyframes);
- ``preprocessing.safetensors`` / ``.json``: random uint8 frames of odd sizes (``input.<i>``) and
  what ``imresize_max`` + ``imcrop_multi`` make of them (``output.<i>``) at the listed
  ``max_resolution``.

Cases: ``single`` (8 frames: one joint pass of the base UNet), ``keyframes_40`` and
``keyframes_47`` (keyframes [0, 17, 12, 29] and [0, 17, 12, 29, 24, 41]: one joint keyframe pass,
then 2 and 3 interpolation windows blended over 4 frames; outputs frames 1..28 and 1..40),
``capped`` (14 frames with num_frames 6, interp 4, overlap 3: the run script reads 9 frames,
keyframes [0, 5, 3, 8], windows blended over 1 frame, outputs frames 1..7). Raw frames are 35x38,
cropped by the official preprocessing to 32x32 at offset (1, 3).

The script is deterministic (fixed seeds, one CPU thread); rerun it to regenerate the fixtures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, ROOT, import_official, make_video, recording, round_to_fp16_, save_case

OUT = FIXTURES / "depthanyvideo"
TINY_VAE = ROOT / "vdf" / "models" / "assets" / "tiny_svd_vae"

# run_infer.py's defaults.
STEPS, NUM_FRAMES, INTERP, OVERLAP, DECODE_CHUNK, MAX_RESOLUTION = 3, 32, 16, 6, 16, 1024
RAW_HEIGHT, RAW_WIDTH = 35, 38

CASES = {
    # name: (frames in the video, num_frames, num_interp_frames, num_overlap_frames)
    "single": (8, NUM_FRAMES, INTERP, OVERLAP),
    "keyframes_40": (40, NUM_FRAMES, INTERP, OVERLAP),
    "keyframes_47": (47, NUM_FRAMES, INTERP, OVERLAP),
    "capped": (14, 6, 4, 3),
}

# Preprocessing check: (height, width, max_resolution).
PREPROCESSING = [
    (35, 38, 1024),
    (37, 75, 1024),
    (100, 61, 64),
    (45, 129, 100),
    (250, 97, 97),
    (64, 64, 48),
    (71, 200, 150),
]


def build_unet(dav_models, in_channels: int, seed: int):
    torch.manual_seed(seed)
    unet = dav_models.UNetSpatioTemporalRopeConditionModel(
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        cross_attention_dim=1024,
        transformer_layers_per_block=1,
        num_attention_heads=(2, 2),
        num_frames=25,
    )
    # Redrawn weights (at each tensor's own scale) so that zero-initialised layers hide no path.
    return round_to_fp16_(unet, seed=seed)


def build_pipeline(official: Path):
    """The official pipeline on tiny modules; the modules are saved in the Hub layout and reloaded as run_infer.py does."""
    from diffusers import AutoencoderKLTemporalDecoder, FlowMatchEulerDiscreteScheduler

    dav_models = import_official(official, "dav.models")
    dav_pipelines = import_official(official, "dav.pipelines")

    OUT.mkdir(parents=True, exist_ok=True)
    for name, channels, seed in (("unet", 8, 1), ("unet_interp", 16, 2)):
        unet = build_unet(dav_models, channels, seed)
        unet.to(torch.float16).save_pretrained(OUT / name)
    FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0).save_pretrained(OUT / "scheduler")

    # As run_infer.py loads them (float32 on this CPU).
    load = dict(torch_dtype=torch.float32)
    unet = dav_models.UNetSpatioTemporalRopeConditionModel.from_pretrained(str(OUT / "unet"), **load)
    unet_interp = dav_models.UNetSpatioTemporalRopeConditionModel.from_pretrained(str(OUT / "unet_interp"), **load)
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(OUT / "scheduler"))
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE), **load)

    # DAVPipeline.__call__ starts with self.vae.to(dtype=torch.float16) (for CUDA autocast); keep float32.
    to = vae.to

    def to_without_dtype(*args, **kwargs):
        kwargs.pop("dtype", None)
        return to(*[a for a in args if not isinstance(a, torch.dtype)], **kwargs)

    vae.to = to_without_dtype
    pipe = dav_pipelines.DAVPipeline(vae=vae, unet=unet, unet_interp=unet_interp, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(pipe, img_utils, name: str, frames: int, num_frames: int, interp: int, overlap: int, seed: int) -> None:
    video = make_video(frames, RAW_HEIGHT, RAW_WIDTH, seed)

    # run_infer.py: the frames read, the preprocessing, the tensor.
    max_frames = (interp + 2 - overlap) * (num_frames // 2)
    read = list(video[:max_frames])
    image = img_utils.imcrop_multi(img_utils.imresize_max(read, MAX_RESOLUTION))
    image_tensor = torch.from_numpy(np.ascontiguousarray([_img.transpose(2, 0, 1) / 255.0 for _img in image]))

    positions: list[list[int]] = []
    single_infer = pipe.single_infer

    def record_positions(rgb, position_ids=None, num_inference_steps=None):
        positions.append(list(range(rgb.shape[1])) if position_ids is None else position_ids[0].tolist())
        return single_infer(rgb, position_ids, num_inference_steps=num_inference_steps)

    pipe.single_infer = record_positions
    try:
        torch.manual_seed(seed)  # run_infer.py's seed_all: randn_like draws from the global RNG
        with torch.no_grad(), recording([(torch, "randn_like")]) as log:
            out = pipe(
                image_tensor,
                num_frames=num_frames,
                num_overlap_frames=overlap,
                num_interp_frames=interp,
                decode_chunk_size=DECODE_CHUNK,
                num_inference_steps=STEPS,
            )
    finally:
        del pipe.single_infer

    n = len(read)
    if n <= num_frames or n <= interp + 2 - overlap:
        kept = list(range(n))
        keyframes: list[int] = []
    else:
        keyframes = positions[0]
        kept = list(range(keyframes[0] + 1, keyframes[-1]))
    disparity = torch.from_numpy(out.disparity)
    assert disparity.shape[0] == len(kept), (disparity.shape, len(kept))
    crop_h, crop_w = image[0].shape[:2]
    top, left = (RAW_HEIGHT - crop_h) // 2, (RAW_WIDTH - crop_w) // 2
    assert np.array_equal(image[0], video[0, top : top + crop_h, left : left + crop_w])
    clamped = float(((disparity == 0) | (disparity == 1)).float().mean())
    print(
        f"{name}: outputs {kept[0]}..{kept[-1]} of {frames} frames, keyframes {keyframes}, "
        f"disparity in [{float(disparity.min()):.3f}, {float(disparity.max()):.3f}], {clamped:.1%} clamped"
    )

    tensors = {
        "video": torch.from_numpy(video).permute(0, 3, 1, 2).contiguous(),
        **log.tensors(),
        "disparity": disparity,
        "frames": torch.tensor(kept, dtype=torch.int64),
    }
    meta = {
        "frames": frames,
        "frames_read": n,
        "raw_size": [RAW_HEIGHT, RAW_WIDTH],
        "crop_box": [top, left, crop_h, crop_w],
        "max_resolution": MAX_RESOLUTION,
        "num_frames": num_frames,
        "num_interp_frames": interp,
        "num_overlap_frames": overlap,
        "decode_chunk_size": DECODE_CHUNK,
        "denoise_steps": STEPS,
        "keyframes_sorted": sorted(keyframes),
        "noise_shapes": [list(t.shape) for t in log.draws],
        "seed": seed,
        "vae": str(TINY_VAE.relative_to(ROOT)),
    }
    save_case(OUT, name, tensors, meta)


def preprocessing_case(img_utils) -> None:
    g = np.random.default_rng(0)
    tensors, sizes = {}, []
    for i, (h, w, max_resolution) in enumerate(PREPROCESSING):
        frame = g.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        out = img_utils.imcrop_multi(img_utils.imresize_max([frame], max_resolution))[0]
        tensors[f"input.{i}"] = torch.from_numpy(frame).permute(2, 0, 1).contiguous()
        tensors[f"output.{i}"] = torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).contiguous()
        sizes.append([h, w, max_resolution, *out.shape[:2]])
    save_case(
        OUT,
        "preprocessing",
        tensors,
        {"cases": sizes, "multiple": 32, "columns": ["height", "width", "max_resolution", "out_height", "out_width"]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="local checkout of Nightmare-n/DepthAnyVideo")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = build_pipeline(Path(args.official))
    img_utils = import_official(args.official, "dav.utils.img_utils")
    for seed, (name, settings) in enumerate(CASES.items(), start=10):
        run_case(pipe, img_utils, name, *settings, seed=seed)
    preprocessing_case(img_utils)


if __name__ == "__main__":
    main()
