"""DPT head of Depth-Anything-V2, with hooks where a temporal module can be inserted.

Sub-module names equal the official ones (``projects``, ``resize_layers``, ``scratch.layer{1..4}_rn``,
``scratch.refinenet{1..4}.{resConfUnit1,resConfUnit2,out_conv}``, ``scratch.output_conv1``,
``scratch.output_conv2.{0,2}``), so an official ``depth_head.*`` state dict loads without renaming.

Data flow for a ``ph x pw`` patch grid (ViT-S at 518: ph = pw = 37)::

    tokens_i (B, ph*pw, D) --projects[i]--> (B, oc_i, ph, pw) --resize_layers[i]--> x4, x2, x1, x1/2
        --scratch.layer{i+1}_rn--> layer_1 .. layer_4 (B, features, 4ph | 2ph | ph | ceil(ph/2), ...)
    stage 0: path_4 = refinenet4(layer_4)            -> size of layer_3   (ph)
    stage 1: path_3 = refinenet3(path_4, layer_3)    -> size of layer_2   (2ph)
    stage 2: path_2 = refinenet2(path_3, layer_2)    -> size of layer_1   (4ph)
    stage 3: path_1 = refinenet1(path_2, layer_1)    -> x2                (8ph)
    head:    output_conv1 -> bilinear to (14ph, 14pw) -> output_conv2 -> (B, 1, 14ph, 14pw)

Stage indices follow FlashDepth's ``mamba_in_dpt_layer`` (0 = after ``refinenet4``, ..., 3 = after
``refinenet1``): a ``hook(stage, path) -> path`` passed to :meth:`DPTHead.forward` or
:meth:`DPTHead.fuse` is applied to the output of each stage, which is where FlashDepth's Mamba
(stage 3 for L, stage 1 for S) and its hybrid cross-attention (stage 0) sit. The pieces are also
callable one by one (:meth:`project_layer`, :meth:`refine`, :meth:`head`) for models that need only
part of the head (the FlashDepth teacher runs layers 3-4 and stage 0 only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

StageHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(stage, path) -> path``; ``path`` is ``(B, features, h, w)`` and must keep its shape."""


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (bias, no BN). ``(B,C,h,w)`` -> same."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.activation = nn.ReLU(inplace=False)  # not in-place: x is still needed for the skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.activation(self.conv1(self.activation(x))))


