"""The options of multi-scale inference and of scoring, one at a time: defaults, where each option
goes, the JSON form of the scores and the progress bar."""

from __future__ import annotations

import math
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F

from helpers import RecordedOps
from ocnet_edu.engine import evaluate as ev
from ocnet_edu.metrics import BoundaryScores, SegmentationScores


class Lopsided(torch.nn.Module):
    """Logits that change with a mirror image and with the image size: 3 classes from the
    column position and the mean colour (so scales, flips and windows all show)."""

    def forward(self, x):
        columns = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], x.shape[-1])
        return torch.cat([x[:, :1] * columns, x[:, 1:2] + x.mean(), columns * x.shape[-1] / 10], dim=1)


def _image():
    return torch.randn(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))


def test_multi_scale_defaults_are_one_plain_forward():
    model, image = Lopsided(), _image()
    with RecordedOps() as ops:
        out = ev.multi_scale_logits(model, image, 3)
    # no flip, scale 1: the logits themselves (not averaged with anything, not halved), the image not resampled
    torch.testing.assert_close(out, model(image), rtol=0, atol=1e-6)
    assert sum(name.startswith("upsample_bilinear2d") for name in ops.names) == 1  # only the logits, back to size
    scaled = F.interpolate(image, size=(9, 12), mode="bilinear", align_corners=True)
    expected = F.interpolate(model(scaled), size=(12, 16), mode="bilinear", align_corners=True)
    torch.testing.assert_close(ev.multi_scale_logits(model, image, 3, (0.75,)), expected)  # align_corners=True


def test_multi_scale_flip_averages_with_the_mirror_image():
    model, image = Lopsided(), _image()
    mirrored = model(image.flip(-1)).flip(-1)
    torch.testing.assert_close(ev.multi_scale_logits(model, image, 3, flip=True), (model(image) + mirrored) / 2)


def test_sliding_windows_get_the_model_image_classes_and_crop(monkeypatch):
    calls = []

    def recorder(model, x, num_classes, crop_size):
        calls.append((model, x.shape, num_classes, crop_size))
        return torch.zeros(x.shape[0], num_classes, *x.shape[-2:])

    monkeypatch.setattr(ev, "sliding_window_logits", recorder)
    model = Lopsided()
    ev.multi_scale_logits(model, _image(), 3, (1.0, 0.5), crop_size=(8, 8))
    assert calls == [(model, (1, 3, 12, 16), 3, (8, 8)), (model, (1, 3, 6, 8), 3, (8, 8))]


def test_bad_merge_and_rounding_are_named():
    with pytest.raises(ValueError, match=r"^merge must be one of \('logits', 'softmax'\), got 'mean'$"):
        ev.multi_scale_logits(Lopsided(), _image(), 3, merge="mean")
    with pytest.raises(ValueError, match=r"^rounding must be one of \('round', 'floor', 'half-up'\), got 'ceil'$"):
        ev.scaled_size((10, 10), 0.5, "ceil")


def test_scaled_sizes_round_by_default_and_never_vanish():
    assert ev.scaled_size((11, 13), 0.5) == (6, 6)  # Python's round: 5.5 → 6, 6.5 → 6
    assert ev.scaled_size((11, 13), 0.5, "floor") == (5, 6) and ev.scaled_size((11, 13), 0.5, "half-up") == (6, 7)
    assert ev.scaled_size((1, 3), 0.25) == (1, 1)


def test_forward_takes_the_logits_of_a_training_output():
    Output = namedtuple("Output", "logits aux")
    logits = torch.ones(1, 2, 3, 3)
    assert ev._forward(lambda x: Output(logits, None), torch.zeros(1)) is logits
    assert ev._forward(lambda x: logits, torch.zeros(1)) is logits


def test_flip_pairs_of_a_dataset_a_subset_and_of_neither():
    data = type("D", (), {"flip_pairs": ((1, 2),)})()
    assert ev.dataset_flip_pairs(data) == ((1, 2),)
    assert ev.dataset_flip_pairs(torch.utils.data.Subset(data, [])) == ((1, 2),)
    assert ev.dataset_flip_pairs(object()) == ()


def test_scores_as_json_name_every_field_and_turn_nan_into_none():
    nan = math.nan
    scores = SegmentationScores(miou=0.5, iou=torch.tensor([0.25, nan]), pixel_acc=0.75, mean_acc=0.625,
                                acc=torch.tensor([0.5, nan]))
    boundary = BoundaryScores(per_class={3: torch.tensor([nan, 0.125])}, mean={3: 0.125})
    assert ev._as_dict(scores, boundary) == {"miou": 0.5, "pixel_acc": 0.75, "mean_acc": 0.625, "iou": [0.25, None],
                                             "boundary_f": {"3": 0.125}, "boundary_f_per_class": {"3": [None, 0.125]}}


@pytest.mark.parametrize("progress, main, shown", [(True, True, True), (True, False, False), (False, True, False)])
def test_the_progress_bar_shows_on_rank_0_when_asked(monkeypatch, progress, main, shown):
    import tqdm

    bars = []

    def bar(iterable, **options):
        bars.append(options)
        return iterable

    monkeypatch.setattr(tqdm, "tqdm", bar)
    monkeypatch.setattr(ev.distributed, "is_main", lambda: main)
    assert list(ev.shard_with_progress(3, progress, "eval")) == [0, 1, 2]
    assert bars == [{"disable": not shown, "desc": "eval", "unit": "img"}]
