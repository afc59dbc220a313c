"""A line-by-line transcription of the paper's Algorithm 1, kept as a reference.

This is the one place in the package that uses ``reshape``/``permute`` tuples instead of einops:
it exists to show that :class:`ocnet_edu.nn.isa.InterlacedSparseSelfAttention` (einops, padding,
masking) computes exactly what the paper's listing computes, and to time the two side by side.
Like the listing it needs ``H % P_h == 0`` and ``W % P_w == 0``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["algorithm1_isa"]


def algorithm1_isa(
    x: torch.Tensor,
    global_attention: Callable[[torch.Tensor], torch.Tensor],
    local_attention: Callable[[torch.Tensor], torch.Tensor],
    P_h: int,
    P_w: int,
) -> torch.Tensor:
    """Algorithm 1 with its two ``SelfAttention`` calls passed in.

    Args:
        x: ``[N, C, H, W]`` (the listing's N is the batch).
        global_attention, local_attention: self-attention over a whole small map
            (e.g. ``isa.stage("global")`` and ``isa.stage("local")``).
        P_h, P_w: group counts.
    """
    N, C, H, W = x.size()
    if H % P_h or W % P_w:
        raise ValueError(f"Algorithm 1 needs H % P_h == 0 and W % P_w == 0, got {(H, W)} and {(P_h, P_w)}")
    Q_h, Q_w = H // P_h, W // P_w
    # global relation (lines 9-12)
    x = x.reshape(N, C, Q_h, P_h, Q_w, P_w)
    x = x.permute(0, 3, 5, 1, 2, 4)
    x = x.reshape(N * P_h * P_w, C, Q_h, Q_w)
    x = global_attention(x)
    C = x.size(1)
    # local relation (lines 14-18)
    x = x.reshape(N, P_h, P_w, C, Q_h, Q_w)
    x = x.permute(0, 4, 5, 3, 1, 2)
    x = x.reshape(N * Q_h * Q_w, C, P_h, P_w)
    x = local_attention(x)
    C = x.size(1)
    # back to [N, C, H, W] (lines 19-20)
    x = x.reshape(N, Q_h, Q_w, C, P_h, P_w)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(N, C, H, W)
