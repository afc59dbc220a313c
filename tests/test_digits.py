"""DigitScenes: determinism, disjoint splits, labels on whole cards, card colours apart, shapes, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ocnet_edu.data.digits import (
    DIGIT_MAX,
    MAX_CARDS,
    MIN_HUE_GAP,
    NUM_DIGIT_CLASSES,
    DigitScenes,
    digit_split_indices,
    load_digit_images,
)
from ocnet_edu.data.transforms import paper_train_transforms

pytest.importorskip("sklearn", reason="DigitScenes reads scikit-learn's bundled digits")

SMALL = {"size": (48, 48), "digit_scale": 2, "digits_per_scene": (2, 4)}


def test_packaged_file_matches_load_digits():
    """The fast reader returns exactly what ``sklearn.datasets.load_digits`` returns."""
    from sklearn.datasets import load_digits

    images, targets = load_digit_images()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and targets.shape == (1797,)
    assert np.array_equal(images, bunch.images.astype(np.float32))
    assert np.array_equal(targets, bunch.target)


def test_splits_are_disjoint_and_cover_all_scans():
    train, val = digit_split_indices("train"), digit_split_indices("val")
    assert len(set(train) & set(val)) == 0
    assert sorted(set(train) | set(val)) == list(range(1797))
    assert 300 < len(val) < 400
    # every digit occurs in both splits
    _, targets = load_digit_images()
    assert set(targets[train]) == set(targets[val]) == set(range(10))
    # the datasets use exactly their split's scans, whatever the run seed
    for seed in (0, 7):
        assert np.array_equal(DigitScenes("val", length=2, seed=seed, **SMALL).digit_indices, val)


def test_same_seed_same_samples_other_seed_other_samples():
    a = DigitScenes("train", length=4, seed=3, **SMALL)
    b = DigitScenes("train", length=4, seed=3, **SMALL)
    c = DigitScenes("train", length=4, seed=4, **SMALL)
    for i in range(4):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], c[0][0])
    # reading out of order gives the same sample
    assert torch.equal(a[2][1], DigitScenes("train", length=4, seed=3, **SMALL)[2][1])


def test_train_and_val_scenes_differ_for_the_same_seed():
    train, val = DigitScenes("train", length=2, **SMALL), DigitScenes("val", length=2, **SMALL)
    assert not torch.equal(train[0][0], val[0][0])


def test_shapes_dtypes_and_class_range():
    data = DigitScenes("train", length=6, **SMALL)
    for i in range(len(data)):
        image, label = data[i]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32
        assert label.shape == (48, 48) and label.dtype == torch.int64
        assert 0.0 <= float(image.min()) and float(image.max()) <= 255.0
        assert int(label.min()) == 0 and int(label.max()) < NUM_DIGIT_CLASSES
        assert 1 <= _count_digits(label) <= 4  # 2..4 digits; two of the same class share a value


def _count_digits(label: torch.Tensor) -> int:
    return len(torch.unique(label[label > 0]))


def test_labels_cover_whole_cards():
    """Every card pixel is labelled (not only the ink): the labelled area is a whole number of
    cards, and each card's pixels all share one colour direction (card and ink differ only in
    brightness), a different one from every other card of the scene."""
    data = DigitScenes("train", length=4, noise=0.0, **SMALL)
    side = data.digit_side
    for i in range(len(data)):
        image, label = data.generate(i)
        fg = label > 0
        assert fg.any() and (~fg).any()
        assert int(fg.sum()) % (side * side) == 0
        # label each card by its normalised colour: pixels of one card are proportional to its colour
        chroma = image / image.sum(axis=-1, keepdims=True)
        colours = np.unique(np.round(chroma[fg], 4), axis=0)
        assert 1 <= len(colours) <= SMALL["digits_per_scene"][1]
        assert len(colours) * side * side == int(fg.sum())
        # the background is one level per scene (noise=0)
        assert np.ptp(image[~fg].mean(axis=-1)) < 1e-3


def test_card_hues_are_apart():
    rng = np.random.default_rng(0)
    for count in range(1, MAX_CARDS + 1):
        for _ in range(50):
            hues = np.array(DigitScenes._hues(rng, count))
            assert hues.shape == (count,) and np.all((0 <= hues) & (hues < 1))
            gap = np.abs(hues[:, None] - hues[None, :])
            gap = np.minimum(gap, 1 - gap) + np.eye(count)
            assert gap.min() >= MIN_HUE_GAP - 1e-9


def test_digit_class_is_the_scan_class():
    """With one card filling the canvas, the label's class is 1 + the digit of the scan whose
    glyph is written on it (the darkening of the card is proportional to the glyph)."""
    data = DigitScenes("train", length=3, digit_scale=2, size=(16, 16), digits_per_scene=(1, 1), noise=0.0)
    glyphs = data.glyphs.reshape(len(data.glyphs), -1)
    for i in range(3):
        image, label = data.generate(i)
        assert np.all(label > 0)
        classes = np.unique(label)
        assert len(classes) == 1
        darkening = image[..., 0].max() - image[..., 0].reshape(-1)
        # ink ∝ glyph: the scan with (near-)perfect correlation is the one on the card
        correlation = np.array([np.corrcoef(darkening, g)[0, 1] if g.std() > 0 else 0.0 for g in glyphs])
        best = int(np.argmax(correlation))
        assert correlation[best] > 0.999
        assert int(classes[0]) == int(data.digits[best]) + 1


def test_transform_gets_a_per_sample_generator_and_epoch_changes_it():
    transform = paper_train_transforms((32, 32), (0.8, 1.25), 10.0)
    data = DigitScenes("train", length=2, transform=transform, **SMALL)
    image, label = data[0]
    assert image.shape == (3, 32, 32) and label.shape == (32, 32)
    assert torch.equal(image, data[0][0])
    data.set_epoch(1)
    assert not torch.equal(image, data[0][0])


def test_glyphs_are_the_scans_upsampled():
    data = DigitScenes("val", length=1, digit_scale=3, size=(24, 24), digits_per_scene=(1, 1))
    images, _ = load_digit_images()
    assert data.glyphs.shape == (len(data.digit_indices), 24, 24)
    scan = images[data.digit_indices[0]] / DIGIT_MAX
    # block means of a bilinear ×3 upsample stay close to the scan
    blocks = data.glyphs[0].reshape(8, 3, 8, 3).mean(axis=(1, 3))
    assert np.abs(blocks - scan).max() < 0.35


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "test"}, "split"),
        ({"length": 0}, "length"),
        ({"size": (0, 10)}, "size"),
        ({"digit_scale": 0}, "digit_scale"),
        ({"digit_scale": 2.5}, "digit_scale"),
        ({"digits_per_scene": (3, 2)}, "digits_per_scene"),
        ({"digits_per_scene": (0, 2)}, "digits_per_scene"),
        ({"digits_per_scene": (1, 6)}, "digits_per_scene"),
        ({"noise": -1.0}, "noise"),
        ({"num_classes": 10}, "11 classes"),
        ({"size": (64, 64), "digit_scale": 4, "digits_per_scene": (2, 5)}, "holds at most 4"),
        ({"size": (30, 100), "digit_scale": 4}, "holds at most 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DigitScenes(**kwargs)


def test_index_out_of_range():
    data = DigitScenes("train", length=2, **SMALL)
    with pytest.raises(IndexError):
        data[2]


def test_crowded_canvas_places_every_digit_without_overlap():
    """Four 32-pixel digits on a 64×64 canvas only fit on the grid: the fallback must find it."""
    data = DigitScenes("train", length=10, size=(64, 64), digit_scale=4, digits_per_scene=(4, 4))
    for i in range(len(data)):
        rng = np.random.default_rng(i)
        boxes = data._positions(rng, 4)
        assert len(boxes) == 4
        for a in range(4):
            for b in range(a + 1, 4):
                (t1, l1), (t2, l2) = boxes[a], boxes[b]
                assert abs(t1 - t2) >= 32 or abs(l1 - l2) >= 32
            assert 0 <= boxes[a][0] <= 32 and 0 <= boxes[a][1] <= 32
