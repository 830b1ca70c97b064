"""Mamba2: the chunked scan against a slow token-by-token, head-by-head recurrence written here from
the layer's equations (not from vdf code); streaming with carried states; step; gradients;
mamba_ssm's parameter layout; initialisation; bf16; and, on a GPU with mamba_ssm, kernel parity."""

from __future__ import annotations

import copy
import functools
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vdf.models.mamba import FORCE_TORCH_ENV, Mamba2, Mamba2State, kernel_available, ssd_scan

F64 = torch.float64
HEADDIM = 8


def make_layer(d_model=16, d_state=8, ngroups=1, chunk_size=8, conv_restart=False, rmsnorm=True, seed=0):
    """A float64 layer whose parameters are moved away from their init, so that each one matters."""
    torch.manual_seed(seed)
    m = Mamba2(
        d_model,
        d_state=d_state,
        headdim=HEADDIM,
        expand=2,
        ngroups=ngroups,
        chunk_size=chunk_size,
        conv_restart=conv_restart,
        rmsnorm=rmsnorm,
        dtype=F64,
    )
    with torch.no_grad():
        m.dt_bias.uniform_(-3.0, 1.0)  # step sizes ~0.05 .. 1.3: strong and weak decays over a chunk
        m.D.normal_()
        m.conv1d.bias.normal_(std=0.5)
        if rmsnorm:
            m.norm.weight.uniform_(0.5, 1.5)
    return m


