"""Small layers every module of the package shares: ``conv → BN → ReLU`` and the input check.

They live here, once, so that the attention modules, the heads and the backbones build and
check their inputs the same way.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["check_input", "conv_bn_relu", "conv_bn_act", "activation"]


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1) -> nn.Sequential:
    """``conv (no bias) → BatchNorm → ReLU`` with 'same' padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size (1 or 3 in this project).
        dilation: dilation rate of the convolution.

    Raises:
        ValueError: an even ``kernel_size`` (no 'same' padding exists).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
    padding = dilation * (kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


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
    """``conv → BatchNorm → activation`` with 'same' padding; :func:`conv_bn_relu` with options.

    Args:
        in_channels, out_channels, kernel_size, dilation: as in :func:`conv_bn_relu`.
        bias: give the convolution a bias (some published models do, before their BN).
        slope: negative slope of the activation (0: ReLU; 0.01: InPlace-ABN's leaky ReLU).

    Shapes:
        ``[B, in_channels, H, W] → [B, out_channels, H, W]``; parameter names ``0.*`` (conv)
        and ``1.*`` (BN), the same as :func:`conv_bn_relu`'s.
    """
    layers = conv_bn_relu(in_channels, out_channels, kernel_size, dilation)
    if bias:
        conv = layers[0]
        layers[0] = nn.Conv2d(in_channels, out_channels, kernel_size, padding=conv.padding,
                              dilation=dilation, bias=True)
    layers[2] = activation(slope)
    return layers


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
