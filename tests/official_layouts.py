"""Official checkpoint key layouts, written from the reference tables (shared by the tests)."""

import math

import torch


def official_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of an official ``depth_anything_v2_*.pth`` (reference table §1.5)."""
    d, depth, f, oc, swiglu = spec
    s: dict[str, tuple[int, ...]] = {
        "pretrained.cls_token": (1, 1, d),
        "pretrained.pos_embed": (1, 1370, d),
        "pretrained.mask_token": (1, d),
        "pretrained.patch_embed.proj.weight": (d, 3, 14, 14),
        "pretrained.patch_embed.proj.bias": (d,),
    }
    for i in range(depth):
        p = f"pretrained.blocks.{i}."
        s.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,)})
        s.update({p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,)})
        s.update({p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,), p + "ls1.gamma": (d,)})
        s.update({p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
        if swiglu:
            s.update({p + "mlp.w12.weight": (2 * swiglu, d), p + "mlp.w12.bias": (2 * swiglu,)})
            s.update({p + "mlp.w3.weight": (d, swiglu), p + "mlp.w3.bias": (d,)})
        else:
            s.update({p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,)})
            s.update({p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,)})
        s[p + "ls2.gamma"] = (d,)
    s.update({"pretrained.norm.weight": (d,), "pretrained.norm.bias": (d,)})
    h = "depth_head."
    for i in range(4):
        s[f"{h}projects.{i}.weight"] = (oc[i], d, 1, 1)
        s[f"{h}projects.{i}.bias"] = (oc[i],)
    s.update({h + "resize_layers.0.weight": (oc[0], oc[0], 4, 4), h + "resize_layers.0.bias": (oc[0],)})
    s.update({h + "resize_layers.1.weight": (oc[1], oc[1], 2, 2), h + "resize_layers.1.bias": (oc[1],)})
    s.update({h + "resize_layers.3.weight": (oc[3], oc[3], 3, 3), h + "resize_layers.3.bias": (oc[3],)})
    for i in range(4):
        s[f"{h}scratch.layer{i + 1}_rn.weight"] = (f, oc[i], 3, 3)
    for r in range(1, 5):
        p = f"{h}scratch.refinenet{r}."
        s.update({p + "out_conv.weight": (f, f, 1, 1), p + "out_conv.bias": (f,)})
        for u in (1, 2):
            for c in (1, 2):
                s[f"{p}resConfUnit{u}.conv{c}.weight"] = (f, f, 3, 3)
                s[f"{p}resConfUnit{u}.conv{c}.bias"] = (f,)
    s[h + "scratch.output_conv1.weight"] = (f // 2, f, 3, 3)
    s[h + "scratch.output_conv1.bias"] = (f // 2,)
    s[h + "scratch.output_conv2.0.weight"] = (32, f // 2, 3, 3)
    s[h + "scratch.output_conv2.0.bias"] = (32,)
    s.update({h + "scratch.output_conv2.2.weight": (1, 32, 1, 1), h + "scratch.output_conv2.2.bias": (1,)})
    return s


def random_tensors(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random values in a layout, scaled so that a forward pass stays O(1) and positive."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in layout.items():
        t = torch.randn(shape, generator=g)
        if name.endswith("output_conv2.2.bias"):
            t = t.abs() + 1.0
        elif ("norm" in name and name.endswith("weight")) or name.endswith("gamma"):
            t = 1.0 + 0.1 * t
        elif len(shape) >= 2 and not name.endswith(("_token", "pos_embed")):
            t = t / math.sqrt(math.prod(shape[1:]))
        else:
            t = 0.1 * t
        out[name] = t
    return out


def official_vda_shapes(spec) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of an official ``[metric_]video_depth_anything_*.pth`` (reference §3.1-3.2).

    DAv2's layout with the head under ``head.`` instead of ``depth_head.``, plus four temporal
    modules (channels ``oc[2], oc[3], f, f``), each: GroupNorm, ``proj_in``, one transformer
    block of two attentions (q/k/v without bias, ``to_out.0`` with, a ``(1, 32, C)`` position
    table) and a GEGLU feed-forward (``(8C, C)`` in, ``(C, 4C)`` out), ``proj_out``.
    """
    _, _, f, oc, _ = spec
    s = {
        ("head." + k[len("depth_head.") :] if k.startswith("depth_head.") else k): v
        for k, v in official_shapes(spec).items()
    }
    for i, c in enumerate((oc[2], oc[3], f, f)):
        p = f"head.motion_modules.{i}.temporal_transformer."
        s.update({p + "norm.weight": (c,), p + "norm.bias": (c,)})
        s.update({p + "proj_in.weight": (c, c), p + "proj_in.bias": (c,)})
        s.update({p + "proj_out.weight": (c, c), p + "proj_out.bias": (c,)})
        b = p + "transformer_blocks.0."
        for a in (0, 1):
            q = f"{b}attention_blocks.{a}."
            for name in ("to_q", "to_k", "to_v"):
                s[f"{q}{name}.weight"] = (c, c)
            s.update({q + "to_out.0.weight": (c, c), q + "to_out.0.bias": (c,), q + "pos_encoder.pe": (1, 32, c)})
            s.update({f"{b}norms.{a}.weight": (c,), f"{b}norms.{a}.bias": (c,)})
        s.update({b + "ff.net.0.proj.weight": (8 * c, c), b + "ff.net.0.proj.bias": (8 * c,)})
        s.update({b + "ff.net.2.weight": (c, 4 * c), b + "ff.net.2.bias": (c,)})
        s.update({b + "ff_norm.weight": (c,), b + "ff_norm.bias": (c,)})
    return s
