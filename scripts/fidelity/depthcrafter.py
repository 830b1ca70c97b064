"""Golden fixtures of DepthCrafter's official inference, for ``tests/test_fidelity_depthcrafter.py``.

Usage::

    python scripts/fidelity/depthcrafter.py --official /path/to/DepthCrafter
    python scripts/fidelity/depthcrafter.py --official /path/to/DepthCrafter --output /tmp/dc  # elsewhere
    python scripts/fidelity/depthcrafter.py --official /path/to/DepthCrafter --float16  # float16 check

``--official`` is a local checkout of Tencent/DepthCrafter. The script builds tiny random networks
(an SVD UNet of DepthCrafter's class with 8 input channels and added time ids, a CLIP vision tower
with projection, SVD's Euler scheduler; the VAE is vdf's shipped tiny SVD VAE), rounds their
weights to float16 and writes them in the official on-disk layout::

    unet/                 DepthCrafter's UNet folder (diffusers, float16 weights)
    image_encoder/        SVD's CLIP vision tower (transformers, float16 weights)
    feature_extractor/    SVD's CLIPImageProcessor
    scheduler/            SVD's EulerDiscreteScheduler configuration

Then it runs the official inference on fixed synthetic videos, on the CPU in float32:
``DepthCrafterInference.infer`` (seed, the pipeline call with ``run.py``'s arguments, channel mean,
video-wide min-max, ``.npz`` output) around ``DepthCrafterPipeline.__call__``, with video decoding
and mp4 writing replaced (the frames are handed over directly; nothing is encoded), and records
every tensor the pipeline draws from ``randn_tensor`` in drawing order. Each case is written as
``<case>.safetensors`` (``video`` (T,H,W,3) uint8, the frames as 8-bit video decodes them, which
the official code receives divided by 255; ``noise.<k>``; ``depth`` (T,H,W) the official output)
and ``<case>.json``. ``segments`` (17 frames, window 8, overlap 3) has three segments, the last
one short, and a last decode chunk of one frame.

It also records the frame size the official ``read_video_frames`` asks the decoder for, for many
input sizes (``resolution.json``), so the test can check vdf's resolution rule against it.

Everything is deterministic (fixed seeds, CPU, float32, one thread): rerunning rewrites identical
files. ``--float16`` instead runs the official pipeline in float16, as ``inference.py`` loads it,
and vdf's shipped configuration (float16 networks) on the same draws, and prints how far apart
they are (nothing is written).
Missing decoders of the official code (``decord``, ``mediapy``) are replaced by stubs, since
video files are not read or written here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIXTURES, ROOT, import_official, recording, round_to_fp16_, save_case

TINY_VAE = ROOT / "vdf" / "models" / "assets" / "tiny_svd_vae"

#: SVD-img2vid-xt's scheduler_config.json.
SVD_SCHEDULER = dict(
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
    rescale_betas_zero_snr=False,
    final_sigmas_type="zero",
)

#: The cases: frames, size, the official ``window_size``/``overlap`` arguments (``run.py``'s
#: defaults for the one-segment case), steps as ``run.py`` (5), seed as ``run.py`` (42).
CASES = {
    "one_segment": dict(frames=6, height=64, width=64, window_size=110, overlap=25, steps=5, seed=42, episode=0),
    "segments": dict(frames=17, height=64, width=64, window_size=8, overlap=3, steps=5, seed=42, episode=1),
}

#: Input sizes for the resolution table (height, width), with the official ``max_res`` values.
RESOLUTION_SIZES = [
    (32, 48),
    (64, 64),
    (95, 97),
    (100, 180),
    (240, 320),
    (270, 480),
    (288, 512),
    (360, 640),
    (375, 1242),
    (436, 1024),
    (480, 640),
    (480, 854),
    (540, 960),
    (576, 1024),
    (720, 1280),
    (968, 1296),
    (1036, 1920),
    (1080, 1920),
    (1080, 1080),
    (1200, 1600),
    (1440, 2560),
    (1920, 1080),
    (2160, 3840),
    (3000, 4000),
    (96, 160),
    (160, 96),
    (1024, 1025),
    (1056, 1000),
]
MAX_RES = [1024, 512]


def stub_io_modules() -> None:
    """Stand-ins for the official code's video decoder and writer when they are not installed."""
    if "decord" not in sys.modules:
        try:
            import decord  # noqa: F401
        except ImportError:
            stub = types.ModuleType("decord")
            stub.VideoReader = None  # replaced per call below
            stub.cpu = lambda index=0: None
            sys.modules["decord"] = stub
    if "mediapy" not in sys.modules:
        try:
            import mediapy  # noqa: F401
        except ImportError:
            sys.modules["mediapy"] = types.ModuleType("mediapy")


