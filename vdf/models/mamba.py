"""vdf's own Mamba2 (SSD) layer: mamba_ssm's parameter layout, an explicit recurrent state, and an
exact pure-PyTorch chunked scan, with the mamba_ssm Triton kernel used on CUDA when it is installed.

Parameters (names and shapes equal ``mamba_ssm.modules.mamba2.Mamba2``, so state dicts load
``strict=True`` in both directions; E = d_inner = expand * d_model, H = nheads = E / headdim,
G = ngroups, N = d_state, K = d_conv)::

    in_proj.weight   (2E + 2GN + H, d_model)   output split as [z (E), x (E), B (GN), C (GN), dt (H)]
    conv1d.weight    (E + 2GN, 1, K)           depthwise causal conv over [x, B, C]
    conv1d.bias      (E + 2GN,)
    dt_bias          (H,)
    A_log            (H,)                      A = -exp(A_log), one scalar decay rate per head
    D                (H,)                      skip connection per head
    norm.weight      (E,)                      gated RMSNorm, only when rmsnorm=True
    out_proj.weight  (d_model, E)

One layer, for a token sequence u (B, L, d_model)::

    [z, xBC, dt] = in_proj(u)
    [x, B, C]    = silu(causal depthwise conv1d(xBC))          x: (H, P) per token, B, C: (G, N)
    delta        = softplus(dt + dt_bias)                       (H,) per token
    S_t          = exp(delta_t * A) S_{t-1} + delta_t x_t B_t^T  (H, P, N); head h uses group h // (H/G)
    y_t          = S_t C_t + D x_t
    out          = out_proj(RMSNorm_groups(y * silu(z)) * norm.weight)     (norm_before_gate=False)

:class:`Mamba2State` carries ``S`` and the last ``K - 1`` raw conv inputs between calls, so a
sequence split into pieces gives the same result as the whole sequence; FlashDepth's mode
(``conv_restart=True``) restarts the conv from zero padding at every :meth:`Mamba2.forward` call.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FORCE_TORCH_ENV = "VDF_MAMBA_FORCE_TORCH"
"""Set this environment variable to ``1`` to use the PyTorch scan even where the kernel is available."""

ScanBackend = Literal["auto", "torch", "kernel"]


@dataclass
class Mamba2State:
    """The recurrent state of one :class:`Mamba2` layer (a plain container).

    Attributes:
        conv: ``(B, conv_dim, d_conv - 1)`` the last raw (pre-conv) ``[x, B, C]`` inputs, oldest
            first, in the dtype of the layer's activations; ``None`` means zeros. mamba_ssm's
            ``conv_state`` is ``(B, conv_dim, d_conv)``: ours is its ``[..., 1:]`` (the oldest column
            never reaches the next output).
        ssm: ``(B, nheads, headdim, d_state)`` the SSM state S, in the scan dtype (float32, or
            float64 for float64 inputs); same layout as mamba_ssm's ``ssm_state``.

    The tensors keep their autograd history, so backpropagating through a clip processed call by
    call reaches earlier calls (use :meth:`detach` to truncate).
    """

    conv: torch.Tensor | None
    ssm: torch.Tensor

    def detach(self) -> Mamba2State:
        """The same state cut from the autograd graph (truncated backpropagation through time)."""
        return Mamba2State(None if self.conv is None else self.conv.detach(), self.ssm.detach())


def scan_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype the scan runs in: float64 for float64 inputs, float32 for everything else.

    Low-precision decays multiplied over hundreds of tokens lose the state, hence never bf16/fp16.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def _segsum_from_cumsum(cs: torch.Tensor) -> torch.Tensor:
    """``(..., T)`` cumulative sums -> ``(..., T, T)`` with ``out[i, j] = cs[i] - cs[j]`` for ``i >= j``, -inf above.

    ``exp`` of it is the decay from position j to position i. The upper triangle is masked with
    -inf *before* exp, so those (possibly large positive) differences never overflow, and every
    exponent that is kept is <= 0.
    """
    t = cs.shape[-1]
    diff = cs[..., :, None] - cs[..., None, :]
    causal = torch.ones(t, t, dtype=torch.bool, device=cs.device).tril()
    return diff.masked_fill(~causal, float("-inf"))


def ssd_scan_torch(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact chunked SSD scan in PyTorch (any device; float32, or float64 for float64 ``x``).

    Args:
        x: ``(b, l, h, p)`` inputs per head.
        dt: ``(b, l, h)`` raw step sizes; ``delta = softplus(dt + dt_bias)`` is taken here.
        A: ``(h,)`` negative decay rates.
        B, C: ``(b, l, g, n)`` input and output projections; head ``i`` uses group ``i // (h // g)``.
        D: ``(h,)`` skip weights.
        dt_bias: ``(h,)``.
        chunk_size: the longest block computed in quadratic form (blocks are balanced to at most
            this length); the result does not depend on it (up to rounding), only the speed does.
            ``l`` need not be a multiple of it.
        initial_state: ``(b, h, p, n)`` state before the first token; ``None`` = zeros.

    Returns:
        ``y (b, l, h, p)`` and the final state ``(b, h, p, n)``, both in :func:`scan_dtype`.
    """
    b, l, h, p = x.shape
    g, n = B.shape[-2:]
    r = h // g
    f = scan_dtype(x.dtype)
    # Autocast would send the einsums below back to bf16; the scan must stay in f.
    with torch.autocast(device_type=x.device.type, enabled=False):
        x, B, C = x.to(f), B.to(f), C.to(f)
        delta = F.softplus(dt.to(f) + dt_bias.to(f))  # (b, l, h)
        skip = D.to(f)[:, None] * x
        # c chunks of q <= chunk_size tokens, balanced so that the padding is < c tokens
        # (841 tokens: 4 x 211 rather than 4 x 256); the result does not depend on q.
        c = -(-l // max(1, chunk_size))
        q = -(-l // c)
        pad = c * q - l
        if pad:
            # delta = 0 on the padding: no decay and no input there, so the final state is exact.
            x = F.pad(x, (0, 0, 0, 0, 0, pad))
            delta = F.pad(delta, (0, 0, 0, pad))
            B = F.pad(B, (0, 0, 0, 0, 0, pad))
            C = F.pad(C, (0, 0, 0, 0, 0, pad))
        xd = (x * delta[..., None]).view(b, c, q, g, r, p)  # delta_s x_s
        a = (delta * A.to(f)).view(b, c, q, g, r).permute(0, 3, 4, 1, 2)  # (b, g, r, c, q), <= 0
        a_cum = a.cumsum(-1)  # decay exponent from the chunk start to each token, inclusive
        Bc = B.view(b, c, q, g, n)
        Cc = C.view(b, c, q, g, n)

        # 1. Tokens of the same chunk: y_i = sum_{j<=i} (C_i . B_j) exp(a_cum_i - a_cum_j) delta_j x_j.
        decay = torch.exp(_segsum_from_cumsum(a_cum))  # (b, g, r, c, q, q)
        cb = torch.einsum("bcign,bcjgn->bgcij", Cc, Bc)  # per group, shared by its r heads
        y = torch.einsum("bgrcij,bcjgrp->bcigrp", cb[:, :, None] * decay, xd)

        # 2. What each chunk adds to the state at its end: sum_j exp(a_cum_end - a_cum_j) delta_j x_j B_j^T.
        to_end = torch.exp(a_cum[..., -1:] - a_cum).permute(0, 3, 4, 1, 2)  # (b, c, q, g, r)
        chunk_states = torch.einsum("bcjgn,bcjgrp->bcgrpn", Bc, xd * to_end[..., None])

        # 3. State entering each chunk: S_{k+1} = exp(total decay of chunk k) S_k + chunk_states_k,
        # solved for all k at once with the (c+1) x (c+1) segment-sum decay matrix.
        if initial_state is None:
            s0 = x.new_zeros(b, 1, g, r, p, n)
        else:
            s0 = initial_state.to(f).reshape(b, 1, g, r, p, n)
        states = torch.cat([s0, chunk_states], dim=1)  # (b, c + 1, g, r, p, n)
        totals = F.pad(a_cum[..., -1], (1, 0))  # (b, g, r, c + 1)
        across = torch.exp(_segsum_from_cumsum(totals.cumsum(-1)))  # (b, g, r, c + 1, c + 1)
        states = torch.einsum("bgrzk,bkgrpn->bzgrpn", across, states)
        entering, final = states[:, :-1], states[:, -1]

        # 4. Contribution of the entering state: y_i += exp(a_cum_i) C_i S_enter.
        y_prev = torch.einsum("bcign,bcgrpn->bcigrp", Cc, entering)
        y = y + y_prev * torch.exp(a_cum).permute(0, 3, 4, 1, 2)[..., None]

        y = y.reshape(b, c * q, h, p)[:, :l] + skip
        return y, final.reshape(b, h, p, n)


@functools.cache
def _load_kernel() -> Callable | None:
    """mamba_ssm's ``mamba_chunk_scan_combined``, or None. Imported on first use only."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception:  # not installed, or a broken install (missing CUDA extension, Triton, ...)
        return None
    return mamba_chunk_scan_combined


def kernel_available() -> bool:
    """Whether mamba_ssm's Triton SSD kernel can be imported (tries the import once)."""
    return _load_kernel() is not None


def _use_kernel(x: torch.Tensor) -> bool:
    if os.environ.get(FORCE_TORCH_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return False
    # float64 always takes the exact path; the kernel exists for the training dtypes.
    return x.is_cuda and x.dtype in (torch.float32, torch.float16, torch.bfloat16) and kernel_available()


@torch.compiler.disable  # the Triton kernel is not traceable (FlashDepth disables compile around it too)
def ssd_scan_kernel(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ssd_scan_torch`'s contract on mamba_ssm's Triton kernel (CUDA tensors only)."""
    kernel = _load_kernel()
    if kernel is None:
        raise RuntimeError(
            "mamba_ssm's Triton kernel is not importable "
            "(`from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined` failed); "
            "install the optional GPU extra (`pip install mamba-ssm --no-build-isolation`) or use backend='torch'"
        )
    f = scan_dtype(x.dtype)
    if initial_state is not None:
        initial_state = initial_state.to(torch.float32).contiguous()
    # Keywords, not positions: the positional order changed between mamba_ssm releases.
    y, final = kernel(
        x.contiguous(),
        dt.contiguous(),
        A.to(torch.float32),
        B.contiguous(),
        C.contiguous(),
        chunk_size=chunk_size,
        D=D,
        z=None,
        dt_bias=dt_bias,
        initial_states=initial_state,
        dt_softplus=True,
        return_final_states=True,
    )
    return y.to(f), final.to(f)


def ssd_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    dt_bias: torch.Tensor,
    chunk_size: int,
    initial_state: torch.Tensor | None = None,
    backend: ScanBackend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD scan, dispatched: shapes and returns as :func:`ssd_scan_torch`.

    ``backend="auto"`` uses mamba_ssm's kernel for CUDA tensors when it imports and
    ``VDF_MAMBA_FORCE_TORCH`` is not set, and the PyTorch scan otherwise; ``"torch"`` / ``"kernel"``
    force one (for parity tests).
    """
    if backend == "kernel" or (backend == "auto" and _use_kernel(x)):
        return ssd_scan_kernel(x, dt, A, B, C, D, dt_bias, chunk_size, initial_state)
    if backend not in ("auto", "torch"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'kernel', got {backend!r}")
    return ssd_scan_torch(x, dt, A, B, C, D, dt_bias, chunk_size, initial_state)


def causal_depthwise_conv(padded: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Depthwise conv without padding: ``padded (b, c, K - 1 + l)``, ``weight (c, 1, K)`` -> ``(b, c, l)``.

    ``out[t] = bias + sum_k weight[k] * padded[t + k]`` = ``F.conv1d(padded, weight, bias, groups=c)``.
    float64 on CPU uses K shifted multiply-adds instead: torch's depthwise float64 CPU ``conv1d``
    stalls for up to seconds per call when its intra-op threads compete with another busy process
    (measured with torch 2.15 on 2 cores), which made the float64 tests crawl; for the other dtypes
    ``conv1d`` is about 3x faster than the shifts.
    """
    if not (padded.dtype == torch.float64 and padded.device.type == "cpu"):
        return F.conv1d(padded, weight, bias, groups=weight.shape[0])
    k = weight.shape[-1]
    length = padded.shape[-1] - k + 1
    out = padded[..., :length] * weight[:, 0, 0, None]
    for i in range(1, k):
        out = out + padded[..., i : i + length] * weight[:, 0, i, None]
    return out if bias is None else out + bias[:, None]


class GatedRMSNorm(nn.Module):
    """``RMSNorm(y * silu(z))`` over groups of ``group_size`` channels, times ``weight``; no bias.

    mamba_ssm's ``RMSNormGated`` with ``norm_before_gate=False``. ``y, z (..., d)`` -> ``(..., d)``,
    computed in the dtype of ``y`` (the caller passes the scan dtype).
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        if d % group_size:
            raise ValueError(f"group_size {group_size} does not divide {d}")
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d, device=device, dtype=dtype))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y * F.silu(z.to(y.dtype))
        groups = y.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return groups.flatten(-2) * self.weight.to(y.dtype)


class Mamba2(nn.Module):
    """Mamba2 mixer layer ``(B, L, d_model) -> (B, L, d_model)`` with an explicit recurrent state.

    Args:
        d_model: token width.
        d_state: SSM state size N per head.
        d_conv: causal depthwise conv width K.
        expand: d_inner = expand * d_model.
        headdim: P; nheads = d_inner / headdim.
        ngroups: G groups of (B, C) shared by nheads / G heads each; also the RMSNorm groups.
        chunk_size: block length of the chunked scan (a speed knob; results do not depend on it).
        conv_restart: FlashDepth's mode. Every :meth:`forward` call starts the causal conv from
            zero padding, as if the call were a new sequence for the conv; only the SSM state
            crosses calls (FlashDepth calls the layer once per frame). The returned state then has
            ``conv=None``. :meth:`step` is token-level and always carries the conv state.
        rmsnorm: gated RMSNorm before ``out_proj`` (else ``y * silu(z)``, and no ``norm.weight``).
        A_init_range: A = -U(A_init_range) per head, stored as ``A_log = log(-A)``.
        dt_min, dt_max, dt_init_floor: initial step sizes log-uniform in [dt_min, dt_max], at least
            dt_init_floor, stored as their inverse softplus in ``dt_bias``.
        device, dtype: where and in which dtype to create the parameters (``device="meta"`` works).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        chunk_size: int = 256,
        conv_restart: bool = False,
        rmsnorm: bool = True,
        A_init_range: tuple[float, float] = (1, 16),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"headdim {headdim} must divide d_inner = expand * d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % ngroups:
            raise ValueError(f"ngroups {ngroups} must divide nheads = {nheads}")
        if d_conv < 1 or chunk_size < 1:
            raise ValueError(f"d_conv and chunk_size must be >= 1, got {d_conv} and {chunk_size}")
        if not 0 < A_init_range[0] <= A_init_range[1]:
            raise ValueError(f"A_init_range must be positive and increasing, got {A_init_range}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.conv_restart = conv_restart
        self.rmsnorm = rmsnorm
        self.A_init_range = tuple(A_init_range)
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.d_inner = d_inner
        self.nheads = nheads
        self.conv_dim = d_inner + 2 * ngroups * d_state
        self.d_in_proj = 2 * d_inner + 2 * ngroups * d_state + nheads

        factory = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(d_model, self.d_in_proj, bias=False, **factory)
        # Only the weights matter: padding is done by hand (carried history or zeros), not by the layer.
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, bias=True, **factory)
        self.dt_bias = nn.Parameter(torch.empty(nheads, **factory))
        self.A_log = nn.Parameter(torch.empty(nheads, **factory))
        self.D = nn.Parameter(torch.empty(nheads, **factory))
        # mamba_ssm's flag for optimisers that exempt these from weight decay.
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        if rmsnorm:
            self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups, eps=1e-5, **factory)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False, **factory)
        self._reset_ssm_parameters()

    def _reset_ssm_parameters(self) -> None:
        """mamba_ssm's initialisation of ``dt_bias``, ``A_log`` and ``D``."""
        device = self.A_log.device
        with torch.no_grad():
            lo, hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(self.nheads, device=device) * (hi - lo) + lo).clamp(min=self.dt_init_floor)
            # inverse of softplus: softplus(dt + log(-expm1(-dt))) = dt
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            A = torch.empty(self.nheads, device=device).uniform_(*self.A_init_range)
            self.A_log.copy_(torch.log(A))
            self.D.fill_(1.0)

    def reset_parameters(self) -> None:
        """Re-initialise every parameter as at construction (e.g. after ``to_empty`` from meta)."""
        self.in_proj.reset_parameters()
        self.conv1d.reset_parameters()
        self.out_proj.reset_parameters()
        if self.rmsnorm:
            nn.init.ones_(self.norm.weight)
        self._reset_ssm_parameters()

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"headdim={self.headdim}, ngroups={self.ngroups}, nheads={self.nheads}, chunk_size={self.chunk_size}, "
            f"conv_restart={self.conv_restart}, rmsnorm={self.rmsnorm}"
        )

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Mamba2State:
        """Zero state for ``batch_size`` sequences.

        ``dtype`` is the dtype of the tokens that will be fed (default: the weights'); the conv
        state takes it, the SSM state takes :func:`scan_dtype` of it.
        """
        weight = self.in_proj.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        conv = torch.zeros(batch_size, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=scan_dtype(dtype))
        return Mamba2State(conv=conv, ssm=ssm)

    def _split_xbc(self, xbc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(..., conv_dim)`` -> x ``(..., H, P)``, B and C ``(..., G, N)``."""
        gn = self.ngroups * self.d_state
        x, B, C = torch.split(xbc, [self.d_inner, gn, gn], dim=-1)
        return (
            x.unflatten(-1, (self.nheads, self.headdim)),
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
        )

    def _output(self, y: torch.Tensor, z: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        """Gate (and norm) ``y (..., E)`` in the scan dtype, then ``out_proj`` in the activations' dtype."""
        y = self.norm(y, z) if self.rmsnorm else y * F.silu(z.to(y.dtype))
        return self.out_proj(y.to(out_dtype))

    def forward(self, u: torch.Tensor, state: Mamba2State | None = None) -> tuple[torch.Tensor, Mamba2State]:
        """Process ``u (B, L, d_model)``, L >= 1, continuing from ``state`` (``None`` = zeros).

        Returns ``(B, L, d_model)`` in ``u``'s dtype and the state after the last token. With
        ``conv_restart=False``, calling this on consecutive pieces of a sequence, passing the
        state along, equals one call on the whole sequence.
        """
        b, l, _ = u.shape
        if l == 0:
            raise ValueError("Mamba2.forward needs at least one token (L >= 1)")
        z, xbc, dt = torch.split(self.in_proj(u), [self.d_inner, self.conv_dim, self.nheads], dim=-1)

        xbc = xbc.transpose(1, 2)  # (b, conv_dim, l)
        history = None if (state is None or self.conv_restart) else state.conv
        if history is None:
            history = xbc.new_zeros(b, self.conv_dim, self.d_conv - 1)
        padded = torch.cat([history.to(xbc.dtype), xbc], dim=-1)  # (b, conv_dim, d_conv - 1 + l)
        conv_out = causal_depthwise_conv(padded, self.conv1d.weight, self.conv1d.bias)
        # clone: a slice would keep the whole padded sequence alive inside the carried state
        new_conv = None if self.conv_restart else padded[..., padded.shape[-1] - (self.d_conv - 1) :].clone()

        x, B, C = self._split_xbc(F.silu(conv_out).transpose(1, 2))
        A = -torch.exp(self.A_log.to(scan_dtype(x.dtype)))
        y, ssm = ssd_scan(x, dt, A, B, C, self.D, self.dt_bias, self.chunk_size, None if state is None else state.ssm)
        out = self._output(y.flatten(-2), z, u.dtype)
        return out, Mamba2State(conv=new_conv, ssm=ssm)

    def step(self, u_t: torch.Tensor, state: Mamba2State) -> tuple[torch.Tensor, Mamba2State]:
        """One token ``u_t (B, d_model)`` -> ``(B, d_model)`` and the next state; O(1) in the sequence length.

        Equals :meth:`forward` on the token sequence, token by token (``state.conv=None`` = zeros).
        """
        b = u_t.shape[0]
        z, xbc, dt = torch.split(self.in_proj(u_t), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        history = state.conv
        if history is None:
            history = xbc.new_zeros(b, self.conv_dim, self.d_conv - 1)
        window = torch.cat([history.to(xbc.dtype), xbc[..., None]], dim=-1)  # (b, conv_dim, d_conv)
        conv_out = (window * self.conv1d.weight[:, 0, :]).sum(-1) + self.conv1d.bias
        x, B, C = self._split_xbc(F.silu(conv_out))  # (b, H, P), (b, G, N), (b, G, N)

        f = scan_dtype(x.dtype)
        g, r = self.ngroups, self.nheads // self.ngroups
        with torch.autocast(device_type=u_t.device.type, enabled=False):
            x, B, C = x.to(f), B.to(f), C.to(f)
            delta = F.softplus(dt.to(f) + self.dt_bias.to(f))  # (b, H)
            decay = torch.exp(delta * -torch.exp(self.A_log.to(f)))
            xd = (x * delta[..., None]).view(b, g, r, self.headdim)
            ssm = state.ssm.to(f) * decay[..., None, None] + torch.einsum("bgrp,bgn->bgrpn", xd, B).reshape(
                b, self.nheads, self.headdim, self.d_state
            )
            y = torch.einsum("bgrpn,bgn->bgrp", ssm.view(b, g, r, self.headdim, self.d_state), C)
            y = y.reshape(b, self.nheads, self.headdim) + self.D.to(f)[:, None] * x
        out = self._output(y.flatten(-2), z, u_t.dtype)
        return out, Mamba2State(conv=window[..., 1:].clone(), ssm=ssm)
