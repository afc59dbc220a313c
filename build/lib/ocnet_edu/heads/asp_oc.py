"""ASP-OC: ASPP with the image-pooling branch replaced by object context pooling (Fig. 5 d).

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021, Sec. 3.3 ("Combination with ASPP") and Sec. 3.4 ("ASP-OC"); ASPP is
from L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution for
Semantic Image Segmentation", arXiv 2017 (DeepLabv3).

Five parallel branches of 256 channels (every convolution ``conv → BN → ReLU``)::

    OCP branch:  3×3 conv C_in → 256, then the OCP on 256 channels
    1×1 conv C_in → 256
    3×3 conv C_in → 256, dilation 12 / 24 / 36
    concat [B, 1280, H, W] --1×1 conv--> [B, 256, H, W]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ocnet_edu.nn.layers import conv_bn_relu
from .aspp import AtrousBranches
from .ocp import ObjectContextHead

__all__ = ["ASPOC"]


class ASPOC(ObjectContextHead):
    """ASP-OC context module: ASPP's convolution branches next to an OCP branch.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        ocp: ``"sa"`` or ``"isa"``.
        channels: channels of every branch and of the output (256, "following the original
            settings", Sec. 3.4).
        dilations: dilation rates of the three 3×3 branches (12, 24, 36).
        key_channels, value_channels, groups, stages, ocp_downsample: the OCP options (defaults
            ``channels // 2`` = 128, 128, ``(8, 8)``, global then local, 1 = the paper's text),
            see :class:`~ocnet_edu.heads.ocp.ObjectContextHead`.

    Attributes:
        reduce (the 3×3 reduction of the OCP branch), ocp, atrous
        (:class:`~ocnet_edu.heads.aspp.AtrousBranches`), fuse, out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        ocp: str = "isa",
        channels: int = 256,
        dilations: Sequence[int] = (12, 24, 36),
        key_channels: int | None = None,
        value_channels: int | None = None,
        groups: tuple[int, int] | None = None,
        stages: tuple[str, ...] | None = None,
        ocp_downsample: int = 1,
    ) -> None:
        super().__init__(in_channels, channels, ocp, key_channels, value_channels, groups, stages, ocp_downsample)
        self.ocp = self.new_ocp()
        self.atrous = AtrousBranches(in_channels, channels, dilations)
        self.fuse = conv_bn_relu(channels + self.atrous.out_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        branches = [self.object_context(self.ocp, self.reduce(x)), *self.atrous(x)]
        return self.fuse(torch.cat(branches, dim=1))