def random_state(m, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    conv = torch.randn(batch, m.conv_dim, m.d_conv - 1, generator=g, dtype=F64)
    ssm = torch.randn(batch, m.nheads, m.headdim, m.d_state, generator=g, dtype=F64)
    return Mamba2State(conv=conv, ssm=ssm)


def recurrence(m, u, conv=None, ssm=None):
    """The layer computed one token and one head at a time, straight from the equations.

    ``u (b, L, d_model)``; ``conv (b, E + 2GN, K - 1)`` previous raw conv inputs (None: zeros);
    ``ssm (b, H, P, N)`` (None: zeros). Returns the output, the last K - 1 raw conv inputs and S.
    """
    E, N, G, K, P = m.d_inner, m.d_state, m.ngroups, m.d_conv, m.headdim
    H = E // P
    cd = E + 2 * G * N
    b, L, _ = u.shape
    proj = u @ m.in_proj.weight.T  # [z, x, B, C, dt]
    z, raw, dt = proj[..., :E], proj[..., E : E + cd], proj[..., E + cd :]
    assert dt.shape[-1] == H
    seq = torch.cat([torch.zeros(b, K - 1, cd, dtype=u.dtype) if conv is None else conv.transpose(1, 2), raw], 1)
    w = m.conv1d.weight[:, 0, :]
    A = -torch.exp(m.A_log)
    S = [torch.zeros(b, P, N, dtype=u.dtype) if ssm is None else ssm[:, h] for h in range(H)]
    ys = []
    for t in range(L):
        v = m.conv1d.bias + sum(seq[:, t + k] * w[:, k] for k in range(K))  # causal: inputs t-K+1 .. t
        v = v * torch.sigmoid(v)
        x = v[:, :E].reshape(b, H, P)
        Bt = v[:, E : E + G * N].reshape(b, G, N)
        Ct = v[:, E + G * N :].reshape(b, G, N)
        delta = torch.log1p(torch.exp(dt[:, t] + m.dt_bias))  # (b, H)
        yt = []
        for h in range(H):
            g = h // (H // G)
            S[h] = torch.exp(delta[:, h] * A[h])[:, None, None] * S[h] + (
                delta[:, h, None, None] * x[:, h, :, None] * Bt[:, g, None, :]
            )
            yt.append((S[h] * Ct[:, g, None, :]).sum(-1) + m.D[h] * x[:, h])
        ys.append(torch.cat(yt, -1))
    y = torch.stack(ys, 1) * z * torch.sigmoid(z)
    if m.rmsnorm:
        yg = y.reshape(b, L, G, E // G)
        y = (yg / torch.sqrt(yg.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(b, L, E) * m.norm.weight
    return y @ m.out_proj.weight.T, seq[:, L:].transpose(1, 2), torch.stack(S, 1)


def recurrence_segments(m, u, cuts, state=None, restart=False):
    """:func:`recurrence` over the pieces of ``u`` cut at ``cuts``; ``restart`` zeroes the conv at each piece."""
    conv, ssm = (None, None) if state is None else (state.conv, state.ssm)
    outs = []
    for a, z in zip([0, *cuts], [*cuts, u.shape[1]]):
        y, conv, ssm = recurrence(m, u[:, a:z], None if restart else conv, ssm)
        outs.append(y)
    return torch.cat(outs, 1), conv, ssm


def close(actual, expected, rtol=1e-10):
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(1.0, expected.abs().max().item()))


def tokens(m, batch, length, seed=2):
    return torch.randn(batch, length, m.d_model, generator=torch.Generator().manual_seed(seed), dtype=F64)


# ---------------------------------------------------------------------------------------------------------
# 1. chunked scan == recurrence


@pytest.mark.parametrize("ngroups,d_model,d_state", [(1, 16, 8), (2, 32, 16)])
@pytest.mark.parametrize("length", [1, 5, 17, 64])
def test_chunked_scan_equals_recurrence(ngroups, d_model, d_state, length):
    m = make_layer(d_model, d_state, ngroups)
    u = tokens(m, 2, length)
    s0 = random_state(m, 2)
    for state in (None, s0):
        ref_y, ref_conv, ref_ssm = recurrence(m, u, *(() if state is None else (state.conv, state.ssm)))
        for chunk in (1, 3, 8, 64):
            m.chunk_size = chunk
            with torch.no_grad():
                y, out = m(u, state)
            close(y, ref_y)
            close(out.ssm, ref_ssm)
            close(out.conv, ref_conv)
            assert y.dtype == out.ssm.dtype == F64


def test_scan_is_stable_under_strong_decay_in_float32():
    # Steps of ~10 with A up to -16: exponents reach -1e4 over a chunk; nothing may overflow.
    m = make_layer(chunk_size=256)
    with torch.no_grad():
        m.dt_bias.fill_(10.0)
        m.dt_bias[::2] = -6.0  # and nearly no decay on the other heads
    u = tokens(m, 1, 300)
    with torch.no_grad():
        ref, ref_state = m(u)
        y, state = m.float()(u.float())
    assert torch.isfinite(y).all() and torch.isfinite(state.ssm).all()
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    torch.testing.assert_close(
        state.ssm.double(), ref_state.ssm, rtol=1e-4, atol=1e-4 * ref_state.ssm.abs().max().item()
    )


# ---------------------------------------------------------------------------------------------------------
# 2. streaming: pieces with the state carried == one pass (or the restarted-conv recurrence)

LENGTH = 40


@functools.cache
def _streaming_case(ngroups):
    m = make_layer(16 * ngroups, 8, ngroups, chunk_size=8)
    u = tokens(m, 2, LENGTH)
    s0 = random_state(m, 2)
    with torch.no_grad():
        whole = recurrence(m, u, s0.conv, s0.ssm)
    return m, u, s0, whole


def _run_pieces(m, u, cuts, state):
    outs = []
    for a, z in zip([0, *cuts], [*cuts, u.shape[1]]):
        y, state = m(u[:, a:z], state)
        outs.append(y)
    return torch.cat(outs, 1), state


@settings(max_examples=12, deadline=None)
@given(cuts=st.lists(st.integers(1, LENGTH - 1), max_size=5, unique=True).map(sorted), ngroups=st.sampled_from([1, 2]))
def test_pieces_with_carried_state_equal_one_pass(cuts, ngroups):
    m, u, s0, (ref_y, ref_conv, ref_ssm) = _streaming_case(ngroups)
    m.conv_restart = False
    with torch.no_grad():
        y, state = _run_pieces(m, u, cuts, s0)
    close(y, ref_y)
    close(state.ssm, ref_ssm)
    close(state.conv, ref_conv)


@settings(max_examples=6, deadline=None)
@given(cuts=st.lists(st.integers(1, LENGTH - 1), min_size=1, max_size=4, unique=True).map(sorted))
def test_conv_restart_restarts_the_conv_at_every_call(cuts):
    m = make_layer(32, 8, 2, chunk_size=8, conv_restart=True)
    u = tokens(m, 2, LENGTH)
    s0 = random_state(m, 2)  # its conv part must be ignored
    with torch.no_grad():
        y, state = _run_pieces(m, u, cuts, s0)
        ref_y, _, ref_ssm = recurrence_segments(m, u, cuts, s0, restart=True)
        carried_y, _, _ = recurrence_segments(m, u, cuts, s0, restart=False)
    close(y, ref_y)
    close(state.ssm, ref_ssm)
    assert state.conv is None
    assert not torch.allclose(y, carried_y)  # the restart is visible


def test_single_token_calls_and_short_pieces():
    """L=1 and pieces shorter than d_conv - 1 must shift the conv history correctly."""
    m, u, s0, (ref_y, ref_conv, ref_ssm) = _streaming_case(1)
    m.conv_restart = False
    with torch.no_grad():
        y, state = _run_pieces(m, u, list(range(1, 8)) + [9, 30], s0)
    close(y, ref_y)
    close(state.conv, ref_conv)
    close(state.ssm, ref_ssm)


# ---------------------------------------------------------------------------------------------------------
# 3. step == forward


@pytest.mark.parametrize("ngroups", [1, 2])
@pytest.mark.parametrize("conv_restart", [False, True])
def test_step_token_by_token_equals_forward(ngroups, conv_restart):
    m = make_layer(16 * ngroups, 8, ngroups, chunk_size=4, conv_restart=conv_restart)
    u = tokens(m, 3, 11)
    s0 = random_state(m, 3)
    if conv_restart:  # forward then starts the conv from zeros; step does when conv is None
        s0 = Mamba2State(conv=None, ssm=s0.ssm)
    with torch.no_grad():
        y, final = m(u, s0)
        state, ys = s0, []
        for t in range(u.shape[1]):
            out, state = m.step(u[:, t], state)
            ys.append(out)
    close(torch.stack(ys, 1), y)
    close(state.ssm, final.ssm)
    if conv_restart:
        assert final.conv is None
    else:
        close(state.conv, final.conv)
        # and both equal the recurrence
        close(y, recurrence(m, u, s0.conv, s0.ssm)[0])


def test_init_state_is_zeros_with_the_documented_shapes():
    m = make_layer(16, 8)
    s = m.init_state(3)
    assert s.conv.shape == (3, m.conv_dim, m.d_conv - 1) and s.ssm.shape == (3, m.nheads, HEADDIM, 8)
    assert not s.conv.any() and not s.ssm.any()
    u = tokens(m, 3, 6)
    with torch.no_grad():
        close(m(u, s)[0], m(u)[0])
    s16 = m.init_state(2, dtype=torch.bfloat16)
    assert s16.conv.dtype == torch.bfloat16 and s16.ssm.dtype == torch.float32


# ---------------------------------------------------------------------------------------------------------
# 4. gradients


def _loss(y, conv, ssm, seed=5):
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    loss = loss + (ssm * torch.randn(ssm.shape, generator=g, dtype=ssm.dtype)).sum()
    if conv is not None:
        loss = loss + (conv * torch.randn(conv.shape, generator=g, dtype=conv.dtype)).sum()
    return loss


@pytest.mark.parametrize("ngroups", [1, 2])
def test_gradients_of_chunked_form_equal_recurrence(ngroups):
    m = make_layer(16 * ngroups, 8, ngroups, chunk_size=8)
    u = tokens(m, 2, 17).requires_grad_()
    s0 = random_state(m, 2)
    conv0, ssm0 = s0.conv.requires_grad_(), s0.ssm.requires_grad_()
    wrt = [u, conv0, ssm0, *m.parameters()]
    y, st = m(u, Mamba2State(conv0, ssm0))
    grads = torch.autograd.grad(_loss(y, st.conv, st.ssm), wrt)
    ref = torch.autograd.grad(_loss(*recurrence(m, u, conv0, ssm0)), wrt)
    names = ["u", "conv0", "ssm0", *(n for n, _ in m.named_parameters())]
    for name, a, b in zip(names, grads, ref):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item(), msg=name)


@pytest.mark.parametrize("conv_restart", [False, True])
def test_gradients_flow_through_carried_states_across_three_calls(conv_restart):
    """BPTT over a clip: three calls with the returned state, a loss on all outputs."""
    m = make_layer(16, 8, 1, chunk_size=4, conv_restart=conv_restart)
    u = tokens(m, 2, 15)
    frames = [u[:, a:z].clone().requires_grad_() for a, z in ((0, 5), (5, 9), (9, 15))]
    state, ys = None, []
    for frame in frames:
        y, state = m(frame, state)
        ys.append(y)
    wrt = [*frames, *m.parameters()]
    grads = torch.autograd.grad(_loss(torch.cat(ys, 1), None, state.ssm), wrt, retain_graph=True)
    ref_y, _, ref_ssm = recurrence_segments(m, torch.cat(frames, 1), [5, 9], restart=conv_restart)
    ref = torch.autograd.grad(_loss(ref_y, None, ref_ssm), wrt)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * b.abs().max().item())
    # The last call's output alone reaches the first frame only through the carried state.
    (g_first,) = torch.autograd.grad(ys[2].pow(2).sum(), frames[0], retain_graph=True)
    assert g_first.abs().max() > 1e-6
    # ... and a detached state cuts it.
    y_cut, _ = m(frames[2], m(frames[1], m(frames[0])[1])[1].detach())
    assert not y_cut.requires_grad or torch.autograd.grad(y_cut.sum(), frames[0], allow_unused=True)[0] is None


# ---------------------------------------------------------------------------------------------------------
# 5. mamba_ssm's parameter layout


def mamba_ssm_layout(d_model, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, rmsnorm=True):
    """Key -> shape of ``mamba_ssm.modules.mamba2.Mamba2`` (bias=False, conv_bias=True, D per head)."""
    E = expand * d_model
    H = E // headdim
    conv_dim = E + 2 * ngroups * d_state
    table = {
        "dt_bias": (H,),
        "A_log": (H,),
        "D": (H,),
        "in_proj.weight": (2 * E + 2 * ngroups * d_state + H, d_model),  # [z, x, B, C, dt]
        "conv1d.weight": (conv_dim, 1, d_conv),
        "conv1d.bias": (conv_dim,),
        "out_proj.weight": (d_model, E),
    }
    if rmsnorm:
        table["norm.weight"] = (E,)
    return table


FLASHDEPTH = {  # the Mamba2 arguments of FlashDepth's temporal blocks
    "L": dict(d_model=256, expand=2, headdim=64, d_state=256),
    "S": dict(d_model=64, expand=4, headdim=32, d_state=256),
}


@pytest.mark.parametrize(
    "kwargs",
    [
        FLASHDEPTH["L"],
        FLASHDEPTH["S"],
        dict(d_model=32, d_state=16, headdim=8, ngroups=2),
        dict(d_model=24, d_state=8, headdim=12, d_conv=3, expand=3, rmsnorm=False),
        dict(d_model=128),  # mamba_ssm's defaults
    ],
)
def test_parameter_names_and_shapes_are_mamba_ssm_layout(kwargs):
    m = Mamba2(**kwargs, device="meta")
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == mamba_ssm_layout(**kwargs)
    assert not any(m.buffers())


def test_flashdepth_shapes_match_the_reference_numbers():
    for size, expected in {
        "L": {
            "in_proj.weight": (1544, 256),
            "conv1d.weight": (1024, 1, 4),
            "norm.weight": (512,),
            "out_proj.weight": (256, 512),
            "D": (8,),
        },
        "S": {
            "in_proj.weight": (1032, 64),
            "conv1d.weight": (768, 1, 4),
            "norm.weight": (256,),
            "out_proj.weight": (64, 256),
            "D": (8,),
        },
    }.items():
        shapes = {k: tuple(v.shape) for k, v in Mamba2(**FLASHDEPTH[size], device="meta").state_dict().items()}
        assert {k: shapes[k] for k in expected} == expected, size


def test_state_dict_round_trip_is_strict():
    a = make_layer(32, 16, 2, seed=0)
    b = make_layer(32, 16, 2, seed=9)
    u = tokens(a, 1, 9)
    with torch.no_grad():
        assert not torch.allclose(a(u)[0], b(u)[0])
        b.load_state_dict(a.state_dict(), strict=True)
        close(b(u)[0], a(u)[0])
    sd = a.state_dict()
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="extra"):
        b.load_state_dict(sd, strict=True)
    without_norm = Mamba2(32, d_state=16, headdim=8, ngroups=2, rmsnorm=False, dtype=F64)
    with pytest.raises(RuntimeError, match="norm.weight"):
        without_norm.load_state_dict(a.state_dict(), strict=True)


