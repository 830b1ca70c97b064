"""Golden fixtures for FlashDepth, from the official code (Eyeline-Research/FlashDepth).

Usage::

    python scripts/fidelity/flashdepth.py --official /work/official/FlashDepth

It writes ``tests/fixtures/fidelity/flashdepth/`` (``--output`` to write elsewhere), about 1 MB;
``tests/test_fidelity_flashdepth.py`` reads it. Rerunning gives the same files. Needs, besides
vdf's environment: ``opencv-python``, ``einops``, ``torchvision``, ``huggingface_hub`` and
``triton`` (imported, never run, by the vendored ``mamba_ssm``); no GPU, no CUDA build.

What runs is the official code, imported from the checkout (``flashdepth/``, ``dataloaders/``
and the vendored ``mamba/mamba_ssm``), on CPU in float32:

- the inference reader ``RandomDataset.__getitem__`` (long side capped at 2044, bicubic resize,
  clip) and ``depthanything_preprocess`` (sides rounded to multiples of 14, bicubic, clip, ImageNet
  normalisation), on frames written as lossless PNGs;
- ``FlashDepth.forward``, the streaming inference loop (``start_new_sequence``, then one frame at a
  time through the ViT, the DPT with the Mamba recurrence, the hybrid fusion), its predictions
  taken from the ``.npy`` files it writes (``save_depth_npy``). Run once without ground truth
  (predictions at the processed size) and once with a dummy ground truth at the input size (the
  official code then resizes each prediction to it, bilinear with ``align_corners=True``).

Patches, all inside this process (the checkout is never modified):

- CPU stand-ins for CUDA-only pieces: an empty ``selective_scan_cuda`` module (imported, unused);
  the Triton ``mamba_chunk_scan_combined`` replaced by ``mamba_ssm``'s own minimal SSD
  (``ssd_minimal_discrete``, which takes and returns the carried state) plus the
  ``dt_bias``/softplus and ``D`` terms of the combined op; the Triton gated RMSNorm replaced by
  ``mamba_ssm``'s ``rms_norm_ref``; ``flash_attn_func`` (the hybrid's cross-attention kernel, a
  CUDA-only package) and xFormers' ``unbind`` by their plain-torch definitions;
  ``torch.cuda.current_device`` answers ``"cpu"``. ``mamba_ssm.utils.generation`` (text
  generation, whose ``transformers`` imports no longer exist) is replaced by an empty stand-in.
- Size tables shrunk to tiny widths, which vdf's config arguments also express: the ViT-S / ViT-L
  sizes (``vit_small`` / ``vit_large``: 32 / 48 wide, 2 / 3 heads, 4 blocks each, and
  ``intermediate_layer_idx`` [0, 1, 2, 3]), the DPT widths (``dpt_dim`` 64 -> 16, 256 -> 24 and
  their ``out_channels``), the Mamba2 widths (expand 2, headdim 8, d_state 16 instead of the
  rule's 4 / 32 / 256 for a 64-wide DPT) and the fusion widths (``d_model`` 64 -> 16, context
  256 -> 24).
- The video decoder (``RandomDataset.parse_seq_path``, which decodes an mp4 into temporary JPEG
  files) hands over the frames as lossless PNG files instead, so both sides start from the same
  pixels.

Config values changed from the released configs (both sides get the same values):
``downsample_mamba`` 0.1 -> 0.25 (at 70 x 98 frames, 0.1 would leave one token per frame; 0.25
leaves 2 x 3, so the scan within a frame and the state across frames both matter) and, for the
hybrid, ``teacher_resolution`` 490 -> 42 (so that the teacher really runs at its lower
resolution on these small frames).

Weights are random (seeded; the zero-initialised output layers of the temporal module and the
fusion too, so that they act; the Mamba2 step sizes, decays and skips redrawn so that the state
carried from frame to frame matters), rounded to float16 and saved in the official checkpoint layout
(``{'model': state_dict, 'step': 0}``) so vdf loads them through its real ``weights`` path.
The head's last conv is rescaled so the output varies over the frame rather than sitting on its
bias or under the final ReLU.

Cases:

- ``s``: FlashDepth-S, 4 frames of 64 x 92 (processed at 70 x 98).
- ``full``: FlashDepth (Full), the hybrid, 3 frames of 64 x 92, the teacher at 42 x 56.
- ``preprocess``: the official processed size of a table of frame sizes (4K and portrait frames
  included), and one 20 x 2100 frame through the cap (19 x 2044) and the rounding (28 x 2044):
  the official normalised frame, every 8th column.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from common import FIXTURES, import_official, round_to_fp16_, save_case  # noqa: E402

# This file is named like the official package ``flashdepth``: keep its folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

SEED = 0
FRAME_SIZE = (64, 92)
TINY_VIT = {
    "vits": {"embed_dim": 32, "num_heads": 2, "depth": 4},
    "vitl": {"embed_dim": 48, "num_heads": 3, "depth": 4},
}
TINY_LAYERS = {"vits": [0, 1, 2, 3], "vitl": [0, 1, 2, 3]}  # the blocks the DPT reads
TINY_DPT = {64: (16, [8, 16, 24, 32]), 256: (24, [16, 24, 32, 48])}  # released dpt_dim -> tiny
TINY_MAMBA = {"expand": 2, "headdim": 8, "d_state": 16}
DOWNSAMPLE = 0.25
TEACHER_RESOLUTION = 42
SIZE_TABLE = [
    (64, 92),
    (436, 1024),
    (1080, 1920),
    (1148, 2044),
    (1149, 2045),
    (2160, 3840),
    (3840, 2160),
    (4000, 3000),
    (2045, 100),
    (721, 1281),
]


# ----------------------------------------------------------------------------------- CPU stand-ins


def _stub_modules() -> None:
    """Modules the official import chain needs but that only exist as CUDA builds."""
    sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))

    def flash_attn_func(q, k, v):
        # flash_attn's (B, N, heads, head_dim) layout, softmax scale 1/sqrt(head_dim), no mask.
        scale = q.shape[-1] ** -0.5
        attn = torch.einsum("bnhd,bmhd->bhnm", q, k).mul(scale).softmax(-1)
        return torch.einsum("bhnm,bmhd->bnhd", attn, v)

    flash_attn = types.ModuleType("flash_attn")
    flash_attn.flash_attn_func = flash_attn_func
    sys.modules["flash_attn"] = flash_attn
    generation = types.ModuleType("mamba_ssm.utils.generation")
    generation.GenerationMixin = type("GenerationMixin", (), {})
    sys.modules["mamba_ssm.utils.generation"] = generation


def _patch_mamba_for_cpu() -> None:
    from einops import repeat
    from mamba_ssm.modules import mamba2
    from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete
    from mamba_ssm.ops.triton.layernorm_gated import rms_norm_ref

    def chunk_scan(
        x,
        dt,
        A,
        B,
        C,
        chunk_size,
        D=None,
        z=None,
        dt_bias=None,
        initial_states=None,
        seq_idx=None,
        cu_seqlens=None,
        dt_softplus=False,
        dt_limit=(0.0, float("inf")),
        return_final_states=False,
        return_varlen_states=False,
    ):
        assert z is None and seq_idx is None and cu_seqlens is None and dt_limit == (0.0, float("inf"))
        if dt_bias is not None:
            dt = dt + dt_bias
        if dt_softplus:
            dt = F.softplus(dt)
        heads = x.shape[2]
        B = repeat(B, "b l g n -> b l (g r) n", r=heads // B.shape[2])
        C = repeat(C, "b l g n -> b l (g r) n", r=heads // C.shape[2])
        init = None if initial_states is None else initial_states[:, None]
        # One chunk as long as the frame's token sequence: the minimal SSD needs L % chunk == 0.
        y, final = ssd_minimal_discrete(x * dt[..., None], A * dt, B, C, x.shape[1], initial_states=init)
        if D is not None:
            y = y + x * (D[:, None] if D.dim() == 1 else D)
        return (y, final) if return_final_states else y

    def gated_rms_norm(self, x, z=None):
        return rms_norm_ref(
            x,
            self.weight,
            self.bias,
            z=z,
            eps=self.eps,
            group_size=self.group_size,
            norm_before_gate=self.norm_before_gate,
        )

    mamba2.mamba_chunk_scan_combined = chunk_scan
    mamba2.RMSNormGated.forward = gated_rms_norm
    torch.cuda.current_device = lambda: "cpu"


def _patch_attention_for_cpu() -> None:
    from flashdepth.dinov2_layers import attention

    if not hasattr(attention, "unbind"):  # xFormers' unbind, imported only when xFormers is
        attention.unbind = torch.unbind


# ----------------------------------------------------------------------------------- tiny sizes


def _shrink_size_tables() -> None:
    """The official size tables, shrunk (see the module docstring)."""
    from flashdepth import dinov2, hybrid_fusion, mamba, model

    def tiny_vit(name):
        def build(
            patch_size=14,
            num_register_tokens=0,
            linearization_configs=None,
            skip_connections=False,
            compression_configs=None,
            **kwargs,
        ):
            return dinov2.DinoVisionTransformer(
                patch_size=patch_size,
                mlp_ratio=4,
                block_fn=dinov2.Block,
                num_register_tokens=num_register_tokens,
                linearization_configs=linearization_configs,
                skip_connections=skip_connections,
                compression_configs=compression_configs,
                **TINY_VIT[name],
                **kwargs,
            )

        return build

    dinov2.vit_small = tiny_vit("vits")
    dinov2.vit_large = tiny_vit("vitl")

    dpt_head = model.DPTHead

    def tiny_dpt(in_channels, dpt_dim=256, out_channels=None, **kwargs):
        features, channels = TINY_DPT[dpt_dim]
        return dpt_head(in_channels, dpt_dim=features, out_channels=channels, **kwargs)

    model.DPTHead = tiny_dpt

    mamba_model = model.MambaModel
    model.MambaModel = lambda dpt_dim, **kwargs: mamba_model(TINY_DPT[dpt_dim][0], **kwargs)
    mamba_block = mamba.MambaBlock

    def tiny_block(d_model, layer_idx, expand, d_state=64, d_conv=4, headdim=64, use_hydra=False):
        return mamba_block(
            d_model,
            layer_idx,
            expand=TINY_MAMBA["expand"],
            d_state=TINY_MAMBA["d_state"],
            d_conv=d_conv,
            headdim=TINY_MAMBA["headdim"],
            use_hydra=use_hydra,
        )

    mamba.MambaBlock = tiny_block

    fusion = model.HybridFusion
    model.HybridFusion = lambda d_model, **kwargs: fusion(TINY_DPT[d_model][0], **kwargs)
    block = hybrid_fusion.Block
    hybrid_fusion.Block = lambda d_model, proj_dim_in=1024, **kwargs: block(
        d_model, proj_dim_in=TINY_DPT[proj_dim_in][0], **kwargs
    )


class _Config(dict):
    """The Hydra config the official model reads with both ``cfg.key`` and ``cfg['key']``."""

    __getattr__ = dict.__getitem__


def _official_config(official: Path, name: str) -> dict:
    cfg = yaml.safe_load((official / "configs" / name / "config.yaml").read_text())
    model_cfg = dict(cfg["model"], downsample_mamba=[DOWNSAMPLE])
    hybrid = _Config(cfg["hybrid_configs"], teacher_resolution=TEACHER_RESOLUTION)
    return dict(batch_size=1, hybrid_configs=hybrid, training=False, **model_cfg)


@torch.no_grad()
def _strengthen_recurrence(net: torch.nn.Module, seed: int) -> None:
    """Redraw each Mamba2 layer's step sizes, decay rates and skip weights (float16-exact).

    At their initialisation (steps 0.001..0.1, skip 1) the state a frame hands to the next barely
    moves the output; larger steps, slow decays and smaller skips make the carried state matter,
    so that the fixture checks the recurrence across frames, not only the scan within one.
    """
    g = torch.Generator().manual_seed(seed + 1000)
    for module in net.modules():
        if type(module).__name__ != "Mamba2":
            continue
        h = module.dt_bias.shape[0]
        dt = 0.3 + 0.7 * torch.rand(h, generator=g)
        module.dt_bias.copy_((dt + torch.log(-torch.expm1(-dt))).half().float())  # inverse softplus
        module.A_log.copy_(torch.log(0.02 + 0.3 * torch.rand(h, generator=g)).half().float())
        module.D.copy_((0.5 * torch.rand(h, generator=g)).half().float())


def _build(official: Path, name: str, seed: int, probe: torch.Tensor) -> torch.nn.Module:
    """The official model at tiny widths with random float16-exact weights.

    ``probe``: a normalised clip ``(1, T, 3, H, W)``; the last 1x1 conv of the head is rescaled so
    that, on it, the output before the final ReLU has unit spread and is positive on about 80% of
    the pixels (random weights otherwise give a nearly constant or mostly zero output).
    """
    from flashdepth.model import FlashDepth

    torch.manual_seed(seed)
    net = FlashDepth(**_official_config(official, name)).eval()
    net.intermediate_layer_idx = dict(TINY_LAYERS)  # the size table of the ViT blocks read
    round_to_fp16_(net, seed=seed)
    _strengthen_recurrence(net, seed)
    last = net.depth_head.scratch.output_conv2[2]
    seen = []
    hook = last.register_forward_hook(lambda module, args, out: seen.append(out.detach().flatten()))
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        _official_stream(net, probe, None, Path(tmp))
    hook.remove()
    values = torch.cat(seen)
    with torch.no_grad():
        last.weight.mul_(1.0 / float(values.std()))
        last.bias.copy_((last.bias - float(torch.quantile(values, 0.2))) / float(values.std()))
    round_to_fp16_(last)
    return net


def _save_weights(net: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().clone() for k, v in net.state_dict().items()}
    torch.save({"model": state, "step": 0}, path)


# ----------------------------------------------------------------------------------- inputs


def _frames(num: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """``(T, 3, H, W)`` uint8 frames: blocky colour fields with hard 0/255 edges (the bicubic resize
    overshoots there, so the clip to [0,1] matters), plus a moving gradient and noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    blocks = (torch.rand(num, 3, 6, 8, generator=g) > 0.5).float()
    out = F.interpolate(blocks, size=(h, w), mode="nearest")
    ramp = torch.linspace(0, 1, w).view(1, 1, 1, w)
    shift = torch.arange(num).view(num, 1, 1, 1) / max(num, 1)
    out = 0.7 * out + 0.2 * ((ramp + shift) % 1.0) + 0.1 * torch.rand(num, 3, h, w, generator=g)
    out[:, :, : h // 4, : w // 4] = 0.0
    out[:, :, -h // 4 :, -w // 4 :] = 1.0
    return (out.clamp(0, 1) * 255).round().to(torch.uint8)


def _official_reader(frames: torch.Tensor, folder: Path) -> torch.Tensor:
    """The official inference reader on these frames: ``(T, 3, H, W)`` uint8 -> ``(1, T, 3, H', W')``."""
    import cv2
    from dataloaders.random_dataset import RandomDataset

    paths = []
    for i, frame in enumerate(frames):
        path = folder / f"frame_{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(frame.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    dataset = RandomDataset(str(folder / "video.mp4"))
    dataset.parse_seq_path = lambda _: (list(paths), None)
    return dataset[0]["batch"][None]


def _official_stream(net, video: torch.Tensor, gt_size: tuple[int, int] | None, folder: Path) -> torch.Tensor:
    """``FlashDepth.forward`` (the official inference loop) -> ``(T, 1, h, w)`` from its ``.npy`` files."""
    gt = None if gt_size is None else torch.zeros(1, video.shape[1], *gt_size)
    out = folder / ("restored" if gt_size else "processed")
    net(
        video if gt is None else (video, gt),
        use_mamba=True,
        gif_path=str(out / "clip_0.gif"),
        resolution=518,
        out_mp4=False,
        save_depth_npy=True,
        out_video=False,
        use_metrics=False,
    )
    return torch.stack(
        [torch.from_numpy(np.load(out / "depth_npy_files" / f"frame_{i}.npy"))[None] for i in range(video.shape[1])]
    )


# ----------------------------------------------------------------------------------- cases


def _temporal_effect(net, batch: torch.Tensor, processed: torch.Tensor, folder: Path) -> float:
    """max |output - output with the temporal module's residual switched off| / max |output|."""
    final = net.mamba.final_layer[1]
    saved = final.weight.detach().clone(), final.bias.detach().clone()
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
        without = _official_stream(net, batch, None, folder / "without_temporal")
        final.weight.copy_(saved[0])
        final.bias.copy_(saved[1])
    return float((processed - without).abs().max() / processed.abs().max())


def _model_case(official: Path, output: Path, case: str, config: str, frames: int, seed: int) -> None:
    video = _frames(frames, FRAME_SIZE, seed + 100)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        batch = _official_reader(video, tmp)
        net = _build(official, config, seed, batch)
        with torch.no_grad():
            processed = _official_stream(net, batch, None, tmp)
            restored = _official_stream(net, batch, FRAME_SIZE, tmp)
        temporal = _temporal_effect(net, batch, processed, tmp)
    weights = output / f"{case}.pth"
    _save_weights(net, weights)
    positive = float((processed > 0).float().mean())
    print(
        f"{case}: processed {tuple(batch.shape[-2:])}, {positive:.0%} of the output > 0, "
        f"range {float(processed.min()):.3g}..{float(processed.max()):.3g}, "
        f"temporal module changes the output by {temporal:.3g} (relative)"
    )
    tensors = {"frames": video, "official.processed": processed, "official.restored": restored}
    meta = {
        "official_config": f"configs/{config}/config.yaml",
        "weights": weights.name,
        "frames": frames,
        "frame_size": list(FRAME_SIZE),
        "processed_size": list(batch.shape[-2:]),
        "seed": seed,
        "tiny": {
            "vit": TINY_VIT,
            "layers": TINY_LAYERS,
            "dpt": {str(k): v for k, v in TINY_DPT.items()},
            "mamba": TINY_MAMBA,
        },
        "temporal_effect": temporal,
        "downsample_mamba": DOWNSAMPLE,
        "teacher_resolution": TEACHER_RESOLUTION,
        "dtype": "float32",
    }
    save_case(output, case, tensors, meta)


def _preprocess_case(output: Path) -> None:
    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for h, w in SIZE_TABLE:
            folder = Path(tmp) / f"{h}x{w}"
            folder.mkdir()
            batch = _official_reader(torch.zeros(1, 3, h, w, dtype=torch.uint8), folder)
            sizes.append([h, w, *batch.shape[-2:]])
        frame = _frames(1, (20, 2100), SEED + 7)
        folder = Path(tmp) / "cap"
        folder.mkdir()
        prepared = _official_reader(frame, folder)[0, 0]
    print("official processed sizes:", sizes)
    tensors = {
        "sizes": torch.tensor(sizes, dtype=torch.int64),
        "frame": frame,
        "official.normalised": prepared[..., ::8],
    }
    save_case(
        output,
        "preprocess",
        tensors,
        {"column_stride": 8, "frame_size": [20, 2100], "processed_size": list(prepared.shape[-2:])},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="local checkout of Eyeline-Research/FlashDepth")
    parser.add_argument("--output", default=str(FIXTURES / "flashdepth"))
    args = parser.parse_args()
    official = Path(args.official).resolve()
    output = Path(args.output)

    torch.set_num_threads(min(2, torch.get_num_threads()))
    _stub_modules()
    sys.path.insert(0, str(official / "mamba"))  # the vendored, modified mamba_ssm
    import_official(official, "mamba_ssm")
    _patch_mamba_for_cpu()
    import_official(official, "flashdepth.model")
    import_official(official, "dataloaders.random_dataset")
    _patch_attention_for_cpu()
    _shrink_size_tables()

    _preprocess_case(output)
    _model_case(official, output, "s", "flashdepth-s", frames=4, seed=SEED + 1)
    _model_case(official, output, "full", "flashdepth", frames=3, seed=SEED + 2)


if __name__ == "__main__":
    main()
