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
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu
from .ocp import build_ocp, check_downsample, run_ocp

__all__ = ["ASPOC"]


class ASPOC(nn.Module):
    """ASP-OC context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        ocp: ``"sa"`` or ``"isa"``.
        channels: channels of every branch and of the output (256, "following the original
            settings", Sec. 3.4).
        dilations: dilation rates of the three 3×3 branches (12, 24, 36).
        key_channels: θ/φ channels of the OCP (default ``channels // 2`` = 128).
        value_channels: δ channels of the OCP (default ``channels // 2`` = 128).
        groups: ``(P_h, P_w)`` of the ISA OCP (default ``(8, 8)``); only for ``ocp="isa"``.
        stages: ISA stage order (default global then local, Table 1); only for ``ocp="isa"``.
        ocp_downsample: run the OCP on an average-pooled map (see
            :func:`ocnet_edu.heads.ocp.run_ocp`); 1 (the paper's text) by default.

    Attributes:
        context (the 3×3 reduction of the OCP branch), ocp, pointwise, dilated (``ModuleList``),
        fuse, out_channels.

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
        super().__init__()
        self.out_channels = channels
        self.ocp_downsample = check_downsample(ocp_downsample)
        self.context = conv_bn_relu(in_channels, channels, kernel_size=3)
        self.ocp = build_ocp(ocp, channels, key_channels, value_channels, channels, groups, stages)
        self.pointwise = conv_bn_relu(in_channels, channels, kernel_size=1)
        self.dilated = nn.ModuleList(
            conv_bn_relu(in_channels, channels, kernel_size=3, dilation=rate) for rate in dilations
        )
        self.fuse = conv_bn_relu((2 + len(self.dilated)) * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        branches = [run_ocp(self.ocp, self.context(x), self.ocp_downsample), self.pointwise(x)]
        branches += [conv(x) for conv in self.dilated]
        return self.fuse(torch.cat(branches, dim=1))
