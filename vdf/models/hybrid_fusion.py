"""FlashDepth (Full)'s hybrid fusion: the high-resolution ViT-S stream reads the low-resolution ViT-L stream.

The student's DPT ``path_4`` (``(B, 64, ph, pw)`` at full resolution) cross-attends to the frozen
teacher's ``path_4`` (``(B, 256, ph', pw')``, computed at a short side of 490). The fused map
replaces the student's ``path_4`` before ``refinenet3``.

Sub-module names follow the official ``hybrid_fusion.py`` so that a FlashDepth checkpoint's
``hybrid_fusion.blocks.0.{i}.{norm1, attention.{q,kv,proj}, context_norm, norm2, mlp.{0,2},
context_proj}`` keys load as they are. ``blocks`` is a list of lists because the official module
reserves one list of blocks per DPT level; only level 0 (``path_4``) is used by the released model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossAttention", "FusionBlock", "HybridFusion"]


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` over a context of another length.

    Args:
        dim: channel width of both inputs (the context is projected to it beforehand).
        num_heads: heads; ``dim`` must be divisible by it.
        zero_init: zero ``proj`` (weight and bias), so the block adds nothing at initialisation.

    ``forward(x (B, N, dim), context (B, M, dim)) -> (B, N, dim)``. ``q`` and ``kv`` have no bias;
    ``kv`` packs keys then values (``(B, M, 2, heads, head_dim)``), as the official layer does.
    """

    def __init__(self, dim: int, num_heads: int = 2, zero_init: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=True)
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        m = context.shape[1]
        hd = c // self.num_heads
        q = self.q(x).view(b, n, self.num_heads, hd).transpose(1, 2)
        k, v = self.kv(context).view(b, m, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        # Softmax scale 1/sqrt(head_dim), no mask: the official flash_attn_func call's defaults.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class FusionBlock(nn.Module):
    """Pre-LN cross-attention block: ``x += attn(norm1(x), context_norm(ctx))``; ``x += mlp(norm2(x))``.

    Args:
        d_model: student width (64 for FlashDepth (Full)).
        context_dim: teacher width (256). ``context_proj`` = Linear(context_dim, d_model), or
            Identity (no keys) when the two are equal, as in the official code.
        num_heads: attention heads (2).
        mlp_expand: MLP hidden width = ``mlp_expand * d_model`` (2).

    Only the first block of a level applies its ``context_proj`` (see :class:`HybridFusion`).
    The MLP's last layer is zero-initialised, like the attention output projection.
    """

    def __init__(self, d_model: int, context_dim: int = 256, num_heads: int = 2, mlp_expand: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = CrossAttention(d_model, num_heads=num_heads, zero_init=True)
        self.context_norm = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_model * mlp_expand), nn.GELU(), nn.Linear(d_model * mlp_expand, d_model)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.context_proj: nn.Module = nn.Linear(context_dim, d_model) if context_dim != d_model else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``x (B, N, d_model)``, already projected ``context (B, M, d_model)`` -> ``(B, N, d_model)``."""
        x = x + self.attention(self.norm1(x), self.context_norm(context))
        return x + self.mlp(self.norm2(x))


class HybridFusion(nn.Module):
    """Fuse the student's DPT ``path_4`` with the teacher's by cross-attention (identity at init).

    Args:
        d_model: student DPT width (64).
        context_dim: teacher DPT width (256).
        num_blocks: blocks at the fused level (4).
        num_heads: attention heads (2).
        mlp_expand: MLP expansion (2).

    ``forward(student (B, d_model, h, w), teacher (B, context_dim, h', w')) -> (B, d_model, h, w)``.
    Both maps are flattened row-major to token sequences; no positional encoding is added (the
    ViT position embeddings are already in the features). The teacher tokens are projected once
    by block 0's ``context_proj`` and that projection is reused by every block. The other
    blocks' ``context_proj`` exist only because the official checkpoint has them: they are frozen
    (``requires_grad=False``) so that DDP does not report them as unused.
    """

    def __init__(
        self, d_model: int, context_dim: int = 256, num_blocks: int = 4, num_heads: int = 2, mlp_expand: int = 2
    ) -> None:
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.d_model = d_model
        self.context_dim = context_dim
        level = nn.ModuleList([FusionBlock(d_model, context_dim, num_heads, mlp_expand) for _ in range(num_blocks)])
        self.blocks = nn.ModuleList([level])
        for block in level[1:]:
            block.context_proj.requires_grad_(False)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if student.ndim != 4 or teacher.ndim != 4 or student.shape[0] != teacher.shape[0]:
            raise ValueError(
                f"expected (B, C, h, w) maps with equal B, got {tuple(student.shape)} and {tuple(teacher.shape)}"
            )
        b, c, h, w = student.shape
        x = student.flatten(2).transpose(1, 2)
        level = self.blocks[0]
        context = level[0].context_proj(teacher.flatten(2).transpose(1, 2))
        for block in level:
            x = block(x, context)
        return x.transpose(1, 2).reshape(b, c, h, w)