def test_meta_layer_materialises_with_reset_parameters():
    m = Mamba2(16, d_state=8, headdim=8, device="meta")
    m.to_empty(device="cpu")
    m.reset_parameters()
    assert torch.equal(m.D, torch.ones(4)) and (m.A_log >= 0).all()
    assert torch.isfinite(m(torch.randn(1, 3, 16))[0]).all()


# ---------------------------------------------------------------------------------------------------------
# 6. initialisation


def test_initialisation_follows_mamba_ssm():
    torch.manual_seed(0)
    m = Mamba2(512, d_state=4, headdim=4, expand=2)  # 256 heads for the statistics
    A = -torch.exp(m.A_log.detach())
    dt = torch.nn.functional.softplus(m.dt_bias.detach())
    assert (A <= -1).all() and (A >= -16).all()
    assert A.max() > -2 and A.min() < -15  # spread over U(1, 16)
    assert (dt >= 1e-3 * (1 - 1e-5)).all() and (dt <= 0.1 * (1 + 1e-5)).all()
    log_dt = dt.log()  # log-uniform in [log 1e-3, log 0.1]
    assert abs(log_dt.mean().item() - (torch.tensor([1e-3, 0.1]).log().mean().item())) < 0.3
    assert torch.equal(m.D.detach(), torch.ones(256)) and torch.equal(m.norm.weight.detach(), torch.ones(1024))
    assert m.in_proj.bias is None and m.out_proj.bias is None and m.conv1d.bias is not None
    assert all(getattr(p, "_no_weight_decay", False) for p in (m.dt_bias, m.A_log, m.D))

    m = Mamba2(64, d_state=4, headdim=4, A_init_range=(2, 3), dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4)
    A = -torch.exp(m.A_log.detach())
    assert (A <= -2).all() and (A >= -3).all()
    torch.testing.assert_close(torch.nn.functional.softplus(m.dt_bias.detach()), torch.full((32,), 1e-4))


