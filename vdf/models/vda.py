"""Video-Depth-Anything (Chen et al., CVPR 2025): DAv2's DINOv2 + a DPT head with temporal attention.

The encoder is Depth-Anything-V2's DINOv2 (`vdf.models.dinov2.DINOv2`), run on every frame
alone. The head is DAv2's DPT (`vdf.models.dpt.DPTHead`) with four temporal modules, each at a
low-resolution point of the decoder (``T`` frames, ``ph x pw`` patch grid)::

    layer_3 = resize_layers[2](projects[2](tokens_2))  (B*T, oc_2, ph, pw)      -> motion_modules[0]
    layer_4 = resize_layers[3](projects[3](tokens_3))  (B*T, oc_3, ph/2, pw/2)  -> motion_modules[1]
    path_4  = refinenet4(layer4_rn(layer_4))           (B*T, features, ph, pw)   -> motion_modules[2]
    path_3  = refinenet3(path_4, layer3_rn(layer_3))   (B*T, features, 2ph, 2pw) -> motion_modules[3]

and none at layer_1/2 or path_2/1. A temporal module (`TemporalModule`) normalises its input
(GroupNorm, 32 groups), projects it, runs one transformer block whose two attentions mix
**frames only** (each pixel attends to the same pixel in the other frames, with sinusoidal
absolute positions for up to ``num_frames`` = 32 frames added to queries, keys and values) and a
GEGLU feed-forward, then adds a zero-initialised output projection to its input. At
initialisation the head therefore computes exactly DAv2's DPT, frame by frame; loading DAv2's
weights (`VideoDepthAnything.load_dav2`) reproduces DAv2 until the temporal modules train.

Module names equal the official ones (``pretrained.*``, ``head.*`` with
``head.motion_modules.{0..3}.temporal_transformer.*``), so the released
``video_depth_anything_{vits,vitb,vitl}.pth`` and ``metric_video_depth_anything_*.pth`` load
strictly without renaming (:meth:`VideoDepthAnything.from_checkpoint`).

Streaming (:meth:`VideoDepthAnything.step`): each temporal attention keeps, per frame, its
normalised input (``(B*h*w, 1, C)``); a new frame attends to 31 cached frames plus itself, the
cache window chosen so that it mimics the offline windows' keyframes (`VDAStreamState`). Memory
is bounded (42 cached frames) whatever the video's length.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vdf.models.dav2 import DPT_CONFIGS, dav2_official_to_vdf, guess_dav2_variant
from vdf.models.dav2 import _weights_hint as _dav2_weights_hint
from vdf.models.dinov2 import PATCH_SIZE, DINOv2, check_patch_multiple
from vdf.models.dpt import DPTHead
from vdf.models.weights import load_weights

#: Frames of one offline window; also the length of the temporal position table.
NUM_FRAMES = 32

_RELEASES = (
    "https://huggingface.co/depth-anything (Video-Depth-Anything-{Small,Base,Large}, Metric-Video-Depth-Anything-*)"
)


def _weights_hint(encoder: str, metric: bool) -> str:
    if encoder not in ("vits", "vitb", "vitl"):
        return f"no official Video-Depth-Anything checkpoint was released for {encoder!r} (vits, vitb and vitl were)"
    name = f"{'metric_' if metric else ''}video_depth_anything_{encoder}.pth"
    return f"download {name} yourself from the Video-Depth-Anything release ({_RELEASES}); vdf never downloads weights"


# -- temporal modules ----------------------------------------------------------------------------


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal positions ``pe`` ``(1, max_len, C)`` (sin on even, cos on odd channels).

    Kept as a persistent buffer because the official checkpoints carry it (``pos_encoder.pe``).
    """

    def __init__(self, channels: int, max_len: int = NUM_FRAMES):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        freq = torch.exp(torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels))
        pe = torch.zeros(1, max_len, channels)
        pe[0, :, 0::2] = torch.sin(position * freq)
        pe[0, :, 1::2] = torch.cos(position * freq)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, L, C)`` -> ``x + pe[:, :L]``."""
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the {self.pe.shape[1]} positions of the temporal attention")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Multi-head self-attention over frames, per pixel: ``(B*T, N, C)`` -> ``(B*T, N, C)``.

    Args:
        channels: ``C``; ``heads`` must divide it.
        heads: attention heads (8 in every released model).
        max_len: positions of the sinusoidal table (the most frames one call may see).

    q, k, v have no bias; the output projection (``to_out.0``) has one.
    """

    def __init__(self, channels: int, heads: int = 8, max_len: int = NUM_FRAMES):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Sequential(nn.Linear(channels, channels), nn.Dropout(0.0))
        self.pos_encoder = SinusoidalPositions(channels, max_len)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, c = x.shape
        return x.view(n, length, self.heads, c // self.heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, frames: int, cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over the frames of each pixel.

        Args:
            x: ``(B*T, N, C)`` normalised tokens, frame-major (``T = frames``).
            frames: ``T``.
            cache: optional ``(B*N, L, C)``: the normalised tokens of ``L`` earlier frames (the
                streaming mode; then ``T`` must be 1). Positions ``0..L`` go to the cached
                frames and the current one; only the current frame is queried.

        Returns:
            ``(B*T, N, C)`` and this call's normalised tokens per pixel ``(B*N, T, C)`` (what a
            stream caches).
        """
        bt, n, c = x.shape
        seq = x.view(bt // frames, frames, n, c).transpose(1, 2).reshape(-1, frames, c)  # (B*N, T, C)
        context = seq if cache is None else torch.cat([cache.to(seq.dtype), seq], dim=1)
        context = self.pos_encoder(context)
        query = context[:, context.shape[1] - frames :]
        q, k, v = self._split(self.to_q(query)), self._split(self.to_k(context)), self._split(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, frames, c)
        out = self.to_out(out)
        out = out.view(bt // frames, n, frames, c).transpose(1, 2).reshape(bt, n, c)
        return out, seq


class GEGLU(nn.Module):
    """``a * gelu(g)`` with ``a, g = proj(x).chunk(2)``: ``(..., C)`` -> ``(..., inner)``."""

    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(channels, inner * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU (inner width ``4C``) then a linear back to ``C``; ``net`` indices as the official keys."""

    def __init__(self, channels: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            GEGLU(channels, channels * mult), nn.Dropout(0.0), nn.Linear(channels * mult, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TemporalTransformerBlock(nn.Module):
    """Two pre-norm temporal attentions, then a pre-norm GEGLU feed-forward, each residual."""

    def __init__(self, channels: int, heads: int = 8, attentions: int = 2, max_len: int = NUM_FRAMES):
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(channels, heads, max_len) for _ in range(attentions))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(attentions))
        self.ff = FeedForward(channels)
        self.ff_norm = nn.LayerNorm(channels)

    def forward(
        self, x: torch.Tensor, frames: int, caches: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B*T, N, C)`` -> same, and each attention's normalised input ``(B*N, T, C)``."""
        hidden = []
        for i, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            out, seq = attention(norm(x), frames, None if caches is None else caches[i])
            x = x + out
            hidden.append(seq)
        return x + self.ff(self.ff_norm(x)), hidden


