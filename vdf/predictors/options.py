"""`InferenceOptions`: how a predictor's networks run at test and predict time (speed, not the method).

Every predictor takes ``inference`` (an `InferenceOptions`), in the config or on the command line::

    model:
      init_args:
        predictor:
          init_args:
            inference: {channels_last: true, compile: true}

    vdf predict --config configs/depthcrafter.yaml --model.init_args.predictor.init_args.inference.compile true ...

The defaults change nothing: the networks run as the config builds them (the official numerics).
The options are applied once, at the first whole-video call (`Predictor.stream`, which `vdf predict`,
`vdf test`, `vdf bench` and `vdf.load(...)(video)` use), to the networks the predictor names in
`Predictor.inference_networks`; they are for inference: `dtype` is refused while the predictor is in
training mode, but a validation pass during `vdf fit` runs in evaluation mode, so do not set
``dtype`` (or ``compile``) in a config you train with.

- ``dtype``: the networks' weights and computation in ``float16`` or ``bfloat16`` (inputs cast on entry,
  outputs back to float32). The latent families already hold their networks in the official dtype
  through each network's ``weights_dtype`` (DepthCrafter: float16, as its official ``run.py``); this
  option is for the others (Depth-Anything-V2, FlashDepth, Video-Depth-Anything run float32 in their
  official scripts, FlashDepth in bfloat16 autocast at its paper's speed).
- ``channels_last``: convolution weights (and so their activations) in the channels-last memory
  format, which cuDNN and oneDNN run fastest. Exact up to float rounding.
- ``temporal_conv_2d``: the 3-D convolutions that mix frames only (kernel ``k×1×1``: the temporal
  resnet layers of the SVD UNet and of the VAE's temporal decoder) run as the equivalent 2-D
  convolution over (frames, pixels). Same weights and state dict, exact up to float rounding; on
  a CPU PyTorch runs such 3-D convolutions on a slow generic path (2-4x slower than the 2-D one).
- ``attention``: the `torch.nn.functional.scaled_dot_product_attention` backends allowed
  (``math``, ``flash``, ``efficient``, ``cudnn``); None lets PyTorch pick (the default). Every
  attention of vdf's networks goes through that function (diffusers' ``AttnProcessor2_0`` in the
  SVD UNets; `check_fused_attention` verifies it).
- ``compile``: `torch.compile` each network (``compile_mode``: ``default``, ``reduce-overhead`` (CUDA
  graphs: fixed shapes, GPU only), ``max-autotune``). FlashDepth and Video-Depth-Anything compile
  their one-frame streaming step, the recurrent state an input and an output, so that one compiled
  step serves every frame. Compilation costs seconds to minutes on the first calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils._pytree import tree_map

Dtype = Literal["float32", "float16", "bfloat16"]
AttentionBackend = Literal["math", "flash", "efficient", "cudnn"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class InferenceOptions:
    """How the predictor's networks run at test and predict time (see the module doc).

    Args:
        dtype: weights and computation dtype of the networks (None: as built; float32 for the
            discriminative families, each network's ``weights_dtype`` for the latent ones).
        channels_last: convolution weights in the channels-last memory format.
        temporal_conv_2d: frame-mixing 3-D convolutions (kernel k x 1 x 1) as 2-D convolutions.
        attention: the fused-attention backends `scaled_dot_product_attention` may use (None: any).
        compile: `torch.compile` the networks (FlashDepth / Video-Depth-Anything: the streaming step).
        compile_mode: `torch.compile`'s ``mode`` (``reduce-overhead`` adds CUDA graphs: fixed shapes, GPU).
        compile_dynamic: `torch.compile`'s ``dynamic`` (None: recompile once on a new shape, then dynamic).
    """

    dtype: Dtype | None = None
    channels_last: bool = False
    temporal_conv_2d: bool = False
    attention: list[AttentionBackend] | None = None
    compile: bool = False
    compile_mode: CompileMode = "default"
    compile_dynamic: bool | None = None

    def __post_init__(self) -> None:
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise ValueError(f"inference dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.attention is not None:
            backends = _backends()
            unknown = [b for b in self.attention if b not in backends]
            if unknown or not self.attention:
                raise ValueError(
                    f"attention backends must be a non-empty list of {sorted(backends)}, got {self.attention}"
                )

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return None if self.dtype is None else _DTYPES[self.dtype]

    @property
    def exact(self) -> bool:
        """Whether the options keep float32 numerics (up to float rounding order)."""
        return self.dtype in (None, "float32")

    def attention_context(self) -> contextlib.AbstractContextManager:
        """The context restricting `scaled_dot_product_attention` to ``attention`` (a no-op for None)."""
        if self.attention is None:
            return contextlib.nullcontext()
        from torch.nn.attention import sdpa_kernel

        backends = _backends()
        return sdpa_kernel([backends[name] for name in self.attention])


def _backends() -> dict[str, Any]:
    from torch.nn.attention import SDPBackend

    return {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }


def _cast(dtype: torch.dtype) -> Callable[[Any], Any]:
    def cast(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
            return value.to(dtype)
        return value

    return cast


def cast_network(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module``'s floating weights in ``dtype``; its floating inputs are cast to ``dtype`` on
    entry and its floating outputs back to float32 (tensors nested in tuples, lists, dicts)."""
    module.to(dtype)
    to_dtype, to_float = _cast(dtype), _cast(torch.float32)
    module.register_forward_pre_hook(
        lambda mod, args, kwargs: (tree_map(to_dtype, args), tree_map(to_dtype, kwargs)), with_kwargs=True
    )
    module.register_forward_hook(lambda mod, args, out: tree_map(to_float, out))
    return module


def to_channels_last(module: nn.Module) -> int:
    """Convolution weights of ``module`` (2-D: 4-D weights) in channels-last format; returns how many."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d | nn.ConvTranspose2d):
            sub.weight.data = sub.weight.data.contiguous(memory_format=torch.channels_last)
            count += 1
    return count


class TemporalConv2d(nn.Conv3d):
    """A `torch.nn.Conv3d` whose kernel, stride, padding and dilation are 1, 1 and 0 in height and
    width, computed as the 2-D convolution over ``(frames, height * width)`` it equals."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        out = torch.nn.functional.conv2d(
            x.reshape(b, c, t, h * w),
            self.weight[..., 0],
            self.bias,
            stride=(self.stride[0], 1),
            padding=(self.padding[0], 0),
            dilation=(self.dilation[0], 1),
            groups=self.groups,
        )
        return out.reshape(b, out.shape[1], out.shape[2], h, w)


