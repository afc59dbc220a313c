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



@pytest.mark.parametrize("flavour", ["paper", "openseg", "mmseg"])
def test_ocp_relation_keeps_the_real_cells_of_every_flavour(flavour):
    """On a map that needs padding the relation over the real cells is right for every flavour:
    rows sum to one with the paper's masked padding; with zeros-split padding the relation equals
    that of the same module on the input zero-padded by hand (where no padding is then needed),
    restricted to the real cells at the offsets split_padding gives (not the bottom-right)."""
    import torch.nn.functional as F

    from ocnet_edu.analysis import ocp_relation
    from ocnet_edu.nn.isa import InterlacedSparseSelfAttention, split_padding

    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(8, groups=(4, 4), flavour=flavour).eval()
    x = torch.randn(2, 8, 5, 7)
    with torch.no_grad():
        relation = ocp_relation(isa, x)
    assert relation.shape == (2, 35, 35)
    if flavour == "paper":
        torch.testing.assert_close(relation.sum(-1), torch.ones(2, 35))
        return
    left, right, top, bottom = split_padding((5, 7), (4, 4))
    assert (left, right, top, bottom) == (0, 1, 1, 2)  # 5x7 -> 8x8: one padded row on top
    padded = F.pad(x, (left, right, top, bottom))
    with torch.no_grad():
        full = ocp_relation(isa, padded)  # 8x8: divisible, nothing padded inside the module
    height, width = padded.shape[-2:]
    cells = torch.tensor([(top + i) * width + left + j for i in range(5) for j in range(7)])
    torch.testing.assert_close(relation, full[:, cells][:, :, cells], rtol=1e-5, atol=1e-7)
    assert (relation.sum(-1) < 1 - 1e-4).all()  # every pixel gives some weight to the padded zeros
