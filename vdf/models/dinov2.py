"""DINOv2 ViT encoder (patch 14) as used by Depth-Anything-V2, built from timm's ``VisionTransformer``.

The module *is* a timm ``VisionTransformer`` (so timm's blocks, fused attention, gradient
checkpointing and parameter names are reused) with three DINOv2/DAv2 specifics on top:

* the official position-embedding resampling (bicubic with ``scale_factor`` and the 0.1 offset,
  see :meth:`DINOv2.interpolate_pos_embed`), which timm's own size-based resampling does not
  reproduce;
* a ``mask_token`` parameter of shape ``(1, D)`` that the official checkpoints carry (unused by
  the forward pass; kept so that strict loading works);
* :meth:`DINOv2.get_intermediate_layers`, the patch tokens after selected blocks, each passed
  through the final LayerNorm, which is what the DPT head consumes.

Parameter names equal the official ones (``blocks.{i}.attn.qkv``, ``blocks.{i}.ls1.gamma``,
``norm``, ...), except for the ViT-g SwiGLU FFN, where timm's packed SwiGLU calls the official
``mlp.w12`` / ``mlp.w3`` ``mlp.fc1`` / ``mlp.fc2`` (same shapes, same maths;
:func:`vdf.models.dav2.dav2_official_to_vdf` renames them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm, Mlp, SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

PATCH_SIZE = 14
PRETRAIN_SIZE = 518  # pos_embed holds a 37 x 37 grid, i.e. trained at 518 x 518
POS_EMBED_OFFSET = 0.1  # DINOv2's ``interpolate_offset``


@dataclass(frozen=True)
class ViTSpec:
    """Shape of one DINOv2 variant."""

    embed_dim: int
    depth: int
    num_heads: int
    layer_indices: tuple[int, int, int, int]
    swiglu: bool = False


VIT_SPECS: dict[str, ViTSpec] = {
    "vits": ViTSpec(384, 12, 6, (2, 5, 8, 11)),
    "vitb": ViTSpec(768, 12, 12, (2, 5, 8, 11)),
    "vitl": ViTSpec(1024, 24, 16, (4, 11, 17, 23)),
    "vitg": ViTSpec(1536, 40, 24, (9, 19, 29, 39), swiglu=True),
}


def check_patch_multiple(height: int, width: int, patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """Return the patch grid ``(H/14, W/14)``; raise ``ValueError`` naming the nearest valid sizes."""
    bad = [(name, v) for name, v in (("height", height), ("width", width)) if v % patch_size]
    if bad:
        hints = ", ".join(
            f"{name} {v} -> {max(patch_size, v // patch_size * patch_size)} or {(v // patch_size + 1) * patch_size}"
            for name, v in bad
        )
        raise ValueError(
            f"DINOv2 input size {height}x{width} (HxW) is not a multiple of the patch size "
            f"{patch_size}; nearest valid sizes: {hints}. Resize the frames first, e.g. with "
            f"vdf.models.dav2.processing_size."
        )
    return height // patch_size, width // patch_size


def interpolate_pos_embed_official(
    pos_embed: torch.Tensor, grid_h: int, grid_w: int, offset: float = POS_EMBED_OFFSET
) -> torch.Tensor:
    """Resample a square ``(1, 1 + M*M, D)`` position embedding to a ``grid_h x grid_w`` grid.

    This is the DINOv2 rule: bicubic (a = -0.75, no antialias) with
    ``scale_factor = ((grid_h + offset) / M, (grid_w + offset) / M)`` in fp32. Passing a scale
    factor (instead of a target size) changes the sampling positions: source coordinate =
    ``(dst + 0.5) * M / (grid + offset) - 0.5`` rather than ``(dst + 0.5) * M / grid - 0.5``, so
    the values differ from timm's ``resample_abs_pos_embed``; the offset only keeps
    ``floor(M * scale)`` from rounding down below ``grid``. On the pre-training grid itself
    (M x M) the embedding is returned unchanged, as the official code short-circuits there.

    Returns:
        ``(1, 1 + grid_h * grid_w, D)`` in ``pos_embed``'s dtype; the CLS entry comes first.
    """
    n = pos_embed.shape[1] - 1
    m = int(math.sqrt(n))
    if m * m != n:
        raise ValueError(f"pos_embed has {n} patch entries, which is not a square grid")
    if grid_h == m and grid_w == m:
        return pos_embed
    dim = pos_embed.shape[-1]
    pe = pos_embed.float()
    grid = pe[:, 1:].reshape(1, m, m, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid,
        scale_factor=((grid_h + offset) / m, (grid_w + offset) / m),
        mode="bicubic",
        antialias=False,
    )
    if grid.shape[-2:] != (grid_h, grid_w):  # cannot happen for offset in (0, 1); guards edits
        raise RuntimeError(f"pos_embed resampled to {tuple(grid.shape[-2:])}, wanted {(grid_h, grid_w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, dim)
    return torch.cat([pe[:, :1], grid], dim=1).to(pos_embed.dtype)


class DINOv2(VisionTransformer):
    """DINOv2 ViT with patch 14, LayerScale (init 1.0), no registers, pos-embed grid 37 x 37.

    Args:
        variant: ``"vits" | "vitb" | "vitl" | "vitg"``; sets the defaults of the next four.
        embed_dim: override the token width ``D`` (e.g. 48 for the tiny CPU configs).
        depth: override the number of blocks.
        num_heads: override the number of attention heads (must divide ``embed_dim``).
        layer_indices: 0-based block indices whose outputs feed the DPT head (4 of them).
            Defaults to the variant's ([2,5,8,11] for S/B, [4,11,17,23] for L, [9,19,29,39] for G).
        device, dtype: where to allocate parameters (``device="meta"`` builds without memory).

    ViT-S/B/L use a GELU MLP with ratio 4; ViT-g a SwiGLU FFN with hidden width 4096 (timm's
    packed SwiGLU: ``fc1`` is ``(8192, 1536)``, ``fc2`` is ``(1536, 4096)``).
    """

    def __init__(
        self,
        variant: str = "vits",
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        layer_indices: Sequence[int] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if variant not in VIT_SPECS:
            raise ValueError(f"unknown DINOv2 variant {variant!r}; choose one of {sorted(VIT_SPECS)}")
        spec = VIT_SPECS[variant]
        embed_dim = spec.embed_dim if embed_dim is None else embed_dim
        depth = spec.depth if depth is None else depth
        num_heads = spec.num_heads if num_heads is None else num_heads
        layer_indices = list(spec.layer_indices if layer_indices is None else layer_indices)
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if any(not 0 <= i < depth for i in layer_indices):
            raise ValueError(f"layer_indices {layer_indices} out of range for depth {depth}")
        if spec.swiglu:
            # timm packs w1/w2 into one fc1 of width 2 * 4096; 1536 * 5.33334 -> 8192.
            mlp = dict(mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU)
        else:
            mlp = dict(mlp_ratio=4.0, mlp_layer=Mlp, act_layer=nn.GELU)
        meta = device is not None and torch.device(device).type == "meta"
        super().__init__(
            img_size=PRETRAIN_SIZE,
            patch_size=PATCH_SIZE,
            num_classes=0,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            qkv_bias=True,
            proj_bias=True,
            init_values=1.0,
            class_token=True,
            reg_tokens=0,
            no_embed_class=False,
            pre_norm=False,
            dynamic_img_size=True,  # patch_embed emits NHWC and accepts any multiple of 14
            norm_layer=partial(LayerNorm, eps=1e-6),
            weight_init="skip" if meta else "",
            device=device,
            dtype=dtype,
            **mlp,
        )
        self.variant = variant
        self.patch_size = PATCH_SIZE
        self.layer_indices = layer_indices
        # Only used by DINOv2's masked-image pre-training; the checkpoints carry it. It never
        # receives a gradient here, so it is frozen (otherwise DDP reports it as unused).
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim, device=device, dtype=dtype), requires_grad=False)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``(1, 1 + grid_h*grid_w, D)`` position embedding for a ``grid_h x grid_w`` patch grid."""
        return interpolate_pos_embed_official(self.pos_embed, grid_h, grid_w)

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend CLS and add the official resampled pos-embed. ``(B,h,w,D)`` -> ``(B,1+h*w,D)``."""
        b, h, w, d = x.shape
        x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, d)], dim=1)
        x = x + self.interpolate_pos_embed(h, w).to(x.dtype)
        return self.pos_drop(x)

    def prepare_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Patchify and embed. ``(B,3,H,W)`` (H, W multiples of 14) -> ``(B, 1 + H/14*W/14, D)``."""
        check_patch_multiple(images.shape[-2], images.shape[-1], self.patch_size)
        return self.norm_pre(self._pos_embed(self.patch_embed(images)))

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block and the final norm. ``(B,3,H,W)`` -> ``(B, 1+N, D)``."""
        x = self.prepare_tokens(images)
        for block in self.blocks:
            x = self._run_block(block, x)
        return self.norm(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`: ``(B,3,H,W)`` -> ``(B, 1+N, D)``, CLS first.

        (timm's classification ``forward_head`` is not used: DAv2 has no classifier.)
        """
        return self.forward_features(images)

    def get_intermediate_layers(self, images: torch.Tensor, indices: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Patch tokens after the given blocks, each through the final LayerNorm.

        Args:
            images: ``(B, 3, H, W)``, ImageNet-normalised, H and W multiples of 14.
            indices: 0-based block indices (default ``self.layer_indices``), in any order.

        Returns:
            One ``(B, N, D)`` tensor per index, in the order given, with ``N = H/14 * W/14``
            tokens in row-major (H-major) order. The CLS token takes part in attention but is
            dropped here. Blocks after the last requested index are not run.
        """
        indices = list(self.layer_indices if indices is None else indices)
        if any(not 0 <= i < len(self.blocks) for i in indices):
            raise ValueError(f"indices {indices} out of range for {len(self.blocks)} blocks")
        wanted = set(indices)
        x = self.prepare_tokens(images)
        taken: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.blocks[: max(indices) + 1]):
            x = self._run_block(block, x)
            if i in wanted:
                taken[i] = self.norm(x)[:, self.num_prefix_tokens :]
        return [taken[i] for i in indices]
