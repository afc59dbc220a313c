"""ocnet_edu.nn.zoo_complexity: each mechanism's FLOP formula equals what the counter measures on its module."""

from __future__ import annotations

import math

import pytest
import torch

from ocnet_edu.heads.cgnl import CGNLBlock
from ocnet_edu.heads.danet import ChannelAttention, PositionAttention
from ocnet_edu.heads.efficient_attention import EfficientAttention
from ocnet_edu.heads.ocp import run_ocp
from ocnet_edu.heads.rcca import CrissCrossAttention
from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.complexity import isa_local_flops, sa_flops
from ocnet_edu.nn.zoo import AxialAttention, ObjectRegionContext, WindowAttention
from ocnet_edu.nn import zoo_complexity as zc
from ocnet_edu.profiling import count_flops

SIZES = [(12, 16, 32), (8, 8, 16), (6, 10, 48)]


def counted(module: torch.nn.Module, channels: int, h: int, w: int, fn=None) -> int:
    """FLOPs the counter records for ``fn`` (default: the module, moved to meta) on ``[1, C, h, w]``."""
    module = module.to("meta").eval()
    return count_flops(fn or module, torch.empty(1, channels, h, w, device="meta"))


@pytest.mark.parametrize("h, w, c", SIZES)
def test_related_work_formulas_equal_the_counted_flops(h, w, c):
    assert counted(PositionAttention(c), c, h, w) == zc.position_attention_flops(h, w, c)
    assert counted(ChannelAttention(), c, h, w) == zc.channel_attention_flops(h, w, c)
    assert counted(CGNLBlock(c), c, h, w) == zc.cgnl_flops(h, w, c)
    assert counted(EfficientAttention(c), c, h, w) == zc.efficient_attention_flops(h, w, c)
    cca = CrissCrossAttention(c).to("meta").eval()
    assert counted(cca, c, h, w) == zc.criss_cross_flops(h, w, c)
    assert counted(cca, c, h, w, lambda x: cca(cca(x))) == zc.criss_cross_flops(h, w, c, recurrence=2)


@pytest.mark.parametrize("h, w, c", SIZES)
def test_later_work_formulas_equal_the_counted_flops(h, w, c):
    assert counted(AxialAttention(c), c, h, w) == zc.axial_flops(h, w, c)
    assert counted(WindowAttention(c, (2, 2)), c, h, w) == zc.window_flops(h, w, c, (2, 2))
    assert counted(ObjectRegionContext(c, 5), c, h, w) == zc.ocr_flops(h, w, c, 5)


@pytest.mark.parametrize("h, w", [(12, 16), (13, 15), (1, 7)])
def test_sa_on_a_pooled_map(h, w):
    sa = SelfAttention(16).to("meta").eval()
    for factor in (2, 3):
        flops = counted(sa, 16, h, w, lambda x: run_ocp(sa, x, factor))
        assert flops == zc.sa_downsampled_flops(h, w, 16, factor)
        assert flops == sa_flops(math.ceil(h / factor), math.ceil(w / factor), 16)


def test_other_widths_are_counted_too():
    h, w, c = 8, 12, 24
    assert counted(PositionAttention(c, 5), c, h, w) == zc.position_attention_flops(h, w, c, 5)
    assert counted(CrissCrossAttention(c, 6), c, h, w) == zc.criss_cross_flops(h, w, c, 6)
    assert counted(CGNLBlock(c, planes=16, channel_groups=4), c, h, w) == zc.cgnl_flops(h, w, c, 16, 4)
    assert counted(EfficientAttention(c, 8, 16), c, h, w) == zc.efficient_attention_flops(h, w, c, 8, 16)
    assert counted(AxialAttention(c, 8, 16, 40), c, h, w) == zc.axial_flops(h, w, c, 8, 16, 40)
    assert counted(WindowAttention(c, (4, 3), 8, 16, 40), c, h, w) == zc.window_flops(h, w, c, (4, 3), 8, 16, 40)
    assert counted(ObjectRegionContext(c, 3, 8, 16, 40), c, h, w) == zc.ocr_flops(h, w, c, 3, 8, 16, 40)


def test_closed_forms_with_default_widths():
    """The closed forms of the module docstring, term by term."""
    h, w, c, k = 16, 24, 64, 7
    n, d = h * w, c // 8
    assert zc.danet_flops(h, w, c) == 2 * n * (2 * c * d + c * c) + 2 * n * n * (d + c) + 4 * n * c * c
    assert zc.danet_flops(h, w, c, 5) == 2 * n * (2 * c * 5 + c * c) + 2 * n * n * (5 + c) + 4 * n * c * c
    assert zc.sa_downsampled_flops(h, w, c) == sa_flops(h // 2, w // 2, c)  # "SA-2×": the default factor is 2
    assert zc.axial_flops(h, w, c) == 10 * n * c**2 + 2 * n * c * (h + w)
    assert zc.window_flops(h, w, c, 4) == 5 * n * c**2 + 2 * n * c * 16 == isa_local_flops(h, w, c, (4, 4))
    assert zc.efficient_attention_flops(h, w, c) == 2 * n * (c * 3 * c // 2 + c * c // 2 + c * c // 2)
    # OCR: SA's formula with N keys replaced by K regions, plus the regions themselves
    half = c // 2
    assert zc.ocr_flops(h, w, c, k) == (4 * n * c * k + 2 * n * (c * half + half**2) + 2 * k * (c * half + half**2)
                                        + 2 * k * c * half + 2 * n * half * c + 2 * n * k * c)


def test_window_needs_a_divisible_map():
    with pytest.raises(ValueError, match="P_h"):
        zc.window_flops(10, 12, 8, (4, 4))


def test_odd_widths_round_down_like_the_modules():
    """With an odd C the default widths C // 2 and C // 8 round down, in the modules and the formulas."""
    h, w, c = 6, 10, 17
    assert counted(PositionAttention(c), c, h, w) == zc.position_attention_flops(h, w, c)  # d = 2
    # below C = 8 the key width is 1 (the counter cannot check it: an einsum over one channel runs as a
    # broadcast product, not a matrix product, and is not counted)
    assert PositionAttention(4).query.out_channels == 1
    assert zc.position_attention_flops(h, w, 4) == zc.position_attention_flops(h, w, 4, key_channels=1)
    assert counted(CGNLBlock(c, channel_groups=1), c, h, w) == zc.cgnl_flops(h, w, c, None, 1)
    assert counted(EfficientAttention(c), c, h, w) == zc.efficient_attention_flops(h, w, c)
    assert counted(ObjectRegionContext(c, 5), c, h, w) == zc.ocr_flops(h, w, c, 5)


def test_sa_on_a_pooled_map_with_other_widths():
    sa = SelfAttention(16, 4, 6, 10).to("meta").eval()
    flops = counted(sa, 16, 12, 16, lambda x: run_ocp(sa, x, 2))
    assert flops == zc.sa_downsampled_flops(12, 16, 16, 2, 4, 6, 10) == sa_flops(6, 8, 16, 4, 6, 10)
