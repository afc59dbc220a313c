"""Direct tests of three rules of the training and evaluation recipe that only the training loop
used to exercise: which pixels OHEM keeps, the poly learning rate, and the sliding window.

Each test states the rule as the paper and the authors' code define it and checks it on inputs
where a plausible bug (a wrong fill value, a wrong bound, an off-by-one) changes the answer.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ocnet_edu.config import load_config
from ocnet_edu.engine.evaluate import sliding_window_logits
from ocnet_edu.engine.train import train
from ocnet_edu.losses import ohem_kept_mask, poly_lr_factor

IGNORE = 255
SYNTHETIC = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """p(true class) per pixel, computed independently of the library (ignored pixels: NaN)."""
    prob = torch.softmax(logits.double(), dim=1)
    out = torch.full(labels.shape, float("nan"), dtype=torch.float64)
    for b, i, j in zip(*torch.nonzero(labels != IGNORE, as_tuple=True)):
        out[b, i, j] = prob[b, labels[b, i, j], i, j]
    return out


def lowest_valid(prob: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the ``k`` valid pixels with the lowest p(true class)."""
    flat = prob.flatten()
    valid = torch.nonzero(~flat.isnan()).flatten()
    order = valid[torch.argsort(flat[valid])]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[order[:k]] = True
    return mask.view(prob.shape)


def one_hard_pixel_map() -> tuple[torch.Tensor, torch.Tensor]:
    """A 4×4 map, 3 classes, 6 ignored pixels, exactly one valid pixel with p(true) ≤ 0.7.

    The ignored pixels get *low* probabilities of their (meaningless) label, so that a mask which
    let them compete would pick them first.
    """
    labels = torch.tensor([[0, 1, 2, 0], [1, 2, 0, 1], [2, 0, 1, 2], [0, 1, 2, 0]])
    ignored = torch.zeros(4, 4, dtype=torch.bool)
    ignored.view(-1)[[1, 4, 6, 9, 11, 14]] = True
    confidence = torch.linspace(2.0, 4.0, 16).view(4, 4)  # p(true) from ~0.79 to ~0.97 ...
    confidence[2, 2] = 0.1  # ... except one hard pixel (p ≈ 0.36)
    confidence[ignored] = -3.0  # the ignored pixels look very hard
    logits = torch.zeros(1, 3, 4, 4)
    logits.scatter_(1, labels[None, None], confidence[None, None])
    target = labels.masked_fill(ignored, IGNORE)[None]
    return logits, target


def test_ohem_one_hard_pixel_keeps_min_kept_valid_pixels():
    logits, target = one_hard_pixel_map()
    prob = true_class_probability(logits, target)
    assert int(((prob <= 0.7) & ~prob.isnan()).sum()) == 1  # the construction: one hard pixel
    kept = ohem_kept_mask(logits, target, thresh=0.7, min_kept=5, ignore_index=IGNORE)
    assert int(kept.sum()) == 5
    assert not kept[target == IGNORE].any()
    assert torch.equal(kept, lowest_valid(prob, 5))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_kept", [1, 7, 40, 1000])
def test_ohem_keeps_min_of_min_kept_and_valid_lowest_first(seed, min_kept):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 7, generator=generator) * 3
    target = torch.randint(0, 5, (2, 6, 7), generator=generator)
    target[torch.rand(2, 6, 7, generator=generator) < 0.3] = IGNORE
    prob = true_class_probability(logits, target)
    num_valid = int((target != IGNORE).sum())
    # thresh 0: no pixel is hard, so exactly min(min_kept, valid) pixels are kept, the lowest
    kept = ohem_kept_mask(logits, target, thresh=0.0, min_kept=min_kept, ignore_index=IGNORE)
    assert int(kept.sum()) == min(min_kept, num_valid)
    assert not kept[target == IGNORE].any()
    assert torch.equal(kept, lowest_valid(prob, min(min_kept, num_valid)))


@pytest.mark.parametrize("seed", range(4))
def test_ohem_keeps_every_hard_pixel_when_there_are_more_than_min_kept(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 8, 8, generator=generator)
    target = torch.randint(0, 4, (2, 8, 8), generator=generator)
    target[:, :2] = IGNORE
    prob = true_class_probability(logits, target)
    hard = (prob <= 0.7) & ~prob.isnan()
    assert int(hard.sum()) > 10  # random logits over 4 classes: most pixels are hard
    kept = ohem_kept_mask(logits, target, thresh=0.7, min_kept=10, ignore_index=IGNORE)
    assert torch.equal(kept, hard)


def test_ohem_all_ignored_keeps_nothing():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.full((1, 4, 4), IGNORE)
    assert not ohem_kept_mask(logits, target, min_kept=5, ignore_index=IGNORE).any()


@pytest.mark.parametrize("max_iters", [1, 7, 100])
def test_poly_starts_at_one_ends_at_zero_and_follows_the_formula(max_iters):
    assert poly_lr_factor(0, max_iters) == 1.0
    assert poly_lr_factor(max_iters, max_iters) == 0.0
    for t in range(max_iters + 1):
        assert poly_lr_factor(t, max_iters, 0.9) == pytest.approx((1 - t / max_iters) ** 0.9, abs=1e-15)
    factors = [poly_lr_factor(t, max_iters) for t in range(max_iters + 1)]
    assert all(a > b for a, b in zip(factors, factors[1:]))


