"""Minimal reference modules for attention schemes that came after OCNet: axial, window, OCR.

Written for chapter 15 (the attention zoo), so that their relation patterns and FLOPs can be
measured on modules rather than asserted from the papers. Each is built from the library's
:class:`~ocnet_edu.nn.attention.SelfAttention` (its θ, φ, δ, ρ of Sec. 3.2) and
:func:`~ocnet_edu.nn.attention.attend`; only *which pixels attend to which* differs. Axis names
follow the glossary of :mod:`ocnet_edu.nn.isa`; ``kh``/``kw`` index a pixel inside a window,
``nh``/``nw`` the window, ``k`` an object region.

* :class:`AxialAttention` — attention along each row, then along each column (Ho et al. 2019;
  Wang et al. 2020, Axial-DeepLab, without its positional terms). It is ISA with groups
  ``(P_h, P_w) = (1, W)`` and the stages in the order local (rows), global (columns).
* :class:`WindowAttention` — attention inside non-overlapping ``k_h × k_w`` windows, one layer
  (Liu et al. 2021, Swin, without shifting, heads or relative position bias). It is ISA's local
  stage alone with groups ``(P_h, P_w) = (k_h, k_w)``.
* :class:`ObjectRegionContext` — OCR's object-contextual representation (Yuan et al. 2020):
  pixels → ``K`` soft object regions → pixels. OCR predicts the soft regions with a supervised
  auxiliary head on the backbone; here a 1×1 conv ``classify`` on the same input stands in for it,
  and the final concatenation with the input is left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

from ocnet_edu.nn.attention import AttentionOutput, SelfAttention, attend, attention_channels
from ocnet_edu.nn.isa import check_groups

__all__ = ["AXIAL_PATTERNS", "AxialAttention", "ObjectRegionContext", "WindowAttention"]

#: raster map -> one group of positions per row / per column (the group folded into the batch)
AXIAL_PATTERNS = {"row": "b c h w -> (b h) w c", "column": "b c h w -> (b w) h c"}

WINDOW_PATTERN = "b c (nh kh) (nw kw) -> (b nh nw) (kh kw) c"


def _grouped(stage: SelfAttention, x: torch.Tensor, pattern: str, return_relations: bool,
             **lengths: int) -> AttentionOutput:
    """Run ``stage`` (θ, φ, δ, then ρ) with attention inside the groups that ``pattern`` forms.

    ``lengths`` are axis lengths of ``pattern`` that einops checks on the way in and needs on the
    way back. ``x [B, C, H, W] → AttentionOutput(y [B, C_out, H, W], relation [B·groups, n, n] or None)``.
    """
    query, key, value = (rearrange(t, pattern, **lengths) for t in stage.transforms(x))
    out, relation = attend(query, key, value, return_relations=return_relations, fused=stage.fused)
    source, target = pattern.split(" -> ")
    out = rearrange(out, f"{target} -> {source}", b=x.shape[0], **lengths)
    return AttentionOutput(stage.rho(out), relation)


class AxialAttention(nn.Module):
    """Row attention, then column attention: two :class:`SelfAttention` stages.

    Args:
        in_channels: ``C_in``.
        key_channels, value_channels: θ/φ and δ widths of both stages (default ``C_in // 2``).
        out_channels: default ``C_in``; the row stage maps ``C_in → C_out``, the column stage
            ``C_out → C_out`` (as :class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention`).

    Attributes:
        row, column: the two stages.

    Shapes:
        ``[B, C_in, H, W] → [B, C_out, H, W]``; with ``return_relations=True`` also the row
        relation ``[B·H, W, W]`` and the column relation ``[B·W, H, H]``.
    """

    def __init__(self, in_channels: int, key_channels: int | None = None, value_channels: int | None = None,
                 out_channels: int | None = None) -> None:
        super().__init__()
        key_channels, value_channels, out_channels = attention_channels(
            in_channels, key_channels, value_channels, out_channels)
        self.row = SelfAttention(in_channels, key_channels, value_channels, out_channels)
        self.column = SelfAttention(out_channels, key_channels, value_channels, out_channels)

    def stage(self, name: str) -> SelfAttention:
        """The ``"row"`` or ``"column"`` stage."""
        if name not in AXIAL_PATTERNS:
            raise ValueError(f"unknown stage {name!r}; valid: {tuple(AXIAL_PATTERNS)}")
        return getattr(self, name)

    def run_stage(self, name: str, x: torch.Tensor, return_relations: bool = False) -> AttentionOutput:
        """One stage alone: ``x [B, C, H, W] → AttentionOutput(y, relation or None)``."""
        stage = self.stage(name)
        stage.check_input(x)
        return _grouped(stage, x, AXIAL_PATTERNS[name], return_relations, h=x.shape[-2], w=x.shape[-1])

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C_in, H, W] → y [B, C_out, H, W]``, or ``(y, row_relation, column_relation)``."""
        y, row = self.run_stage("row", x, return_relations)
        y, column = self.run_stage("column", y, return_relations)
        return (y, row, column) if return_relations else y


class WindowAttention(nn.Module):
    """Self-attention inside non-overlapping ``k_h × k_w`` windows (one layer, no shift).

    Args:
        in_channels: ``C_in``.
        window: ``(k_h, k_w)`` (an int means both); ``H`` and ``W`` must be multiples of it.
        key_channels, value_channels, out_channels: as :class:`SelfAttention`.

    Attributes:
        attention: the :class:`SelfAttention` whose transforms and ρ every window shares.

    Shapes:
        ``[B, C_in, H, W] → [B, C_out, H, W]``; the relation is
        ``[B·(H/k_h)·(W/k_w), k_h·k_w, k_h·k_w]``.
    """

    def __init__(self, in_channels: int, window: int | Sequence[int] = (4, 4), key_channels: int | None = None,
                 value_channels: int | None = None, out_channels: int | None = None) -> None:
        super().__init__()
        self.window = check_groups(window)
        self.attention = SelfAttention(in_channels, key_channels, value_channels, out_channels)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C_in, H, W] → y [B, C_out, H, W]``, or ``AttentionOutput(y, relation)``."""
        self.attention.check_input(x)
        k_h, k_w = self.window
        if x.shape[-2] % k_h or x.shape[-1] % k_w:
            raise ValueError(f"the map {tuple(x.shape[-2:])} is not a multiple of the window {self.window}")
        out = _grouped(self.attention, x, WINDOW_PATTERN, return_relations, nh=x.shape[-2] // k_h, kh=k_h, kw=k_w)
        return out if return_relations else out.output


class ObjectRegionContext(nn.Module):
    """OCR's object-contextual representation: pixel → ``K`` soft object regions → pixel.

    With ``M = softmax over pixels`` of the region logits (``[K, N]``, rows sum to one), the
    region representations are ``F = M X`` (``[K, C]``), the pixel–region relation is
    ``R = softmax_k(θ(X) φ(F)ᵀ / √d)`` (``[N, K]``) and the output ``Z = ρ(R δ(F))``. Since δ is
    affine and ``M 1 = 1``, ``δ(M X) = M δ(X)``, so ``Z = ρ(W δ(X))`` with the effective
    pixel–pixel relation ``W = R M`` (``[N, N]``, rows sum to one, rank ≤ K): Eq. 11 with a
    low-rank W.

    Args:
        in_channels: ``C_in``.
        num_regions: ``K`` (in OCR, the number of classes).
        key_channels, value_channels, out_channels: as :class:`SelfAttention`, whose θ (on pixels),
            φ, δ (on regions) and ρ are used.

    Attributes:
        classify: 1×1 conv ``C_in → K``, the stand-in for OCR's auxiliary head (soft regions);
        attention: the :class:`SelfAttention` holding θ, φ, δ, ρ.

    Shapes:
        ``[B, C_in, H, W] → [B, C_out, H, W]``; with ``return_relations=True`` also
        ``regions M [B, K, H·W]`` and ``relation R [B, H·W, K]``.
    """

    def __init__(self, in_channels: int, num_regions: int, key_channels: int | None = None,
                 value_channels: int | None = None, out_channels: int | None = None) -> None:
        super().__init__()
        self.classify = nn.Conv2d(in_channels, num_regions, kernel_size=1)
        self.attention = SelfAttention(in_channels, key_channels, value_channels, out_channels)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """``x [B, C_in, H, W] → y [B, C_out, H, W]``, or ``(y, regions M, relation R)``."""
        self.attention.check_input(x)
        height, width = x.shape[-2:]
        regions = rearrange(self.classify(x), "b k h w -> b k (h w)").softmax(dim=-1)
        features = torch.einsum("bkn,bcn->bck", regions, rearrange(x, "b c h w -> b c (h w)"))
        features = rearrange(features, "b c k -> b c k 1")   # the K regions as a K × 1 map
        sa = self.attention
        query = rearrange(sa.theta(x), "b d h w -> b (h w) d")
        key = rearrange(sa.phi(features), "b d k 1 -> b k d")
        value = rearrange(sa.delta(features), "b e k 1 -> b k e")
        out, relation = attend(query, key, value, return_relations=return_relations, fused=sa.fused)
        y = sa.rho(rearrange(out, "b (h w) e -> b e h w", h=height, w=width))
        return (y, regions, relation) if return_relations else y
