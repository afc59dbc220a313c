"""ocnet_edu.nn.zoo: axial and window attention are ISA groupings; OCR is Eq. 11 with a low-rank W."""

from __future__ import annotations

import pytest
import torch

from ocnet_edu.nn.isa import InterlacedSparseSelfAttention
from ocnet_edu.nn.zoo import AxialAttention, ObjectRegionContext, WindowAttention


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Random BN statistics so that eval mode is not the identity; returns the module in eval mode."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


@pytest.mark.parametrize("h, w", [(6, 8), (5, 5), (1, 4)])
def test_axial_is_isa_with_groups_one_by_w(h, w):
    torch.manual_seed(0)
    axial = randomize(AxialAttention(8, out_channels=6))
    isa = InterlacedSparseSelfAttention(8, out_channels=6, groups=(1, w), stages=("local", "global")).eval()
    isa.stage("local").load_state_dict(axial.row.state_dict())
    isa.stage("global").load_state_dict(axial.column.state_dict())
    x = torch.randn(2, 8, h, w)
    y, row, column = axial(x, return_relations=True)
    _, global_rel, local_rel = isa(x, return_relations=True)
    torch.testing.assert_close(y, isa(x))
    assert row.shape == (2 * h, w, w) and column.shape == (2 * w, h, h)
    torch.testing.assert_close(row, local_rel.flatten(0, 1))       # local group qh = a row
    torch.testing.assert_close(column, global_rel.flatten(0, 1))   # global group pw = a column
    axial.row.fused = axial.column.fused = False
    torch.testing.assert_close(axial(x), y)


@pytest.mark.parametrize("h, w, window", [(8, 12, (4, 4)), (6, 6, (3, 2)), (4, 4, (4, 4))])
def test_window_is_isa_local_stage(h, w, window):
    torch.manual_seed(1)
    win = randomize(WindowAttention(8, window))
    isa = InterlacedSparseSelfAttention(8, groups=window, stages=("local",)).eval()
    isa.stage("local").load_state_dict(win.attention.state_dict())
    x = torch.randn(2, 8, h, w)
    y, relation = win(x, return_relations=True)
    torch.testing.assert_close(y, isa(x))
    torch.testing.assert_close(relation, isa(x, return_relations=True).local_relation.flatten(0, 1))


def test_window_rejects_a_map_that_does_not_divide():
    with pytest.raises(ValueError, match="not a multiple"):
        WindowAttention(8, 4)(torch.randn(1, 8, 6, 8))


def test_window_pixels_only_see_their_window():
    torch.manual_seed(2)
    win = randomize(WindowAttention(4, (2, 3)))
    x = torch.randn(1, 4, 4, 6)
    x2 = x.clone()
    x2[..., 2:, :] += torch.randn(1, 4, 2, 6)          # change the bottom row of windows only
    torch.testing.assert_close(win(x)[..., :2, :], win(x2)[..., :2, :])
    assert not torch.allclose(win(x)[..., 2:, :], win(x2)[..., 2:, :])


def test_ocr_is_eq11_with_effective_relation_rm():
    """Z = ρ(R M δ(X)): the pixel-region relation R times the soft regions M is a row-stochastic
    pixel-pixel relation of rank at most K."""
    torch.manual_seed(3)
    k = 3
    ocr = randomize(ObjectRegionContext(8, k, out_channels=5)).double()
    x = torch.randn(1, 8, 6, 7, dtype=torch.double)
    y, regions, relation = ocr(x, return_relations=True)
    assert regions.shape == (1, k, 42) and relation.shape == (1, 42, k)
    torch.testing.assert_close(regions.sum(-1), torch.ones(1, k, dtype=torch.double))
    w_eff = relation[0] @ regions[0]
    torch.testing.assert_close(w_eff.sum(-1), torch.ones(42, dtype=torch.double))
    assert torch.linalg.matrix_rank(w_eff) <= k
    values = ocr.attention.delta(x).flatten(2)[0].T             # δ(X) [N, e]
    expected = ocr.attention.rho((w_eff @ values).T.reshape(1, -1, 6, 7))
    torch.testing.assert_close(y, expected)
    ocr.attention.fused = False
    torch.testing.assert_close(ocr(x), y)