# ---------------------------------------------------------------------------------------------------------
# 7. low precision on CPU


def test_bf16_layer_on_cpu_is_close_to_float32():
    torch.manual_seed(0)
    m = Mamba2(32, d_state=16, headdim=8, chunk_size=16)
    mb = copy.deepcopy(m).to(torch.bfloat16)
    m32 = copy.deepcopy(mb).float()  # the same (bf16-rounded) weights in float32
    u = torch.randn(2, 37, 32).to(torch.bfloat16)
    with torch.no_grad():
        y, state = mb(u)
        ref, ref_state = m32(u.float())
        y_step, _ = mb.step(u[:, 0], mb.init_state(2))
    assert y.dtype == torch.bfloat16 and y_step.dtype == torch.bfloat16
    assert state.ssm.dtype == torch.float32 and state.conv.dtype == torch.bfloat16
    err = (y.float() - ref).abs().max() / ref.abs().max()
    assert err < 3e-2, err
    assert ((state.ssm - ref_state.ssm).abs().max() / ref_state.ssm.abs().max()) < 3e-2


def test_autocast_bf16_on_cpu_keeps_the_scan_in_float32():
    torch.manual_seed(0)
    m = Mamba2(32, d_state=16, headdim=8, chunk_size=16)
    u = torch.randn(2, 37, 32)
    with torch.no_grad():
        ref, _ = m(u)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, state = m(u)
    assert y.dtype == torch.bfloat16 and state.ssm.dtype == torch.float32
    assert (y.float() - ref).abs().max() / ref.abs().max() < 3e-2


