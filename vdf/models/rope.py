"""Rotary position embedding (RoPE) in the temporal attention of diffusers' SVD UNet.

Depth Any Video replaces SVD's sinusoidal frame embedding (``time_pos_embed(time_proj(arange(F)))``
added before every temporal transformer block) by RoPE on the frames' positions inside temporal
attention. Positions are the frames' original indices in their video, so a clip with dropped frames
(``[0, 3, 7]``) or a set of sparse keyframes is placed on the right time axis, and attention scores
depend only on position differences.

Pieces:

- :func:`rope_angles` / :func:`apply_rope`: ``ω_k = θ^(-2k/d)``, ``k = 0..d/2-1``; the angles
  ``pos·ω_k`` are computed in float64; channel pairs ``(2k, 2k+1)`` of each head are rotated by them.
- :class:`TemporalRopeAttnProcessor`: diffusers' ``AttnProcessor2_0`` math plus RoPE: q and k are
  rotated in temporal self-attention (``attn1``), only q in temporal cross-attention (``attn2``,
  whose single context token has no frame position).
- :class:`RopeTransformerSpatioTemporalModel`: diffusers' ``TransformerSpatioTemporalModel`` without
  ``time_pos_embed`` / ``time_proj`` (deleted, so the state dict has no such keys), feeding the
  rotation to its temporal blocks' processors. Spatial blocks and resnets are unchanged.
- :func:`enable_temporal_rope`: swaps every ``TransformerSpatioTemporalModel`` of a UNet in place.
- Positions: ``module.set_position_ids(position_ids)`` on every module that has it (``None`` means
  ``arange(F)``), or the :func:`temporal_positions` context manager that does it for a whole UNet.

Gradient checkpointing: diffusers' spatio-temporal blocks checkpoint only their resnets and the
spatial transformer blocks, which do not read positions. A wrapper that checkpoints a larger
segment (a whole down block) must keep the positions set until the backward pass has recomputed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)
from torch import Tensor, nn

__all__ = [
    "RopeTransformerSpatioTemporalModel",
    "TemporalRopeAttnProcessor",
    "apply_rope",
    "enable_temporal_rope",
    "rope_angles",
    "set_temporal_positions",
    "temporal_positions",
]


def rope_angles(positions: Tensor, dim: int = 64, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """Cosines and sines of the RoPE angles ``positions · ω_k``, ``ω_k = θ^(-2k/dim)``.

    Args:
        positions: ``(B, F)`` integer or float frame positions.
        dim: per-head channel count (even).
        theta: frequency base.

    Returns:
        ``(cos, sin)``, each float64 ``(B, F, dim/2)`` on ``positions``' device.
    """
    if dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {dim}")
    device = positions.device
    # float64 is unavailable on MPS: compute there on the CPU.
    work = torch.device("cpu") if device.type == "mps" else device
    pos = positions.to(work, torch.float64)
    omega = theta ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=work) / dim)
    angles = pos[..., None] * omega
    cos, sin = angles.cos(), angles.sin()
    if work != device:
        cos, sin = cos.to(device, torch.float32), sin.to(device, torch.float32)
    return cos, sin


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent channel pairs ``(2k, 2k+1)`` of ``x`` by the angles of ``cos`` / ``sin``.

    ``out[2k] = x[2k]·cos_k − x[2k+1]·sin_k``, ``out[2k+1] = x[2k]·sin_k + x[2k+1]·cos_k``, computed
    in float32 (at least) and returned in ``x``'s dtype.

    Args:
        x: ``(..., d)``.
        cos, sin: broadcastable to ``(..., d/2)``.
    """
    work = torch.promote_types(x.dtype, torch.float32)
    c, s = cos.to(work), sin.to(work)
    pairs = x.to(work).unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1)
    return out.flatten(-2).to(x.dtype)


