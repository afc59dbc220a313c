"""RCCA: recurrent criss-cross attention (the head of CCNet).

Z. Huang, X. Wang, L. Huang, C. Huang, Y. Wei, W. Liu, "CCNet: Criss-Cross Attention for
Semantic Segmentation", ICCV 2019, Sec. 3. Compared with OCNet in Tables 3 and 4 of Y. Yuan et
al., "OCNet: Object Context for Semantic Segmentation", IJCV 2021.

Pipeline (every convolution ``conv → BN → ReLU``)::

    x [B, C_in, H, W] --3×3 conv--> [B, 512, H, W] --CCA--> --CCA--> (same weights, R = 2)
    --3×3 conv 512 → 512--> c;   concat[x, c] [B, C_in + 512, H, W] --3×3 conv--> [B, 512, H, W]

The 3×3 conv after the attention (``refine``) and the 3×3 conv on ``[x, c]`` (``fuse``, CCNet's
"bottleneck") follow CCNet's RCCA module; this reading gives 804 GFLOPs at ``[1, 2048, 128, 128]``
(Table 4: 804).

Criss-cross attention is written with einsum over the row and the column of every pixel (no CUDA
kernel). Pixel ``(h, w)`` attends to the ``H + W − 1`` positions ``{(g, w)} ∪ {(h, v)}``: the pixel
itself appears in both its column and its row, so its column copy is masked out and it is counted
once.
"""

from __future__ import annotations

import torch
from einops import rearrange

from ocnet_edu.nn.attention import AttentionOutput
from ocnet_edu.nn.layers import conv_bn_relu
from .base import ContextHead
from .danet import PositionAttention

__all__ = ["CrissCrossAttention", "RCCAHead"]


class CrissCrossAttention(PositionAttention):
    """One criss-cross attention step (CCNet Eq. 1–2).

    DANet's position attention with each pixel's keys restricted to its row and its column: the
    same query, key and value maps and residual scale ``γ`` (initialised to 0).
    ``A = softmax`` over the ``H + W − 1`` criss-cross positions of ``Q_u · K_v`` (no scaling, as
    in CCNet); ``H'_u = γ · Σ_v A_{u,v} V_v + H_u``.

    Args:
        channels: ``C`` of the input and output.
        key_channels: query/key channels (default ``C // 8``).

    Shapes:
        ``[B, C, H, W] → [B, C, H, W]``; the relation is ``[B, H, W, H + W]``: the last axis is
        the column ``g = 0..H−1`` followed by the row ``v = 0..W−1``, and the entry
        ``g = h`` of the column (the duplicate of the pixel itself) is exactly 0.
    """

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C, H, W] → [B, C, H, W]``, or ``AttentionOutput(y, relation [B, H, W, H + W])``."""
        height = x.shape[-2]
        query, key, value = self.query(x), self.key(x), self.value(x)
        column = torch.einsum("bchw,bcgw->bhwg", query, key)
        row = torch.einsum("bchw,bchv->bhwv", query, key)
        self_in_column = rearrange(torch.eye(height, dtype=torch.bool, device=x.device), "h g -> 1 h 1 g")
        column = column.masked_fill(self_in_column, float("-inf"))
        relation = torch.cat([column, row], dim=-1).softmax(dim=-1)
        column_weights, row_weights = relation[..., :height], relation[..., height:]
        out = torch.einsum("bhwg,bcgw->bchw", column_weights, value)
        out = out + torch.einsum("bhwv,bchv->bchw", row_weights, value)
        y = self.gamma * out + x
        return AttentionOutput(y, relation) if return_relations else y


class RCCAHead(ContextHead):
    """CCNet's recurrent criss-cross attention module.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of the attention and of the output (512).
        recurrence: how many times the (single, weight-shared) criss-cross attention is applied
            (R = 2 in CCNet: two steps connect every pixel to every other). ``0`` keeps the
            head's three 3×3 convolutions without any attention: a control that separates what
            the attention adds from what the extra convolutions add. It builds no attention
            module, so that every parameter is used (DDP without ``find_unused_parameters``).
        key_channels: query/key channels of the attention (default ``channels // 8`` = 64).

    Attributes:
        reduce, cca (``None`` when ``recurrence=0``), refine (the 3×3 conv after the attention),
        fuse (the 3×3 conv on ``[x, refine(...)]``), out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``.
    """

    def __init__(
        self, in_channels: int, channels: int = 512, recurrence: int = 2, key_channels: int | None = None
    ) -> None:
        if isinstance(recurrence, bool) or not isinstance(recurrence, int) or recurrence < 0:
            raise ValueError(f"recurrence must be a non-negative int, got {recurrence!r}")
        super().__init__(in_channels, channels)
        self.recurrence = recurrence
        self.cca = CrissCrossAttention(channels, key_channels) if recurrence > 0 else None
        self.refine = conv_bn_relu(channels, channels, kernel_size=3)
        self.fuse = conv_bn_relu(in_channels + channels, channels, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        context = self.reduce(x)
        for _ in range(self.recurrence):
            context = self.cca(context)
        context = self.refine(context)
        return self.fuse(torch.cat([x, context], dim=1))
