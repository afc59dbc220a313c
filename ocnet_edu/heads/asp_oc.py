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

openseg's ASP-OC (openseg-group/openseg.pytorch ``lib/models/modules/asp_oc_block.py``, the
module its ``asp_ocnet`` model uses after a 3×3 conv 2048 → 512) differs in options of
this class: the OCP is its dense block in flavour ``openseg_oc`` run on a 2× max-pooled map
(``ocp_downsample=2``), followed by BN + activation (``context_norm``); the reduction conv has a
bias; every activation is leaky ReLU 0.01; the fuse outputs 512 channels (``out_channels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ocnet_edu.nn.flavour import Flavour
from ocnet_edu.nn.layers import activation, conv_bn_act
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
        out_channels: channels of the fuse, the output (default ``channels``; openseg: 512).
        flavour: the OCP's :mod:`~ocnet_edu.nn.flavour`, also its pooling when ``ocp_downsample > 1``.
        reduce_bias: the OCP branch's 3×3 conv has a bias (openseg).
        slope: negative slope of every activation of the module (0: ReLU; openseg: 0.01).
        context_norm: BN + activation on the OCP's output before the concatenation (openseg's
            ``BaseOC_Context_Module``; the paper: none).

    Attributes:
        reduce (the 3×3 reduction of the OCP branch), ocp, context_norm (``None`` or
        ``Sequential(BN, activation)``), atrous (:class:`~ocnet_edu.heads.aspp.AtrousBranches`),
        fuse, out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, out_channels, H, W]``.
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
        out_channels: int | None = None,
        flavour: str | Flavour = "paper",
        reduce_bias: bool = False,
        slope: float = 0.0,
        context_norm: bool = False,
    ) -> None:
        super().__init__(in_channels, channels, ocp, key_channels, value_channels, groups, stages, ocp_downsample,
                         flavour, reduce_bias, slope)
        out_channels = channels if out_channels is None else out_channels
        self.out_channels = out_channels
        self.ocp = self.new_ocp()
        self.context_norm = nn.Sequential(nn.BatchNorm2d(channels), activation(slope)) if context_norm else None
        self.atrous = AtrousBranches(in_channels, channels, dilations, slope)
        self.fuse = conv_bn_act(channels + self.atrous.out_channels, out_channels, kernel_size=1, slope=slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, out_channels, H, W]``."""
        context = self.object_context(self.ocp, self.reduce(x))
        if self.context_norm is not None:
            context = self.context_norm(context)
        return self.fuse(torch.cat([context, *self.atrous(x)], dim=1))