class TemporalRopeAttnProcessor:
    """diffusers ``Attention`` processor for temporal attention with RoPE over frames.

    The owning :class:`RopeTransformerSpatioTemporalModel` sets :attr:`rotation` to ``(cos, sin)``,
    each ``(B, F, head_dim/2)``, for the duration of its forward. Queries (and, when
    ``attn.is_cross_attention`` is false, keys) of shape ``(B·N, heads, F, head_dim)`` — sequences
    are ``F`` frames of one spatial token, ``B``-major — are rotated; the rest is diffusers'
    ``AttnProcessor2_0``.
    """

    def __init__(self) -> None:
        self.rotation: tuple[Tensor, Tensor] | None = None

    def _rotate(self, x: Tensor) -> Tensor:
        if self.rotation is None:
            raise RuntimeError(
                "temporal RoPE angles are not set: TemporalRopeAttnProcessor runs only inside "
                "RopeTransformerSpatioTemporalModel.forward"
            )
        cos, sin = self.rotation
        batch = cos.shape[0]
        if x.shape[0] % batch or x.shape[-2] != cos.shape[1]:
            raise ValueError(
                f"RoPE angles for batch {batch} x {cos.shape[1]} frames do not fit temporal "
                f"attention input of shape {tuple(x.shape)}"
            )
        grouped = x.unflatten(0, (batch, -1))  # (B, N, heads, F, d)
        return apply_rope(grouped, cos[:, None, None], sin[:, None, None]).flatten(0, 1)

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args,
        **kwargs,
    ) -> Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        query = self._rotate(query)
        if not attn.is_cross_attention:
            key = self._rotate(key)

        hidden_states = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class RopeTransformerSpatioTemporalModel(TransformerSpatioTemporalModel):
    """``TransformerSpatioTemporalModel`` with RoPE temporal attention instead of a frame embedding.

    Same constructor as diffusers' class plus ``theta``; :meth:`from_module` converts an existing
    module in place (parameters kept). The ``time_pos_embed`` and ``time_proj`` submodules do not
    exist. Forward is diffusers' minus the frame-embedding addition; positions come from the
    ``position_ids`` argument, else from :meth:`set_position_ids`, else ``arange(F)``.
    """

    def __init__(self, *args, theta: float = 10000.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_rope(theta)

    @classmethod
    def from_module(
        cls, module: TransformerSpatioTemporalModel, theta: float = 10000.0
    ) -> RopeTransformerSpatioTemporalModel:
        """Turn ``module`` (a diffusers ``TransformerSpatioTemporalModel``) into this class in place."""
        if isinstance(module, cls):
            module.theta = float(theta)
            return module
        if type(module) is not TransformerSpatioTemporalModel:
            raise TypeError(f"expected a TransformerSpatioTemporalModel, got {type(module).__name__}")
        module.__class__ = cls
        module._init_rope(theta)
        return module

    def _init_rope(self, theta: float) -> None:
        for name in ("time_pos_embed", "time_proj"):
            if name in self._modules:
                delattr(self, name)
        self.theta = float(theta)
        self.position_ids: Tensor | None = None
        # One processor for all temporal attentions of this module: they share the frame rotation.
        self.rope_processor = TemporalRopeAttnProcessor()
        for block in self.temporal_transformer_blocks:
            for attn in (block.attn1, block.attn2):
                if attn is not None:
                    attn.set_processor(self.rope_processor)

    def set_position_ids(self, position_ids: Tensor | None) -> None:
        """Frame positions ``(B, F)`` (or ``(F,)``, shared by the batch) for the next forwards;
        ``None`` means ``arange(F)``."""
        self.position_ids = position_ids

    def _positions(self, position_ids: Tensor | None, batch_size: int, num_frames: int, device) -> Tensor:
        if position_ids is None:
            position_ids = self.position_ids
        if position_ids is None:
            return torch.arange(num_frames, device=device)[None].expand(batch_size, num_frames)
        pos = torch.as_tensor(position_ids, device=device)
        if pos.ndim == 1:
            pos = pos[None]
        if pos.ndim != 2 or pos.shape[1] != num_frames or pos.shape[0] not in (1, batch_size):
            raise ValueError(
                f"position_ids of shape {tuple(pos.shape)} do not fit batch {batch_size} x "
                f"{num_frames} frames (expected (B, F) or (F,))"
            )
        return pos.expand(batch_size, num_frames)

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        image_only_indicator: Tensor | None = None,
        return_dict: bool = True,
        position_ids: Tensor | None = None,
    ) -> TransformerTemporalModelOutput | tuple[Tensor]:
        """Args:
        hidden_states: ``(B·F, C, H, W)``.
        encoder_hidden_states: ``(B·F, N, D)``; the temporal blocks attend to frame 0's.
        image_only_indicator: ``(B, F)``; gives ``F``.
        position_ids: ``(B, F)`` or ``(F,)`` frame positions, overriding :meth:`set_position_ids`.
        """
        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        batch_size = batch_frames // num_frames

        time_context = encoder_hidden_states
        first = time_context[None, :].reshape(batch_size, num_frames, -1, time_context.shape[-1])[:, 0]
        time_context = first[:, None].broadcast_to(
            batch_size, height * width, time_context.shape[-2], time_context.shape[-1]
        )
        time_context = time_context.reshape(batch_size * height * width, -1, time_context.shape[-1])

        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = self.proj_in(hidden_states)

        pos = self._positions(position_ids, batch_size, num_frames, hidden_states.device)
        for block in self.temporal_transformer_blocks:
            for attn in (block.attn1, block.attn2):
                if attn is not None and attn.processor is not self.rope_processor:
                    raise RuntimeError(
                        "a temporal attention processor of RopeTransformerSpatioTemporalModel was "
                        f"replaced ({type(attn.processor).__name__}); RoPE would be lost. Call "
                        "enable_temporal_rope(unet) again after set_attn_processor."
                    )
        self.rope_processor.rotation = rope_angles(pos, self.attention_head_dim, self.theta)
        try:
            for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
                if torch.is_grad_enabled() and self.gradient_checkpointing:
                    hidden_states = self._gradient_checkpointing_func(
                        block, hidden_states, None, encoder_hidden_states, None
                    )
                else:
                    hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)
                hidden_states_mix = temporal_block(
                    hidden_states, num_frames=num_frames, encoder_hidden_states=time_context
                )
                hidden_states = self.time_mixer(
                    x_spatial=hidden_states,
                    x_temporal=hidden_states_mix,
                    image_only_indicator=image_only_indicator,
                )
        finally:
            self.rope_processor.rotation = None

        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output = hidden_states + residual
        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