class TemporalTransformer(nn.Module):
    """GroupNorm -> ``proj_in`` -> transformer blocks -> ``proj_out`` (zero-initialised) + input."""

    def __init__(self, channels: int, heads: int = 8, blocks: int = 1, attentions: int = 2, max_len: int = NUM_FRAMES):
        super().__init__()
        if channels % 32:
            raise ValueError(f"temporal modules normalise in 32 groups: {channels} channels is not a multiple of 32")
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, heads, attentions, max_len) for _ in range(blocks)
        )
        self.proj_out = nn.Linear(channels, channels)
        # Zero output: the module starts as the identity, so the head starts as DAv2's DPT.
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, x: torch.Tensor, frames: int, caches: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B*T, C, h, w)`` -> same; ``caches``: one ``(B*h*w, L, C)`` per attention (streaming)."""
        bt, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(bt, h * w, c)
        tokens = self.proj_in(tokens)
        hidden: list[torch.Tensor] = []
        per_block = len(self.transformer_blocks[0].attention_blocks)
        for i, block in enumerate(self.transformer_blocks):
            mine = None if caches is None else caches[i * per_block : (i + 1) * per_block]
            tokens, seqs = block(tokens, frames, mine)
            hidden.extend(seqs)
        tokens = self.proj_out(tokens)
        return x + tokens.reshape(bt, h, w, c).permute(0, 3, 1, 2), hidden


class TemporalModule(nn.Module):
    """The official wrapper name around `TemporalTransformer` (``temporal_transformer.*`` keys)."""

    def __init__(self, channels: int, heads: int = 8, blocks: int = 1, attentions: int = 2, max_len: int = NUM_FRAMES):
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, blocks, attentions, max_len)

    @property
    def num_attentions(self) -> int:
        blocks = self.temporal_transformer.transformer_blocks
        return len(blocks) * len(blocks[0].attention_blocks)

    def forward(
        self, x: torch.Tensor, frames: int, caches: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.temporal_transformer(x, frames, caches)


# -- the head ------------------------------------------------------------------------------------


class TemporalDPTHead(DPTHead):
    """DAv2's DPT with four `TemporalModule` s (``motion_modules``) on layer_3, layer_4, path_4, path_3.

    Args:
        in_channels: ViT token width ``D``.
        features: DPT fusion width.
        out_channels: DPT per-level widths.
        num_frames: positions of the temporal attention (32).
        heads: heads of every temporal attention (8).

    ``out_channels[2]``, ``out_channels[3]`` and ``features`` must be multiples of 32 (GroupNorm)
    and of ``heads``.
    """

    def __init__(
        self,
        in_channels: int,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        num_frames: int = NUM_FRAMES,
        heads: int = 8,
    ):
        super().__init__(in_channels, features, out_channels)
        widths = (self.out_channels[2], self.out_channels[3], features, features)
        self.motion_modules = nn.ModuleList(TemporalModule(c, heads, max_len=num_frames) for c in widths)

    def forward(  # type: ignore[override]
        self,
        features: Sequence[torch.Tensor],
        patch_hw: Sequence[int],
        frames: int,
        caches: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Four ``(B*T, ph*pw, D)`` token tensors of ``T = frames`` frames -> ``(B*T, 1, 14ph, 14pw)``.

        ``caches``: the streaming mode's cached hidden states, one ``(B*h*w, L, C)`` per temporal
        attention (8 for the released models, module by module). Returns the map and this call's
        hidden states in the same order.
        """
        ph, pw = patch_hw
        layer_1, layer_2, layer_3, layer_4 = (self.resample(i, t, patch_hw) for i, t in enumerate(features))
        per = self.motion_modules[0].num_attentions
        hidden: list[torch.Tensor] = []

        def temporal(i: int, x: torch.Tensor) -> torch.Tensor:
            out, h = self.motion_modules[i](x, frames, None if caches is None else caches[i * per : (i + 1) * per])
            hidden.extend(h)
            return out

        s = self.scratch
        layer_3 = s.layer3_rn(temporal(0, layer_3))
        layer_4 = s.layer4_rn(temporal(1, layer_4))
        layer_1, layer_2 = s.layer1_rn(layer_1), s.layer2_rn(layer_2)
        path_4 = temporal(2, self.refine(0, layer_4, None, layer_3.shape[-2:]))
        path_3 = temporal(3, self.refine(1, path_4, layer_3, layer_2.shape[-2:]))
        path_1 = self.refine(3, self.refine(2, path_3, layer_2, layer_1.shape[-2:]), layer_1, None)
        out = s.output_conv1(path_1)
        out = F.interpolate(out, size=(ph * PATCH_SIZE, pw * PATCH_SIZE), mode="bilinear", align_corners=True)
        # The last convs run in float32 even under autocast, as the official head does.
        with torch.autocast(out.device.type, enabled=False):
            out = s.output_conv2(out.float())
        return out, hidden


