"""Efficient attention: attention with linear complexity in the number of positions.

Z. Shen, M. Zhang, H. Zhao, S. Yi, H. Li, "Efficient Attention: Attention with Linear
Complexities", arXiv:1812.01243, 2018 (WACV 2021), Sec. 3. Compared with OCNet in Tables 3 and 4
of Y. Yuan et al., "OCNet: Object Context for Semantic Segmentation", IJCV 2021.

With queries ``Q [n, d_k]`` normalised by a softmax over *channels*, keys ``K [n, d_k]`` by a
softmax over *positions*, and values ``V [n, d_v]``:

    E = ρ_q(Q) (ρ_k(K)ᵀ V)        — the ``[d_k, d_v]`` global context is computed first,

which costs ``O(n·d_k·d_v)`` instead of ``O(n²·d)``.

Head::

    x [B, C_in, H, W] --3×3 conv → BN → ReLU--> r [B, 512, H, W]
    y = r + reprojection(E)       (1×1 convs: keys/queries/values 512 → 256, reprojection 256 → 512)

Key and value channels are not given by either paper for this comparison; we use half the
channels, the convention of OCNet's own SA (Sec. 3.2). This gives 331 GFLOPs at
``[1, 2048, 128, 128]`` (Table 4: 331).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from .base import ContextHead

__all__ = ["EfficientAttention", "EfficientAttentionHead"]


class EfficientAttention(nn.Module):
    """Efficient attention block with a residual connection.

    Args:
        channels: ``C`` of the input and output.
        key_channels: channels of keys and queries (default ``C // 2``).
        value_channels: channels of values (default ``C // 2``).
        heads: the key and value channels are split into this many heads, each with its own
            ``[d_k/heads, d_v/heads]`` context.

    Shapes:
        ``[B, C, H, W] → [B, C, H, W]``.
    """

    def __init__(
        self, channels: int, key_channels: int | None = None, value_channels: int | None = None, heads: int = 1
    ) -> None:
        super().__init__()
        key_channels = channels // 2 if key_channels is None else key_channels
        value_channels = channels // 2 if value_channels is None else value_channels
        if key_channels % heads or value_channels % heads:
            raise ValueError(
                f"key_channels ({key_channels}) and value_channels ({value_channels}) "
                f"must be divisible by heads ({heads})"
            )
        self.heads = heads
        self.keys = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.queries = nn.Conv2d(channels, key_channels, kernel_size=1)
        self.values = nn.Conv2d(channels, value_channels, kernel_size=1)
        self.reprojection = nn.Conv2d(value_channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W] → [B, C, H, W]``."""
        height, width = x.shape[-2:]
        pattern = "b (m c) h w -> b m c (h w)"  # m: head
        keys = rearrange(self.keys(x), pattern, m=self.heads).softmax(dim=-1)  # over positions
        queries = rearrange(self.queries(x), pattern, m=self.heads).softmax(dim=-2)  # over channels
        values = rearrange(self.values(x), pattern, m=self.heads)
        context = torch.einsum("bmkn,bmvn->bmkv", keys, values)
        attended = torch.einsum("bmkv,bmkn->bmvn", context, queries)
        attended = rearrange(attended, "b m c (h w) -> b (m c) h w", h=height, w=width)
        return self.reprojection(attended) + x


class EfficientAttentionHead(ContextHead):
    """Efficient-attention context module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of the block and of the output (512).
        key_channels: key/query channels (default ``channels // 2``).
        value_channels: value channels (default ``channels // 2``).
        heads: attention heads (1).

    Attributes:
        reduce, attention, out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 512,
        key_channels: int | None = None,
        value_channels: int | None = None,
        heads: int = 1,
    ) -> None:
        super().__init__(in_channels, channels)
        self.attention = EfficientAttention(channels, key_channels, value_channels, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        return self.attention(self.reduce(x))
