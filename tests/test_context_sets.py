"""Context sets: PPM (Eq. 22), ASPP (Eq. 2), object context and the binary relation (Eq. 3)."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from ocnet_edu.nn.context_sets import (
    aspp_context,
    binary_relation_matrix,
    context_representation,
    context_set,
    object_context,
    ppm_context,
)


def pooling_regions(size, k):
    """Which input pixels each adaptive-avg-pool output averages, as a mask over pixels."""
    height, width = size
    basis = torch.eye(height * width).reshape(height * width, 1, height, width)
    pooled = F.adaptive_avg_pool2d(basis, k)  # [N pixels, 1, k, k]
    return pooled.flatten(1).T > 0  # [k*k regions, N pixels]


@pytest.mark.parametrize("size, k", [((12, 12), 2), ((12, 12), 3), ((12, 18), 6), ((6, 6), 1)])
def test_ppm_sets_match_pooling_regions(size, k):
    mask = ppm_context(size, k)
    regions = pooling_regions(size, k)
    for i in range(size[0] * size[1]):
        (region,) = torch.nonzero(regions[:, i]).flatten().tolist()
        assert torch.equal(mask[i], regions[region])


def test_ppm_vs_adaptive_pooling_when_not_divisible():
    """Eq. 22 is a partition; adaptive pooling's bins overlap when k does not divide the size."""
    mask = ppm_context((7, 7), 3)
    assert torch.equal(mask, mask.T) and torch.equal((mask.float() @ mask.float() > 0), mask)  # equivalence
    overlaps = (pooling_regions((7, 7), 3).sum(0) > 1).any()
    assert overlaps


def test_ppm_1d_matches_eq22():
    n, k = 10, 3
    mask = ppm_context(n, k)
    for i in range(n):
        for j in range(n):
            assert bool(mask[i, j]) == ((j * k) // n == (i * k) // n)


def test_aspp_1d_eq2():
    mask = aspp_context(80)
    i = 40
    assert context_set(mask, i).tolist() == [4, 16, 28, 52, 64, 76]
    assert context_set(mask, 0).tolist() == [12, 24, 36]


def test_aspp_2d_taps():
    mask = aspp_context((9, 9), rates=(2,))
    centre = 4 * 9 + 4
    taps = {(int(j) // 9 - 4, int(j) % 9 - 4) for j in context_set(mask, centre)}
    assert taps == {(a, b) for a in (-2, 0, 2) for b in (-2, 0, 2)} - {(0, 0)}
    corner_taps = {(int(j) // 9, int(j) % 9) for j in context_set(mask, 0)}
    assert corner_taps == {(0, 2), (2, 0), (2, 2)}


def test_object_context_and_binary_relation():
    labels = torch.tensor([[0, 0, 1], [2, 1, 255]])
    mask = object_context(labels)
    assert context_set(mask, 0).tolist() == [0, 1]
    assert context_set(mask, 2).tolist() == [2, 4]
    assert context_set(mask, 5).tolist() == []  # ignored pixel: empty set
    assert not mask[:, 5].any()  # and in nobody's set
    rel = binary_relation_matrix(labels)
    assert rel.dtype == torch.float32 and torch.equal(rel, rel.T)
    assert torch.equal(rel.diagonal(), torch.tensor([1.0, 1, 1, 1, 1, 0]))
    assert object_context(labels, ignore_index=None)[5, 5]
    two_ignored = torch.tensor([7, 3, 7, 3])  # class 7 as the ignore label: pixels 0 and 2
    assert object_context(two_ignored, ignore_index=7).nonzero().tolist() == [[1, 1], [1, 3], [3, 1], [3, 3]]
    assert torch.equal(binary_relation_matrix(two_ignored, ignore_index=7), object_context(two_ignored, 7).float())


def test_context_masks_are_bool_and_made_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. torch.meshgrid without indexing= warns
        masks = [aspp_context((5, 4), rates=(1,)), ppm_context((4, 4), 2), object_context(torch.tensor([0, 1, 0]))]
    assert all(mask.dtype == torch.bool for mask in masks)
    assert aspp_context((1, 4), rates=(1,)).shape == (4, 4)  # a single row is a grid too
    for bad in ((0, 4), (4, 0)):
        with pytest.raises(ValueError, match="size must be a positive int N or a pair"):
            aspp_context(bad)
    for rates in ((2.5,), (0,), (3, -1)):
        with pytest.raises(ValueError, match=r"^rates must be positive ints"):
            aspp_context(8, rates)


def test_binary_relation_invariant_to_class_permutation():
    torch.manual_seed(0)
    labels = torch.randint(0, 6, (9, 11))
    labels[0, :3] = 255
    perm = torch.randperm(6)
    relabelled = torch.where(labels == 255, labels, perm[labels.clamp(max=5)])
    assert not torch.equal(labels, relabelled)
    assert torch.equal(binary_relation_matrix(labels), binary_relation_matrix(relabelled))


def test_context_representation_eq1():
    labels = torch.tensor([0, 0, 1, 255])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
    z = context_representation(x, object_context(labels))
    torch.testing.assert_close(z, torch.tensor([[2.0, 3.0], [2.0, 3.0], [5.0, 6.0], [0.0, 0.0]]))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ppm_context((4, 4), 0), "positive"),
        (lambda: ppm_context((4, 4, 4), 2), "size"),
        (lambda: aspp_context(10, rates=()), "rates"),
        (lambda: object_context(torch.zeros(2, 2, 2, dtype=torch.long)), "labels"),
        (lambda: object_context(torch.zeros(4)), "integer"),
        (lambda: context_representation(torch.zeros(3, 2), torch.zeros(4, 4, dtype=torch.bool)), "mask"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("size, rates", [(7, (1,)), (40, (2, 3)), ((5, 9), (1, 2, 5)), ((13, 17), (12, 24, 36)),
                                         ((30, 30), (4,))])
def test_aspp_context_matches_the_pairwise_definition(size, rates):
    """The scattered taps equal Eq. 2 checked pair by pair: every axis offset is 0 or ±r, not all 0."""
    dims = (size,) if isinstance(size, int) else size
    grids = torch.meshgrid(*(torch.arange(d) for d in dims), indexing="ij")
    offsets = [g.flatten()[None, :] - g.flatten()[:, None] for g in grids]
    expected = torch.zeros(offsets[0].shape, dtype=torch.bool)
    for r in rates:
        taps = torch.stack([(o == 0) | (o.abs() == r) for o in offsets]).all(0)
        expected |= taps & torch.stack([o != 0 for o in offsets]).any(0)
    assert torch.equal(aspp_context(size, rates), expected)
