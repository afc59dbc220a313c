"""The training loss of Sec. 4.2 written out by hand: cross-entropy over the labelled pixels (class
weights as a weighted mean), plus 0.4 × that of the auxiliary output, and with OHEM the same mean
over the kept pixels only; the poly factor's edge cases.

The reference cross-entropy below is computed from ``log_softmax`` pixel by pixel, not with
``F.cross_entropy``, so that a wrong ignore index, weight or reduction passed to it shows.
"""

from __future__ import annotations

import pytest
import torch

from ocnet_edu.losses import ohem_cross_entropy, ohem_kept_mask, poly_lr_factor, segmentation_loss


def cross_entropy_by_hand(logits, target, ignore_index, weights=None, kept=None) -> torch.Tensor:
    """``Σ w_y · (−log p_y) / Σ w_y`` over the pixels with a label (and in ``kept``, if given)."""
    log_prob = torch.log_softmax(logits.double(), dim=1)
    num, den = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    for b, i, j in zip(*torch.nonzero(target != ignore_index, as_tuple=True)):
        if kept is not None and not kept[b, i, j]:
            continue
        label = int(target[b, i, j])
        w = 1.0 if weights is None else float(weights[label])
        num -= w * log_prob[b, label, i, j]
        den += w
    return num / den


def example(seed: int, ignore_index: int = 255, classes: int = 4):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 5, 6, generator=generator) * 2
    aux = torch.randn(2, classes, 5, 6, generator=generator) * 2
    target = torch.randint(0, classes, (2, 5, 6), generator=generator)
    target[torch.rand(2, 5, 6, generator=generator) < 0.25] = ignore_index
    return logits, aux, target


@pytest.mark.parametrize("seed", range(3))
def test_plain_loss_is_cross_entropy_over_labelled_pixels(seed):
    logits, _, target = example(seed)
    loss = segmentation_loss(logits, target)
    torch.testing.assert_close(loss.double(), cross_entropy_by_hand(logits, target, 255))


@pytest.mark.parametrize("seed", range(3))
def test_auxiliary_output_adds_its_weight_times_its_cross_entropy(seed):
    logits, aux, target = example(seed)
    main, side = cross_entropy_by_hand(logits, target, 255), cross_entropy_by_hand(aux, target, 255)
    torch.testing.assert_close(segmentation_loss(logits, target, aux).double(), main + 0.4 * side)
    torch.testing.assert_close(segmentation_loss(logits, target, aux, aux_weight=1.5).double(), main + 1.5 * side)
    torch.testing.assert_close(segmentation_loss(logits, target, aux, aux_weight=0.0).double(), main)
    torch.testing.assert_close(segmentation_loss(logits, target, None).double(), main)


def test_class_weights_and_another_ignore_index_reach_the_cross_entropy():
    logits, aux, target = example(5, ignore_index=-1)
    weights = torch.tensor([0.5, 1.0, 2.0, 4.0])
    expected = cross_entropy_by_hand(logits, target, -1, weights) + 0.4 * cross_entropy_by_hand(aux, target, -1, weights)
    loss = segmentation_loss(logits, target, aux, class_weights=weights, ignore_index=-1)
    torch.testing.assert_close(loss.double(), expected)


@pytest.mark.parametrize("seed", range(3))
def test_ohem_loss_is_the_cross_entropy_of_the_kept_pixels(seed):
    logits, aux, target = example(seed, ignore_index=7)
    weights = torch.tensor([1.0, 3.0, 1.0, 0.5])
    options = dict(ohem=True, ohem_thresh=0.4, ohem_min_kept=9, class_weights=weights, ignore_index=7)
    kept_main = ohem_kept_mask(logits, target, 0.4, 9, ignore_index=7)
    kept_aux = ohem_kept_mask(aux, target, 0.4, 9, ignore_index=7)
    assert 0 < int(kept_main.sum()) < int((target != 7).sum())  # OHEM drops some labelled pixels here
    expected = (cross_entropy_by_hand(logits, target, 7, weights, kept_main)
                + 0.4 * cross_entropy_by_hand(aux, target, 7, weights, kept_aux))
    torch.testing.assert_close(segmentation_loss(logits, target, aux, **options).double(), expected)
    torch.testing.assert_close(
        ohem_cross_entropy(logits, target, 0.4, 9, ignore_index=7, weight=weights).double(),
        cross_entropy_by_hand(logits, target, 7, weights, kept_main))


def test_ohem_keeps_a_pixel_whose_probability_equals_the_threshold():
    """Hard means p(true) ≤ thresh: two equal logits give p = 0.5 exactly, which is kept at 0.5."""
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 0, 0, 1:] = 5.0  # pixels 1, 2: confident in their label 0
    target = torch.zeros(1, 1, 3, dtype=torch.long)
    kept = ohem_kept_mask(logits, target, thresh=0.5, min_kept=0)
    assert kept.tolist() == [[[True, False, False]]]


