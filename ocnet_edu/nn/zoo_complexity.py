"""Exact FLOPs of the attention mechanisms of OCNet's related work (Sec. 2) and of what came after.

One function per mechanism, each the FLOP count of the library's module for it on ``[1, C, H, W]``
(``N = H·W``), in the convention of :func:`ocnet_edu.profiling.count_flops`: 2 FLOPs per
multiply-add of convolutions and matrix products (einsum contractions lower to ``bmm``);
biases, BatchNorm, GroupNorm, ReLU, softmax, masking, pooling, interpolation, the scaling by γ and
the residual additions are not counted. ``tests/test_zoo_complexity.py`` and chapter 15 compare
every formula with the counter.

SA and ISA are :mod:`ocnet_edu.nn.complexity` (Eq. 24–26); the mechanisms that are special
groupings of ISA reuse those formulas:

======================================  =====================================================
mechanism (module)                       FLOPs
======================================  =====================================================
DANet position attention                 ``2N(2Cd + C²) + 2N²(d + C)``, ``d = C/8``
(:class:`~ocnet_edu.heads.danet.PositionAttention`)
DANet channel attention                  ``4NC²`` (``X Xᵀ`` and ``A X``; no convolutions)
(:class:`~ocnet_edu.heads.danet.ChannelAttention`)
criss-cross attention, ``R`` steps       ``R·[2N(2Cd + C²) + 2N(H + W)(d + C)]``, ``d = C/8``
(:class:`~ocnet_edu.heads.rcca.CrissCrossAttention`)
CGNL, dot product, ``G`` groups          ``2N(3Cp + Cp/G) + 2Np``, ``p = C/2``
(:class:`~ocnet_edu.heads.cgnl.CGNLBlock`)
Efficient Attention                      ``2N(C(2d + e) + 2de + eC)``, ``d = e = C/2``
(:class:`~ocnet_edu.heads.efficient_attention.EfficientAttention`)
SA on an ``f×`` average-pooled map       SA's formula on ``⌈H/f⌉ × ⌈W/f⌉``
(:func:`~ocnet_edu.heads.ocp.run_ocp`)
axial (rows, then columns)               ISA (Eq. 26) with groups ``(1, W)``: ``10NC² + 2NC(H + W)``
(:class:`~ocnet_edu.nn.zoo.AxialAttention`)
window ``k_h × k_w``, one layer          ISA's local stage (Eq. 25) with groups ``(k_h, k_w)``:
(:class:`~ocnet_edu.nn.zoo.WindowAttention`)  ``5NC² + 2NC·k_h k_w``
OCR, ``K`` regions                       see :func:`ocr_flops`
(:class:`~ocnet_edu.nn.zoo.ObjectRegionContext`)
======================================  =====================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ocnet_edu.nn.complexity import isa_flops, isa_local_flops, sa_flops
from ocnet_edu.nn.isa import check_groups

__all__ = ["axial_flops", "cgnl_flops", "channel_attention_flops", "criss_cross_flops", "danet_flops",
           "efficient_attention_flops", "ocr_flops", "position_attention_flops", "sa_downsampled_flops",
           "window_flops"]


def _danet_key_channels(channels: int, key_channels: int | None) -> int:
    """DANet's and CCNet's query/key width, default ``C // 8`` (at least 1)."""
    return max(channels // 8, 1) if key_channels is None else key_channels


def position_attention_flops(h: int, w: int, channels: int, key_channels: int | None = None) -> int:
    """DANet's PAM on ``[1, C, H, W]``: query/key ``C → d``, value ``C → C``, then ``QKᵀ`` and
    ``S V`` over all ``N`` positions: ``2N(2Cd + C²) + 2N²(d + C)``."""
    d, n = _danet_key_channels(channels, key_channels), h * w
    return 2 * n * (2 * channels * d + channels**2) + 2 * n**2 * (d + channels)


def channel_attention_flops(h: int, w: int, channels: int) -> int:
    """DANet's CAM on ``[1, C, H, W]``: the ``C × C`` energy ``X Xᵀ`` and ``A X``: ``4NC²``."""
    return 2 * 2 * h * w * channels**2


def danet_flops(h: int, w: int, channels: int, key_channels: int | None = None) -> int:
    """DANet's two attentions, PAM and CAM, each on ``[1, C, H, W]`` (the head's convs excluded)."""
    return position_attention_flops(h, w, channels, key_channels) + channel_attention_flops(h, w, channels)


def criss_cross_flops(h: int, w: int, channels: int, key_channels: int | None = None, recurrence: int = 1) -> int:
    """``recurrence`` steps of criss-cross attention on ``[1, C, H, W]``, each
    ``2N(2Cd + C²) + 2N(H + W)(d + C)``: every pixel scores and sums its column (``H``) and its row
    (``W``); the duplicate of the pixel itself is computed, then masked, so it is paid for."""
    d, n = _danet_key_channels(channels, key_channels), h * w
    step = 2 * n * (2 * channels * d + channels**2) + 2 * n * (h + w) * (d + channels)
    return recurrence * step


def cgnl_flops(h: int, w: int, channels: int, planes: int | None = None, channel_groups: int = 8) -> int:
    """CGNL's block (dot-product kernel) on ``[1, C, H, W]``: θ, φ, g ``C → p`` (``6NCp``), the
    per-group sum ``Σ φ ⊙ g`` (``2Np``), the grouped 1×1 conv ``z`` ``p → C`` (``2NCp/G``). The
    product of θ with the group's scalar is element-wise (not counted)."""
    p, n = channels // 2 if planes is None else planes, h * w
    return 2 * n * (3 * channels * p + channels * p // channel_groups) + 2 * n * p


def efficient_attention_flops(h: int, w: int, channels: int, key_channels: int | None = None,
                              value_channels: int | None = None) -> int:
    """Efficient Attention on ``[1, C, H, W]``: keys, queries ``C → d``, values ``C → e``, the
    context ``ρ_k(K)ᵀ V`` and ``ρ_q(Q) · context`` (``2Nde`` each, linear in N), reprojection
    ``e → C``: ``2N(C(2d + e) + 2de + eC)``."""
    d = channels // 2 if key_channels is None else key_channels
    e = channels // 2 if value_channels is None else value_channels
    return 2 * h * w * (channels * (2 * d + e) + 2 * d * e + e * channels)


def sa_downsampled_flops(h: int, w: int, channels: int, factor: int = 2, key_channels: int | None = None,
                         value_channels: int | None = None, out_channels: int | None = None) -> int:
    """SA run on a ``factor×`` average-pooled map (``ceil`` mode) and upsampled back, "SA-2×" of
    Table 3: SA's formula on ``⌈H/f⌉ × ⌈W/f⌉`` (pooling and interpolation are not counted)."""
    return sa_flops(math.ceil(h / factor), math.ceil(w / factor), channels, key_channels, value_channels,
                    out_channels)


def axial_flops(h: int, w: int, channels: int, key_channels: int | None = None, value_channels: int | None = None,
                out_channels: int | None = None) -> int:
    """Axial attention (rows, then columns) on ``[1, C, H, W]``: ISA with groups ``(P_h, P_w) =
    (1, W)`` (local groups are the rows, global groups the columns), Eq. 26:
    ``10NC² + 2NC(H + W)`` with the default widths."""
    return isa_flops(h, w, channels, (1, w), key_channels, value_channels, out_channels)


def window_flops(h: int, w: int, channels: int, window: int | Sequence[int], key_channels: int | None = None,
                 value_channels: int | None = None, out_channels: int | None = None) -> int:
    """One layer of attention in non-overlapping ``k_h × k_w`` windows on ``[1, C, H, W]``: ISA's
    local stage with groups ``(k_h, k_w)``, Eq. 25: ``5NC² + 2NC·k_h k_w`` with the default widths."""
    return isa_local_flops(h, w, channels, check_groups(window), key_channels, value_channels, out_channels)


def ocr_flops(h: int, w: int, channels: int, num_regions: int, key_channels: int | None = None,
              value_channels: int | None = None, out_channels: int | None = None) -> int:
    """OCR's object-region context on ``[1, C, H, W]`` with ``K`` regions (default widths
    ``d = e = C/2``, ``C_out = C``):

    * soft regions ``C → K`` (``2NCK``) and region features ``F = M X`` (``2NKC``);
    * θ on the ``N`` pixels ``2N(Cd + d²)``; φ and δ on the ``K`` regions ``2K(Cd + d²) + 2KCe``;
    * the pixel–region relation and its sum over regions ``2NK(d + e)``; ρ ``2NeC_out``.

    Linear in ``N``: every pixel attends to ``K`` regions instead of ``N`` pixels.
    """
    d = channels // 2 if key_channels is None else key_channels
    e = channels // 2 if value_channels is None else value_channels
    c_out = channels if out_channels is None else out_channels
    n, k = h * w, num_regions
    regions = 2 * n * channels * k + 2 * n * k * channels
    transforms = 2 * n * (channels * d + d**2) + 2 * k * (channels * d + d**2) + 2 * k * channels * e + 2 * n * e * c_out
    return regions + transforms + 2 * n * k * (d + e)
