"""Depth-Anything-V2: official key layout, strict loading, shapes, and numerical parity with
slow re-implementations written here from the architecture description (not from vdf code)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from official_layouts import official_shapes, random_tensors

from vdf.models import DepthAnythingV2, DINOv2, DPTHead, processing_size
from vdf.models.dav2 import dav2_official_to_vdf, guess_dav2_variant, preprocess_frames, vdf_to_dav2_official
from vdf.models.weights import StateDictMismatchError, load_state_dict_strict, unwrap_state_dict
from vdf.predictors import FramePredictor

# (embed_dim, depth, DPT features, DPT out_channels, SwiGLU hidden width or None for GELU MLP 4D)
OFFICIAL = {
    "vits": (384, 12, 64, [48, 96, 192, 384], None),
    "vitb": (768, 12, 128, [96, 192, 384, 768], None),
    "vitl": (1024, 24, 256, [256, 512, 1024, 1024], None),
    "vitg": (1536, 40, 384, [1536, 1536, 1536, 1536], 4096),
}
# A tiny model for CPU tests (what configs/tiny uses): the official layout with small widths.
TINY = dict(embed_dim=48, depth=4, num_heads=2, layer_indices=[0, 1, 2, 3], features=16, out_channels=[8, 16, 24, 32])
TINY_SPEC = (48, 4, 16, [8, 16, 24, 32], None)


def random_official(spec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the official layout, scaled so activations stay O(1) and outputs > 0."""
    return random_tensors(official_shapes(spec), seed)


@pytest.fixture(scope="module")
def tiny_official():
    return random_official(TINY_SPEC, seed=1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_official):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.save(tiny_official, path)
    return DepthAnythingV2.from_checkpoint(path, "vits", **TINY).eval()


# ----------------------------------------------------------------------------- key layout


@pytest.mark.parametrize("encoder,count", [("vits", 239), ("vitb", 239), ("vitl", 407), ("vitg", 631)])
def test_state_dict_matches_official_layout(encoder, count):
    model = DepthAnythingV2(encoder, device="meta")
    ours = {k: tuple(v.shape) for k, v in vdf_to_dav2_official(model.state_dict()).items()}
    assert len(ours) == count
    assert ours == official_shapes(OFFICIAL[encoder])


def test_parameter_counts_match_readme():
    counts = {e: sum(p.numel() for p in DepthAnythingV2(e, device="meta").parameters()) for e in OFFICIAL}
    assert round(counts["vits"] / 1e6, 1) == 24.8
    assert round(counts["vitb"] / 1e6, 1) == 97.5
    assert round(counts["vitl"] / 1e6, 1) == 335.3
    assert round(counts["vitg"] / 1e9, 1) == 1.3


def test_vitg_swiglu_names_round_trip():
    model = DepthAnythingV2("vitg", device="meta")
    sd = model.state_dict()
    assert tuple(sd["pretrained.blocks.0.mlp.fc1.weight"].shape) == (8192, 1536)
    official = vdf_to_dav2_official(sd)
    assert "pretrained.blocks.7.mlp.w12.weight" in official and "pretrained.blocks.7.mlp.w3.bias" in official
    back = dav2_official_to_vdf(official)
    assert list(back) == list(sd) and all(back[k] is sd[k] for k in sd)


# ----------------------------------------------------------------------------- loading


def test_from_checkpoint_vits_every_tensor_lands(tmp_path):
    official = random_official(OFFICIAL["vits"], seed=0)
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(official, path)
    model = DepthAnythingV2.from_checkpoint(path, "vits")
    back = vdf_to_dav2_official(model.state_dict())
    assert back.keys() == official.keys()
    for k, v in official.items():
        assert torch.equal(back[k], v), k
    # the converter itself round-trips exactly
    rt = vdf_to_dav2_official(dav2_official_to_vdf(official))
    assert rt.keys() == official.keys() and all(torch.equal(rt[k], official[k]) for k in official)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
    ],
    ids=["model", "state_dict", "model+module", "module"],
)
def test_from_checkpoint_wrappers(tmp_path, tiny_official, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(tiny_official), path)
    model = DepthAnythingV2.from_checkpoint(path, "vits", **TINY)
    back = vdf_to_dav2_official(model.state_dict())
    assert all(torch.equal(back[k], v) for k, v in tiny_official.items())


