"""The cost of dense and interlaced sparse self-attention: Eq. 24–26 (App. F) with their constants.

The paper states the complexity of SA (Sec. 3.2) and of ISA's two stages (Eq. 24, 25) and their
sum (Eq. 26) as :math:`\\mathcal{O}`-bounds. Here they are exact FLOP counts of the library's
modules, in the convention of :func:`ocnet_edu.profiling.count_flops` (2 FLOPs per multiply-add
of convolutions and matrix products; bias, BatchNorm, ReLU, scaling and softmax not counted), so
that formula and counter can be compared to the FLOP (tests/test_complexity.py, chapter 5).

Notation: an input ``X [B=1, C, H, W]``, ``N = H·W`` pixels; θ, φ map ``C → d → d`` (two 1×1
convs each), δ maps ``C → e``, ρ maps ``e → C_out`` (:class:`~ocnet_edu.nn.attention.SelfAttention`,
defaults ``d = e = C/2``, ``C_out = C``). ISA groups the map into ``P = P_h·P_w`` global groups of
``Q = Q_h·Q_w = N/P`` pixels (:class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention`). With the
defaults:

* SA: ``5NC² + 2N²C`` (Sec. 3.2, ``O(HWC² + (HW)²C)``);
* ISA, global stage (Eq. 24): ``5NC² + 2N²C / (P_h P_w)``;
* ISA, local stage (Eq. 25): ``5NC² + 2N²C / (Q_h Q_w)``;
* ISA (Eq. 26): ``10NC² + 2NC (P + Q)``, smallest when ``P = Q = √N``: ``10NC² + 4N^{3/2}C``.

The formulas assume ``P_h | H`` and ``P_w | W``; otherwise the module pads the map (and costs more),
and they raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ocnet_edu.nn.isa import check_groups

__all__ = ["attention_flops", "isa_flops", "isa_global_flops", "isa_local_flops", "optimal_groups",
           "optimal_isa_flops", "sa_flops", "transform_flops"]


def transform_flops(n: int, c_in: int, key_channels: int, value_channels: int, c_out: int) -> int:
    """FLOPs of the four transforms of one :class:`~ocnet_edu.nn.attention.SelfAttention` over ``n`` pixels.

    θ and φ: ``C_in → d → d`` (``2n(C_in·d + d²)`` each); δ: ``C_in → e`` (``2n·C_in·e``);
    ρ: ``e → C_out`` (``2n·e·C_out``). With ``d = e = C/2`` and ``C_out = C``: ``5nC²``.
    """
    theta = phi = 2 * n * (c_in * key_channels + key_channels**2)
    delta = 2 * n * c_in * value_channels
    rho = 2 * n * value_channels * c_out
    return theta + phi + delta + rho


def attention_flops(n_groups: int, group_size: int, key_channels: int, value_channels: int) -> int:
    """FLOPs of ``θφᵀ`` (Eq. 10) and ``Wδ`` (Eq. 11) for ``n_groups`` independent attentions over
    ``group_size`` pixels each: ``n_groups · 2·group_size²·(d + e)``."""
    return n_groups * 2 * group_size**2 * (key_channels + value_channels)


def _widths(channels: int, key_channels: int | None, value_channels: int | None,
            out_channels: int | None) -> tuple[int, int, int]:
    """``(d, e, C_out)`` with the library's defaults ``C/2``, ``C/2``, ``C``."""
    return (channels // 2 if key_channels is None else key_channels,
            channels // 2 if value_channels is None else value_channels,
            channels if out_channels is None else out_channels)


def sa_flops(h: int, w: int, channels: int, key_channels: int | None = None, value_channels: int | None = None,
             out_channels: int | None = None) -> int:
    """FLOPs of SA (Eq. 10–11) on ``[1, C, H, W]``: ``5NC² + 2N²C`` with the default widths
    (the exact form of the paper's ``O(HWC² + (HW)²C)``, Sec. 3.2)."""
    d, e, c_out = _widths(channels, key_channels, value_channels, out_channels)
    n = h * w
    return transform_flops(n, channels, d, e, c_out) + attention_flops(1, n, d, e)