def test_ohem_defaults_are_the_authors_threshold_and_ignore_label():
    """Defaults: thresh 0.7, min_kept 100 000 (more than this map: every labelled pixel), label 255."""
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0] = torch.tensor([[0.0, 0.5], [3.0, 3.0]])  # p(class 0) ≈ 0.5, 0.62, 0.95, 0.95
    target = torch.tensor([[[0, 0], [0, 255]]])
    assert ohem_kept_mask(logits, target).tolist() == [[[True, True], [True, False]]]
    assert ohem_kept_mask(logits, target, min_kept=0).tolist() == [[[True, True], [False, False]]]
    assert ohem_kept_mask(logits, target, thresh=0.55, min_kept=0).tolist() == [[[True, False], [False, False]]]


def test_poly_factor_is_zero_after_the_last_iteration_and_refuses_no_iterations():
    assert poly_lr_factor(12, 10) == 0.0  # clamped: no negative base to a fractional power
    assert poly_lr_factor(5, 10, power=1.0) == 0.5
    assert poly_lr_factor(5, 10) == pytest.approx(0.5 ** 0.9)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="max_iters must be positive"):
            poly_lr_factor(0, bad)


def test_defaults_at_full_scale_keep_exactly_the_100000_hardest_pixels():
    """Defaults (thresh 0.7, min_kept 100 000) on 120 000 pixels: 100 000 hard (p ≈ 0.0001) and
    20 000 easy ones (p ≈ 0.9999), tied within each group. OHEM keeps exactly the hard ones (one
    more would take every easy pixel, a threshold above 1 every pixel); without ``ohem`` the loss
    is the mean over all pixels."""
    hard = 100_000
    logits = torch.zeros(1, 2, 300, 400)
    logits[0, 0].view(-1)[:hard] = -9.2  # p(class 0) = sigmoid(±9.2): 1e-4 (hard) or 1 - 1e-4 (easy)
    logits[0, 0].view(-1)[hard:] = 9.2
    target = torch.zeros(1, 300, 400, dtype=torch.long)
    expected_kept = torch.zeros(1, 300, 400, dtype=torch.bool)
    expected_kept.view(-1)[:hard] = True
    assert torch.equal(ohem_kept_mask(logits, target), expected_kept)
    per_pixel = -torch.log_softmax(logits.double(), dim=1)[:, 0]
    close = dict(rtol=1e-5, atol=0)  # float32 means over 1e5 pixels
    torch.testing.assert_close(ohem_cross_entropy(logits, target).double(), per_pixel[expected_kept].mean(), **close)
    torch.testing.assert_close(segmentation_loss(logits, target, ohem=True).double(), per_pixel[expected_kept].mean(),
                               **close)
    torch.testing.assert_close(segmentation_loss(logits, target).double(), per_pixel.mean(), **close)


def test_ohem_cross_entropy_passes_min_kept_and_ignore_index_on():
    """thresh 0: ``min_kept`` alone decides; pixels labelled with the (non-default) ignore index look
    hardest of all and must not take places among the kept ones."""
    logits, _, target = example(11, ignore_index=7)
    logits[:, 3][target == 7] = -20.0  # an ignored pixel read as class 3 would look very hard
    probability = torch.softmax(logits.double(), dim=1).gather(1, target.clamp(max=3)[:, None])[:, 0]
    probability[target == 7] = float("inf")
    kept = torch.zeros(target.numel(), dtype=torch.bool)
    kept[torch.argsort(probability.flatten())[:5]] = True
    kept = kept.view(target.shape)
    loss = ohem_cross_entropy(logits, target, thresh=0.0, min_kept=5, ignore_index=7)
    torch.testing.assert_close(loss.double(), cross_entropy_by_hand(logits, target, 7, kept=kept))


def test_ohem_with_a_negative_ignore_index():
    logits, _, target = example(2, ignore_index=-1)
    kept = ohem_kept_mask(logits, target, thresh=0.0, min_kept=6, ignore_index=-1)
    probability = torch.softmax(logits.double(), dim=1).gather(1, target.clamp(min=0)[:, None])[:, 0]
    probability[target == -1] = float("inf")
    expected = torch.zeros(target.numel(), dtype=torch.bool)
    expected[torch.argsort(probability.flatten())[:6]] = True
    assert torch.equal(kept, expected.view(target.shape))


def test_ohem_on_one_pixel_and_on_an_empty_batch():
    logits = torch.tensor([[[[3.0]], [[0.0]]]])  # p(class 0) ≈ 0.95 > 0.7: easy, kept by min_kept = 1
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert ohem_kept_mask(logits, target, min_kept=1).tolist() == [[[True]]]
    assert ohem_kept_mask(logits, target, min_kept=0).tolist() == [[[False]]]
    empty = ohem_kept_mask(torch.zeros(0, 3, 4, 4), torch.zeros(0, 4, 4, dtype=torch.long), min_kept=5)
    assert empty.shape == (0, 4, 4)


def test_zero_aux_weight_ignores_the_auxiliary_output_entirely():
    """Weight 0 means the auxiliary output is not used, not 0 × its loss (0 × NaN is NaN)."""
    logits, aux, target = example(4)
    aux = torch.full_like(aux, float("nan"))
    loss = segmentation_loss(logits, target, aux, aux_weight=0.0)
    torch.testing.assert_close(loss.double(), cross_entropy_by_hand(logits, target, 255))
