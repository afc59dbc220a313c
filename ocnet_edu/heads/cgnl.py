"""CGNL: the compact generalized non-local block with the dot-product kernel.

K. Yue, M. Sun, Y. Yuan, F. Zhou, E. Ding, F. Xu, "Compact Generalized Non-local Network",
NeurIPS 2018, Sec. 3. Compared with OCNet in Tables 3 and 4 of Y. Yuan et al., "OCNet: Object
Context for Semantic Segmentation", IJCV 2021.

The generalized non-local operation relates every (position, channel) pair to every other. With
the dot-product kernel its order-1 Taylor form is exact and compact: per channel group ``g``,

    y_g = θ_g(X) · Σ_{c ∈ g, h, w} φ_g(X) ⊙ g_g(X)          (a scalar per sample and group)

so the cost is linear in ``H·W``. The block then applies a grouped 1×1 conv back to the input
channels, GroupNorm, and adds the input (residual).

A property worth knowing: the grouped conv ``z`` and the GroupNorm use the same ``G`` groups (as in
CGNL's release), so each group's scalar multiplies a whole GroupNorm group, and GroupNorm divides
its magnitude out again. Only the sign of ``Σ φ_g ⊙ g_g`` reaches the output (up to GroupNorm's
ε); ``tests/test_heads.py`` checks this numerically.

Head (every convolution outside the block ``conv → BN → ReLU``)::

    x [B, C_in, H, W] --3×3 conv--> [B, 512, H, W] --CGNL (planes 256, 8 channel groups)-->
    [B, 512, H, W] --3×3 conv 512 → 512--> [B, 512, H, W]

CGNL itself was evaluated on classification and detection; the segmentation head is not
described by either paper. We put CGNL in the place of the criss-cross attention of CCNet's head
(3×3 reduction, context block, 3×3 conv), without CCNet's final concatenation with the backbone
map; see the FLOPs notes in :data:`ocnet_edu.experiments.efficiency.TABLE4_NOTES`.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import nn

from ocnet_edu.nn.layers import call_in_dtype, conv_bn_relu, float32_region, upcast
from .base import ContextHead

__all__ = ["CGNLBlock", "CGNLHead"]


class CGNLBlock(nn.Module):
    """Compact generalized non-local block, dot-product kernel, with channel groups.

    Args:
        channels: ``C`` of the input and output.
        planes: channels of θ, φ, g (default ``C // 2``, as in CGNL).
        channel_groups: groups of channels ``G`` (8 in CGNL, where they are called "groups"; not
            ISA's spatial groups ``(P_h, P_w)``); ``planes`` and ``channels`` must be divisible
            by it.
        use_scale: divide each group's scalar by ``√(c_g·H·W)`` (CGNL's ``use_scale``, off in its
            released ResNet configuration).

    The per-group sum over ``c·H·W`` overflows float16; it, the scaling of θ, ``z`` and the
    GroupNorm (which divides the magnitude out again) run in at least float32 (also under
    autocast, and for a ``.half()`` block), and the output has the input's dtype.

    Shapes:
        ``[B, C, H, W] → [B, C, H, W]``.
    """

    def __init__(
        self, channels: int, planes: int | None = None, channel_groups: int = 8, use_scale: bool = False
    ) -> None:
        super().__init__()
        planes = channels // 2 if planes is None else planes
        if planes % channel_groups or channels % channel_groups:
            raise ValueError(
                f"planes ({planes}) and channels ({channels}) must be divisible by channel_groups ({channel_groups})"
            )
        self.channel_groups = channel_groups
        self.use_scale = use_scale
        self.theta = nn.Conv2d(channels, planes, kernel_size=1, bias=False)
        self.phi = nn.Conv2d(channels, planes, kernel_size=1, bias=False)
        self.g = nn.Conv2d(channels, planes, kernel_size=1, bias=False)
        self.z = nn.Conv2d(planes, channels, kernel_size=1, groups=channel_groups, bias=False)
        self.norm = nn.GroupNorm(channel_groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W] → [B, C, H, W]``."""
        phi = rearrange(self.phi(x), "b (g c) h w -> b g (c h w)", g=self.channel_groups)
        g = rearrange(self.g(x), "b (g c) h w -> b g (c h w)", g=self.channel_groups)
        theta = rearrange(self.theta(x), "b (g c) h w -> b g c h w", g=self.channel_groups)
        with float32_region(x):
            attention = torch.einsum("bgn,bgn->bg", upcast(phi), upcast(g))
            if self.use_scale:
                attention = attention / math.sqrt(phi.shape[-1])
            out = rearrange(torch.einsum("bg,bgchw->bgchw", attention, upcast(theta)), "b g c h w -> b (g c) h w")
            out = call_in_dtype(self.norm, call_in_dtype(self.z, out))
        return out.to(x.dtype) + x


class CGNLHead(ContextHead):
    """CGNL context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of the block and of the output (512).
        planes: θ/φ/g channels of the block (default ``channels // 2``).
        channel_groups: channel groups of the block (8).
        use_scale: see :class:`CGNLBlock`.
        post_conv: apply the 3×3 conv 512 → 512 after the block (default True; see the module
            docstring).

    Attributes:
        reduce, cgnl, refine (the 3×3 conv after the block; ``nn.Identity`` when
        ``post_conv=False``), out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 512,
        planes: int | None = None,
        channel_groups: int = 8,
        use_scale: bool = False,
        post_conv: bool = True,
    ) -> None:
        super().__init__(in_channels, channels)
        self.cgnl = CGNLBlock(channels, planes, channel_groups, use_scale)
        self.refine = conv_bn_relu(channels, channels, kernel_size=3) if post_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        return self.refine(self.cgnl(self.reduce(x)))
