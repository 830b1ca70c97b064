"""FlashDepth (Chou et al., ICCV 2025): Depth-Anything-V2 with a Mamba2 recurrence over frames.

Three variants, as released (Hugging Face ``Eyeline-Research/FlashDepth``):

* ``"l"`` (FlashDepth-L): DAv2 ViT-L + DPT (features 256); the temporal module after ``refinenet1``
  (DPT stage 3, 8x the patch grid).
* ``"s"`` (FlashDepth-S): DAv2 ViT-S + DPT (features 64); the temporal module after ``refinenet3``
  (stage 1, 2x the patch grid).
* ``"full"`` (FlashDepth (Full)): FlashDepth-S at full resolution plus a frozen ViT-L + DPT teacher
  run at a short side of 490 (``teacher_model``); the student's ``path_4`` cross-attends to the
  teacher's (:class:`~vdf.models.hybrid_fusion.HybridFusion`, ``hybrid_fusion``) before
  ``refinenet3``; the temporal module sits after ``refinenet3`` as in ``"s"``.

The temporal module (:class:`TemporalMamba`) average-pools the DPT map to 1/10 of its size, runs
4 pre-LN Mamba2 + MLP blocks over the row-major tokens of one frame, carrying each block's SSM
state to the next frame, upsamples back, and adds a zero-initialised ``GELU -> Linear`` output as
a residual, so an untrained temporal module is an exact identity.

Module names are the official ones, so ``state_dict()`` keys equal the keys of the released
``iter_*.pth`` files' ``model`` dict (the ``weights`` argument and :meth:`FlashDepth.from_checkpoint`
load them strictly).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdf.models.dav2 import DPT_CONFIGS, DepthAnythingV2, dav2_official_to_vdf, guess_dav2_variant
from vdf.models.dinov2 import PATCH_SIZE, DINOv2, check_patch_multiple
from vdf.models.dpt import DPTHead
from vdf.models.hybrid_fusion import HybridFusion
from vdf.models.mamba import Mamba2, Mamba2State
from vdf.models.weights import load_weights, mark_frozen

__all__ = [
    "FlashDepth",
    "FlashDepthState",
    "MambaBlock",
    "TemporalMamba",
    "flashdepth_official_to_vdf",
    "teacher_input_size",
    "vdf_to_flashdepth_official",
]

HF_REPO = "Eyeline-Research/FlashDepth"


@dataclass(frozen=True)
class _Variant:
    name: str  # as the paper writes it
    encoder: str
    mamba_stage: int
    hybrid: bool
    config_dir: str  # folder in the official repo / HF repo holding the checkpoint
    released: str  # released checkpoint file name


VARIANTS: dict[str, _Variant] = {
    "l": _Variant("FlashDepth-L", "vitl", 3, False, "flashdepth-l", "iter_10001.pth"),
    "s": _Variant("FlashDepth-S", "vits", 1, False, "flashdepth-s", "iter_14001.pth"),
    "full": _Variant("FlashDepth (Full)", "vits", 1, True, "flashdepth", "iter_43002.pth"),
}
_ALIASES = {"flashdepth-l": "l", "flashdepth-s": "s", "flashdepth": "full", "hybrid": "full"}


def _variant(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in VARIANTS:
        raise ValueError(f"unknown FlashDepth variant {name!r}; choose one of 's', 'l', 'full'")
    return key


def _checkpoint_hint(variant: str) -> str:
    v = VARIANTS[variant]
    return (
        f"{v.name} weights are configs/{v.config_dir}/iter_*.pth (released: {v.released}) in the "
        f"Hugging Face repository {HF_REPO} (https://huggingface.co/{HF_REPO}): pass a local copy, or "
        f"hf://{HF_REPO}/configs/{v.config_dir}/<file>"
    )


def _dav2_hint(encoder: str) -> str:
    repo = {"vits": "Depth-Anything-V2-Small", "vitl": "Depth-Anything-V2-Large"}.get(encoder, "Depth-Anything-V2")
    return (
        f"the Depth-Anything-V2 weights are depth_anything_v2_{encoder}.pth in the Hugging Face "
        f"repository depth-anything/{repo}: pass a local copy, or hf://depth-anything/{repo}/depth_anything_v2_{encoder}.pth"
    )


def _mamba_shape(d_model: int, expand: int | None, headdim: int | None) -> tuple[int, int]:
    """Official rule: expand 4 / headdim 32 for a 64-wide DPT (ViT-S), else expand 2 / headdim 64."""
    if expand is None:
        expand = 4 if d_model == 64 else 2
    if headdim is None:
        headdim = 32 if d_model == 64 else 64
    if (expand * d_model) % headdim:
        raise ValueError(
            f"Mamba2 needs expand * d_model ({expand} * {d_model}) to be a multiple of headdim "
            f"{headdim}; pass mamba_expand / mamba_headdim (e.g. headdim 8 for tiny widths)"
        )
    return expand, headdim


# --------------------------------------------------------------------------- temporal module


class MambaBlock(nn.Module):
    """Pre-LN residual block: ``x += Mamba2(norm1(x))``; ``x += mlp(norm2(x))``, MLP = d -> 4d -> d (GELU).

    Args:
        d_model: token width (the DPT ``features``: 256 for L, 64 for S).
        d_state: Mamba2 state size (256).
        d_conv: Mamba2 causal conv width (4).
        expand, headdim: Mamba2 inner width factor and head width; default by the official rule
            (2 / 64, or 4 / 32 when ``d_model == 64``).

    The Mamba2 layer restarts its causal conv at every call (``conv_restart=True``): FlashDepth
    calls it once per frame and carries only the SSM state across frames.
    """

    def __init__(
        self, d_model: int, d_state: int = 256, d_conv: int = 4, expand: int | None = None, headdim: int | None = None
    ) -> None:
        super().__init__()
        expand, headdim = _mamba_shape(d_model, expand, headdim)
        self.norm1 = nn.LayerNorm(d_model)
        self.mamba = Mamba2(d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, conv_restart=True)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, state: Mamba2State | None = None) -> tuple[torch.Tensor, Mamba2State]:
        """``x (B, L, d_model)`` tokens of one frame -> same shape, and the Mamba2 state after them."""
        y, state = self.mamba(self.norm1(x), state)
        x = x + y
        return x + self.mlp(self.norm2(x)), state


class TemporalMamba(nn.Module):
    """FlashDepth's temporal module on one DPT level (official attribute name: ``mamba``).

    Args:
        d_model: DPT width at the inserted level.
        num_layers: Mamba blocks (4).
        downsample: pooling factor; the frame's map is average-pooled to
            ``(int(h * downsample), int(w * downsample))`` (floor, at least 1). ``None`` or 1.0
            runs the blocks at full resolution.
        d_state, d_conv, expand, headdim: see :class:`MambaBlock`.

    Per frame: pool -> row-major tokens ``(B, h'w', C)`` -> blocks (each with its own state) ->
    reshape -> bilinear (align_corners=True) back to ``(h, w)`` -> ``final_layer`` (GELU, Linear;
    zero-initialised) -> add to the input map. The recurrence is one long scan over the frames'
    tokens in order; token i of frame t sees all of frames < t (through the state) and tokens
    <= i of frame t.
    """

    def __init__(
        self,
        d_model: int,
        num_layers: int = 4,
        downsample: float | None = 0.1,
        d_state: int = 256,
        d_conv: int = 4,
        expand: int | None = None,
        headdim: int | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if downsample is not None and not 0 < downsample <= 1:
            raise ValueError(f"downsample must be in (0, 1], got {downsample}")
        self.d_model = d_model
        self.downsample = None if downsample is None or downsample == 1.0 else float(downsample)
        # Nested list: the official model keeps one list of blocks per insertion point.
        self.blocks = nn.ModuleList(
            [nn.ModuleList([MambaBlock(d_model, d_state, d_conv, expand, headdim) for _ in range(num_layers)])]
        )
        self.final_layer = nn.Sequential(nn.GELU(), nn.Linear(d_model, d_model))
        nn.init.zeros_(self.final_layer[1].weight)
        nn.init.zeros_(self.final_layer[1].bias)

    @property
    def layers(self) -> nn.ModuleList:
        return self.blocks[0]

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Grid the Mamba blocks see for an ``height x width`` map (``h' * w'`` tokens per frame)."""
        if self.downsample is None:
            return height, width
        # int(h * f) exactly as the official code (floating-point product, then floor).
        return max(1, int(height * self.downsample)), max(1, int(width * self.downsample))

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> list[Mamba2State]:
        """Zero state, one :class:`Mamba2State` per block (the start of a video)."""
        return [blk.mamba.init_state(batch_size, device=device, dtype=dtype) for blk in self.layers]

    def forward(
        self, features: torch.Tensor, state: Sequence[Mamba2State] | None = None
    ) -> tuple[torch.Tensor, list[Mamba2State]]:
        """Run frames in order, carrying the state.

        Args:
            features: ``(B, T, C, h, w)`` DPT maps of consecutive frames.
            state: per-block states after the previous frame, or ``None`` for a new video.

        Returns:
            ``(B, T, C, h, w)`` maps, and the per-block states after frame T-1. The states are new
            tensors (never updated in place), so gradients flow through them across frames.
        """
        if features.ndim != 5:
            raise ValueError(f"expected (B, T, C, h, w) features, got {tuple(features.shape)}")
        b, t, c, h, w = features.shape
        if c != self.d_model:
            raise ValueError(f"features have {c} channels, the temporal module {self.d_model}")
        states: list[Mamba2State | None] = list(state) if state is not None else [None] * len(self.layers)
        if len(states) != len(self.layers):
            raise ValueError(f"state has {len(states)} layers, the module {len(self.layers)}")
        gh, gw = self.token_grid(h, w)
        frames = features.reshape(b * t, c, h, w)
        small = frames if (gh, gw) == (h, w) else F.adaptive_avg_pool2d(frames, (gh, gw))
        tokens = small.reshape(b, t, c, gh * gw).transpose(2, 3)  # (B, T, h'w', C), row-major
        outs = []
        for i in range(t):
            x = tokens[:, i]
            for j, block in enumerate(self.layers):
                x, states[j] = block(x, states[j])
            outs.append(x)
        mixed = torch.stack(outs, dim=1).transpose(2, 3).reshape(b * t, c, gh, gw)
        if (gh, gw) != (h, w):
            mixed = F.interpolate(mixed, size=(h, w), mode="bilinear", align_corners=True)
        delta = self.final_layer(mixed.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return (frames + delta).reshape(b, t, c, h, w), states  # type: ignore[return-value]


# --------------------------------------------------------------------------- state


@dataclass
class FlashDepthState:
    """Recurrent state of a :class:`FlashDepth` stream: what crosses from one frame to the next.

    Attributes:
        mamba: one :class:`~vdf.models.mamba.Mamba2State` per Mamba block (4); the SSM state is
            ``(B, nheads, headdim, d_state)``: (B, 8, 64, 256) for L, (B, 8, 32, 256) for S/Full.
        frames_seen: frames consumed since :meth:`FlashDepth.init_state` (bookkeeping only).

    Its size does not grow with the video: streaming is O(1) in memory.
    """

    mamba: list[Mamba2State]
    frames_seen: int = 0

    def detach(self) -> FlashDepthState:
        """A copy cut from the autograd graph (truncated BPTT, or streaming with grad enabled)."""
        return FlashDepthState([s.detach() for s in self.mamba], self.frames_seen)


# --------------------------------------------------------------------------- model


def teacher_input_size(height: int, width: int, resolution: int = 490, multiple: int = PATCH_SIZE) -> tuple[int, int]:
    """Frame size the FlashDepth (Full) teacher sees for an ``height x width`` input.

    Official rule: if ``height > resolution``, height -> ``resolution`` and width ->
    ``int(resolution / height * width)`` floored to a multiple of 14; otherwise unchanged. It
    assumes landscape frames (height = short side): a portrait frame is scaled by its height,
    so the teacher sees a narrower-than-490 width (same arithmetic as the official code).
    Example: 1148 x 2044 -> 490 x 868.
    """
    if height <= resolution:
        return height, width
    new_w = int((resolution / height) * width) // multiple * multiple
    return resolution, max(multiple, new_w)


def flashdepth_official_to_vdf(state_dict: Any) -> dict[str, torch.Tensor]:
    """Official FlashDepth checkpoint (``{'model': sd, 'step': ...}`` or a flat dict) -> vdf names.

    vdf keeps the official module names, so this only unwraps (``model`` / ``state_dict``
    wrappers, DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes, see
    `vdf.models.weights.unwrap_state_dict`) and applies DAv2's converter to the encoder (an
    identity for ViT-S/L, which FlashDepth uses). Tensors are not copied.
    """
    return dav2_official_to_vdf(state_dict)


def vdf_to_flashdepth_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flashdepth_official_to_vdf`: the flat ``model`` dict of an official ``.pth``.

    Save ``{'model': vdf_to_flashdepth_official(net.state_dict()), 'step': n}`` for a file the
    official code loads.
    """
    return dict(state_dict)


def _guess_flashdepth_variant(state_dict: Mapping[str, torch.Tensor]) -> str:
    enc = guess_dav2_variant(state_dict)
    if any(k.startswith("teacher_model.") for k in state_dict):
        return f"FlashDepth (Full) (student {enc})"
    name = {"vitl": "FlashDepth-L", "vits": "FlashDepth-S"}.get(enc or "", f"a model with encoder {enc}")
    if not any(k.startswith("mamba.") for k in state_dict):
        name += " without Mamba keys (a Depth-Anything-V2 checkpoint? use load_dav2)"
    return name


def _parts(**modules: nn.Module) -> nn.Module:
    """A throw-away container whose ``state_dict`` keys are ``<name>.*`` for the given modules."""
    box = nn.Module()
    for name, module in modules.items():
        setattr(box, name, module)
    return box


class FlashDepth(nn.Module):
    """Streaming video depth: per-frame DAv2 features, a Mamba2 recurrence in the DPT, one frame at a time.

    Args:
        variant: ``"s"``, ``"l"`` or ``"full"`` (also ``"flashdepth-s"``, ``"flashdepth-l"``,
            ``"flashdepth"``).
        embed_dim, depth, num_heads, layer_indices: student ViT overrides (see
            :class:`~vdf.models.dinov2.DINOv2`); defaults are the variant's (ViT-S or ViT-L).
        features, out_channels: student DPT overrides (defaults 64 / [48, 96, 192, 384] for S and
            Full, 256 / [256, 512, 1024, 1024] for L). ``features`` is the Mamba ``d_model``.
        mamba_stage: DPT stage after which the temporal module runs (0 = after ``refinenet4``,
            1 = ``refinenet3``, 2 = ``refinenet2``, 3 = ``refinenet1``); default 3 for L, 1 for S/Full.
        num_mamba_layers: Mamba blocks (4).
        temporal: run the temporal module (True). ``False`` is the ablation without it: the
            module is still built (so checkpoints load either way) but skipped and frozen, each
            frame is then predicted alone, and the recurrent state is passed through unchanged.
        mamba_d_state, mamba_d_conv: Mamba2 state size (256) and conv width (4).
        mamba_expand, mamba_headdim: Mamba2 width factor and head width; default by the official
            rule (2 / 64, or 4 / 32 when ``features == 64``). Set for tiny widths.
        mamba_downsample: pooling factor before the Mamba blocks (0.1).
        teacher_embed_dim, teacher_depth, teacher_num_heads, teacher_layer_indices,
            teacher_features, teacher_out_channels: ``"full"`` only; teacher ViT-L / DPT overrides.
        teacher_resolution: ``"full"`` only; short side the teacher runs at (490), see
            :func:`teacher_input_size`.
        fusion_num_blocks, fusion_num_heads, fusion_mlp_expand: ``"full"`` only; hybrid fusion (4, 2, 2).
        weights: optional official FlashDepth ``.pth`` of this variant, loaded strictly
            (same as :meth:`from_checkpoint`).
        dav2_weights: optional official ``depth_anything_v2_<encoder>.pth`` for the student's
            ``pretrained`` + ``depth_head`` (stage-1 initialisation; Mamba stays fresh).
        student_weights: ``"full"`` only; a FlashDepth-S ``.pth`` for the student's
            ``pretrained`` + ``depth_head`` + ``mamba`` (stage-2 initialisation).
        teacher_weights: ``"full"`` only; a FlashDepth-L ``.pth`` for the teacher (its 407
            ``pretrained.*`` / ``depth_head.*`` keys; its Mamba keys are ignored).
        device: where to allocate (``"meta"`` builds without memory).

    Attributes (official names): ``pretrained`` (student DINOv2), ``depth_head`` (student DPT),
    ``mamba`` (:class:`TemporalMamba`), and for ``"full"`` ``teacher_model`` (a frozen
    :class:`~vdf.models.dav2.DepthAnythingV2` ViT-L, kept in eval mode) and ``hybrid_fusion``.

    Inputs are ImageNet-normalised frames whose H and W are multiples of 14; outputs are
    non-negative relative disparity at the same size (the official model was trained on
    100 / metres, so values are in the hundreds).
    """

    def __init__(
        self,
        variant: str = "l",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        layer_indices: Sequence[int] | None = None,
        features: int | None = None,
        out_channels: Sequence[int] | None = None,
        mamba_stage: int | None = None,
        num_mamba_layers: int = 4,
        temporal: bool = True,
        mamba_d_state: int = 256,
        mamba_d_conv: int = 4,
        mamba_expand: int | None = None,
        mamba_headdim: int | None = None,
        mamba_downsample: float | None = 0.1,
        teacher_embed_dim: int | None = None,
        teacher_depth: int | None = None,
        teacher_num_heads: int | None = None,
        teacher_layer_indices: Sequence[int] | None = None,
        teacher_features: int | None = None,
        teacher_out_channels: Sequence[int] | None = None,
        teacher_resolution: int = 490,
        fusion_num_blocks: int = 4,
        fusion_num_heads: int = 2,
        fusion_mlp_expand: int = 2,
        weights: str | None = None,
        dav2_weights: str | None = None,
        student_weights: str | None = None,
        teacher_weights: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.variant = _variant(variant)
        spec = VARIANTS[self.variant]
        self.encoder = spec.encoder
        self.hybrid = spec.hybrid
        self.mamba_stage = spec.mamba_stage if mamba_stage is None else int(mamba_stage)
        if not 0 <= self.mamba_stage <= 3:
            raise ValueError(f"mamba_stage must be 0..3 (DPT fusion stage), got {mamba_stage}")
        if not self.hybrid and (student_weights is not None or teacher_weights is not None):
            raise ValueError("student_weights / teacher_weights only apply to variant 'full'")
        if weights is not None and (dav2_weights or student_weights or teacher_weights):
            raise ValueError("weights already holds every weight; do not combine it with other *_weights")
        if dav2_weights is not None and student_weights is not None:
            raise ValueError("dav2_weights and student_weights both initialise the student; pass one")

        default_features, default_oc = DPT_CONFIGS[self.encoder]
        features = default_features if features is None else int(features)
        self.pretrained = DINOv2(
            self.encoder,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            layer_indices=layer_indices,
            device=device,
        )
        with torch.device(device) if device is not None else nullcontext():
            self.depth_head = DPTHead(
                self.pretrained.embed_dim,
                features=features,
                out_channels=list(default_oc if out_channels is None else out_channels),
            )
            self.mamba = TemporalMamba(
                features,
                num_layers=num_mamba_layers,
                downsample=mamba_downsample,
                d_state=mamba_d_state,
                d_conv=mamba_d_conv,
                expand=mamba_expand,
                headdim=mamba_headdim,
            )
        self.temporal = bool(temporal)
        if not self.temporal:
            self.mamba.requires_grad_(False)
        self.teacher_resolution = int(teacher_resolution)
        if self.hybrid:
            self.teacher_model = DepthAnythingV2(
                "vitl",
                features=teacher_features,
                out_channels=teacher_out_channels,
                embed_dim=teacher_embed_dim,
                depth=teacher_depth,
                num_heads=teacher_num_heads,
                layer_indices=teacher_layer_indices,
                device=device,
            )
            mark_frozen(self.teacher_model)  # never trained; see vdf.models.weights.mark_frozen
            self.teacher_model.eval()
            with torch.device(device) if device is not None else nullcontext():
                self.hybrid_fusion = HybridFusion(
                    features,
                    context_dim=self.teacher_model.depth_head.features,
                    num_blocks=fusion_num_blocks,
                    num_heads=fusion_num_heads,
                    mlp_expand=fusion_mlp_expand,
                )
        else:
            self.teacher_model = None
            self.hybrid_fusion = None

        if weights is not None:
            self.load_official(weights)
        if dav2_weights is not None:
            self.load_dav2(dav2_weights)
        if student_weights is not None:
            self.load_student(student_weights)
        if teacher_weights is not None:
            self.load_teacher(teacher_weights)

    # ------------------------------------------------------------------ modes and groups

    def train(self, mode: bool = True) -> FlashDepth:
        super().train(mode)
        if self.teacher_model is not None:
            self.teacher_model.eval()  # frozen: it never changes mode
        return self

    def param_groups_by_module(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by module, for per-group learning rates.

        Keys ``"vit"`` (``pretrained``), ``"dpt"`` (``depth_head``), ``"mamba"``, ``"fusion"``
        (``hybrid_fusion``; empty unless ``"full"``). The teacher is never included, nor are
        parameters with ``requires_grad=False`` at call time (DINOv2's ``mask_token``, DPT's unused
        ``refinenet4.resConfUnit1``, the unused ``context_proj`` of fusion blocks 1..3).
        Official learning rates: vit 5e-6, dpt 5e-5, mamba 1e-4, fusion 1e-4.
        """
        modules: dict[str, nn.Module | None] = {
            "vit": self.pretrained,
            "dpt": self.depth_head,
            "mamba": self.mamba,
            "fusion": self.hybrid_fusion,
        }
        return {
            name: [] if m is None else [p for p in m.parameters() if p.requires_grad] for name, m in modules.items()
        }

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the ViT blocks (student and teacher), as the official training."""
        self.pretrained.set_grad_checkpointing(enable)
        if self.teacher_model is not None:
            self.teacher_model.pretrained.set_grad_checkpointing(enable)

    # ------------------------------------------------------------------ shapes

    def mamba_token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Token grid the Mamba blocks see per frame for an ``height x width`` input.

        The DPT map at stage s is ``2**s`` times the patch grid; then :meth:`TemporalMamba.token_grid`.
        FlashDepth-L at 518 x 518: 296 x 296 -> 29 x 29 = 841 tokens; S: 74 x 74 -> 7 x 7 = 49.
        """
        ph, pw = check_patch_multiple(height, width, PATCH_SIZE)
        scale = 2**self.mamba_stage
        return self.mamba.token_grid(ph * scale, pw * scale)

    # ------------------------------------------------------------------ state

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> FlashDepthState:
        """Zero recurrent state for a new video of ``batch_size`` streams."""
        dtype = self.mamba.final_layer[1].weight.dtype
        if device is None:
            device = self.mamba.final_layer[1].weight.device
        return FlashDepthState(self.mamba.init_state(batch_size, device=device, dtype=dtype))

    # ------------------------------------------------------------------ forward

    def teacher_path4(self, frames: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's DPT ``path_4``: ``(N, 3, H, W)`` normalised -> ``(N, teacher_features, h', w')``.

        Frames taller than ``teacher_resolution`` are resized (bilinear, align_corners=True, on
        the normalised tensor) to :func:`teacher_input_size` first.
        """
        if self.teacher_model is None:
            raise RuntimeError(f"variant {self.variant!r} has no teacher; use variant 'full'")
        h, w = frames.shape[-2:]
        size = teacher_input_size(h, w, self.teacher_resolution)
        teacher = self.teacher_model
        # No graph through a frozen teacher: saves its activations during training.
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in teacher.parameters())
        with torch.set_grad_enabled(grad):
            x = frames if size == (h, w) else F.interpolate(frames, size=size, mode="bilinear", align_corners=True)
            patch_hw = check_patch_multiple(*size)
            idx = teacher.layer_indices
            tok3, tok4 = teacher.pretrained.get_intermediate_layers(x, idx[2:4])
            layer_3 = teacher.depth_head.project_layer(2, tok3, patch_hw)
            layer_4 = teacher.depth_head.project_layer(3, tok4, patch_hw)
            return teacher.depth_head.refine(0, layer_4, None, layer_3.shape[-2:])

    def forward(
        self, images: torch.Tensor, state: FlashDepthState | None = None
    ) -> tuple[torch.Tensor, FlashDepthState]:
        """Disparity of a clip, continuing from ``state``.

        Args:
            images: ``(B, T, 3, H, W)`` ImageNet-normalised, H and W multiples of 14.
            state: the state after the previous frames of the same videos, or ``None`` to start.

        Returns:
            ``(B, T, 1, H, W)`` non-negative relative disparity, and the state after frame T-1.

        The ViT and DPT run on all B*T frames in one batch; the temporal module loops over T with
        the state carried and never detached, so a loss on any frame back-propagates through all
        earlier frames of the clip (BPTT).
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"expected images of shape (B, T, 3, H, W), got {tuple(images.shape)}")
        b, t, _, h, w = images.shape
        if state is None:
            state = self.init_state(b, images.device)
        frames = images.reshape(b * t, 3, h, w)
        patch_hw = check_patch_multiple(h, w, PATCH_SIZE)
        feats = self.pretrained.get_intermediate_layers(frames, self.pretrained.layer_indices)
        layers = self.depth_head.project(feats, patch_hw)
        context = self.teacher_path4(frames) if self.hybrid else None
        carried: list[list[Mamba2State]] = []

        def hook(stage: int, path: torch.Tensor) -> torch.Tensor:
            if stage == 0 and context is not None:
                path = self.hybrid_fusion(path, context)  # replaces the student's path_4
            if self.temporal and stage == self.mamba_stage:
                c, ph, pw = path.shape[1:]
                out, new = self.mamba(path.reshape(b, t, c, ph, pw), state.mamba)
                carried.append(new)
                path = out.reshape(b * t, c, ph, pw)
            return path

        path_1 = self.depth_head.fuse(layers, hook)
        disparity = F.relu(self.depth_head.head(path_1, patch_hw))
        mamba_state = carried[0] if carried else state.mamba
        return disparity.reshape(b, t, 1, h, w), FlashDepthState(mamba_state, state.frames_seen + t)

    def step(self, frame: torch.Tensor, state: FlashDepthState | None = None) -> tuple[torch.Tensor, FlashDepthState]:
        """One frame of a stream: ``(B, 3, H, W)`` normalised -> ``(B, 1, H, W)`` disparity, new state.

        Memory does not grow with the number of frames. Equal to :meth:`forward` on the clip.
        """
        if frame.ndim != 4:
            raise ValueError(f"expected a frame of shape (B, 3, H, W), got {tuple(frame.shape)}")
        disparity, state = self.forward(frame.unsqueeze(1), state)
        return disparity[:, 0], state

    # ------------------------------------------------------------------ weights

    def load_official(self, path: str | os.PathLike) -> None:
        """Load an official FlashDepth ``.pth`` of this variant strictly (see :meth:`from_checkpoint`)."""
        self._load(self, path, "FlashDepth weights", _checkpoint_hint(self.variant), flashdepth_official_to_vdf)

    def load_dav2(self, path: str | os.PathLike) -> None:
        """Initialise ``pretrained`` + ``depth_head`` from an official Depth-Anything-V2 ``.pth`` (strict).

        This is FlashDepth's stage-1 initialisation; the temporal module (and, for ``"full"``,
        the fusion and teacher) keep their current weights.
        """
        box = _parts(pretrained=self.pretrained, depth_head=self.depth_head)
        self._load(box, path, "Depth-Anything-V2 weights", _dav2_hint(self.encoder), dav2_official_to_vdf)

    def load_student(self, path: str | os.PathLike) -> None:
        """``"full"``: initialise the student (``pretrained``, ``depth_head``, ``mamba``) from a FlashDepth-S ``.pth``.

        Strict on those three modules; this is the official stage-2 initialisation.
        """
        if not self.hybrid:
            raise RuntimeError("load_student applies to variant 'full'; use load_official for S / L")
        box = _parts(pretrained=self.pretrained, depth_head=self.depth_head, mamba=self.mamba)
        self._load(box, path, "FlashDepth-S weights", _checkpoint_hint("s"), flashdepth_official_to_vdf)

    def load_teacher(self, path: str | os.PathLike) -> None:
        """``"full"``: load the frozen teacher from a FlashDepth-L ``.pth`` (or a DAv2 ViT-L ``.pth``).

        Takes the ``pretrained.*`` and ``depth_head.*`` keys (407 at full size) and loads them
        strictly into ``teacher_model``; the checkpoint's ``mamba.*`` keys are ignored, any other
        key is an error.
        """
        if self.teacher_model is None:
            raise RuntimeError("load_teacher applies to variant 'full'")

        def convert(state_dict: Any) -> dict[str, torch.Tensor]:
            return {k: v for k, v in flashdepth_official_to_vdf(state_dict).items() if not k.startswith("mamba.")}

        self._load(self.teacher_model, path, "FlashDepth-L weights (teacher)", _checkpoint_hint("l"), convert)

    @staticmethod
    def _load(
        module: nn.Module,
        path: str | os.PathLike,
        what: str,
        where: str,
        convert: Callable[[Any], dict[str, torch.Tensor]],
    ) -> None:
        # Which FlashDepth (or DAv2) a mismatching file looks like: the encoder and the Mamba keys.
        load_weights(module, os.fspath(path), what, where, convert=convert, describe=_guess_flashdepth_variant)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, variant: str = "l", **kwargs) -> FlashDepth:
        """Build a model and load an official FlashDepth checkpoint strictly.

        Args:
            path: local ``iter_*.pth`` (``{'model': state_dict, 'step': ..., ...}``; a flat dict
                and ``module.`` / ``_orig_mod.`` prefixes are accepted too). Released files, in the
                Hugging Face repo ``Eyeline-Research/FlashDepth``: ``configs/flashdepth-l/iter_10001.pth``,
                ``configs/flashdepth-s/iter_14001.pth``, ``configs/flashdepth/iter_43002.pth`` (Full).
            variant: ``"l"``, ``"s"`` or ``"full"``.
            **kwargs: other constructor arguments.

        Raises:
            FileNotFoundError: the file is missing (the message says where to get it).
            vdf.models.weights.StateDictMismatchError: missing / unexpected keys or wrong shapes;
                the message lists the first keys and the variant the checkpoint looks like.
        """
        model = cls(variant, **kwargs)
        model.load_official(path)
        return model