def enable_temporal_rope(unet: nn.Module, theta: float = 10000.0) -> nn.Module:
    """Swap every ``TransformerSpatioTemporalModel`` inside ``unet`` for
    :class:`RopeTransformerSpatioTemporalModel`, in place (parameters kept, ``time_pos_embed`` /
    ``time_proj`` removed). Idempotent; after a ``set_attn_processor`` call it reinstalls the RoPE
    processors. Returns ``unet``."""
    found = 0
    for module in list(unet.modules()):
        if isinstance(module, TransformerSpatioTemporalModel):
            if isinstance(module, RopeTransformerSpatioTemporalModel):
                module._init_rope(theta)
            else:
                RopeTransformerSpatioTemporalModel.from_module(module, theta)
            found += 1
    if not found:
        raise ValueError(f"{type(unet).__name__} has no TransformerSpatioTemporalModel to give RoPE")
    return unet


def set_temporal_positions(module: nn.Module, position_ids: Tensor | None) -> None:
    """Call ``set_position_ids(position_ids)`` on every submodule of ``module`` that has it."""
    for sub in module.modules():
        setter = getattr(sub, "set_position_ids", None)
        if callable(setter):
            setter(position_ids)


@contextlib.contextmanager
def temporal_positions(unet: nn.Module, position_ids: Tensor | None) -> Iterator[nn.Module]:
    """Within the block, temporal RoPE of ``unet`` uses ``position_ids`` (``(B, F)``, ``(F,)`` or
    ``None`` = ``arange(F)``); on exit every module is reset to ``None``."""
    set_temporal_positions(unet, position_ids)
    try:
        yield unet
    finally:
        set_temporal_positions(unet, None)
