"""Small layers every module of the package shares: ``conv → BN → ReLU`` and the input check.

They live here, once, so that the attention modules, the heads and the backbones build and
check their inputs the same way.
"""

from __future__ import annotations

import contextlib
import numbers

import torch
from torch import nn

__all__ = ["activation", "call_in_dtype", "check_input", "check_int", "check_size", "conv_bn_act", "conv_bn_relu",
           "float32_region", "upcast"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """``conv (no bias) → BatchNorm → ReLU`` with 'same' padding (:func:`conv_bn_act` with its
    defaults, the paper's block).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size (1 or 3 in this project).
        dilation: dilation rate of the convolution.

    Raises:
        ValueError: an even ``kernel_size`` (no 'same' padding exists).
    """
    return conv_bn_act(in_channels, out_channels, kernel_size, dilation)


def activation(slope: float = 0.0) -> nn.Module:
    """ReLU for ``slope == 0`` (the paper), else leaky ReLU with that negative slope.

    InPlace-ABN, the norm the authors' public models were trained with, applies leaky ReLU
    with slope 0.01 after every BatchNorm of a head.
    """
    return nn.ReLU(inplace=True) if slope == 0 else nn.LeakyReLU(slope, inplace=True)


def conv_bn_act(
    in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1,
    bias: bool = False, slope: float = 0.0,
) -> nn.Sequential:
    """``conv → BatchNorm → activation`` with 'same' padding.

    Args:
        in_channels, out_channels, kernel_size, dilation: as in :func:`conv_bn_relu`.
        bias: give the convolution a bias (some published models do, before their BN).
        slope: negative slope of the activation (0: ReLU; 0.01: InPlace-ABN's leaky ReLU).

    Shapes:
        ``[B, in_channels, H, W] → [B, out_channels, H, W]``; parameter names ``0.*`` (conv)
        and ``1.*`` (BN).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=bias),
        nn.BatchNorm2d(out_channels),
        activation(slope),
    )


def check_input(x: torch.Tensor, in_channels: int, owner: str) -> None:
    """Raise a clear ``ValueError`` unless ``x`` is ``[B, in_channels, H, W]``.

    Args:
        x: the tensor given to ``owner.forward``.
        in_channels: the channel count ``owner`` was built for.
        owner: class name used in the message.
    """
    if x.dim() != 4:
        raise ValueError(f"{owner} expects a 4-D tensor [B, C, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{owner} was built for {in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})"
        )


def check_int(value, name: str, minimum: int | None = None) -> int:
    """``value`` as an ``int``; ``ValueError`` naming ``name`` unless it is an integer ``≥ minimum``.

    Python and NumPy integers pass; ``bool``, ``float`` (even ``2.0``) and tensors do not.

    Args:
        value: the argument to check.
        name: the argument's name, used in the message.
        minimum: the smallest allowed value (``None``: no bound).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        kind = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def check_size(size, name: str = "size") -> tuple[int, int]:
    """``size`` as ``(H, W)``; ``ValueError`` naming ``name`` unless it is a pair of positive ints."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise ValueError(f"{name} must be a pair of positive ints (H, W), got {size!r}")
    return check_int(size[0], f"{name}[0]", 1), check_int(size[1], f"{name}[1]", 1)


def float32_region(x: torch.Tensor):
    """A context in which autocast is off for ``x``'s device, so reductions run in ``x``'s dtype.

    Use it with :func:`upcast` for sums that overflow float16 (65504): under CUDA autocast an
    einsum would otherwise be cast back to float16. A no-op on devices without autocast (meta).
    """
    device_type = x.device.type
    if device_type not in ("cuda", "cpu", "xpu", "mps"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a float of lower precision (float16, bfloat16), else ``x`` itself."""
    return x.float() if x.is_floating_point() and x.element_size() < 4 else x


def call_in_dtype(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with the module's parameters in ``x``'s dtype (e.g. a ``.half()`` norm on float32 sums).

    A module whose parameters have that dtype already is called as it is (the default path);
    otherwise it runs through :func:`torch.func.functional_call` with converted copies.
    """
    params = dict(module.named_parameters())
    if all(p.dtype == x.dtype for p in params.values()):
        return module(x)
    return torch.func.functional_call(module, {name: p.to(x.dtype) for name, p in params.items()}, (x,))
