"""ocnet_edu.nn.complexity: Eq. 24–26 equal the FLOPs the counter measures on the library's modules."""

from __future__ import annotations

import math

import pytest
import torch

from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention
from ocnet_edu.nn.complexity import (
    attention_flops,
    isa_flops,
    isa_global_flops,
    isa_local_flops,
    optimal_groups,
    optimal_isa_flops,
    sa_flops,
    transform_flops,
)
from ocnet_edu.profiling import count_flops


def counted(module: torch.nn.Module, channels: int, h: int, w: int) -> int:
    """FLOPs of one forward pass of ``module`` (moved to meta) on ``[1, channels, h, w]``."""
    return count_flops(module.to("meta").eval(), torch.empty(1, channels, h, w, device="meta"))


@pytest.mark.parametrize("h, w, c, groups", [(128, 128, 512, (8, 8)), (64, 96, 64, (4, 8)), (32, 32, 16, (2, 16))])
def test_closed_forms(h, w, c, groups):
    """Default widths d = e = C/2: SA is 5NC² + 2N²C; Eq. 24/25 are 5NC² + 2N²C/P and 5NC² + 2N²C/Q;
    Eq. 26 is their sum, 10NC² + 2NC(P + Q)."""
    n, p = h * w, groups[0] * groups[1]
    q = n // p
    assert transform_flops(n, c, c // 2, c // 2, c) == 5 * n * c**2
    assert sa_flops(h, w, c) == 5 * n * c**2 + 2 * n**2 * c
    assert isa_global_flops(h, w, c, groups) == 5 * n * c**2 + 2 * n**2 * c // p
    assert isa_local_flops(h, w, c, groups) == 5 * n * c**2 + 2 * n**2 * c // q
    assert isa_flops(h, w, c, groups) == 10 * n * c**2 + 2 * n * c * (p + q)
    assert attention_flops(p, q, c // 2, c // 2) + attention_flops(q, p, c // 2, c // 2) == (
        attention_flops(1, n, c // 2, c // 2) * (p + q) // n)


@pytest.mark.parametrize("h, w, c, groups", [(16, 16, 32, (4, 4)), (12, 24, 16, (3, 4)), (8, 8, 8, (1, 8))])
def test_formulas_equal_the_counted_flops(h, w, c, groups):
    assert counted(SelfAttention(c), c, h, w) == sa_flops(h, w, c)
    assert counted(InterlacedSparseSelfAttention(c, groups=groups), c, h, w) == isa_flops(h, w, c, groups)
    global_only = InterlacedSparseSelfAttention(c, groups=groups, stages=("global",))
    local_only = InterlacedSparseSelfAttention(c, groups=groups, stages=("local",))
    assert counted(global_only, c, h, w) == isa_global_flops(h, w, c, groups)
    assert counted(local_only, c, h, w) == isa_local_flops(h, w, c, groups)


def test_other_widths_and_stage_order_are_counted_too():
    h, w, c = 16, 8, 24
    sa = SelfAttention(c, key_channels=8, value_channels=16, out_channels=40)
    assert counted(sa, c, h, w) == sa_flops(h, w, c, 8, 16, 40)
    isa = InterlacedSparseSelfAttention(c, 8, 16, 40, groups=(2, 4))
    assert counted(isa, c, h, w) == isa_flops(h, w, c, (2, 4), 8, 16, 40)
    reversed_order = InterlacedSparseSelfAttention(c, groups=(2, 4), stages=("local", "global"))
    assert counted(reversed_order, c, h, w) == isa_flops(h, w, c, (2, 4))


def test_optimal_groups_minimise_the_cost():
    """App. F: P_h·P_w = √(HW) minimises Eq. 26; every admissible pair with that product ties."""
    assert optimal_groups(64, 64) == [(1, 64), (2, 32), (4, 16), (8, 8), (16, 4), (32, 2), (64, 1)]
    n, c = 64 * 64, 512
    assert isa_flops(64, 64, c, (8, 8)) == optimal_isa_flops(64, 64, c) == 10 * n * c**2 + 4 * 64**3 * c
    # √2048 is not an admissible product: the minimum sits at the products on either side, above the bound
    best = optimal_groups(32, 64)
    assert sorted({p_h * p_w for p_h, p_w in best}) == [32, 64]
    assert isa_flops(32, 64, c, best[0]) > optimal_isa_flops(32, 64, c)
    # a brute force over every admissible pair agrees
    for h, w in [(12, 18), (30, 20), (7, 9)]:
        costs = {(a, b): isa_flops(h, w, 8, (a, b)) for a in range(1, h + 1) if h % a == 0
                 for b in range(1, w + 1) if w % b == 0}
        assert optimal_groups(h, w) == sorted(k for k, v in costs.items() if v == min(costs.values()))
        assert min(costs.values()) >= optimal_isa_flops(h, w, 8) - 1e-6 * math.sqrt(h * w)


def test_padding_is_refused():
    with pytest.raises(ValueError, match="no padding"):
        isa_flops(10, 16, 8, (4, 4))
    with pytest.raises(ValueError, match="groups"):
        isa_global_flops(16, 16, 8, (0, 4))


def test_flop_counts_are_integers():
    """Counts of multiply-adds are whole numbers: every division in the formulas is exact."""
    from ocnet_edu.nn import complexity

    for value in (complexity.isa_global_flops(12, 16, 32, (3, 4)), complexity.isa_local_flops(12, 16, 32, (3, 4)),
                  complexity.isa_flops(12, 16, 32, (3, 4)), complexity.sa_flops(12, 16, 32)):
        assert type(value) is int, value
    # the ISA total is the sum of its stages, the local one with the output width for its input and output
    assert complexity.isa_flops(12, 16, 32, (3, 4), 8, 12, 20) == (
        complexity.isa_global_flops(12, 16, 32, (3, 4), 8, 12, 20) + complexity.isa_local_flops(12, 16, 20, (3, 4), 8, 12, 20))