# ---------------------------------------------------------------------------------------------------------
# dispatch


def test_cpu_path_never_imports_mamba_ssm():
    had = "mamba_ssm" in sys.modules
    m = make_layer(16, 8)
    with torch.no_grad():
        m(tokens(m, 1, 5))
    assert had or "mamba_ssm" not in sys.modules


@pytest.mark.skipif(kernel_available(), reason="mamba_ssm is installed here")
def test_forcing_the_kernel_without_mamba_ssm_is_a_clear_error():
    x = torch.zeros(1, 2, 2, 4)
    with pytest.raises(RuntimeError, match="mamba_ssm"):
        ssd_scan(
            x,
            torch.zeros(1, 2, 2),
            -torch.ones(2),
            torch.zeros(1, 2, 1, 3),
            torch.zeros(1, 2, 1, 3),
            torch.ones(2),
            torch.zeros(2),
            4,
            backend="kernel",
        )


# ---------------------------------------------------------------------------------------------------------
# 8. GPU: mamba_ssm's Triton kernel == the PyTorch scan


@pytest.mark.skipif(not (torch.cuda.is_available() and kernel_available()), reason="needs CUDA and mamba_ssm")
@pytest.mark.parametrize("ngroups", [1, 2])
def test_kernel_path_equals_torch_path_on_gpu(ngroups, monkeypatch):
    torch.manual_seed(0)
    dev = "cuda"
    m = Mamba2(64, d_state=32, headdim=16, ngroups=ngroups, chunk_size=32, device=dev)
    with torch.no_grad():
        m.dt_bias.uniform_(-3.0, 1.0)
        m.D.normal_()
    b, L, h, p, g, n = 2, 77, m.nheads, m.headdim, ngroups, m.d_state
    x = torch.randn(b, L, h, p, device=dev, requires_grad=True)
    dt = torch.randn(b, L, h, device=dev, requires_grad=True)
    Bm = torch.randn(b, L, g, n, device=dev, requires_grad=True)
    Cm = torch.randn(b, L, g, n, device=dev, requires_grad=True)
    s0 = torch.randn(b, h, p, n, device=dev, requires_grad=True)
    A = -torch.exp(m.A_log)
    outs = {}
    for backend in ("kernel", "torch"):
        y, final = ssd_scan(x, dt, A, Bm, Cm, m.D, m.dt_bias, 32, s0, backend=backend)
        loss = (y * torch.cos(y.detach())).sum() + final.pow(2).sum()
        outs[backend] = (y, final, torch.autograd.grad(loss, [x, dt, Bm, Cm, s0, m.A_log, m.D, m.dt_bias]))
    # Triton's tl.dot may use TF32: compare at about 1e-3 relative.
    for a, r in zip(
        [outs["kernel"][0], outs["kernel"][1], *outs["kernel"][2]],
        [outs["torch"][0], outs["torch"][1], *outs["torch"][2]],
    ):
        torch.testing.assert_close(a.float(), r.float(), rtol=2e-3, atol=2e-3 * r.abs().max().item())

    # The whole layer, streamed in three pieces, with the env var switching the path.
    u = torch.randn(b, 90, 64, device=dev)
    results = {}
    for force in ("0", "1"):
        monkeypatch.setenv(FORCE_TORCH_ENV, force)
        with torch.no_grad():
            state, ys = None, []
            for a, z in ((0, 30), (30, 31), (31, 90)):
                y, state = m(u[:, a:z], state)
                ys.append(y)
        results[force] = (torch.cat(ys, 1), state.ssm)
    for a, r in zip(results["0"], results["1"]):
        torch.testing.assert_close(a, r, rtol=2e-3, atol=2e-3 * r.abs().max().item())
