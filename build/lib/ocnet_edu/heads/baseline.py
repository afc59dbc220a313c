"""The "no context" baseline: a dilated ResNet followed only by a channel reduction.

Y. Yuan et al., "OCNet: Object Context for Semantic Segmentation", IJCV 2021: the row
"Dilated ResNet-101" of Tables 2, 5 and 6. The paper does not describe its head; we use the same
3×3 reduction (``conv → BN → ReLU``, in → 512) that every context module of the paper starts
with, so that the only difference to Base-OC is the object context.
"""

from __future__ import annotations

from .base import ContextHead

__all__ = ["NoContext"]


class NoContext(ContextHead):
    """A 3×3 ``conv → BN → ReLU`` reduction (``reduce``) and nothing else.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: output channels (512 in the paper).

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(self, in_channels: int, channels: int = 512) -> None:
        super().__init__(in_channels, channels)
