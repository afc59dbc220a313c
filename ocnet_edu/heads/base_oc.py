"""Base-OC: object context pooling, concatenated with its input (Fig. 5 b).

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021, Sec. 3.4 ("Base-OC") and Table 2. With ``ocp_downsample=2`` and the SA
OCP it is the "SA-2×" row of Table 3 ("we directly down-sample the feature map for 2× before
computing the dense relation matrix").

Pipeline (every convolution is ``conv → BN → ReLU``, Fig. 5 caption)::

    x [B, C_in, H, W] --3×3 conv--> r [B, 512, H, W] --OCP--> o [B, 512, H, W]
    concat[o, r] [B, 1024, H, W] --1×1 conv--> y [B, 512, H, W]
"""

from __future__ import annotations

import torch
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu
from .ocp import build_ocp, check_downsample, run_ocp

__all__ = ["BaseOC"]


class BaseOC(nn.Module):
    """Base-OC context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        ocp: ``"sa"`` or ``"isa"`` — the OCP instantiation (Sec. 3.2).
        channels: channels after the 3×3 reduction, of the OCP output and of the module output
            (512 in the paper).
        key_channels: θ/φ channels of the OCP (default ``channels // 2`` = 256).
        value_channels: δ channels of the OCP (default ``channels // 2`` = 256).
        groups: ``(P_h, P_w)`` of the ISA OCP (default ``(8, 8)``); only for ``ocp="isa"``.
        stages: ISA stage order (default global then local, Table 1); only for ``ocp="isa"``.
        ocp_downsample: run the OCP on a map average-pooled by this factor and upsample its
            output bilinearly (1 = the paper's Base-OC; 2 = "SA-2×" of Table 3).

    Attributes:
        reduce: the 3×3 reduction; ``ocp``: the OCP module itself (so that its relations can be
            inspected); ``fuse``: the 1×1 conv 1024 → 512; ``out_channels``.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        ocp: str = "isa",
        channels: int = 512,
        key_channels: int | None = None,
        value_channels: int | None = None,
        groups: tuple[int, int] | None = None,
        stages: tuple[str, ...] | None = None,
        ocp_downsample: int = 1,
    ) -> None:
        super().__init__()
        self.out_channels = channels
        self.ocp_downsample = check_downsample(ocp_downsample)
        self.reduce = conv_bn_relu(in_channels, channels, kernel_size=3)
        self.ocp = build_ocp(ocp, channels, key_channels, value_channels, channels, groups, stages)
        self.fuse = conv_bn_relu(2 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """Args:
            x: ``[B, in_channels, H, W]``.
            return_relations: also return the OCP's relation maps (see
                :func:`ocnet_edu.heads.ocp.run_ocp`).

        Returns:
            ``y [B, channels, H, W]`` or ``(y, relations)``.
        """
        reduced = self.reduce(x)
        out = run_ocp(self.ocp, reduced, self.ocp_downsample, return_relations)
        context, relations = out if return_relations else (out, ())
        y = self.fuse(torch.cat([context, reduced], dim=1))
        return (y, relations) if return_relations else y