def tiny_unet(unet_class):
    """DepthCrafter's UNet class at toy size: 8 input channels, added time ids, per-frame CLIP width 32."""
    torch.manual_seed(1)  # the redraw below takes each tensor's scale from this initialisation
    unet = unet_class(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=24,
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(2, 4),
        num_frames=25,
    )
    return round_to_fp16_(unet.eval(), seed=1)


def tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    # SVD's pipeline resizes every frame to 224 x 224 whatever the tower, so the tower takes 224.
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=32,
        image_size=224,
        projection_dim=32,
    )
    torch.manual_seed(2)
    return round_to_fp16_(CLIPVisionModelWithProjection(config).eval(), seed=2)


def write_weights(folder: Path, unet, clip, processor, scheduler) -> None:
    """The tiny networks in the official layout, weights stored as float16 (their values already are)."""
    import copy

    copy.deepcopy(unet).half().save_pretrained(folder / "unet", safe_serialization=True)
    copy.deepcopy(clip).half().save_pretrained(folder / "image_encoder", safe_serialization=True)
    processor.save_pretrained(folder / "feature_extractor")
    scheduler.save_pretrained(folder / "scheduler")


def synthetic_video(frames: int, height: int, width: int, episode: int) -> np.ndarray:
    """``(T,H,W,3)`` uint8: a synthetic-world episode, quantised to 8 bits as decoded video is."""
    from vdf.data.datasets.synthetic import SyntheticWorld

    world = SyntheticWorld(num_episodes=4, num_frames=frames, height=height, width=width, seed=7)
    video = world.load(episode, list(range(frames)))["video"]  # (T,3,H,W)
    return (video.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def run_official(official: dict, pipe, name: str, spec: dict) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
    """``DepthCrafterInference.infer`` on a case's video: (video uint8, official depth, noise draws)."""
    inference, ppl, svd = official["inference"], official["ppl"], official["svd"]
    video_u8 = synthetic_video(spec["frames"], spec["height"], spec["width"], spec["episode"])
    video = video_u8.astype("float32") / 255.0  # as read_video_frames converts decoded frames
    runner = object.__new__(inference.DepthCrafterInference)  # its __init__ downloads and loads weights
    runner.pipe = pipe

    def read_video_frames(video_path, process_length, target_fps, max_res, dataset="open"):
        return video, 30

    saved = (inference.read_video_frames, inference.save_video)
    inference.read_video_frames = read_video_frames
    inference.save_video = lambda *args, **kwargs: None
    try:
        with tempfile.TemporaryDirectory() as out_dir, recording([(ppl, "randn_tensor"), (svd, "randn_tensor")]) as log:
            runner.infer(
                f"{name}.mp4",
                num_denoising_steps=spec["steps"],
                guidance_scale=1.0,
                save_folder=out_dir,
                window_size=spec["window_size"],
                process_length=-1,
                overlap=spec["overlap"],
                max_res=1024,
                dataset="open",
                target_fps=-1,
                seed=spec["seed"],
                track_time=False,
                save_npz=True,
            )
            depth = np.load(Path(out_dir) / f"{name}.npz")["depth"]
    finally:
        inference.read_video_frames, inference.save_video = saved
    return video_u8, depth, log.draws


def run_case(official: dict, pipe, name: str, spec: dict, folder: Path) -> None:
    video_u8, depth, draws = run_official(official, pipe, name, spec)
    tensors = {
        "video": torch.from_numpy(video_u8),
        "depth": torch.from_numpy(depth),
        **{f"noise.{i}": t for i, t in enumerate(draws)},
    }
    meta = {
        **spec,
        "noise_shapes": [list(t.shape) for t in draws],
        "guidance_scale": 1.0,
        "decode_chunk_size": 8,
        "dtype": "float32",
        "device": "cpu",
    }
    save_case(folder, name, tensors, meta)


def compare_float16(official: dict, folder: Path) -> None:
    """The official pipeline in float16 (as ``inference.py`` loads it) against vdf's shipped config
    (float16 networks) on the same draws, for the one-segment case, on the CPU. Prints the max
    relative differences; writes nothing (float16 on a CPU takes about a minute per run)."""
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from safetensors.torch import load_file
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    import vdf

    half = torch.float16
    unet_class = official["unet"].DiffusersUNetSpatioTemporalConditionModelDepthCrafter
    pipe = official["ppl"].DepthCrafterPipeline(
        vae=AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE), torch_dtype=half),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(str(folder / "image_encoder"), torch_dtype=half),
        unet=unet_class.from_pretrained(str(folder / "unet"), torch_dtype=half),
        scheduler=EulerDiscreteScheduler.from_pretrained(str(folder / "scheduler")),
        feature_extractor=CLIPImageProcessor.from_pretrained(str(folder / "feature_extractor")),
    )
    pipe.set_progress_bar_config(disable=True)
    name, spec = "one_segment", CASES["one_segment"]
    video_u8, depth, draws = run_official(official, pipe, name, spec)

    prefix = "denoiser.init_args"
    weights = {
        f"{prefix}.unet.init_args.weights": str(folder / "unet"),
        f"{prefix}.vae.init_args.weights": str(TINY_VAE),
        f"{prefix}.image_encoder.init_args.weights": str(folder / "image_encoder"),
    }
    model = vdf.load(ROOT / "configs" / "depthcrafter.yaml", device="cpu", **weights)
    queue = [d.float() for d in draws]  # one segment: augmentation noise, then the initial noise
    model.noise_like = lambda shape, generator=None: queue.pop(0).reshape(shape)
    model.denoiser.augmentation_noise = lambda shape, generator=None, device=None: queue.pop(0).reshape(shape)
    ours = model.run(torch.from_numpy(video_u8).permute(0, 3, 1, 2).float() / 255)[0][:, 0].double()
    theirs = torch.from_numpy(depth).double()
    float32 = load_file(str(folder / f"{name}.safetensors"))["depth"].double()

    def relative(a, b):
        return float((a - b).abs().max() / b.abs().max())

    print(
        f"float16, {name}: vdf vs official {relative(ours, theirs):.3g}; "
        f"official float16 vs official float32 {relative(theirs, float32):.3g}"
    )


