"""DANet: position attention and channel attention, summed (the head of the Dual Attention Network).

J. Fu, J. Liu, H. Tian, Y. Li, Y. Bao, Z. Fang, H. Lu, "Dual Attention Network for Scene
Segmentation", CVPR 2019, Sec. 3.2–3.4. Compared with OCNet in Table 4 of Y. Yuan et al.,
"OCNet: Object Context for Semantic Segmentation", IJCV 2021.

Pipeline (every convolution ``conv → BN → ReLU``)::

    position path: 3×3 conv C_in → 512 → PAM → 3×3 conv 512 → 512
    channel path:  3×3 conv C_in → 512 → CAM → 3×3 conv 512 → 512
    y = position path + channel path            [B, 512, H, W]

The fuse: DANet "transforms the outputs of the two attention modules by a convolution layer and
performs an element-wise sum"; we use a 3×3 conv per path as DANet's release does, and no conv
after the sum (the classifier follows). PAM reduces queries and keys to ``512 / 8 = 64``
channels. This reading gives 1110 GFLOPs at ``[1, 2048, 128, 128]`` (Table 4: 1110).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ocnet_edu.nn.attention import AttentionOutput
from ocnet_edu.nn.layers import conv_bn_relu, float32_region, upcast

__all__ = ["PositionAttention", "ChannelAttention", "DANetHead"]


class PositionAttention(nn.Module):
    """Position attention module (PAM): dense self-attention over the ``H·W`` positions.

    ``S = softmax(Bᵀ C)`` over positions (no ``1/√d`` scaling, as in DANet), ``E = γ · D S + X``
    with ``γ`` initialised to 0.

    Args:
        channels: ``C`` of the input and output.
        key_channels: channels of the query/key maps (default ``C // 8``).

    Attributes:
        query, key (1×1 convs ``C → key_channels``), value (1×1 conv ``C → C``), gamma.

    Shapes:
        ``[B, C, H, W] → [B, C, H, W]``; the relation is ``[B, H·W, H·W]``.
    """

    def __init__(self, channels: int, key_channels: int | None = None) -> None:
        super().__init__()
        key_channels = max(channels // 8, 1) if key_channels is None else key_channels
        self.query = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.key = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C, H, W] → [B, C, H, W]``, or ``AttentionOutput(y, relation [B, H·W, H·W])``."""
        height, width = x.shape[-2:]
        query = rearrange(self.query(x), "b c h w -> b (h w) c")
        key = rearrange(self.key(x), "b c h w -> b (h w) c")
        value = rearrange(self.value(x), "b c h w -> b (h w) c")
        relation = torch.einsum("bnc,bmc->bnm", query, key).softmax(dim=-1)
        out = torch.einsum("bnm,bmc->bnc", relation, value)
        y = self.gamma * rearrange(out, "b (h w) c -> b c h w", h=height, w=width) + x
        return AttentionOutput(y, relation) if return_relations else y


class ChannelAttention(nn.Module):
    """Channel attention module (CAM): attention among the ``C`` channel maps.

    DANet computes the energy ``X Xᵀ`` (``[C, C]``), subtracts it from its row maximum and takes
    the softmax; since softmax is shift invariant this equals ``softmax(−X Xᵀ)``. ``E = γ · A X + X``
    with ``γ`` initialised to 0. The module has no convolutions.

    The energy sums ``H·W`` products per entry, which overflows float16 at ordinary activation
    sizes (``64·128`` pixels of magnitude ~4.5 exceed 65504); it and the softmax are computed in
    float32 (also under autocast), the relation is cast back to the input's dtype.

    Shapes:
        ``[B, C, H, W] → [B, C, H, W]``; the relation is ``[B, C, C]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    @staticmethod
    def _relation(flat: torch.Tensor) -> torch.Tensor:
        """``softmax(rowmax(X Xᵀ) − X Xᵀ)`` of ``flat [B, C, N]`` in at least float32: ``[B, C, C]``."""
        with float32_region(flat):
            flat = upcast(flat)
            energy = torch.einsum("bcn,bdn->bcd", flat, flat)
            return (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C, H, W] → [B, C, H, W]``, or ``AttentionOutput(y, relation [B, C, C])``."""
        height, width = x.shape[-2:]
        flat = rearrange(x, "b c h w -> b c (h w)")
        relation = self._relation(flat).to(x.dtype)
        out = torch.einsum("bcd,bdn->bcn", relation, flat)
        y = self.gamma * rearrange(out, "b c (h w) -> b c h w", h=height, w=width) + x
        return AttentionOutput(y, relation) if return_relations else y


class DANetHead(nn.Module):
    """DANet context module: PAM path + CAM path.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of both paths and of the output (``in_channels // 4`` = 512 in DANet).
        key_channels: PAM query/key channels (default ``channels // 8`` = 64).

    Attributes:
        reduce_position, position (PAM), refine_position, reduce_channel, channel (CAM),
        refine_channel, out_channels (part names: :mod:`ocnet_edu.heads.base`).

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int = 512, key_channels: int | None = None) -> None:
        super().__init__()
        self.out_channels = channels
        self.reduce_position = conv_bn_relu(in_channels, channels, kernel_size=3)
        self.position = PositionAttention(channels, key_channels)
        self.refine_position = conv_bn_relu(channels, channels, kernel_size=3)
        self.reduce_channel = conv_bn_relu(in_channels, channels, kernel_size=3)
        self.channel = ChannelAttention()
        self.refine_channel = conv_bn_relu(channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        position = self.refine_position(self.position(self.reduce_position(x)))
        channel = self.refine_channel(self.channel(self.reduce_channel(x)))
        return position + channel
