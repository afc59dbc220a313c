"""InterlacedSparseSelfAttention: einops == Algorithm 1 == explicit matrices; padding; errors."""

import pytest
import torch
from einops import rearrange

from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention
from ocnet_edu.nn.isa import GROUP_PATTERNS, ISAOutput
from ocnet_edu.nn.reference import algorithm1_isa
from ocnet_edu.nn.relation import affine_form, dense_relation
from helpers import randomize_batch_norm

CASES = [  # (H, W, (P_h, P_w)) — square, non-square, P_h != P_w, P != Q
    (8, 8, (2, 2)),
    (12, 20, (3, 4)),
    (6, 15, (2, 5)),
    (16, 8, (8, 2)),
]


def make(groups, stages=("global", "local"), channels=6, seed=0):
    torch.manual_seed(seed)
    module = InterlacedSparseSelfAttention(channels, 3, 4, 5, groups=groups, stages=stages).double()
    return randomize_batch_norm(module)


def test_grouping_patterns_follow_the_paper_index_convention():
    """Global groups share the remainder (h mod P_h, w mod P_w), local groups the quotient."""
    height, width, (p_h, p_w) = 6, 8, (2, 4)
    h = torch.arange(height)[:, None].expand(height, width)
    w = torch.arange(width)[None, :].expand(height, width)
    coords = torch.stack([h, w])[None]  # [1, 2, H, W]
    glob = rearrange(coords, GROUP_PATTERNS["global"], ph=p_h, pw=p_w)  # [G, Q, 2]
    for g in range(p_h * p_w):
        assert torch.equal(glob[g, :, 0] % p_h, torch.full((glob.shape[1],), g // p_w))
        assert torch.equal(glob[g, :, 1] % p_w, torch.full((glob.shape[1],), g % p_w))
    loc = rearrange(coords, GROUP_PATTERNS["local"], ph=p_h, pw=p_w)  # [Q, G, 2]
    q_w = width // p_w
    for q in range(loc.shape[0]):
        assert torch.all(loc[q, :, 0] // p_h == q // q_w) and torch.all(loc[q, :, 1] // p_w == q % q_w)


@pytest.mark.parametrize("height, width, groups", CASES)
@pytest.mark.parametrize("train", [False, True])
def test_einops_equals_algorithm1_forward_and_backward(height, width, groups, train):
    module = make(groups).train(train)
    x = torch.randn(2, 6, height, width, dtype=torch.float64, requires_grad=True)
    y = module(x)
    y_ref = algorithm1_isa(x, module.stage("global"), module.stage("local"), *groups)
    torch.testing.assert_close(y, y_ref)
    weights = torch.randn_like(y)
    grads = torch.autograd.grad((y * weights).sum(), [x, *module.parameters()])
    grads_ref = torch.autograd.grad((y_ref * weights).sum(), [x, *module.parameters()])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("height, width, groups", CASES)
def test_einops_equals_explicit_matrix_form(height, width, groups):
    """The learned module is Z = W X M + 1 c^T with W = dense_relation(...) (forward and backward)."""
    module = make(groups).eval()
    x = torch.randn(2, 6, height, width, dtype=torch.float64, requires_grad=True)
    y, g, l = module(x, return_relations=True)
    dense = dense_relation(g, l, groups, (height, width))
    matrix, offset = affine_form(module)
    x_rows = rearrange(x, "b c h w -> b (h w) c")
    z = dense @ x_rows @ matrix + offset
    torch.testing.assert_close(rearrange(y, "b c h w -> b (h w) c"), z)
    (gx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    (gx_explicit,) = torch.autograd.grad(z.sum(), x)
    torch.testing.assert_close(gx, gx_explicit)


def test_relation_shapes_and_stochastic_rows():
    module = make((3, 4)).eval()
    _, g, l = module(torch.randn(2, 6, 12, 20, dtype=torch.float64), return_relations=True)
    assert g.shape == (2, 12, 20, 20) and l.shape == (2, 20, 12, 12)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 12, 20, dtype=torch.float64))
    torch.testing.assert_close(l.sum(-1), torch.ones(2, 20, 12, dtype=torch.float64))


@pytest.mark.parametrize("train", [False, True])
def test_one_global_group_is_self_attention(train):
    """With P = 1 the single global group is the whole map: ISA('global',) == SA."""
    torch.manual_seed(1)
    isa = InterlacedSparseSelfAttention(6, 3, 4, 5, groups=(1, 1), stages=("global",)).double().train(train)
    sa = SelfAttention(6, 3, 4, 5).double().train(train)
    sa.load_state_dict(isa.stage("global").state_dict())
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    y_isa, g, l = isa(x, return_relations=True)
    y_sa, relation = sa(x, return_relations=True)
    torch.testing.assert_close(y_isa, y_sa)
    torch.testing.assert_close(g[:, 0], relation)
    assert l is None


def test_one_local_group_is_self_attention():
    """With P = (H, W) a single local group covers the map: ISA('local',) == SA."""
    torch.manual_seed(2)
    isa = InterlacedSparseSelfAttention(6, groups=(5, 7), stages=("local",)).double().eval()
    sa = SelfAttention(6).double().eval()
    sa.load_state_dict(isa.stage("local").state_dict())
    x = torch.randn(1, 6, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(isa(x), sa(x))


@pytest.mark.parametrize("stages", [("global", "local"), ("local", "global"), ("global",), ("local",)])
def test_stage_orders(stages):
    module = make((2, 4), stages=stages).eval()
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    y, g, l = module(x, return_relations=True)
    assert y.shape == (1, 5, 8, 8)
    assert (g is None) == ("global" not in stages) and (l is None) == ("local" not in stages)
    if len(stages) == 2:
        dense = dense_relation(g, l, (2, 4), (8, 8), stages=stages)
        matrix, offset = affine_form(module)
        z = dense @ rearrange(x, "b c h w -> b (h w) c") @ matrix + offset
        torch.testing.assert_close(rearrange(y, "b c h w -> b (h w) c"), z)


def test_orders_differ():
    """Global+Local and Local+Global are different operators (Table 1 compares them)."""
    a = make((2, 2), stages=("global", "local")).eval()
    b = make((2, 2), stages=("local", "global")).eval()
    b.stage("global").load_state_dict(a.stage("local").state_dict())
    b.stage("local").load_state_dict(a.stage("global").state_dict())
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    assert not torch.allclose(a(x), b(x))


@pytest.mark.parametrize("height, width, groups", [(5, 7, (4, 4)), (3, 3, (8, 8)), (1, 1, (8, 8)), (9, 16, (8, 8))])
def test_any_size_pads_and_masks(height, width, groups):
    module = make(groups).eval()
    x = torch.randn(2, 6, height, width, dtype=torch.float64)
    y, g, l = module(x, return_relations=True)
    assert y.shape == (2, 5, height, width) and torch.isfinite(y).all()
    grid_h, grid_w = (-(-height // groups[0]) * groups[0], -(-width // groups[1]) * groups[1])
    valid = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    valid[:height, :width] = True
    glob_valid = rearrange(valid, "(qh ph) (qw pw) -> (ph pw) (qh qw)", ph=groups[0], pw=groups[1])
    loc_valid = rearrange(valid, "(qh ph) (qw pw) -> (qh qw) (ph pw)", ph=groups[0], pw=groups[1])
    # padded keys get exactly zero weight from every real query
    for relation, member_valid in ((g, glob_valid), (l, loc_valid)):
        real_rows = relation[:, member_valid]  # [B, real queries, members]
        group_of_row = member_valid.nonzero()[:, 0]
        key_valid = member_valid[group_of_row]
        assert torch.all(real_rows[:, ~key_valid] == 0)
        torch.testing.assert_close(real_rows.sum(-1), torch.ones_like(real_rows.sum(-1)))
    # the padded module equals the explicit form on the real pixels
    dense = dense_relation(g, l, groups, (height, width))
    matrix, offset = affine_form(module)
    z = dense @ rearrange(x, "b c h w -> b (h w) c") @ matrix + offset
    torch.testing.assert_close(rearrange(y, "b c h w -> b (h w) c"), z)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(groups=(0, 8)), "positive"),
        (dict(groups=(-1, 2)), "positive"),
        (dict(groups=(2, 2, 2)), "pair"),
        (dict(groups=(2.0, 2)), "pair"),
        (dict(stages=("global", "global")), "without repetition"),
        (dict(stages=("middle",)), "without repetition"),
        (dict(stages=()), "without repetition"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InterlacedSparseSelfAttention(8, **kwargs)


@pytest.mark.parametrize("shape, message", [((8, 4, 4), "4-D"), ((1, 7, 4, 4), "8 input channels")])
def test_bad_input(shape, message):
    module = InterlacedSparseSelfAttention(8, groups=(2, 2))
    with pytest.raises(ValueError, match=message):
        module(torch.randn(*shape))


def test_unknown_stage_lookup():
    with pytest.raises(ValueError, match="no 'local' stage"):
        InterlacedSparseSelfAttention(8, stages=("global",)).stage("local")


def test_relations_come_as_a_named_tuple():
    module = make((3, 4)).eval()
    x = torch.randn(2, 6, 12, 20, dtype=torch.float64)
    out = module(x, return_relations=True)
    assert isinstance(out, ISAOutput)
    torch.testing.assert_close(out.output, module(x))
    assert out.global_relation.shape == (2, 12, 20, 20) and out.local_relation.shape == (2, 20, 12, 12)


def test_fused_flag_is_the_stages_flag():
    """ISA has no flag of its own: ``fused`` reads and sets both stages' flags, and the explicit
    path (all flags off) gives the fused path's numbers."""
    module = make((2, 4)).eval()
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    y_fused = module(x)
    module.fused = False
    assert not module.stage("global").fused and not module.stage("local").fused and not module.fused
    torch.testing.assert_close(module(x), y_fused)
    module.stage("global").fused = True
    assert not module.fused  # only when every stage is fused
    module.fused = True
    assert module.stage("local").fused and module.fused
