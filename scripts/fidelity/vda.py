"""Golden fixtures for Video-Depth-Anything, from the official code (DepthAnything/Video-Depth-Anything).

Usage::

    python scripts/fidelity/vda.py --official /work/official/Video-Depth-Anything

It writes ``tests/fixtures/fidelity/vda/`` (``--output`` to write elsewhere), about 1.5 MB;
``tests/test_fidelity_vda.py`` reads it. Rerunning gives the same files. Needs, besides vdf's
environment: ``opencv-python``, ``einops``, ``easydict``, ``torchvision``; no GPU, no xFormers
(the official code falls back to plain attention without it).

What runs is the official code, imported from the checkout, on CPU in float32 (``fp32=True``):

- ``video_depth_anything.video_depth.VideoDepthAnything.infer_video_depth``: the official
  offline inference (OpenCV preprocessing, 32-frame windows every 22 frames with refilled
  keyframe slots, padding with the last frame, least-squares alignment, 8-frame cross-fade);
- ``video_depth_anything.video_depth_stream.VideoDepthAnything.infer_video_depth_one``: the
  official streaming mode, frame by frame, with its cache of hidden states.

Patches, all inside this process (the checkout is never modified): the ViT-S size table
(``dinov2.vit_small``) shrunk to 32 wide, 2 heads, 4 blocks, and the instance's
``intermediate_layer_idx`` set to blocks [0, 1, 2, 3]; the DPT widths are constructor arguments
of the official model (features 32, out_channels [16, 32, 32, 32]: the temporal modules' GroupNorm
needs multiples of 32). vdf's configs express the same widths.

Weights are random (seeded; the zero-initialised output projections of the temporal modules too,
so that they act), rounded to float16 and saved as float16 in the official layout (a flat
``state_dict``, ``pretrained.*`` and ``head.*``), except the sinusoidal position tables
(``pos_encoder.pe``, buffers in the official state dict), which are kept exact in float32. The
head's last conv is rescaled so that the output varies over the frame rather than sitting on its
bias or under the final ReLU.

Cases (frames are smooth drifting colour fields, ``common.make_video``):

- ``offline_31``: 31 frames of 32 x 32 (processed at 28 x 28, input_size 28: the OpenCV bicubic
  resize and the bilinear way back are exercised): 2 windows, 13 + 10 padded frames;
- ``offline_50``: 50 frames of 28 x 28 (processed at their own size): 3 windows, 16 + 10 padded;
  (Frames stay square on purpose: at 28 x 42 the temporal module on layer_4 normalises
  groups of 2 pixels (a 1 x 2 map), where GroupNorm is ill-conditioned and float32 rounding
  alone moves the output by up to 8e-5 of its range; at 28 x 28 that map is 1 x 1.)
- ``loss``: the released ``loss/loss.py::VideoDepthLoss`` (default settings) on a random
  prediction, depth (target ``1/depth``) and mask, ``(2, 5, 16, 20)``: its spatial, stable and
  total values.
- ``stream``: 48 frames of 28 x 42 streamed (past the 42-entry cache window, so that the
  cache's anchor, its frame 41 back and its dropping of old entries all act; not square, because
  the official streaming of a single frame cannot normalise a 1 x 1 layer_4 map).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from common import FIXTURES, import_official, make_video, round_to_fp16_, save_case  # noqa: E402

SEED = 0
TINY_VIT = {"embed_dim": 32, "num_heads": 2, "depth": 4}
TINY_LAYERS = [0, 1, 2, 3]
FEATURES = 32
OUT_CHANNELS = [16, 32, 32, 32]
INPUT_SIZE = 28
CASES = {
    # name: (frames, height, width, video seed)
    "offline_31": (31, 32, 32, 1),
    "offline_50": (50, 28, 28, 2),
}
LOSS_SHAPE = (2, 5, 16, 20)
STREAM = (48, 28, 42, 3)  # frames, height, width, video seed


def _shrink_vit() -> None:
    from video_depth_anything import dinov2

    def tiny_small(patch_size=14, num_register_tokens=0, **kwargs):
        return dinov2.DinoVisionTransformer(
            patch_size=patch_size,
            mlp_ratio=4,
            block_fn=dinov2.partial(dinov2.Block, attn_class=dinov2.MemEffAttention),
            num_register_tokens=num_register_tokens,
            **TINY_VIT,
            **kwargs,
        )

    dinov2.vit_small = tiny_small


def _official(cls):
    torch.manual_seed(SEED)
    net = cls(encoder="vits", features=FEATURES, out_channels=list(OUT_CHANNELS)).eval()
    net.intermediate_layer_idx = {"vits": list(TINY_LAYERS)}
    return net


@torch.no_grad()
def _randomise(net: torch.nn.Module, probe: torch.Tensor) -> None:
    """Random float16-exact weights (positions kept exact), last conv rescaled on ``probe``."""
    tables = {k: v.clone() for k, v in net.state_dict().items() if k.endswith("pos_encoder.pe")}
    round_to_fp16_(net, seed=SEED)
    net.load_state_dict(tables, strict=False)
    last = net.head.scratch.output_conv2[2]
    seen = []
    hook = last.register_forward_hook(lambda module, args, out: seen.append(out.detach().flatten()))
    net(probe)
    hook.remove()
    values = torch.cat(seen)
    last.weight.mul_(1.0 / float(values.std()))
    last.bias.copy_((last.bias - float(torch.quantile(values, 0.2))) / float(values.std()))
    round_to_fp16_(last)


def _save_weights(net: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() if k.endswith("pos_encoder.pe") else v.half().clone() for k, v in net.state_dict().items()}
    torch.save(state, path)


def _temporal_effect(net, video: np.ndarray) -> float:
    """max |output - output with every temporal module's proj_out zeroed| / max |output|."""
    outs = []
    for zero in (False, True):
        saved = {}
        for i, module in enumerate(net.head.motion_modules):
            proj = module.temporal_transformer.proj_out
            saved[i] = (proj.weight.clone(), proj.bias.clone())
            if zero:
                proj.weight.zero_()
                proj.bias.zero_()
        outs.append(torch.from_numpy(net.infer_video_depth(video, 30, INPUT_SIZE, device="cpu", fp32=True)[0]))
        for i, module in enumerate(net.head.motion_modules):
            module.temporal_transformer.proj_out.weight.copy_(saved[i][0])
            module.temporal_transformer.proj_out.bias.copy_(saved[i][1])
    return float((outs[0] - outs[1]).abs().max() / outs[0].abs().max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="checkout of DepthAnything/Video-Depth-Anything")
    parser.add_argument("--output", default=str(FIXTURES / "vda"))
    args = parser.parse_args()
    output = Path(args.output)
    offline = import_official(args.official, "video_depth_anything.video_depth")
    stream = import_official(args.official, "video_depth_anything.video_depth_stream")
    _shrink_vit()
    torch.set_grad_enabled(False)

    net = _official(offline.VideoDepthAnything)
    probe = (torch.from_numpy(make_video(8, 28, 42, 99)).permute(0, 3, 1, 2).float() / 255)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    _randomise(net, (probe - mean) / std)
    _save_weights(net, output / "weights.pth")
    tiny = {
        "vit": TINY_VIT,
        "layers": TINY_LAYERS,
        "features": FEATURES,
        "out_channels": OUT_CHANNELS,
        "input_size": INPUT_SIZE,
    }
    constants = {k: getattr(offline, k) for k in ("INFER_LEN", "OVERLAP", "KEYFRAMES", "INTERP_LEN")}

    for case, (frames, height, width, seed) in CASES.items():
        video = make_video(frames, height, width, seed)
        depth, _ = net.infer_video_depth(video, 30, INPUT_SIZE, device="cpu", fp32=True)
        meta = {
            "frames": frames,
            "height": height,
            "width": width,
            "weights": "weights.pth",
            "tiny": tiny,
            "official_constants": constants,
            "temporal_effect": _temporal_effect(net, video),
        }
        save_case(output, case, {"frames": torch.from_numpy(video), "official": torch.from_numpy(depth)}, meta)

    streamer = _official(stream.VideoDepthAnything)
    streamer.load_state_dict(torch.load(output / "weights.pth"), strict=True)
    streamer.float()
    frames, height, width, seed = STREAM
    video = make_video(frames, height, width, seed)
    depths = [streamer.infer_video_depth_one(frame, INPUT_SIZE, device="cpu", fp32=True) for frame in video]
    meta = {
        "frames": frames,
        "height": height,
        "width": width,
        "weights": "weights.pth",
        "tiny": tiny,
        "gap": streamer.gap,
        "cache_entries": len(streamer.frame_cache_list),
    }
    save_case(
        output, "stream", {"frames": torch.from_numpy(video), "official": torch.from_numpy(np.stack(depths))}, meta
    )

    _loss_case(args.official, output)


def _loss_case(official: str, output: Path) -> None:
    """The released ``VideoDepthLoss`` on a random clip pair (depth stored; the target is 1/depth)."""
    loss = import_official(official, "loss.loss")
    g = torch.Generator().manual_seed(SEED + 7)
    b, t, h, w = LOSS_SHAPE
    depth = 1.0 + 9.0 * torch.rand(b, t, h, w, generator=g)
    depth[:, 2:] = depth[:, 1:2] * (1 + 0.02 * torch.rand(b, t - 2, h, w, generator=g))  # slow changes too
    valid = torch.rand(b, t, h, w, generator=g) > 0.2
    pred = torch.rand(b, t, h, w, generator=g) * 3.0
    target = 1.0 / depth.clamp_min(1e-6)
    out = loss.VideoDepthLoss()(pred, target, valid)
    tensors = {"pred": pred, "depth": depth, "valid": valid}
    tensors.update({f"official.{k}": v.detach().reshape(1) for k, v in out.items()})
    save_case(output, "loss", tensors, {"shape": list(LOSS_SHAPE), "settings": "VideoDepthLoss() defaults"})


if __name__ == "__main__":
    main()
