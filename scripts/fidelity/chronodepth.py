"""Golden fixtures for ChronoDepth from its official inference code (``run_infer.py``, ``infer_mode="ours"``).

Usage::

    pip install easydict mediapy   # imported at the top of the official run_infer.py
    python scripts/fidelity/chronodepth.py --official /path/to/ChronoDepth   # a jiahao-shao1/ChronoDepth checkout
    python -m pytest tests/test_fidelity_chronodepth.py -q                    # vdf against the fixtures

What it does: builds a tiny random ChronoDepth UNet (the official
``DiffusersUNetSpatioTemporalConditionModelChronodepth``: 8 input channels, added time ids,
block channels (32, 32), one layer per block), a tiny CLIP vision tower with SVD's
``CLIPImageProcessor``, SVD's ``EulerDiscreteScheduler`` and vdf's shipped tiny VAE
(``vdf/models/assets/tiny_svd_vae``, /2 downsampling; not copied), assembles the official
``ChronoDepthPipeline`` from them in memory, and runs the official ``run_infer.run_pipeline``
(resize rule, pipeline, resize back and clamp) with ``run_infer``'s defaults: 5 steps, windows of
10 frames (``n_tokens``), 5 new frames per window (``chunk_size``), ``sigma_epsilon=-4``,
``decode_chunk_size=8``, fps 7, motion bucket 127, noise augmentation 0.

Every random draw the official code makes is recorded in order (``noise.<k>``, with its source in
the case's JSON ``noise_sources``): ``generator`` draws (the initial noise of each window, after
one noise-augmentation draw of the whole video that strength 0 multiplies away; that one is
recorded by shape only) and ``posterior`` draws (the VAE posterior samples of the RGB latents,
taken from the global RNG in chunks of 5 frames).

Written under ``tests/fixtures/fidelity/chronodepth/``:

- ``unet/``, ``image_encoder/``, ``feature_extractor/``, ``scheduler/``: the tiny modules in the
  official on-disk layout (diffusers/transformers folders; weights rounded to float16 and stored
  as float16);
- per case ``<case>.safetensors`` (``video``: the frames given to ``run_pipeline``, uint8; the
  noise draws; ``depth``: the official output ``(T,H,W)`` at the input size; for the resized case
  also ``depth_processing``: the pipeline's output ``(T,1,h,w)`` before the resize back) and
  ``<case>.json`` (settings, draw sources, and for the resized case the official resize rule's
  output size for a list of input sizes).

Cases: ``one_window`` (5 frames at 128x64, one window), ``four_windows`` (23 frames at 64x64:
windows [0,10), [5,15), [10,20), [13,23), the last with 7 context frames), ``resized`` (12 frames
at 80x100 with ``max_res=64``: the rounded long side 128 exceeds the cap, so the frame is scaled
to a long side of 64 and then rounded -> 64x64; two
windows, the second with 8 context frames; the frames are handed to the official resize as
float32 so that it does not round the resized frames to 8 bits).

The script is deterministic (fixed seeds, one CPU thread); rerun it to regenerate the fixtures.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, ROOT, import_official, make_video, recording, round_to_fp16_, save_case

OUT = FIXTURES / "chronodepth"
TINY_VAE = ROOT / "vdf" / "models" / "assets" / "tiny_svd_vae"

# run_infer.py's defaults.
STEPS, N_TOKENS, CHUNK_SIZE, SIGMA_EPSILON, DECODE_CHUNK, MAX_RES = 5, 10, 5, -4.0, 8, 1024

CASES = {
    # name: (frames, height, width, max_res, give the official resize float32 frames)
    "one_window": (5, 128, 64, MAX_RES, False),
    "four_windows": (23, 64, 64, MAX_RES, False),
    "resized": (12, 80, 100, 64, True),
}

# Input sizes whose official processing size the resized case records (run_infer's max_res 1024).
RESOLUTION_TABLE_SIZES = [
    (436, 1024),
    (480, 640),
    (375, 1242),
    (1080, 1920),
    (720, 1280),
    (576, 768),
    (100, 100),
    (31, 33),
    (96, 160),
    (1024, 1024),
    (2000, 900),
    (540, 960),
    (352, 1216),
    (968, 1296),
    (1036, 1920),
    (32, 31),
]


def svd_scheduler():
    """SVD-img2vid-xt's scheduler configuration."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )


def build_pipeline(official: Path):
    """The official pipeline on tiny modules; also saves them in the official layout."""
    from diffusers import AutoencoderKLTemporalDecoder
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    pipeline_module = import_official(official, "chronodepth.chronodepth_pipeline")
    unet_module = import_official(official, "chronodepth.unet_chronodepth")

    torch.manual_seed(0)
    unet = unet_module.DiffusersUNetSpatioTemporalConditionModelChronodepth(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 32),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        layers_per_block=1,
        cross_attention_dim=32,
        transformer_layers_per_block=1,
        num_attention_heads=(2, 2),
        num_frames=25,
    )
    # Redrawn weights (kept at each tensor's own scale) so that zero-initialised layers do not hide paths.
    round_to_fp16_(unet, seed=1)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            patch_size=32,
            image_size=224,
            projection_dim=32,
        )
    )
    round_to_fp16_(clip, seed=2)
    feature_extractor = CLIPImageProcessor()  # OpenAI CLIP mean/std, as SVD's feature_extractor
    scheduler = svd_scheduler()
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE))

    OUT.mkdir(parents=True, exist_ok=True)
    unet.to(torch.float16).save_pretrained(OUT / "unet")
    clip.to(torch.float16).save_pretrained(OUT / "image_encoder")
    unet.float()
    clip.float()
    feature_extractor.save_pretrained(OUT / "feature_extractor")
    scheduler.save_pretrained(OUT / "scheduler")

    pipe = pipeline_module.ChronoDepthPipeline(
        vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )
    pipe.n_tokens = N_TOKENS
    pipe.chunk_size = CHUNK_SIZE
    pipe.set_progress_bar_config(disable=True)
    return pipe, pipeline_module