class FeatureFusionBlock(nn.Module):
    """Add a projected skip to the running path, refine, upsample, 1x1 conv.

    ``forward(path, skip=None, size=None)``: ``out = path (+ resConfUnit1(skip))``,
    ``out = resConfUnit2(out)``, bilinear (align_corners=True) to ``size`` or x2 when no size is
    given, then ``out_conv``. All tensors ``(B, features, h, w)``.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)

    def forward(
        self, path: torch.Tensor, skip: torch.Tensor | None = None, size: Sequence[int] | None = None
    ) -> torch.Tensor:
        out = path
        if skip is not None:
            out = out + self.resConfUnit1(skip)
        out = self.resConfUnit2(out)
        if size is None:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=True)
        return self.out_conv(out)


class DPTScratch(nn.Module):
    """Container that reproduces the official ``scratch`` names (``layer{i}_rn``, ``refinenet{i}``, ...)."""

    def __init__(self, out_channels: Sequence[int], features: int) -> None:
        super().__init__()
        # expand=False in DAv2: every level is mapped to ``features`` channels, without bias.
        self.layer1_rn = nn.Conv2d(out_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(out_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(out_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(out_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features)
        half = features // 2
        self.output_conv1 = nn.Conv2d(features, half, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(half, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(inplace=True),
            nn.Identity(),
        )
        # The head ends in a ReLU: with PyTorch's default init the last conv's output can be
        # negative everywhere, which zeroes the output and every gradient of a model trained
        # from scratch. A positive bias keeps it alive; loaded checkpoints overwrite it.
        nn.init.constant_(self.output_conv2[2].bias, 1.0)


class DPTHead(nn.Module):
    """DAv2's DPT decoder: four ViT token maps -> one non-negative map at the input resolution.

    Args:
        in_channels: ViT token width ``D``.
        features: fusion width (64 / 128 / 256 / 384 for S / B / L / G).
        out_channels: per-level projection widths, e.g. ``[48, 96, 192, 384]`` for S.

    ``scratch.refinenet4.resConfUnit1`` exists (the official checkpoints carry it) but has no
    skip input to act on; its parameters are frozen so DDP does not report them as unused.
    """

    def __init__(
        self, in_channels: int, features: int = 256, out_channels: Sequence[int] = (256, 512, 1024, 1024)
    ) -> None:
        super().__init__()
        if len(out_channels) != 4:
            raise ValueError(f"out_channels needs 4 entries, got {list(out_channels)}")
        oc = [int(c) for c in out_channels]
        self.in_channels = in_channels
        self.features = features
        self.out_channels = oc
        self.projects = nn.ModuleList([nn.Conv2d(in_channels, c, 1) for c in oc])
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(oc[0], oc[0], kernel_size=4, stride=4, padding=0),
                nn.ConvTranspose2d(oc[1], oc[1], kernel_size=2, stride=2, padding=0),
                nn.Identity(),
                nn.Conv2d(oc[3], oc[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = DPTScratch(oc, features)
        self.scratch.refinenet4.resConfUnit1.requires_grad_(False)

    def resample(self, level: int, tokens: torch.Tensor, patch_hw: Sequence[int]) -> torch.Tensor:
        """``projects[level]`` then ``resize_layers[level]``: ``(B, ph*pw, D)`` tokens (no CLS,
        row-major) -> ``(B, out_channels[level], s*ph, s*pw)`` with s = 4, 2, 1, 1/2 (ceil)."""
        ph, pw = patch_hw
        b, n, d = tokens.shape
        if n != ph * pw:
            raise ValueError(f"{n} tokens do not form a {ph}x{pw} patch grid")
        x = tokens.permute(0, 2, 1).reshape(b, d, ph, pw)
        return self.resize_layers[level](self.projects[level](x))

    def project_layer(self, level: int, tokens: torch.Tensor, patch_hw: Sequence[int]) -> torch.Tensor:
        """One level of the feature pyramid.

        Args:
            level: 0..3 (the i-th intermediate ViT layer).
            tokens: ``(B, ph*pw, D)`` patch tokens (no CLS), row-major.
            patch_hw: ``(ph, pw)``.

        Returns:
            ``layer_{level+1}``: ``(B, features, s*ph, s*pw)`` with s = 4, 2, 1, 1/2 (ceil).
        """
        rn = (self.scratch.layer1_rn, self.scratch.layer2_rn, self.scratch.layer3_rn, self.scratch.layer4_rn)
        return rn[level](self.resample(level, tokens, patch_hw))

    def project(self, features: Sequence[torch.Tensor], patch_hw: Sequence[int]) -> list[torch.Tensor]:
        """``[layer_1, layer_2, layer_3, layer_4]`` from four ``(B, N, D)`` token tensors."""
        if len(features) != 4:
            raise ValueError(f"DPTHead expects 4 intermediate layers, got {len(features)}")
        return [self.project_layer(i, t, patch_hw) for i, t in enumerate(features)]

    def refine(
        self, stage: int, path: torch.Tensor, skip: torch.Tensor | None, size: Sequence[int] | None
    ) -> torch.Tensor:
        """Run fusion stage ``stage`` (0..3 -> ``refinenet4`` .. ``refinenet1``)."""
        block = (
            self.scratch.refinenet4,
            self.scratch.refinenet3,
            self.scratch.refinenet2,
            self.scratch.refinenet1,
        )[stage]
        return block(path, skip, size)

    def fuse(self, layers: Sequence[torch.Tensor], hook: StageHook | None = None) -> torch.Tensor:
        """Top-down fusion of ``[layer_1..layer_4]`` into ``path_1``.

        ``hook(stage, path)`` (optional) replaces each stage's output before the next stage sees
        it; stage 0 = path_4 (ph), 1 = path_3 (2ph), 2 = path_2 (4ph), 3 = path_1 (8ph).

        Returns:
            ``path_1``: ``(B, features, 8ph, 8pw)``.
        """
        layer_1, layer_2, layer_3, layer_4 = layers
        targets = (layer_3.shape[-2:], layer_2.shape[-2:], layer_1.shape[-2:], None)
        skips = (None, layer_3, layer_2, layer_1)
        path = layer_4
        for stage in range(4):
            path = self.refine(stage, path, skips[stage], targets[stage])
            if hook is not None:
                path = hook(stage, path)
        return path

    def head(self, path_1: torch.Tensor, patch_hw: Sequence[int]) -> torch.Tensor:
        """``(B, features, 8ph, 8pw)`` -> ``(B, 1, 14ph, 14pw)`` (ReLU'd)."""
        ph, pw = patch_hw
        out = self.scratch.output_conv1(path_1)
        out = F.interpolate(out, size=(ph * 14, pw * 14), mode="bilinear", align_corners=True)
        return self.scratch.output_conv2(out)

    def forward(
        self, features: Sequence[torch.Tensor], patch_hw: Sequence[int], hook: StageHook | None = None
    ) -> torch.Tensor:
        """Four ``(B, ph*pw, D)`` token tensors -> ``(B, 1, 14ph, 14pw)`` non-negative map."""
        return self.head(self.fuse(self.project(features, patch_hw), hook), patch_hw)
