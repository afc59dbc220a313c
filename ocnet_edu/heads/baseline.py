"""The "no context" baseline: a dilated ResNet followed only by a channel reduction.

Y. Yuan et al., "OCNet: Object Context for Semantic Segmentation", IJCV 2021: the row
"Dilated ResNet-101" of Tables 2, 5 and 6. The paper does not describe its head; we use the same
3×3 reduction (``conv → BN → ReLU``, in → 512) that every context module of the paper starts
with, so that the only difference to Base-OC is the object context.
"""

from __future__ import annotations

import torch
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu

__all__ = ["NoContext"]


class NoContext(nn.Module):
    """A 3×3 ``conv → BN → ReLU`` reduction and nothing else.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: output channels (512 in the paper).

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int = 512) -> None:
        super().__init__()
        self.out_channels = channels
        self.reduce = conv_bn_relu(in_channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        return self.reduce(x)
