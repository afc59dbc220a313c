"""The explicit matrix view: P, the 2-D reduction, W = W^l P^T W^g P, Algorithm 2, Eq. 23."""

import pytest
import torch
from einops import rearrange

from ocnet_edu.nn.relation import (
    block_diagonal,
    dense_relation,
    eq23_columns,
    permutation_indices,
    permutation_matrix,
    raster_permutation,
    raster_permutation_matrix,
    transform_free_isa,
    visualize_relation,
)


def is_permutation_matrix(m: torch.Tensor) -> bool:
    ones = torch.ones(m.shape[0], dtype=m.dtype)
    binary = bool(((m == 0) | (m == 1)).all())
    return binary and torch.equal(m.sum(0), ones) and torch.equal(m.sum(1), ones)


@pytest.mark.parametrize("num_positions, num_groups", [(16, 4), (12, 3), (12, 4), (30, 5), (7, 7), (8, 1), (240, 12)])
def test_permutation_matrix_definition(num_positions, num_groups):
    p = permutation_matrix(num_positions, num_groups, dtype=torch.float64)
    assert is_permutation_matrix(p)
    q = num_positions // num_groups
    x = torch.arange(num_positions, dtype=torch.float64)
    px = p @ x
    for group in range(num_groups):
        for member in range(q):
            assert px[group * q + member] == x[member * num_groups + group]
    torch.testing.assert_close(p @ p.T, torch.eye(num_positions, dtype=torch.float64))


def test_permutation_groups_by_remainder():
    """P x puts positions with the same remainder mod P (Eq. 7) into contiguous blocks."""
    perm = permutation_indices(12, 3)
    blocks = rearrange(perm, "(p q) -> p q", p=3)
    for p in range(3):
        assert torch.all(blocks[p] % 3 == p)


def test_permutation_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        permutation_matrix(10, 3)
    with pytest.raises(ValueError, match="positive"):
        permutation_matrix(10, 0)


def test_eq23_as_printed():
    """Eq. 23 equals the general P when N = P^2 and is not a permutation otherwise."""
    for groups in (2, 3, 4, 8):
        assert torch.equal(eq23_columns(groups * groups, groups), permutation_indices(groups * groups, groups))
    for n, groups in ((12, 3), (12, 4), (32, 4), (240, 12)):
        cols = eq23_columns(n, groups)
        is_perm = bool(cols.max() < n) and len(set(cols.tolist())) == n
        assert not is_perm
        assert not torch.equal(cols, permutation_indices(n, groups))


def test_raster_permutation_2d_reduction():
    """After reordering raster pixels into local order, the 2-D global grouping is the 1-D
    formula with P = P_h * P_w groups."""
    size, groups = (6, 8), (3, 2)
    local = raster_permutation(size, groups, "local")
    glob = raster_permutation(size, groups, "global")
    p = permutation_indices(48, 6)
    assert torch.equal(local[p], glob)
    s = raster_permutation_matrix(size, groups, "local")
    assert is_permutation_matrix(s)
    x = torch.arange(48.0)
    assert torch.equal(s @ x, x[local])
    # local order: each consecutive block of P_h*P_w pixels is one P_h x P_w neighbourhood
    h, w = local // 8, local % 8
    blocks_h, blocks_w = rearrange(h, "(q g) -> q g", g=6), rearrange(w, "(q g) -> q g", g=6)
    assert torch.all(blocks_h.max(1).values - blocks_h.min(1).values == 2)
    assert torch.all(blocks_w.max(1).values - blocks_w.min(1).values == 1)


def test_block_diagonal():
    blocks = torch.arange(2 * 3 * 2 * 2, dtype=torch.float64).reshape(2, 3, 2, 2)
    full = block_diagonal(blocks)
    for b in range(2):
        torch.testing.assert_close(full[b], torch.block_diag(*blocks[b]))
    with pytest.raises(ValueError, match="G, n, n"):
        block_diagonal(torch.zeros(3, 2, 4))


