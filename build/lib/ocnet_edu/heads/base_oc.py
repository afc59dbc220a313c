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

from ocnet_edu.nn.layers import conv_bn_relu
from .ocp import ContextOutput, ObjectContextHead

__all__ = ["BaseOC"]


class BaseOC(ObjectContextHead):
    """Base-OC context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        ocp: ``"sa"`` or ``"isa"`` — the OCP instantiation (Sec. 3.2).
        channels: channels after the 3×3 reduction, of the OCP output and of the module output
            (512 in the paper).
        key_channels, value_channels, groups, stages, ocp_downsample: the OCP options (defaults
            ``channels // 2``, ``channels // 2``, ``(8, 8)``, global then local, 1), see
            :class:`~ocnet_edu.heads.ocp.ObjectContextHead`; ``ocp_downsample=2`` with SA is
            "SA-2×" of Table 3.

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
        super().__init__(in_channels, channels, ocp, key_channels, value_channels, groups, stages, ocp_downsample)
        self.ocp = self.new_ocp()
        self.fuse = conv_bn_relu(2 * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """Args:
            x: ``[B, in_channels, H, W]``.
            return_relations: also return the OCP's relation maps (see
                :func:`ocnet_edu.heads.ocp.run_ocp`).

        Returns:
            ``y [B, channels, H, W]``, or :class:`~ocnet_edu.heads.ocp.ContextOutput`
            ``(y, relations)``.
        """
        reduced = self.reduce(x)
        out = self.object_context(self.ocp, reduced, return_relations)
        context, relations = out if return_relations else (out, ())
        y = self.fuse(torch.cat([context, reduced], dim=1))
        return ContextOutput(y, relations) if return_relations else y
