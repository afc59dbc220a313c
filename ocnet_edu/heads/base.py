"""The base of the context modules, and one naming scheme for their parts.

Every context module maps the backbone map ``[B, C_in, H, W]`` to the map the classifier sees,
``[B, out_channels, H, W]``. Most start with a 3×3 reduction and then add their context; their
parts have the same names in every head (the OCNet heads of Fig. 5 and the baselines):

==========  ===================================================================================
name        part
==========  ===================================================================================
reduce      the 3×3 ``conv → BN → ReLU`` from ``C_in`` to ``channels`` that starts a head
ocp         the object context pooling of an OCNet head (``ocps``: one per Pyramid-OC level)
refine      a 3×3 ``conv → BN → ReLU`` on the output of the context operation alone
fuse        the convolution that turns a concatenation of maps into the output
==========  ===================================================================================

The baselines' own context operations are named after their papers (``cca``, ``cgnl``,
``attention``, ``position``/``channel``, ``image_pooling``, ``levels``); the convolution
branches that ASPP and ASP-OC share are ``atrous``, and Pyramid-OC's 1×1 conv of Eq. 29 is
``expand``.
"""

from __future__ import annotations

import torch
from torch import nn

from ocnet_edu.nn.layers import conv_bn_act

__all__ = ["ContextHead"]


class ContextHead(nn.Module):
    """A context module that starts with the 3×3 reduction ``reduce``.

    On its own it is that reduction and nothing else, the "no context" baseline
    (:class:`~ocnet_edu.heads.baseline.NoContext`); subclasses add their context after it.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of the reduction (512 in the paper) and of the output.
        reduce_bias: give the reduction's convolution a bias (openseg's published models; the
            paper: none, BN follows).
        slope: negative slope of the reduction's activation (0: ReLU, the paper; 0.01:
            InPlace-ABN's leaky ReLU).

    Attributes:
        reduce: the 3×3 ``conv → BN → ReLU``, ``in_channels → channels``; ``out_channels``.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int, reduce_bias: bool = False, slope: float = 0.0) -> None:
        super().__init__()
        self.out_channels = channels
        self.reduce = conv_bn_act(in_channels, channels, kernel_size=3, bias=reduce_bias, slope=slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → reduce(x) [B, channels, H, W]``."""
        return self.reduce(x)
