"""ASPP: atrous spatial pyramid pooling with image-level features (DeepLabv3).

L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution for Semantic
Image Segmentation", arXiv:1706.05587, 2017, Sec. 3.3. Compared with OCNet in Table 2 and
Table 4 of Y. Yuan et al., "OCNet: Object Context for Semantic Segmentation", IJCV 2021.

Five parallel branches of 256 channels (every convolution ``conv → BN → ReLU``)::

    image pooling: global average pool → 1×1 conv C_in → 256 → broadcast back to H × W
    1×1 conv C_in → 256
    3×3 conv C_in → 256, dilation 12 / 24 / 36
    concat [B, 1280, H, W] --1×1 conv--> [B, 256, H, W]

The image-pooling branch has BN on a ``1×1`` map, so in training mode it needs a batch of at
least two (BN sees one value per channel per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import repeat
from torch import nn

from ocnet_edu.nn.layers import conv_bn_act, conv_bn_relu

__all__ = ["AtrousBranches", "ImagePooling", "ASPP"]


class ImagePooling(nn.Module):
    """Image-level feature: global average pooling → 1×1 conv → BN → ReLU → broadcast.

    Args:
        in_channels: input channels.
        channels: output channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]`` (constant over ``H, W``).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.project = conv_bn_relu(in_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Bilinear upsampling of a ``1×1`` map is a broadcast; we write it as one."""
        height, width = x.shape[-2:]
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return repeat(pooled, "b c 1 1 -> b c h w", h=height, w=width)


class AtrousBranches(nn.Module):
    """ASPP's convolution branches: a 1×1 conv and one dilated 3×3 conv per rate, in parallel.

    ASPP runs them next to image pooling, ASP-OC next to object context (Fig. 5 d); both then
    concatenate the maps and fuse them with a 1×1 conv. Every conv is ``conv → BN → ReLU`` with
    'same' padding (padding = dilation), so every branch keeps ``H × W``.

    Args:
        in_channels: channels of the backbone map.
        channels: channels of every branch.
        dilations: dilation rates of the 3×3 branches (12, 24, 36 for output stride 8).
        slope: negative slope of every branch's activation (0: ReLU; 0.01 in openseg's
            ASP-OC, InPlace-ABN's leaky ReLU).

    Attributes:
        pointwise (the 1×1 conv), dilated (``ModuleList`` of the 3×3 convs), out_channels (of
        all branches together, ``(1 + len(dilations)) · channels``).

    Shapes:
        ``[B, in_channels, H, W] →`` a list of ``1 + len(dilations)`` maps ``[B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int, dilations: Sequence[int], slope: float = 0.0) -> None:
        super().__init__()
        self.pointwise = conv_bn_act(in_channels, channels, kernel_size=1, slope=slope)
        self.dilated = nn.ModuleList(
            conv_bn_act(in_channels, channels, kernel_size=3, dilation=rate, slope=slope) for rate in dilations
        )
        self.out_channels = (1 + len(self.dilated)) * channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``x [B, in_channels, H, W] →`` ``[pointwise(x), *dilated(x)]``, each ``[B, channels, H, W]``."""
        return [self.pointwise(x), *(conv(x) for conv in self.dilated)]


class ASPP(nn.Module):
    """DeepLabv3 ASPP context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of every branch and of the output (256).
        dilations: dilation rates of the three 3×3 branches (12, 24, 36 for output stride 8).

    Attributes:
        image_pooling, atrous (:class:`AtrousBranches`), fuse (1×1, 5·256 → 256), out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int = 256, dilations: Sequence[int] = (12, 24, 36)) -> None:
        super().__init__()
        self.out_channels = channels
        self.image_pooling = ImagePooling(in_channels, channels)
        self.atrous = AtrousBranches(in_channels, channels, dilations)
        self.fuse = conv_bn_relu(channels + self.atrous.out_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        branches = [self.image_pooling(x), *self.atrous(x)]
        return self.fuse(torch.cat(branches, dim=1))