def test_logged_learning_rate_of_every_iteration_is_the_poly_formula(tmp_path, one_thread):
    """Iteration ``k`` (1-based, as logged) steps with ``lr · (1 − (k−1)/T)^p``: the first step
    uses the full base rate, the last a small but positive one."""
    cfg = load_config(SYNTHETIC, [f"runtime.out_dir={tmp_path}", "schedule.max_iters=6",
                                  "schedule.batch_size=2", "optim.poly_power=0.9"])
    train(cfg, progress=False)
    with (tmp_path / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == list(range(1, 7))
    base, steps = cfg.optim.lr, cfg.schedule.max_iters
    for row in rows:
        k = int(row["iteration"])
        assert float(row["lr"]) == pytest.approx(base * (1 - (k - 1) / steps) ** 0.9, rel=1e-6)
    assert float(rows[0]["lr"]) == pytest.approx(base, rel=1e-7)


class PassThrough(nn.Module):
    """A 'segmentation model' whose logits are its input: the sliding window must give the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]`` unchanged."""
        return x.clone()


@pytest.mark.parametrize("size", [(50, 77), (64, 64), (65, 97), (20, 20), (33, 130), (1, 40)])
@pytest.mark.parametrize("crop", [(32, 32), (24, 40)])
@pytest.mark.parametrize("stride_rate", [2 / 3, 0.5, 1.0])
def test_sliding_window_of_a_pass_through_model_is_the_image(size, crop, stride_rate):
    image = torch.randn(2, 3, *size, dtype=torch.float64)
    out = sliding_window_logits(PassThrough(), image, 3, crop_size=crop, stride_rate=stride_rate)
    assert out.shape == image.shape
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)


def test_sliding_window_covers_every_pixel_with_overlap_counts():
    """Counting tiles with a model that outputs ones: every pixel is covered at least once, and the
    average of ones is one everywhere (a missing row or column of tiles would give NaN)."""

    class Ones(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Ones of the input's shape."""
            return torch.ones_like(x)

    for height, width in [(100, 37), (67, 67), (31, 129)]:
        out = sliding_window_logits(Ones(), torch.zeros(1, 2, height, width), 2, crop_size=(30, 30))
        assert torch.equal(out, torch.ones(1, 2, height, width))
        assert not math.isnan(float(out.sum()))


class RecordTiles(nn.Module):
    """A pass-through model that records where each tile it is given lies: channel 0 of the image
    holds the row index, channel 1 the column index, so a tile's first pixel names its corner."""

    def __init__(self) -> None:
        super().__init__()
        self.tiles: list[tuple[int, int, tuple[int, ...]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` unchanged; records ``(top, left, shape)``."""
        self.tiles.append((int(x[0, 0, 0, 0]), int(x[0, 1, 0, 0]), tuple(x.shape[-2:])))
        return x.clone()


def coordinate_image(height: int, width: int) -> torch.Tensor:
    """``[1, 3, H, W]``: row index, column index, ones."""
    rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
    return torch.stack([rows, cols, torch.ones(height, width, dtype=torch.float64)])[None]


def fewest_tiles(length: int, crop: int, stride: int) -> list[int]:
    """Tile starts 0, stride, 2·stride, … until one reaches the end, the last one moved back to end
    exactly at ``length``: the fewest tiles at that stride that cover the axis."""
    starts = [0]
    while starts[-1] + crop < length:
        starts.append(min(starts[-1] + stride, length - crop))
    return starts


@pytest.mark.parametrize("size, crop, stride_rate", [((50, 77), (32, 32), 2 / 3), ((64, 64), (32, 32), 0.5),
                                                     ((33, 130), (24, 40), 1.0), ((32, 40), (32, 40), 2 / 3)])
def test_sliding_window_tiles_lie_inside_the_image_on_the_stride_grid_once_each(size, crop, stride_rate):
    """An image at least as large as the crop is never padded: every tile is a crop-sized window of
    the image, at the starts of :func:`fewest_tiles` along each axis, each window exactly once."""
    model = RecordTiles()
    image = coordinate_image(*size)
    out = sliding_window_logits(model, image, 3, crop_size=crop, stride_rate=stride_rate)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)
    strides = [max(1, int(c * stride_rate)) for c in crop]
    expected = [(top, left, crop) for top in fewest_tiles(size[0], crop[0], strides[0])
                for left in fewest_tiles(size[1], crop[1], strides[1])]
    assert model.tiles == expected


def test_sliding_window_pads_a_small_image_at_the_bottom_and_right_only():
    model = RecordTiles()
    image = coordinate_image(10, 50)
    out = sliding_window_logits(model, image, 3, crop_size=(16, 16), stride_rate=1.0)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)
    assert [(top, left) for top, left, _ in model.tiles] == [(0, 0), (0, 16), (0, 32), (0, 34)]
    assert all(shape == (16, 16) for _, _, shape in model.tiles)


@pytest.mark.parametrize("crop", [(1, 3), (3, 1)])
def test_sliding_window_with_one_pixel_tiles(crop):
    """A crop side of 1 is allowed; its stride is one pixel (``int(1 · rate)`` = 0 is raised to 1)."""
    image = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    out = sliding_window_logits(PassThrough(), image, 3, crop_size=crop, stride_rate=0.5)
    assert torch.isfinite(out).all()  # a stride of 2 would leave rows or columns uncovered: NaN
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="positive crop size"):
        sliding_window_logits(PassThrough(), image, 3, crop_size=(0, 3))
