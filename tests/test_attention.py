"""SelfAttention (Eq. 10-11): the returned relation, the fused path, bad input."""

import math

import pytest
import torch
from einops import rearrange

from ocnet_edu import SelfAttention
from ocnet_edu.nn.attention import AttentionOutput, attend


@pytest.fixture
def module():
    torch.manual_seed(0)
    return SelfAttention(12, key_channels=4, value_channels=6, out_channels=10).double().eval()


def test_relation_is_softmax_of_scaled_products(module):
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    y, relation = module(x, return_relations=True)
    theta = rearrange(module.theta(x), "b c h w -> b (h w) c")
    phi = rearrange(module.phi(x), "b c h w -> b (h w) c")
    expected = torch.softmax(theta @ phi.transpose(1, 2) / math.sqrt(4), dim=-1)
    torch.testing.assert_close(relation, expected, rtol=0, atol=1e-12)
    value = rearrange(module.delta(x), "b c h w -> b (h w) c")
    out = rearrange(relation @ value, "b (h w) c -> b c h w", h=5)
    torch.testing.assert_close(y, module.rho(out), rtol=0, atol=1e-12)
    assert y.shape == (2, 10, 5, 7) and relation.shape == (2, 35, 35)


def test_defaults_follow_the_paper():
    m = SelfAttention(16)
    assert (m.key_channels, m.value_channels, m.out_channels) == (8, 8, 16)
    # theta and phi: two consecutive 1x1 conv -> BN -> ReLU; delta and rho: one 1x1 conv
    assert [type(layer).__name__ for layer in m.theta[0]] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert len(m.theta) == 2 and len(m.phi) == 2
    assert m.delta.kernel_size == (1, 1) and m.rho.kernel_size == (1, 1)
    assert m.theta is not m.phi


@pytest.mark.parametrize("train", [False, True])
def test_fused_equals_explicit(module, train):
    module.train(train)
    x = torch.randn(2, 12, 6, 4, dtype=torch.float64, requires_grad=True)
    module.fused = True
    y_fused = module(x)
    (g_fused,) = torch.autograd.grad(y_fused.square().sum(), x)
    module.fused = False
    y_plain = module(x)
    (g_plain,) = torch.autograd.grad(y_plain.square().sum(), x)
    torch.testing.assert_close(y_fused, y_plain)
    torch.testing.assert_close(g_fused, g_plain)


def test_masked_keys_get_zero_weight():
    q, k, v = torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 2)
    mask = torch.tensor([True, True, False, True, False]).expand(3, 5)
    out, weights = attend(q, k, v, key_mask=mask, return_relations=True)
    assert torch.all(weights[..., ~mask[0]] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 5))
    fused, _ = attend(q, k, v, key_mask=mask, fused=True)
    torch.testing.assert_close(out, fused)
    # dropping the masked keys altogether gives the same result
    dropped, _ = attend(q, k[:, mask[0]], v[:, mask[0]], return_relations=True)
    torch.testing.assert_close(out, dropped)


@pytest.mark.parametrize(
    "shape, message",
    [((12, 5, 5), "4-D"), ((1, 11, 5, 5), "12 input channels")],
)
def test_bad_input(module, shape, message):
    with pytest.raises(ValueError, match=message):
        module(torch.randn(*shape, dtype=torch.float64))


@pytest.mark.parametrize("kwargs", [dict(in_channels=0), dict(in_channels=8, key_channels=-1)])
def test_bad_channels(kwargs):
    with pytest.raises(ValueError, match="positive int"):
        SelfAttention(**kwargs)


def test_fused_path_does_not_materialise_the_relation():
    """The fused path must reach a fused kernel: far less than the n x n matrix is allocated."""
    from ocnet_edu.profiling import peak_tensor_bytes

    q, k, v = torch.randn(1, 1024, 16), torch.randn(1, 1024, 16), torch.randn(1, 1024, 16)
    relation_bytes = 1024 * 1024 * 4
    fused = peak_tensor_bytes(lambda *t: attend(*t, fused=True)[0], q, k, v)
    plain = peak_tensor_bytes(lambda *t: attend(*t, fused=False)[0], q, k, v)
    assert plain >= relation_bytes and fused < relation_bytes / 4


def test_fused_module_does_not_materialise_the_relation():
    """Through the module (non-contiguous q/k/v views), the fused path still reaches a kernel
    that never stores the n x n relation."""
    from ocnet_edu.profiling import peak_tensor_bytes

    module = SelfAttention(16).eval()
    x = torch.randn(1, 16, 32, 32)
    relation_bytes = (32 * 32) ** 2 * 4
    module.fused = False
    assert peak_tensor_bytes(module, x) >= 2 * relation_bytes
    module.fused = True
    assert peak_tensor_bytes(module, x) < relation_bytes / 4


def test_relations_come_as_a_named_tuple(module):
    """``return_relations=True`` gives ``AttentionOutput(output, relation)``; the output is the
    plain forward's, and ``attend`` always returns the pair (relation ``None`` unless asked)."""
    x = torch.randn(2, 12, 5, 7, dtype=torch.float64)
    out = module(x, return_relations=True)
    assert isinstance(out, AttentionOutput)
    torch.testing.assert_close(out.output, module(x), rtol=0, atol=1e-12)
    assert out.relation.shape == (2, 35, 35)
    q = torch.randn(2, 6, 4)
    assert attend(q, q, q).relation is None
    assert attend(q, q, q, return_relations=True).relation.shape == (2, 6, 6)


def test_attend_uses_the_fused_kernel_by_default_and_returns_a_relation_only_when_asked():
    from helpers import RecordedOps

    from ocnet_edu.nn.attention import attend

    q, k, v = (torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(i)) for i in range(3))
    for fused, expected in ((None, True), (True, True), (False, False)):
        with RecordedOps() as ops:
            out = attend(q, k, v) if fused is None else attend(q, k, v, fused=fused)
        assert out.relation is None and any("scaled_dot_product" in n for n in ops.names) == expected
    explicit = attend(q, k, v, return_relations=True)
    torch.testing.assert_close(explicit.output, out.output)
    assert explicit.relation.shape == (2, 6, 6)


def test_isa_asked_for_relations_runs_each_stage_as_its_flag_says():
    """With relations the explicit softmax path is always taken; without, the stage's ``fused`` flag decides."""
    from helpers import RecordedOps

    from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

    isa = InterlacedSparseSelfAttention(8, groups=2).eval()
    x = torch.randn(1, 8, 4, 6)
    for fused, relations, expected in ((False, False, False), (True, False, True), (True, True, False)):
        isa.fused = fused
        with torch.no_grad(), RecordedOps() as ops:
            isa(x, return_relations=relations)
        assert any("scaled_dot_product" in n for n in ops.names) == expected
