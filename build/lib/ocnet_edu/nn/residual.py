"""A residual ISA block that can be inserted after any backbone stage (Sec. 4.5).

The paper shows that interlaced sparse self-attention also helps beyond segmentation, by placing
it in Mask R-CNN where the non-local block of Wang et al. (CVPR 2018) would go (Table 12). A
non-local block is residual, ``y = x + W_z(attention(x))``, with the last projection ``W_z``
initialised to zero, so inserting it into a pretrained network leaves the network's function
unchanged at the start of fine-tuning. :class:`ResidualISABlock` does the same with ISA:
``y = x + BN(ρ'(ISA(x)))`` with the final BN's scale set to zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ocnet_edu.nn.isa import STAGES, InterlacedSparseSelfAttention

__all__ = ["ResidualISABlock", "insert_after"]


class ResidualISABlock(nn.Module):
    """``y = x + BN(conv1x1(ISA(x)))``, an identity map at initialisation.

    Args:
        channels: ``C`` of the input and output ``[B, C, H, W]``.
        key_channels, value_channels: of the ISA (default ``C // 2``).
        groups: ``(P_h, P_w)`` of the ISA.
        stages: stage order of the ISA.
        zero_init: start with the BN scale at zero, so the block is exactly the identity (the
            non-local convention); ``False`` gives the usual BN initialisation.
    """

    def __init__(
        self,
        channels: int,
        key_channels: int | None = None,
        value_channels: int | None = None,
        groups: int | Sequence[int] = (8, 8),
        stages: Sequence[str] = STAGES,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.isa = InterlacedSparseSelfAttention(channels, key_channels, value_channels, channels, groups, stages)
        self.project = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        if zero_init:
            nn.init.zeros_(self.norm.weight)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``: ``x + BN(conv(ISA(x)))`` (the identity at initialisation)."""
        return x + self.norm(self.project(self.isa(x)))


def insert_after(stage: nn.Module, block: nn.Module) -> nn.Sequential:
    """``nn.Sequential(stage, block)``: run ``block`` on the stage's output.

    For example ``resnet.layer3 = insert_after(resnet.layer3, ResidualISABlock(1024))``. The
    state-dict keys of the stage move under ``0.`` (``layer3.0.conv1`` → ``layer3.0.0.conv1``),
    so load pretrained weights *before* inserting.
    """
    return nn.Sequential(stage, block)