def test_missing_file_names_path_and_source(tmp_path):
    path = tmp_path / "depth_anything_v2_vitl.pth"
    with pytest.raises(FileNotFoundError) as e:
        DepthAnythingV2.from_checkpoint(path, "vitl", device="meta")
    assert str(path) in str(e.value)
    assert "depth-anything/Depth-Anything-V2-Large" in str(e.value)
    assert "Hugging Face" in str(e.value)


def test_wrong_variant_is_named():
    model = DepthAnythingV2("vits", device="meta")
    vitb = {k: torch.empty(s, device="meta") for k, s in official_shapes(OFFICIAL["vitb"]).items()}
    with pytest.raises(StateDictMismatchError) as e:
        load_state_dict_strict(model, dav2_official_to_vdf(vitb), describe=guess_dav2_variant)
    msg = str(e.value)
    assert "looks like vitb" in msg
    assert "pretrained.cls_token: checkpoint (1, 1, 768) vs model (1, 1, 384)" in msg


def test_wrong_variant_from_file(tmp_path, tiny_official):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_official, path)
    with pytest.raises(StateDictMismatchError) as e:
        DepthAnythingV2.from_checkpoint(path, "vits")
    msg = str(e.value)
    assert "looks like a custom ViT (embed_dim 48, depth 4)" in msg and "vits" in msg
    assert "missing key(s)" in msg and "shape mismatch for pretrained.pos_embed" in msg


def test_missing_and_unexpected_keys_are_listed(tmp_path, tiny_official):
    sd = dict(tiny_official)
    dropped = [
        "depth_head.scratch.refinenet4.resConfUnit1.conv1.weight",
        "pretrained.mask_token",
        "pretrained.norm.bias",
    ]
    for k in dropped:
        del sd[k]
    extra = {f"mamba.blocks.{i}.weight": torch.zeros(2) for i in range(8)}
    sd.update(extra)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(StateDictMismatchError) as e:
        DepthAnythingV2.from_checkpoint(path, "vits", **TINY)
    msg = str(e.value)
    assert "3 missing key(s)" in msg and all(k in msg for k in dropped)
    assert "8 unexpected key(s)" in msg and "mamba.blocks.0.weight" in msg and "(8 in total)" in msg
    assert "looks like" not in msg  # same encoder shape: no variant hint


def test_unwrap_rejects_non_state_dicts():
    with pytest.raises(StateDictMismatchError, match="top-level keys"):
        unwrap_state_dict({"optimizer": 1, "step": 3})


# ----------------------------------------------------------------------------- shapes & sizes


@pytest.mark.parametrize("hw", [(14, 14), (28, 42), (70, 56), (98, 140)])
def test_output_shapes(tiny_model, hw):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        y = tiny_model(x)
    assert y.shape == (2, 1, *hw)
    assert (y >= 0).all()


@pytest.mark.parametrize("hw,hint", [((500, 518), "height 500 -> 490 or 504"), ((518, 100), "width 100 -> 98 or 112")])
def test_non_multiple_of_14_is_a_clear_error(tiny_model, hw, hint):
    with pytest.raises(ValueError) as e:
        tiny_model(torch.zeros(1, 3, *hw))
    assert f"{hw[0]}x{hw[1]}" in str(e.value) and hint in str(e.value)