def temporal_convs_as_2d(module: nn.Module) -> int:
    """Every frame-only `torch.nn.Conv3d` of ``module`` (kernel ``k×1×1``, no spatial stride, padding
    or dilation, zero padding) becomes a `TemporalConv2d` in place (same parameters); returns how many."""
    count = 0
    for sub in module.modules():
        if (
            type(sub) is nn.Conv3d
            and tuple(sub.kernel_size[1:]) == (1, 1)
            and tuple(sub.stride[1:]) == (1, 1)
            and tuple(sub.dilation[1:]) == (1, 1)
            and not isinstance(sub.padding, str)
            and tuple(sub.padding[1:]) == (0, 0)
            and sub.padding_mode == "zeros"
        ):
            sub.__class__ = TemporalConv2d
            count += 1
    return count


def check_fused_attention(module: nn.Module) -> list[str]:
    """Names of diffusers ``Attention`` layers of ``module`` whose processor does not call
    `scaled_dot_product_attention` (empty: every attention is fused)."""
    slow = []
    for name, sub in module.named_modules():
        processor = getattr(sub, "processor", None)
        if processor is None or not hasattr(sub, "set_processor"):
            continue
        kind = type(processor).__name__
        if not (kind.endswith("2_0") or "Rope" in kind or kind.startswith("Fused")):
            slow.append(f"{name}: {kind}")
    return slow


def use_fused_attention(module: nn.Module) -> int:
    """Give every diffusers ``Attention`` of ``module`` that runs diffusers' unfused ``AttnProcessor``
    ``AttnProcessor2_0`` instead (the same arithmetic through `scaled_dot_product_attention`);
    returns how many were replaced."""
    unfused = [
        sub
        for sub in module.modules()
        if hasattr(sub, "set_processor") and type(getattr(sub, "processor", None)).__name__ == "AttnProcessor"
    ]
    if not unfused:  # nothing to do (and no diffusers import for networks without its layers)
        return 0
    from diffusers.models.attention_processor import AttnProcessor2_0

    for sub in unfused:
        sub.set_processor(AttnProcessor2_0())
    return len(unfused)


def compile_module(module: nn.Module, options: InferenceOptions) -> nn.Module:
    """`torch.compile` ``module`` in place (`nn.Module.compile`: same parameters, same state dict)."""
    module.compile(mode=options.compile_mode, dynamic=options.compile_dynamic)
    return module


def compile_function(fn: Callable, options: InferenceOptions) -> Callable:
    """`torch.compile` of a function (a streaming step: state in, state out)."""
    return torch.compile(fn, mode=options.compile_mode, dynamic=options.compile_dynamic)
