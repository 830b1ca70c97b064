"""`InferenceOptions`: every predictor honours them, float32 numerics stay, reduced precision stays close;
and the pieces of ``benchmarks/official_speed.py`` (vdf against the official code)."""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
from recipes import tiny_files

import vdf
from vdf.models import DepthAnythingV2
from vdf.predictors import FlashDepthPredictor, FramePredictor, InferenceOptions
from vdf.predictors.options import TemporalConv2d, check_fused_attention, temporal_convs_as_2d, use_fused_attention

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def video():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 3, 28, 42, generator=g)


#: configs/tiny/dav2.yaml's network.
TINY_DAV2 = dict(
    encoder="vits",
    embed_dim=48,
    depth=4,
    num_heads=2,
    layer_indices=[0, 1, 2, 3],
    features=16,
    out_channels=[8, 16, 24, 32],
)


def dav2(**options):
    """The tiny DAv2 predictor, its random weights drawn from the same seed (equal across calls)."""
    torch.manual_seed(0)
    return FramePredictor(DepthAnythingV2(**TINY_DAV2), input_size=42, inference=InferenceOptions(**options)).eval()


@pytest.fixture(scope="module")
def reference(video):
    model = dav2()
    return model, model.predict(video)


def test_options_are_checked():
    with pytest.raises(ValueError, match="dtype"):
        InferenceOptions(dtype="float8")
    with pytest.raises(ValueError, match="attention backends"):
        InferenceOptions(attention=["fast"])
    assert InferenceOptions().exact and not InferenceOptions(dtype="bfloat16").exact


def test_default_options_change_nothing(reference, video):
    model, out = reference
    assert model.inference == InferenceOptions() and model.inference_applied
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.equal(dav2().predict(video), out)


def test_channels_last_is_exact_in_float32(reference, video):
    _, out = reference
    model = dav2(channels_last=True)
    ours = model.predict(video)
    convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert not all(m.weight.is_contiguous() for m in convs)
    torch.testing.assert_close(ours, out, rtol=1e-5, atol=1e-6 * float(out.abs().max()))


def test_attention_backends_are_restricted_during_the_run(video, monkeypatch):
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(*args, **kwargs):
        seen.append(torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    dav2(attention=["math"]).predict(video[:1])
    assert seen and not any(seen)  # only the math backend inside the run
    assert torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()


def test_temporal_convolutions_as_2d_are_the_same_convolutions():
    from diffusers.models.resnet import TemporalResnetBlock

    torch.manual_seed(0)
    block = TemporalResnetBlock(32, 32, temb_channels=None).eval()
    other = torch.nn.Conv3d(32, 8, (3, 3, 3), padding=1)  # mixes pixels too: left alone
    strided = torch.nn.Conv3d(32, 4, (2, 1, 1), stride=(2, 1, 1), groups=4)
    x = torch.randn(2, 32, 5, 6, 7)
    with torch.no_grad():
        before = (block(x, None), other(x), strided(x))
        keys = set(block.state_dict())
        assert sum(temporal_convs_as_2d(m) for m in (block, other, strided)) == 3  # block.conv1, conv2; strided
        assert (
            type(other) is torch.nn.Conv3d and type(block.conv1) is TemporalConv2d and set(block.state_dict()) == keys
        )
        after = (block(x, None), other(x), strided(x))
    for a, b in zip(after, before):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_reduced_precision_weights_stay_close_to_float32(reference, video):
    _, out = reference
    model = dav2(dtype="bfloat16")
    ours = model.predict(video)
    assert {p.dtype for p in model.net.parameters()} == {torch.bfloat16}
    assert ours.dtype == torch.float32
    # bfloat16 keeps 8 mantissa bits: within 5% of the output range on the tiny model.
    assert float((ours - out).abs().max() / out.abs().max()) < 5e-2
    model.train()
    fresh = dav2(dtype="float16").train()
    with pytest.raises(RuntimeError, match="training"):
        fresh.apply_inference_options()


def test_compile_wraps_each_network_and_flashdepth_compiles_its_streaming_step(monkeypatch, video):
    """The wrapping logic (compiling on this CPU costs minutes): each named network is compiled with
    the chosen mode, and FlashDepth's stream runs every frame through the one compiled step."""
    compiled, calls = [], []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))

    def fake_compile(fn, **kw):
        compiled.append(("step", kw))

        def step(*args):
            calls.append(args[1].frames_seen)  # the state is an input ...
            return fn(*args)

        return step

    monkeypatch.setattr(torch, "compile", fake_compile)
    # Through the config, as a user sets it.
    inference = {"compile": True, "compile_mode": "max-autotune"}
    model = vdf.load(tiny_files("flashdepth", "s"), device="cpu", inference=inference)
    assert isinstance(model, FlashDepthPredictor)
    out = model.predict(video)
    options = {"mode": "max-autotune", "dynamic": None}
    assert compiled == [("FlashDepth", options), ("step", options)]
    assert calls == [0, 1, 2]  # ... and an output, carried from frame to frame
    plain = FlashDepthPredictor(model.net, resolution=model.resolution).predict(video)  # the same net, uncompiled
    torch.testing.assert_close(out, plain)


def test_the_svd_unets_attend_through_fused_attention():
    from diffusers.models.attention_processor import Attention, AttnProcessor

    from vdf.models.svd import SVDUNet

    for rope in (False, True):  # the SVD layout (DepthCrafter, ChronoDepth), RoPE (Depth Any Video)
        unet = SVDUNet(
            block_out_channels=(32, 32),
            num_attention_heads=(2, 2),
            cross_attention_dim=8,
            layers_per_block=1,
            addition_time_embed_dim=4,
            temporal_rope=rope,
        )
        assert not check_fused_attention(unet)
    attn = Attention(16, heads=2, dim_head=8, processor=AttnProcessor())
    x = torch.randn(2, 5, 16)
    slow = attn(x)
    assert check_fused_attention(attn) and use_fused_attention(attn) == 1 and not check_fused_attention(attn)
    torch.testing.assert_close(attn(x), slow, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the benchmark script


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "official_speed", os.path.join(ROOT, "benchmarks", "official_speed.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["official_speed"] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("official_speed", None)


def test_measure_alternates_and_takes_median_ratios(bench):
    order = []

    def side(name, value):
        def run():
            order.append(name)
            return value

        return run

    clock = iter([0, 2, 2, 3, 3, 4, 4, 6, 6, 8, 8, 9])  # official 2, 2, 2; vdf 1, 1, 1 (by the order below)
    theirs = torch.tensor([1.0, 2.0, 4.0])
    pair = bench.Pair("x", "tiny", side("official", theirs), side("vdf", theirs * (1 + 2e-5)))
    perf = bench.time.perf_counter
    bench.time.perf_counter = lambda: next(clock)
    try:
        row = bench.measure(pair, rounds=3)
    finally:
        bench.time.perf_counter = perf
    # Agreement call of each side first, then the rounds alternate which side starts.
    assert order == ["official", "vdf", "official", "vdf", "vdf", "official", "official", "vdf"]
    assert row["official_s"] == 2 and row["vdf_s"] == 1 and row["ratio"] == 0.5
    assert row["max_relative_difference"] == pytest.approx(2e-5, rel=1e-2)
    assert "| x | tiny | 2.000 | 1.000 | 0.50 | 2.0e-05 |" in bench.table([row], None, True)


def test_bench_refuses_options_that_are_not_a_mapping(bench):
    with pytest.raises(SystemExit):
        bench.main(["--official", ROOT, "--families", "dav2", "--vdf", "[compile]"])
