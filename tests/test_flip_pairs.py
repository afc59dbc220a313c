"""Left/right classes under horizontal flips (LIP): labels swap in training, channels in evaluation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from ocnet_edu.data import DATASETS
from ocnet_edu.data.transforms import RandomHorizontalFlip, check_flip_pairs, paper_train_transforms, swap_pairs
from ocnet_edu.engine.evaluate import evaluate_model, multi_scale_logits

LIP_PAIRS = ((14, 15), (16, 17), (18, 19))


def test_lip_declares_its_left_right_pairs():
    assert DATASETS["lip"].flip_pairs == LIP_PAIRS
    assert all(DATASETS[name].flip_pairs == () for name in DATASETS if name != "lip")


def test_swap_pairs_exchanges_only_the_pairs():
    label = torch.tensor([[0, 14, 15, 16], [17, 18, 19, 255]])
    assert swap_pairs(label, LIP_PAIRS).tolist() == [[0, 15, 14, 17], [16, 19, 18, 255]]
    assert torch.equal(swap_pairs(swap_pairs(label, LIP_PAIRS), LIP_PAIRS), label)
    assert swap_pairs(label, ()) is label


def test_flip_turns_a_left_arm_into_a_right_arm():
    image = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)
    label = torch.tensor([[14, 14, 0, 0], [0, 0, 15, 15]])   # left arm on the left, right arm on the right
    flip = RandomHorizontalFlip(p=1.0, pairs=LIP_PAIRS)
    out_image, out_label = flip(image, label, torch.Generator().manual_seed(0))
    assert torch.equal(out_image, image.flip(-1))
    # the mirrored person's left arm is now on the right of the picture, and is a right arm
    assert out_label.tolist() == [[0, 0, 15, 15], [14, 14, 0, 0]]
    plain = RandomHorizontalFlip(p=1.0)(image, label, torch.Generator().manual_seed(0))[1]
    assert plain.tolist() == [[0, 0, 14, 14], [15, 15, 0, 0]]
    assert "pairs=((14, 15)" in repr(paper_train_transforms((2, 4), flip_pairs=LIP_PAIRS))


@pytest.mark.parametrize("pairs", [((1, 1),), ((1, 2), (2, 3)), ((-1, 2),)])
def test_bad_pairs_are_refused(pairs):
    with pytest.raises(ValueError, match="flip pairs"):
        check_flip_pairs(pairs)


class MirrorAwareModel(nn.Module):
    """A model that is exactly equivariant to "mirror the image, swap left and right":
    ``f(x) = h(x) + S·flip(h(flip(x)))`` with ``S`` the channel swap, so ``f(flip x) = S·flip(f(x))``."""

    def __init__(self, num_classes: int, pairs) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.h = nn.Conv2d(3, num_classes, 3, padding=1)
        self.order = torch.arange(num_classes)
        for a, b in pairs:
            self.order[a], self.order[b] = b, a

    def forward(self, x):
        return self.h(x) + self.h(x.flip(-1)).flip(-1)[:, self.order]


def test_flip_test_time_augmentation_swaps_channels_back():
    model = MirrorAwareModel(20, LIP_PAIRS).eval()
    x = torch.randn(1, 3, 8, 12)
    with torch.no_grad():
        reference = model(x)
        swapped = multi_scale_logits(model, x, 20, flip=True, flip_pairs=LIP_PAIRS)
        unswapped = multi_scale_logits(model, x, 20, flip=True)
    assert torch.allclose(swapped, reference, atol=1e-5)      # averaging two identical predictions
    assert not torch.allclose(unswapped, reference, atol=1e-3)  # mixing left and right logits is wrong


class _TinyLIP(torch.utils.data.Dataset):
    flip_pairs = LIP_PAIRS

    def __init__(self):
        torch.manual_seed(1)
        self.items = [(torch.randn(3, 8, 12), torch.randint(0, 20, (8, 12))) for _ in range(3)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluate_model_takes_the_pairs_from_the_dataset():
    model = MirrorAwareModel(20, LIP_PAIRS)
    data = _TinyLIP()
    plain = evaluate_model(model, data, 20, boundary_tolerances=(1,))
    for dataset in (data, Subset(data, range(3))):
        flipped = evaluate_model(model, dataset, 20, flip=True, boundary_tolerances=(1,))
        assert flipped["miou"] == pytest.approx(plain["miou"], abs=1e-9)
    wrong = evaluate_model(model, data, 20, flip=True, flip_pairs=(), boundary_tolerances=(1,))
    assert wrong["miou"] != pytest.approx(plain["miou"], abs=1e-6)
    per_class = plain["boundary_f_per_class"]["1"]
    assert len(per_class) == 20 and all(v is None or 0.0 <= v <= 1.0 for v in per_class)
    scored = [v for v in per_class if v is not None]
    assert plain["boundary_f"]["1"] == pytest.approx(sum(scored) / len(scored))