# -- streaming state -----------------------------------------------------------------------------


@dataclass
class VDAStreamState:
    """The cache of a stream: per processed frame, the 8 temporal attentions' hidden states.

    ``history[0]`` is frame 0 (the global anchor, as slot 0 of every offline window); after the
    first frame the history holds 32 copies of it (the offline first window's length), then each
    frame appends its own entry and, once the history exceeds `HISTORY` entries, the oldest
    entry after the anchor is dropped. A new frame attends to ``history[:2] + history[-29:]`` (31
    frames) and itself: the anchor, one frame about 41 back (as slot 1 of an offline window, the
    previous window's slot 12) and the 29 latest frames.
    """

    history: list[list[torch.Tensor]] = field(default_factory=list)
    frames: int = 0

    #: Entries kept: 2 * (32 - 10) - 1 - (10 - 8) + 1, from the offline window (32 frames, 10
    #: refilled slots, 8 cross-faded) as the official streaming code derives it.
    HISTORY = 42
    #: Entries taken from the front (anchor + the oldest kept) and from the back of the history.
    FRONT = 2
    BACK = NUM_FRAMES - 3

    def context(self) -> list[torch.Tensor]:
        """One ``(B*h*w, 31, C)`` tensor per temporal attention."""
        entries = self.history[: self.FRONT] + self.history[-self.BACK :]
        return [torch.cat([e[i] for e in entries], dim=1) for i in range(len(entries[0]))]

    def push(self, hidden: list[torch.Tensor]) -> None:
        if not self.history:
            self.history = [hidden] * NUM_FRAMES  # the same tensors, not copies
        else:
            self.history.append(hidden)
            if len(self.history) > self.HISTORY:
                del self.history[1]
        self.frames += 1


