"""PPM: the pyramid pooling module of PSPNet.

H. Zhao, J. Shi, X. Qi, X. Wang, J. Jia, "Pyramid Scene Parsing Network", CVPR 2017, Sec. 3.2.
Compared with OCNet in Table 2 and Table 4 of Y. Yuan et al., "OCNet: Object Context for
Semantic Segmentation", IJCV 2021.

Pipeline (every convolution ``conv → BN → ReLU``)::

    for bins in (1, 2, 3, 6):  adaptive average pool to bins × bins → 1×1 conv C_in → 512
                               → bilinear upsampling to H × W
    concat [x, four pooled maps] [B, C_in + 4·512, H, W] --3×3 conv (fuse)--> [B, 512, H, W]

Channel counts: PSPNet reduces each of its N = 4 levels to 1/N of the input channels (512 for
2048) and fuses the concatenation with one 3×3 conv to 512 channels. This reading gives 619
GFLOPs at ``[1, 2048, 128, 128]`` (Table 4 of OCNet: 619); nothing was tuned.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu

__all__ = ["PPM"]


class PPM(nn.Module):
    """Pyramid pooling module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: output channels of the 3×3 fusion (512; PSPNet's "bottleneck").
        bins: output sizes of the adaptive average pools (1, 2, 3, 6).
        reduction_channels: channels of each pooled level (default ``in_channels // len(bins)``
            = 512).

    Attributes:
        levels (one 1×1 conv per pyramid level), fuse (the 3×3 conv on ``[x, levels]``),
        out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 512,
        bins: Sequence[int] = (1, 2, 3, 6),
        reduction_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.bins = tuple(bins)
        reduction_channels = in_channels // len(self.bins) if reduction_channels is None else reduction_channels
        self.out_channels = channels
        self.levels = nn.ModuleList(conv_bn_relu(in_channels, reduction_channels) for _ in self.bins)
        self.fuse = conv_bn_relu(in_channels + len(self.bins) * reduction_channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        size = x.shape[-2:]
        pooled = [
            F.interpolate(level(F.adaptive_avg_pool2d(x, bins)), size=size, mode="bilinear", align_corners=False)
            for bins, level in zip(self.bins, self.levels)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))