def official_size(video_utils, height: int, width: int) -> list[int] | None:
    """The size ``resize_max_res`` (max_res 1024) resizes a ``height x width`` frame to; None when
    it fails (a side under 32 pixels rounds to 0)."""
    import cv2

    try:
        return list(video_utils.resize_max_res(np.zeros((1, height, width, 3), np.uint8), MAX_RES).shape[1:3])
    except cv2.error:
        return [None, None]


def run_case(
    pipe,
    pipeline_module,
    run_infer,
    name: str,
    frames: int,
    height: int,
    width: int,
    max_res: int,
    float_input: bool,
    seed: int,
) -> None:
    from diffusers.models.autoencoders import vae as vae_module
    from diffusers.pipelines.stable_video_diffusion import pipeline_stable_video_diffusion as svd_module

    video = make_video(frames, height, width, seed)
    cfg = types.SimpleNamespace(
        max_res=max_res,
        denoise_steps=STEPS,
        decode_chunk_size=DECODE_CHUNK,
        infer_mode="ours",
        sigma_epsilon=SIGMA_EPSILON,
    )

    # Tag each random source before recording, so the fixture says which RNG drew what.
    sources: list[str] = []

    def tagged(fn, tag):
        def draw(*args, **kwargs):
            sources.append(tag)
            return fn(*args, **kwargs)

        return draw

    originals = {
        (pipeline_module, "randn_tensor"): "augmentation",  # __call__'s noise augmentation (x 0)
        (svd_module, "randn_tensor"): "generator",  # prepare_latents: each window's initial noise
        (vae_module, "randn_tensor"): "posterior",  # DiagonalGaussianDistribution.sample (global RNG)
    }
    saved = {key: getattr(*key) for key in originals}
    processed: list[torch.Tensor] = []
    infer = pipe.single_infer_ours

    def capture(*args, **kwargs):
        out = infer(*args, **kwargs)
        processed.append(out.detach().cpu().clone())
        return out

    pipe.single_infer_ours = capture
    try:
        for (owner, attr), tag in originals.items():
            setattr(owner, attr, tagged(saved[(owner, attr)], tag))
        torch.manual_seed(seed)  # run_infer's seed_all: the global RNG draws the posterior samples
        generator = torch.Generator(device="cpu").manual_seed(seed)
        with recording(list(originals)) as log:
            given = video.astype(np.float32) if float_input else video
            depth = run_infer.run_pipeline(pipe, cfg, given, generator, torch.device("cpu"))
    finally:
        for key, fn in saved.items():
            setattr(*key, fn)
        del pipe.single_infer_ours

    tensors: dict[str, torch.Tensor] = {
        "video": torch.from_numpy(video).permute(0, 3, 1, 2).contiguous(),
        "depth": depth,
    }
    kept_sources, augmentation_shapes = [], []
    for draw, tag in zip(log.draws, sources):
        if tag == "augmentation":
            augmentation_shapes.append(list(draw.shape))  # multiplied by noise_aug_strength = 0
            continue
        tensors[f"noise.{len(kept_sources)}"] = draw
        kept_sources.append(tag)
    processing = tuple(processed[0].shape[-2:])
    if processing != (height, width):
        tensors["depth_processing"] = processed[0]
    meta = {
        "frames": frames,
        "height": height,
        "width": width,
        "processing_size": list(processing),
        "max_res": max_res,
        "float_input": float_input,
        "seed": seed,
        "denoise_steps": STEPS,
        "n_tokens": N_TOKENS,
        "chunk_size": CHUNK_SIZE,
        "sigma_epsilon": SIGMA_EPSILON,
        "decode_chunk_size": DECODE_CHUNK,
        "noise_sources": kept_sources,
        "augmentation_draws": augmentation_shapes,
        "vae": str(TINY_VAE.relative_to(ROOT)),
    }
    if name == "resized":
        video_utils = sys.modules["src.utils.video_utils"]
        meta["resolution_table"] = [[h, w, *official_size(video_utils, h, w)] for h, w in RESOLUTION_TABLE_SIZES]
    save_case(OUT, name, tensors, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="local checkout of jiahao-shao1/ChronoDepth")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe, pipeline_module = build_pipeline(Path(args.official))
    run_infer = import_official(args.official, "run_infer")
    for seed, (name, (frames, height, width, max_res, float_input)) in enumerate(CASES.items(), start=10):
        run_case(pipe, pipeline_module, run_infer, name, frames, height, width, max_res, float_input, seed)


if __name__ == "__main__":
    main()
