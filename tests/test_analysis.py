"""The same-class relation mass: known values, and the library's OCP relations."""

import pytest
import torch

from ocnet_edu.analysis import labels_at, relation_of, same_class_mass
from ocnet_edu.backbones import SmallBackbone
from ocnet_edu.nn.context_sets import binary_relation_matrix
from ocnet_edu.heads import build_context_module
from ocnet_edu.model import OCNet


def test_uniform_and_binary_relations():
    labels = torch.tensor([[0, 0, 0, 1, 1, 2]])
    n = labels.shape[1]
    uniform_relation = torch.full((1, n, n), 1.0 / n)
    mass, uniform = same_class_mass(uniform_relation, labels)
    expected = (3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6
    assert mass.item() == pytest.approx(expected) and uniform.item() == pytest.approx(expected)
    binary = binary_relation_matrix(labels[0])
    mass, _ = same_class_mass((binary / binary.sum(1, keepdim=True))[None], labels)
    assert mass.item() == pytest.approx(1.0)


def test_ignored_pixels():
    labels = torch.tensor([[0, 255, 0, 1]])
    relation = torch.eye(4)[None]
    mass, uniform = same_class_mass(relation, labels)
    assert mass.item() == 1.0  # every labelled query keeps all its weight on itself
    assert uniform.item() == pytest.approx((2 / 4 + 2 / 4 + 1 / 4) / 3)
    mass, _ = same_class_mass(relation, torch.full((1, 4), 255))
    assert torch.isnan(mass).all()
    with pytest.raises(ValueError, match="expected relation"):
        same_class_mass(relation, labels[:, :3])


def test_labels_at_and_relation_of():
    labels = torch.arange(16).reshape(1, 4, 4).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(labels_at(labels, (4, 4)), torch.arange(16).reshape(1, 4, 4))
    torch.manual_seed(0)
    for name in ("base_oc_isa", "base_oc_sa"):
        options = {"channels": 16, "groups": (2, 2)} if name.endswith("isa") else {"channels": 16}
        model = OCNet(SmallBackbone(width=4), build_context_module(name, 32, **options), num_classes=3)
        relation = relation_of(model, torch.randn(2, 3, 64, 64))
        assert relation.shape == (2, 64, 64)
        torch.testing.assert_close(relation.sum(-1), torch.ones(2, 64))
    with pytest.raises(ValueError, match="Base-OC"):
        relation_of(OCNet(SmallBackbone(width=4), build_context_module("none", 32, channels=8), num_classes=3),
                    torch.randn(1, 3, 64, 64))