def test_dpt_worked_shapes_vits_518():
    head = DPTHead(384, 64, [48, 96, 192, 384])
    tokens = [torch.randn(1, 37 * 37, 384) for _ in range(4)]
    with torch.no_grad():
        layers = head.project(tokens, (37, 37))
        shapes = [tuple(t.shape[-3:]) for t in layers]
        assert shapes == [(64, 148, 148), (64, 74, 74), (64, 37, 37), (64, 19, 19)]
        seen = []

        def hook(stage, path):
            seen.append((stage, tuple(path.shape)))
            return path

        out = head(tokens, (37, 37), hook=hook)
    assert seen == [(s, (1, 64, n, n)) for s, n in enumerate([37, 74, 148, 296])]
    assert out.shape == (1, 1, 518, 518)


def test_hook_replaces_paths(tiny_model):
    x = torch.randn(1, 3, 42, 56)
    with torch.no_grad():
        plain = tiny_model(x)
        same = tiny_model(x, hook=lambda s, p: p)
        zeroed = tiny_model(x, hook=lambda s, p: torch.zeros_like(p) if s == 3 else p)
        from_zero = F.relu(tiny_model.depth_head.head(torch.zeros(1, 16, 24, 32), (3, 4)))
    assert torch.equal(plain, same)
    assert not torch.allclose(plain, zeroed)
    torch.testing.assert_close(zeroed, from_zero)  # path_1 (8ph x 8pw) was replaced by zeros


@pytest.mark.parametrize(
    "h,w,size,expected",
    [
        (1080, 1920, 518, (518, 924)),
        (1920, 1080, 518, (924, 518)),
        (518, 518, 518, (518, 518)),
        (480, 640, 518, (518, 686)),
        (100, 100, 518, (518, 518)),
        (2160, 3840, 518, (518, 924)),
        (518, 539, 518, (518, 532)),  # 539/14 = 38.5 rounds half to even (np.round), not up
        (520, 520, 520, (532, 532)),  # rounds to 518 < 520, so ceil to 532
        (1080, 1920, 700, (700, 1246)),
    ],
)
def test_processing_size(h, w, size, expected):
    assert processing_size(h, w, size) == expected