# -- the network ---------------------------------------------------------------------------------


def _describe(state_dict: Any) -> str | None:
    variant = guess_dav2_variant(state_dict)
    if any(k.startswith("depth_head.") for k in state_dict):
        return f"{variant} Depth-Anything-V2 (image model: use load_dav2 / dav2_weights)"
    if not any(".motion_modules." in k for k in state_dict):
        return variant
    return f"{variant} Video-Depth-Anything"


class VideoDepthAnything(nn.Module):
    """Video depth: ``(B, T, 3, H, W)`` normalised frames -> ``(B, T, 1, H, W)``, T <= 32.

    Args:
        encoder: DINOv2 variant, ``"vits" | "vitb" | "vitl"`` (released), or ``"vitg"``.
        metric: a metric model (``metric_video_depth_anything_*.pth``): the output is depth in
            metres; otherwise relative disparity (affine-invariant, larger is nearer). Same
            network; the flag only changes what the output means (and, in the offline strategy,
            that windows are not re-aligned).
        features, out_channels, embed_dim, depth, num_heads, layer_indices: width overrides, as
            `vdf.models.DepthAnythingV2` (the tiny configs use them).
        num_frames: positions of the temporal attentions (32, the offline window).
        temporal_heads: heads of the temporal attentions (8).
        weights: an official ``[metric_]video_depth_anything_<encoder>.pth``, loaded strictly.
        dav2_weights: an official ``depth_anything_v2_<encoder>.pth`` to initialise the encoder
            and the DPT (``depth_head.*`` -> ``head.*``; the temporal modules keep their
            zero-initialised output, so the network then equals DAv2 frame by frame).
        device: where to allocate.
    """

    def __init__(
        self,
        encoder: str = "vitl",
        metric: bool = False,
        features: int | None = None,
        out_channels: Sequence[int] | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        layer_indices: Sequence[int] | None = None,
        num_frames: int = NUM_FRAMES,
        temporal_heads: int = 8,
        weights: str | None = None,
        dav2_weights: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if encoder not in DPT_CONFIGS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {sorted(DPT_CONFIGS)}")
        if weights is not None and dav2_weights is not None:
            raise ValueError("give weights (a Video-Depth-Anything checkpoint) or dav2_weights, not both")
        default_features, default_oc = DPT_CONFIGS[encoder]
        self.encoder = encoder
        self.metric = metric
        self.num_frames = num_frames
        self.pretrained = DINOv2(
            encoder, embed_dim=embed_dim, depth=depth, num_heads=num_heads, layer_indices=layer_indices, device=device
        )
        with torch.device(device) if device is not None else nullcontext():
            self.head = TemporalDPTHead(
                self.pretrained.embed_dim,
                features=default_features if features is None else features,
                out_channels=list(default_oc if out_channels is None else out_channels),
                num_frames=num_frames,
                heads=temporal_heads,
            )
        if weights is not None:
            self.load_official(weights)
        if dav2_weights is not None:
            self.load_dav2(dav2_weights)

    # ------------------------------------------------------------------ forward

    def _depth(
        self, frames: torch.Tensor, caches: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, _, h, w = frames.shape
        if t > self.num_frames:
            raise ValueError(f"{t} frames exceed the temporal attention's {self.num_frames} positions")
        patch_hw = check_patch_multiple(h, w, PATCH_SIZE)
        tokens = self.pretrained.get_intermediate_layers(frames.flatten(0, 1), self.pretrained.layer_indices)
        out, hidden = self.head(tokens, patch_hw, t, caches)
        # Official: bilinear to the input size (a no-op: the head already outputs it), then ReLU.
        return F.relu(out).unflatten(0, (b, t)), hidden

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, T, 3, H, W)`` ImageNet-normalised, H and W multiples of 14 -> ``(B, T, 1, H, W)`` >= 0.

        The frames attend to each other (positions 0..T-1); relative disparity, or metres when
        ``metric``.
        """
        return self._depth(frames)[0]

    def init_state(self) -> VDAStreamState:
        """An empty stream (the cache is filled by the first :meth:`step`)."""
        return VDAStreamState()

    def step(self, frame: torch.Tensor, state: VDAStreamState | None = None) -> tuple[torch.Tensor, VDAStreamState]:
        """One frame of a stream: ``(B, 3, H, W)`` normalised -> ``(B, 1, H, W)``, updated state.

        The first frame is run alone (one position); every later frame attends to the 31 frames
        of the state's cache window and itself (positions 0..31, the frame at 31). The state keeps
        at most `VDAStreamState.HISTORY` frames' hidden states: memory is constant in the
        video's length.
        """
        if frame.ndim != 4:
            raise ValueError(f"expected a frame of shape (B, 3, H, W), got {tuple(frame.shape)}")
        state = self.init_state() if state is None else state
        caches = state.context() if state.history else None
        out, hidden = self._depth(frame.unsqueeze(1), caches)
        state.push(hidden)
        return out[:, 0], state

    # ------------------------------------------------------------------ weights

    def load_official(self, path: str | os.PathLike) -> None:
        """Load an official ``[metric_]video_depth_anything_*.pth`` strictly (see :meth:`from_checkpoint`)."""
        load_weights(
            self,
            os.fspath(path),
            "Video-Depth-Anything weights",
            _weights_hint(self.encoder, self.metric),
            convert=dav2_official_to_vdf,  # the names are DAv2's: unwrap only (and ViT-g's SwiGLU)
            describe=_describe,
        )

    def load_dav2(self, path: str | os.PathLike) -> None:
        """Initialise the encoder and the DPT from an official ``depth_anything_v2_*.pth`` (strict).

        The temporal modules are left as they are (zero output at initialisation).
        """

        def convert(state_dict: Any) -> dict[str, torch.Tensor]:
            out = {}
            for key, value in dav2_official_to_vdf(state_dict).items():
                out["head." + key[len("depth_head.") :] if key.startswith("depth_head.") else key] = value
            return out

        box = nn.Module()
        box.pretrained = self.pretrained
        box.head = _WithoutTemporal(self.head)
        load_weights(
            box, os.fspath(path), "Depth-Anything-V2 weights", _dav2_weights_hint(self.encoder), convert=convert
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, encoder: str = "vitl", metric: bool = False, **kwargs
    ) -> VideoDepthAnything:
        """Build a model and load an official checkpoint strictly.

        Args:
            path: local ``video_depth_anything_{vits,vitb,vitl}.pth`` or
                ``metric_video_depth_anything_{vits,vitb,vitl}.pth`` (a flat dict with
                ``pretrained.*`` and ``head.*`` keys; wrapped dicts and ``module.`` prefixes are
                accepted too).
            encoder: the variant the file was trained with.
            metric: whether it is a metric model (the output is then metres).
            **kwargs: other constructor arguments.

        Raises:
            FileNotFoundError: the file is missing (the message says where to get it).
            vdf.models.weights.StateDictMismatchError: keys or shapes do not match.
        """
        model = cls(encoder, metric=metric, **kwargs)
        model.load_official(path)
        return model


class _WithoutTemporal(nn.Module):
    """A view of a `TemporalDPTHead` whose ``state_dict`` leaves out ``motion_modules`` (for DAv2 weights)."""

    def __init__(self, head: TemporalDPTHead):
        super().__init__()
        self.projects = head.projects
        self.resize_layers = head.resize_layers
        self.scratch = head.scratch