def resolution_table(utils) -> dict:
    """The ``(height, width)`` the official ``read_video_frames`` decodes each input size at."""

    class FakeReader:
        """Answers the size and frame-count queries ``read_video_frames`` makes; remembers the size asked."""

        asked: list = []

        def __init__(self, path, ctx=None, width=-1, height=-1):
            self.shape = path
            if width != -1:
                FakeReader.asked.append((height, width))

        def get_batch(self, index):
            h, w = self.shape
            array = np.zeros((len(index), h, w, 3), np.uint8)
            return types.SimpleNamespace(shape=array.shape, asnumpy=lambda: array)

        def get_avg_fps(self):
            return 30.0

        def __len__(self):
            return 1

    saved = utils.VideoReader
    utils.VideoReader = FakeReader
    rows = []
    try:
        for max_res in MAX_RES:
            for h, w in RESOLUTION_SIZES:
                FakeReader.asked = []
                utils.read_video_frames((h, w), process_length=1, target_fps=-1, max_res=max_res)
                rows.append([h, w, max_res, *FakeReader.asked[-1]])
    finally:
        utils.VideoReader = saved
    return {
        "columns": ["height", "width", "max_res", "out_height", "out_width"],
        "rows": rows,
        "dataset_res_dict": {k: list(v) for k, v in utils.dataset_res_dict.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="local checkout of Tencent/DepthCrafter")
    parser.add_argument("--output", default=str(FIXTURES / "depthcrafter"), help="fixture folder")
    parser.add_argument(
        "--float16",
        action="store_true",
        help="compare the official float16 pipeline with vdf's shipped float16 config on the "
        "fixtures in --output (prints; writes nothing)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # thread count can change float reductions; one thread is reproducible

    stub_io_modules()
    official = {
        "ppl": import_official(args.official, "depthcrafter.depth_crafter_ppl"),
        "unet": import_official(args.official, "depthcrafter.unet"),
        "inference": import_official(args.official, "depthcrafter.inference"),
        "utils": import_official(args.official, "depthcrafter.utils"),
        "svd": import_official(
            args.official, "diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion"
        ),
    }
    from diffusers import AutoencoderKLTemporalDecoder, EulerDiscreteScheduler
    from transformers import CLIPImageProcessor

    folder = Path(args.output)
    if args.float16:
        compare_float16(official, folder)
        return
    folder.mkdir(parents=True, exist_ok=True)
    unet = tiny_unet(official["unet"].DiffusersUNetSpatioTemporalConditionModelDepthCrafter)
    clip = tiny_clip()
    processor = CLIPImageProcessor()  # SVD's feature extractor: OpenAI CLIP mean and std
    scheduler = EulerDiscreteScheduler(**SVD_SCHEDULER)
    vae = AutoencoderKLTemporalDecoder.from_pretrained(str(TINY_VAE)).eval()
    write_weights(folder, unet, clip, processor, scheduler)

    pipe = official["ppl"].DepthCrafterPipeline(
        vae=vae, image_encoder=clip, unet=unet, scheduler=scheduler, feature_extractor=processor
    )
    pipe.set_progress_bar_config(disable=True)
    for name, spec in CASES.items():
        run_case(official, pipe, name, spec, folder)

    table = resolution_table(official["utils"])
    (folder / "resolution.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {folder / 'resolution.json'} ({len(table['rows'])} sizes)")


if __name__ == "__main__":
    main()