# ----------------------------------------------------------------------------- position embedding


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    t = np.abs(t)
    near = (a + 2) * t**3 - (a + 3) * t**2 + 1
    far = a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _bicubic_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """Row i: weights of the n_in source samples for output i, half-pixel mapping by 1/scale."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = (i + 0.5) / scale - 0.5
        base = math.floor(src)
        for k in range(base - 1, base + 3):
            m[i, min(max(k, 0), n_in - 1)] += _cubic(np.array(src - k))
    return m


def official_pos_embed_reference(pos_embed: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
    """The DINOv2 rule computed by hand: separable cubic (a=-0.75) at scale (g + 0.1) / 37."""
    pe = pos_embed.double().numpy()[0]
    grid = pe[1:].reshape(37, 37, -1)
    mh = _bicubic_matrix(37, gh, (gh + 0.1) / 37)
    mw = _bicubic_matrix(37, gw, (gw + 0.1) / 37)
    out = np.einsum("ai,bj,ijc->abc", mh, mw, grid).reshape(gh * gw, -1)
    return torch.from_numpy(np.concatenate([pe[:1], out])[None]).float()


@pytest.mark.parametrize("grid", [(3, 5), (37, 66), (20, 37), (74, 74)])
def test_pos_embed_matches_official_formula(tiny_model, grid):
    vit = tiny_model.pretrained
    got = vit.interpolate_pos_embed(*grid)
    assert got.shape == (1, 1 + grid[0] * grid[1], 48)
    ref = official_pos_embed_reference(vit.pos_embed.detach(), *grid)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # timm's size-based resampling samples elsewhere: the override matters
    size_based = F.interpolate(
        vit.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2), size=grid, mode="bicubic"
    )
    assert not torch.allclose(got[:, 1:], size_based.permute(0, 2, 3, 1).reshape(1, -1, 48), atol=1e-4)


def test_pos_embed_identity_at_518(tiny_model):
    vit = tiny_model.pretrained
    assert torch.equal(vit.interpolate_pos_embed(37, 37), vit.pos_embed)


def test_pos_embed_fp32_under_half_inputs(tiny_model):
    vit = tiny_model.pretrained
    pe16 = vit.pos_embed.detach().half()
    from vdf.models.dinov2 import interpolate_pos_embed_official

    got = interpolate_pos_embed_official(pe16, 5, 7)
    ref = interpolate_pos_embed_official(pe16.float(), 5, 7).half()
    assert got.dtype == torch.float16 and torch.equal(got, ref)


# ----------------------------------------------------------------------------- numerical parity


def slow_block(x: torch.Tensor, sd: dict, p: str, heads: int, swiglu: bool = False) -> torch.Tensor:
    """One DINOv2 block written out: pre-LN, explicit softmax attention, LayerScale, MLP."""
    b, n, d = x.shape
    hd = d // heads
    h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
    qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]  # (B, N, 3D) laid out [q | k | v]
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(b, n, heads, hd).transpose(1, 2) for i in range(3))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
    o = (att @ v).transpose(1, 2).reshape(b, n, d)
    o = o @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    x = x + sd[p + "ls1.gamma"] * o
    h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
    if swiglu:
        a, g = (h @ sd[p + "mlp.w12.weight"].T + sd[p + "mlp.w12.bias"]).chunk(2, dim=-1)
        m = (F.silu(a) * g) @ sd[p + "mlp.w3.weight"].T + sd[p + "mlp.w3.bias"]
    else:
        m = F.gelu(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        m = m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    return x + sd[p + "ls2.gamma"] * m


@pytest.mark.parametrize("variant", ["vits", "vitg"])
def test_block_parity_with_slow_reference(variant):
    torch.manual_seed(0)
    vit = DINOv2(variant, embed_dim=32, depth=1, num_heads=4, layer_indices=[0]).eval()
    with torch.no_grad():
        for name, prm in vit.named_parameters():
            scale, offset = (0.3 if prm.ndim > 1 else 0.5), (1.0 if "gamma" in name else 0.0)
            prm.copy_(torch.randn_like(prm) * scale + offset)
    sd = vdf_to_dav2_official({k: v.detach() for k, v in vit.state_dict().items()})
    assert ("blocks.0.mlp.w12.weight" in sd) == (variant == "vitg")
    x = torch.randn(2, 11, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.blocks[0](x), slow_block(x, sd, "blocks.0.", 4, variant == "vitg"))


def slow_dav2(images: torch.Tensor, sd: dict, heads: int, indices: list[int]) -> torch.Tensor:
    """The whole DAv2 forward from official-named tensors, without any vdf module."""
    e = {k[len("pretrained.") :]: v for k, v in sd.items() if k.startswith("pretrained.")}
    hsd = {k[len("depth_head.") :]: v for k, v in sd.items() if k.startswith("depth_head.")}
    b, _, H, W = images.shape
    ph, pw = H // 14, W // 14
    d = e["cls_token"].shape[-1]
    x = F.conv2d(images, e["patch_embed.proj.weight"], e["patch_embed.proj.bias"], stride=14)
    x = x.flatten(2).transpose(1, 2)  # row-major patch order
    x = torch.cat([e["cls_token"].expand(b, 1, d), x], dim=1)
    x = x + official_pos_embed_reference(e["pos_embed"], ph, pw)
    depth = 1 + max(int(k.split(".")[1]) for k in e if k.startswith("blocks."))
    feats = []
    for i in range(depth):
        x = slow_block(x, e, f"blocks.{i}.", heads)
        if i in indices:
            feats.append(F.layer_norm(x, (d,), e["norm.weight"], e["norm.bias"], eps=1e-6)[:, 1:])

    def conv(t, name, **kw):
        return F.conv2d(t, hsd[name + ".weight"], hsd.get(name + ".bias"), **kw)

    def rcu(t, name):
        return t + conv(F.relu(conv(F.relu(t), name + ".conv1", padding=1)), name + ".conv2", padding=1)

    def fusion(name, path, skip=None, size=None):
        if skip is not None:
            path = path + rcu(skip, name + ".resConfUnit1")
        path = rcu(path, name + ".resConfUnit2")
        kw = {"size": size} if size is not None else {"scale_factor": 2}
        return conv(F.interpolate(path, mode="bilinear", align_corners=True, **kw), name + ".out_conv")

    layers = []
    for i, t in enumerate(feats):
        t = conv(t.transpose(1, 2).reshape(b, d, ph, pw), f"projects.{i}")
        if i in (0, 1):
            w, bias = hsd[f"resize_layers.{i}.weight"], hsd[f"resize_layers.{i}.bias"]
            t = F.conv_transpose2d(t, w, bias, stride=4 // (i + 1))
        elif i == 3:
            t = conv(t, "resize_layers.3", stride=2, padding=1)
        layers.append(F.conv2d(t, hsd[f"scratch.layer{i + 1}_rn.weight"], padding=1))
    p4 = fusion("scratch.refinenet4", layers[3], size=layers[2].shape[-2:])
    p3 = fusion("scratch.refinenet3", p4, layers[2], size=layers[1].shape[-2:])
    p2 = fusion("scratch.refinenet2", p3, layers[1], size=layers[0].shape[-2:])
    p1 = fusion("scratch.refinenet1", p2, layers[0])
    out = conv(p1, "scratch.output_conv1", padding=1)
    out = F.interpolate(out, size=(H, W), mode="bilinear", align_corners=True)
    out = F.relu(conv(out, "scratch.output_conv2.0", padding=1))
    return F.relu(conv(out, "scratch.output_conv2.2"))


def test_full_model_parity_with_slow_reference(tiny_model, tiny_official):
    x = torch.randn(2, 3, 42, 70)
    with torch.no_grad():
        ours = tiny_model(x)
        ref = slow_dav2(x, tiny_official, heads=2, indices=[0, 1, 2, 3])
    assert (ref > 0).float().mean() > 0.5
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_intermediate_layers_order_and_normed(tiny_model):
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        fwd = tiny_model.pretrained.get_intermediate_layers(x, [3, 1])
        full = tiny_model.pretrained.forward_features(x)
    assert [t.shape for t in fwd] == [(1, 6, 48)] * 2
    torch.testing.assert_close(fwd[0], full[:, 1:])  # last block + final norm, CLS dropped


# ----------------------------------------------------------------------------- video wrapper


def test_framewise_shapes_independence_and_chunking(tiny_model):
    torch.manual_seed(0)
    video = torch.rand(2, 5, 3, 40, 60)
    fw = FramePredictor(tiny_model, input_size=28, frame_chunk=3).eval()
    with torch.no_grad():
        out = fw.clip(video)
        perm = torch.tensor([4, 2, 0, 1, 3])
        out_perm = fw.clip(video[:, perm])
        fw.frame_chunk = 100
        one_chunk = fw.clip(video)
        single = fw.clip(video[1:2, 3:4])
    assert out.shape == (2, 5, 1, 40, 60) and (out >= 0).all()
    torch.testing.assert_close(out_perm, out[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(one_chunk, out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, out[1:2, 3:4], atol=1e-5, rtol=1e-5)


def test_framewise_preprocess_matches_pipeline(tiny_model):
    frames = torch.rand(2, 3, 40, 60)
    pre = preprocess_frames(frames, 28, antialias=False)
    assert pre.shape == (2, 3, 28, 42)  # processing_size(40, 60, 28)
    resized = F.interpolate(frames, size=(28, 42), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(pre, (resized - mean) / std)
    # already at the processing size: no resampling at all
    exact = torch.rand(1, 3, 28, 42)
    torch.testing.assert_close(preprocess_frames(exact, 28, antialias=False), (exact - mean) / std)


def test_models_package_imports_cheaply():
    code = "import sys, vdf.models; assert 'timm' not in sys.modules and 'lightning' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
