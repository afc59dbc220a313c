"""Pyramid-OC equals its definition (Eq. 27–29), built by hand region by region.

The library batches the regions of every pyramid level with einops; here each region is cut out
with plain slicing, passed through the level's OCP on its own, and put back. A head whose
branches ran the OCP on the whole map (not on its k×k regions) would fail this test.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from ocnet_edu.heads import PyramidOC, region_sizes


def by_hand(head: PyramidOC, x: torch.Tensor) -> torch.Tensor:
    """Eq. 27–29 with one OCP call per region: ``[B, C_in, H, W] -> [B, channels, H, W]``."""
    reduced = head.reduce(x)
    height, width = reduced.shape[-2:]
    contexts = []
    for k, ocp in zip(head.pyramid, head.ocps):
        context = torch.empty_like(reduced)
        rows = list(itertools.accumulate(region_sizes(height, k), initial=0))
        cols = list(itertools.accumulate(region_sizes(width, k), initial=0))
        for (top, bottom), (left, right) in itertools.product(zip(rows, rows[1:]), zip(cols, cols[1:])):
            region = reduced[..., top:bottom, left:right]
            context[..., top:bottom, left:right] = ocp(region)  # Eq. 27-28: the region's own context
        contexts.append(context)
    return head.fuse(torch.cat([*contexts, head.expand(reduced)], dim=1))  # Eq. 29


@pytest.mark.parametrize("ocp", ["sa", "isa"])
@pytest.mark.parametrize("size", [(12, 12), (13, 17), (7, 6)])
def test_pyramid_oc_is_its_region_by_region_definition(ocp, size, one_thread):
    torch.manual_seed(0)
    options = {"groups": (2, 2)} if ocp == "isa" else {}
    head = PyramidOC(8, ocp=ocp, channels=8, key_channels=4, value_channels=4, **options).eval()
    for module in head.modules():  # non-trivial BN statistics, so that every layer matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 8, *size)
    with torch.no_grad():
        torch.testing.assert_close(head(x), by_hand(head, x), rtol=1e-5, atol=1e-5)


def test_region_contexts_differ_from_whole_map_context(one_thread):
    """The test above can tell regions from the whole map: at k = 2 they give other outputs."""
    torch.manual_seed(0)
    head = PyramidOC(8, ocp="sa", channels=8, pyramid=(2,)).eval()
    reduced = torch.randn(1, 8, 12, 12)
    whole = head.ocps[0](reduced)
    regional = torch.cat([torch.cat([head.ocps[0](reduced[..., r:r + 6, c:c + 6]) for c in (0, 6)], dim=-1)
                          for r in (0, 6)], dim=-2)
    assert (whole - regional).abs().max() > 1e-3


def test_every_branch_gets_the_ocp_options_and_isa_is_the_default():
    """Each branch's OCP is built with the head's options: ISA by default, its groups and stages,
    the key channels (θ's output) and value channels (δ's output)."""
    from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

    head = PyramidOC(8, channels=8, key_channels=2, value_channels=6, groups=(2, 3), stages=("local",))
    assert len(head.ocps) == len(head.pyramid) == 4
    for ocp in head.ocps:
        assert isinstance(ocp, InterlacedSparseSelfAttention)
        assert ocp.groups == (2, 3) and ocp.stages == ("local",)
        attention = ocp.local_stage
        assert attention.delta.out_channels == 6 and attention.rho.in_channels == 6
        assert [m.out_channels for m in attention.theta.modules() if isinstance(m, torch.nn.Conv2d)] == [2, 2]
    # Fig. 5 (c): a 3×3 reduction, then 1×1 convolutions for the expansion u and the fusion (Eq. 29)
    assert head.reduce[0].kernel_size == (3, 3)
    assert head.expand[0].kernel_size == head.fuse[0].kernel_size == (1, 1)


@pytest.mark.parametrize("pyramid", [(), (0, 2), (1, -1)])
def test_pyramid_levels_must_be_positive(pyramid):
    with pytest.raises(ValueError, match="pyramid must be a non-empty sequence of positive ints"):
        PyramidOC(8, channels=8, pyramid=pyramid)


def test_region_count_must_be_positive():
    with pytest.raises(ValueError, match="regions per axis must be positive, got 0"):
        region_sizes(5, 0)