@pytest.mark.parametrize("height, width, groups", [(8, 8, (2, 2)), (12, 20, (3, 4)), (6, 15, (2, 5)), (4, 12, (4, 2))])
def test_transform_free_identity(height, width, groups):
    torch.manual_seed(0)
    x = torch.randn(2, 5, height, width, dtype=torch.float64)
    y, g, l = transform_free_isa(x, groups, return_relations=True)
    dense = dense_relation(g, l, groups, (height, width))
    # y = W x exactly (two-stage propagation == one dense matrix)
    torch.testing.assert_close(dense @ rearrange(x, "b c h w -> b (h w) c"), rearrange(y, "b c h w -> b (h w) c"),
                               rtol=0, atol=1e-10)
    # rows sum to one, every output reaches every input (App. E)
    torch.testing.assert_close(dense.sum(-1), torch.ones(2, height * width, dtype=torch.float64))
    assert torch.all(dense > 0)
    # W = W^l P^T W^g P in the local-order basis (Eq. 9)
    n, num_groups = height * width, groups[0] * groups[1]
    s = raster_permutation_matrix((height, width), groups, dtype=torch.float64)
    p = permutation_matrix(n, num_groups, dtype=torch.float64)
    for b in range(2):
        product = block_diagonal(l[b]) @ p.T @ block_diagonal(g[b]) @ p
        torch.testing.assert_close(s @ dense[b] @ s.T, product, rtol=0, atol=1e-12)
    # float32 meets the 1e-5 target too
    y32, g32, l32 = transform_free_isa(x.float(), groups, return_relations=True)
    d32 = dense_relation(g32, l32, groups, (height, width))
    assert (d32 @ rearrange(x.float(), "b c h w -> b (h w) c") - rearrange(y32, "b c h w -> b (h w) c")).abs().max() < 1e-5


def test_dense_relation_is_sparse_per_stage():
    """Each stage alone connects a pixel only to its own group: Q_h*Q_w or P_h*P_w non-zeros."""
    x = torch.randn(1, 4, 12, 8, dtype=torch.float64)
    _, g, l = transform_free_isa(x, (3, 2), return_relations=True)
    only_global = dense_relation(g, None, (3, 2), (12, 8), stages=("global",))
    only_local = dense_relation(None, l, (3, 2), (12, 8), stages=("local",))
    assert torch.all((only_global[0] > 0).sum(-1) == 16)
    assert torch.all((only_local[0] > 0).sum(-1) == 6)
    with pytest.raises(ValueError, match="relation is None"):
        dense_relation(g, None, (3, 2), (12, 8))


def test_padding_breaks_two_hop_connectivity():
    """With padding some real pixels' local groups are mostly padding, so W has zeros: the
    'every output reaches every input' property of App. E needs divisible sizes."""
    x = torch.randn(1, 4, 7, 9, dtype=torch.float64)
    y, g, l = transform_free_isa(x, (4, 4), return_relations=True)
    dense = dense_relation(g, l, (4, 4), (7, 9))
    torch.testing.assert_close(dense @ rearrange(x, "b c h w -> b (h w) c"), rearrange(y, "b c h w -> b (h w) c"))
    assert (dense[0] == 0).any()
    torch.testing.assert_close(dense.sum(-1), torch.ones(1, 63, dtype=torch.float64))


@pytest.mark.parametrize("height, width, groups", [(12, 20, (3, 4)), (8, 8, (2, 2)), (7, 9, (4, 4))])
def test_visualize_relation_matches_dense_row(height, width, groups):
    x = torch.randn(1, 3, height, width, dtype=torch.float64)
    _, g, l = transform_free_isa(x, groups, return_relations=True)
    dense = dense_relation(g, l, groups, (height, width))[0]
    for i, j in [(0, 0), (height - 1, width - 1), (height // 2, width // 3)]:
        gmap, lmap, dmap = visualize_relation(i, j, (height, width), groups, g[0], l[0])
        torch.testing.assert_close(dmap.flatten(), dense[i * width + j], rtol=0, atol=1e-14)
        q_h, q_w = -(-height // groups[0]), -(-width // groups[1])
        assert gmap.shape == (q_h, q_w) and lmap.shape == groups


def test_visualize_relation_paper_layout_is_a_tiling():
    """Algorithm 2's final reshape places the weight of pixel (qh*P_h+ph, qw*P_w+pw) at
    (ph*Q_h+qh, pw*Q_w+qw): P_h x P_w tiles, one subsampled copy per global group."""
    height, width, groups = 8, 12, (2, 3)
    x = torch.randn(1, 3, height, width, dtype=torch.float64)
    _, g, l = transform_free_isa(x, groups, return_relations=True)
    _, _, raster = visualize_relation(3, 5, (height, width), groups, g[0], l[0])
    _, _, paper = visualize_relation(3, 5, (height, width), groups, g[0], l[0], layout="paper")
    tiled = rearrange(raster, "(qh ph) (qw pw) -> (ph qh) (pw qw)", ph=2, pw=3)
    assert torch.equal(paper, tiled)
    assert not torch.equal(paper, raster)


def test_visualize_relation_bad_input():
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    _, g, l = transform_free_isa(x, (2, 2), return_relations=True)
    with pytest.raises(ValueError, match="outside"):
        visualize_relation(8, 0, (8, 8), (2, 2), g[0], l[0])
    with pytest.raises(ValueError, match="expected relations"):
        visualize_relation(0, 0, (8, 8), (2, 2), g, l)
    with pytest.raises(ValueError, match="layout"):
        visualize_relation(0, 0, (8, 8), (2, 2), g[0], l[0], layout="tiles")