def _group_sizes(h: int, w: int, groups: int | Sequence[int]) -> tuple[int, int]:
    """``(P, Q) = (P_h·P_w, Q_h·Q_w)`` of an exact grouping of an ``H × W`` map."""
    p_h, p_w = check_groups(groups)
    if h % p_h or w % p_w:
        raise ValueError(f"the formulas assume P_h | H and P_w | W (no padding); got {h}x{w} with groups {(p_h, p_w)}")
    p = p_h * p_w
    return p, h * w // p


def _isa_stage_flops(stage: str, h: int, w: int, channels: int, groups: int | Sequence[int],
                     key_channels: int | None, value_channels: int | None, out_channels: int | None) -> int:
    """One ISA stage: its transforms, then ``P`` attentions over ``Q`` pixels (global) or ``Q``
    over ``P`` (local)."""
    d, e, c_out = _widths(channels, key_channels, value_channels, out_channels)
    p, q = _group_sizes(h, w, groups)
    n_groups, group_size = {"global": (p, q), "local": (q, p)}[stage]
    return transform_flops(h * w, channels, d, e, c_out) + attention_flops(n_groups, group_size, d, e)


def isa_global_flops(h: int, w: int, channels: int, groups: int | Sequence[int], key_channels: int | None = None,
                     value_channels: int | None = None, out_channels: int | None = None) -> int:
    """Eq. 24: the global stage of ISA on ``[1, C, H, W]``, ``P_h·P_w`` attentions over ``Q_h·Q_w``
    pixels: ``5NC² + 2N²C / (P_h P_w)`` with the default widths."""
    return _isa_stage_flops("global", h, w, channels, groups, key_channels, value_channels, out_channels)


def isa_local_flops(h: int, w: int, channels: int, groups: int | Sequence[int], key_channels: int | None = None,
                    value_channels: int | None = None, out_channels: int | None = None) -> int:
    """Eq. 25: the local stage of ISA on ``[1, C, H, W]``, ``Q_h·Q_w`` attentions over ``P_h·P_w``
    pixels: ``5NC² + 2N²C / (Q_h Q_w)`` with the default widths."""
    return _isa_stage_flops("local", h, w, channels, groups, key_channels, value_channels, out_channels)


def isa_flops(h: int, w: int, channels: int, groups: int | Sequence[int], key_channels: int | None = None,
              value_channels: int | None = None, out_channels: int | None = None) -> int:
    """Eq. 26: ISA on ``[1, C, H, W]``, Eq. 24 + Eq. 25: ``10NC² + 2NC(P + Q)`` with the default
    widths. The second stage maps ``C_out → C_out`` with the first stage's ``d``, ``e`` (as
    :class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention` builds it); the order of the stages
    does not change the sum when ``C_out = C``."""
    d, e, c_out = _widths(channels, key_channels, value_channels, out_channels)
    return (isa_global_flops(h, w, channels, groups, d, e, c_out)
            + isa_local_flops(h, w, c_out, groups, d, e, c_out))


def optimal_groups(h: int, w: int) -> list[tuple[int, int]]:
    """The admissible groupings (``P_h | H``, ``P_w | W``) with the fewest ISA FLOPs (Eq. 26).

    Only the attention term ``2NC(P + N/P)`` depends on the grouping, and only through
    ``P = P_h·P_w``; it is smallest at ``P = √N`` (AM–GM, App. F), or at the admissible products
    nearest to it on either side. Returns every ``(P_h, P_w)`` that attains the minimum, sorted.
    """
    n = h * w
    pairs = [(p_h, p_w) for p_h in range(1, h + 1) if h % p_h == 0 for p_w in range(1, w + 1) if w % p_w == 0]
    cost = {pair: pair[0] * pair[1] + n // (pair[0] * pair[1]) for pair in pairs}  # P + Q; P divides N
    best = min(cost.values())
    return sorted(pair for pair, c in cost.items() if c == best)


def optimal_isa_flops(h: int, w: int, channels: int) -> float:
    """The lower bound of Eq. 26 over all groupings, default widths: ``10NC² + 4N^{3/2}C``
    (attained when ``P_h·P_w = √(HW)`` is admissible)."""
    n = h * w
    return 10 * n * channels**2 + 4 * math.sqrt(n) ** 3 * channels
