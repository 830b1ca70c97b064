"""FSDP wrapping units of vdf's large networks (the ``auto_wrap_policy`` of ``configs/strategy/fsdp*.yaml``).

FSDP flattens the parameters of each wrapped unit into one tensor, shards it over ranks, gathers
it for the unit's forward and backward and reduce-scatters its gradient. vdf chooses the units so
that every one of them holds parameters of a single training group:

- **SVD UNet** (DepthCrafter, ChronoDepth, Depth Any Video): the spatial transformer blocks, the
  temporal transformer blocks, the spatial and the temporal resnet halves, the spatio-temporal
  mixing factors and the timestep/frame-position embeddings are each their own unit. What is
  left for the root unit (``conv_in``/``conv_out``, projections and norms around the transformers,
  down/up-samplers) is spatial (`vdf.models.svd.parameter_group`). So when `StagedFreezing`
  trains only the temporal (or only the spatial) layers, the frozen group's units have no
  parameter that requires a gradient, and FSDP neither allocates nor reduces their gradients;
  frozen parameters only meet trainable ones in the root unit when the frozen VAE/CLIP parts
  that are not resnet blocks or transformer layers land there (their share of the root gradient
  is zero-filled, never used). The VAE's resnet blocks and the CLIP layers are units too.
- **FlashDepth**: the ViT blocks (student and frozen teacher) and the hybrid fusion blocks. The
  Mamba blocks run once per frame, so as units they would be gathered T times a step; they stay
  in the root unit (they are small).

One policy, `VDFWrapPolicy`, holds the units of every family (a class absent from a model
wraps nothing), so ``configs/strategy/fsdp.yaml`` is one overlay for all of them.

Only modules that run through their own ``forward`` may be units (FSDP gathers on forward):
the VAE as a whole is called through ``encode``/``decode`` and therefore stays in its parent.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.fsdp.wrap import ModuleWrapPolicy


def svd_wrap_classes() -> set[type[nn.Module]]:
    """The module classes that are FSDP units in an SVD-family task (see the module docstring)."""
    from diffusers.models.attention import BasicTransformerBlock, TemporalBasicTransformerBlock
    from diffusers.models.embeddings import TimestepEmbedding
    from diffusers.models.resnet import AlphaBlender, ResnetBlock2D, TemporalResnetBlock
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer

    return {
        BasicTransformerBlock,
        TemporalBasicTransformerBlock,
        ResnetBlock2D,
        TemporalResnetBlock,
        AlphaBlender,
        TimestepEmbedding,
        CLIPEncoderLayer,
    }


def flashdepth_wrap_classes() -> set[type[nn.Module]]:
    """The module classes that are FSDP units in a FlashDepth task."""
    from timm.models.vision_transformer import Block

    from vdf.models.hybrid_fusion import FusionBlock

    return {Block, FusionBlock}


class VDFWrapPolicy(ModuleWrapPolicy):
    """FSDP auto-wrap policy of vdf's networks: `svd_wrap_classes` and `flashdepth_wrap_classes`."""

    def __init__(self) -> None:
        super().__init__(svd_wrap_classes() | flashdepth_wrap_classes())
