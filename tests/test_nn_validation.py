"""Issue 12: the public functions of ``nn.relation`` and ``nn.isa`` reject malformed arguments.

No silent wrong answer: a relation pair that does not fit ``groups`` and ``size`` (swapped, from
another grouping, another size or another batch) used to give a row-stochastic but wrong dense
matrix; now it raises ``ValueError`` naming the expected shapes. Integer and shape arguments are
checked for type (int, not bool/float) and range, with messages naming the argument.
"""

import re
import warnings

import pytest
import torch
from torch import nn

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.isa import (
    InterlacedSparseSelfAttention,
    check_groups,
    check_stages,
    grouped_attention,
    padded_size,
)
from ocnet_edu.nn.relation import (
    affine_form,
    block_diagonal,
    dense_relation,
    eq23_columns,
    permutation_indices,
    permutation_matrix,
    raster_permutation,
    raster_permutation_matrix,
    transform_free_isa,
    visualize_relation,
)


@pytest.fixture(scope="module")
def relations():
    """Relations of the transform-free ISA on a 4×8 map with groups (2, 2): G = 4, Q = 8."""
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _, global_rel, local_rel = transform_free_isa(x, (2, 2), return_relations=True)
    return global_rel, local_rel


def test_dense_relation_accepts_the_right_pair(relations):
    global_rel, local_rel = relations
    dense = dense_relation(global_rel, local_rel, (2, 2), (4, 8))
    assert dense.shape == (2, 32, 32)
    assert torch.allclose(dense.sum(-1), torch.ones(2, 32, dtype=torch.float64))


def test_dense_relation_rejects_swapped_relations(relations):
    global_rel, local_rel = relations
    with pytest.raises(ValueError, match=r"global_relation \[B, 4, 8, 8\] and local_relation \[B, 8, 4, 4\]"):
        dense_relation(local_rel, global_rel, (2, 2), (4, 8))


def test_dense_relation_rejects_wrong_groups(relations):
    """Relations of groups (2, 2) read with another number of groups are an error.

    (Groupings with the same ``P_h·P_w`` and ``Q_h·Q_w``, e.g. (1, 4) here, give relations of the
    same shapes and cannot be told apart by shape.)
    """
    global_rel, local_rel = relations
    for groups in [(4, 2), (2, 4), (1, 1), 4]:
        with pytest.raises(ValueError, match="expected global_relation"):
            dense_relation(global_rel, local_rel, groups, (4, 8))


def test_dense_relation_rejects_another_size(relations):
    global_rel, local_rel = relations
    with pytest.raises(ValueError, match=r"for size \(16, 16\)"):
        dense_relation(global_rel, local_rel, (2, 2), size=(16, 16))


def test_dense_relation_rejects_mixed_batch_sizes(relations):
    global_rel, local_rel = relations
    with pytest.raises(ValueError, match="one batch size"):
        dense_relation(global_rel, local_rel[:1], (2, 2), (4, 8))


def test_dense_relation_rejects_unbatched_and_unused_relations(relations):
    global_rel, local_rel = relations
    with pytest.raises(ValueError, match="expected global_relation"):
        dense_relation(global_rel[0], local_rel[0], (2, 2), (4, 8))
    with pytest.raises(ValueError, match="no 'local' stage"):
        dense_relation(global_rel, local_rel, (2, 2), (4, 8), stages=("global",))
    with pytest.raises(ValueError, match="local_relation must be a tensor"):
        dense_relation(global_rel, local_rel.tolist(), (2, 2), (4, 8))


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: permutation_matrix(-4, 2), "num_positions"),
        (lambda: permutation_matrix(10.0, 2), "num_positions"),
        (lambda: permutation_matrix(True, 1), "num_positions"),
        (lambda: permutation_matrix(8, 2.0), "num_groups"),
        (lambda: permutation_indices(8, -2), "num_groups"),
        (lambda: eq23_columns(0, 2), "num_positions"),
        (lambda: eq23_columns(9, 3.0), "num_groups"),
        (lambda: raster_permutation((4.0, 4), 2), r"size\[0\]"),
        (lambda: raster_permutation((4, 0), 2), r"size\[1\]"),
        (lambda: raster_permutation(16, 2), "size"),
        (lambda: raster_permutation_matrix((4, 4), 2.5), "groups"),
        (lambda: raster_permutation_matrix((4, 4, 1), 2), "size"),
        (lambda: padded_size((7, 9), 2.5), "groups"),
        (lambda: padded_size((7, -9), 2), r"size\[1\]"),
        (lambda: padded_size((7, True), 2), r"size\[1\]"),
        (lambda: dense_relation(None, None, 2.5, (4, 8)), "groups"),
        (lambda: dense_relation(None, None, (2, 2), (4.0, 8)), r"size\[0\]"),
        (lambda: transform_free_isa(torch.randn(1, 3, 4, 4), 2.5), "groups"),
        (lambda: transform_free_isa(torch.randn(1, 3, 4, 4), 2, stages=5), "stages"),
        (lambda: transform_free_isa([[1.0]], 2), "x"),
        (lambda: visualize_relation(1.0, 0, (4, 4), 2, torch.ones(4, 4, 4), torch.ones(4, 4, 4)), "i"),
        (lambda: visualize_relation(0, True, (4, 4), 2, torch.ones(4, 4, 4), torch.ones(4, 4, 4)), "j"),
        (lambda: visualize_relation(0, 0, (4, 4.0), 2, torch.ones(4, 4, 4), torch.ones(4, 4, 4)), r"size\[1\]"),
        (lambda: block_diagonal([[[1.0]]]), "blocks"),
        (lambda: affine_form(nn.Conv2d(3, 3, 1)), "module"),
        (lambda: check_groups(2.5), "groups"),
        (lambda: check_groups(True), "groups"),
        (lambda: check_groups("22"), "groups"),
        (lambda: check_stages(None), "stages"),
        (lambda: InterlacedSparseSelfAttention(8, groups=2.5), "groups"),
        (lambda: InterlacedSparseSelfAttention(8, key_channels=True), "key_channels"),
        (lambda: InterlacedSparseSelfAttention(8.0), "in_channels"),
    ],
)
def test_bad_argument_is_named(call, name):
    """Each malformed argument raises ``ValueError`` whose message names it, spelled as in the
    signature (a whole word: not inside another word, not in other case)."""
    with pytest.raises(ValueError, match=rf"(?<!\w){name}(?!\w)"):
        call()


def test_numpy_integers_are_accepted():
    np = pytest.importorskip("numpy")
    assert torch.equal(permutation_matrix(np.int64(12), np.int32(3)), permutation_matrix(12, 3))
    assert padded_size((np.int64(7), 9), (2, 2)) == (8, 10)


def test_padded_size_is_integer_rounding_up():
    assert padded_size((7, 9), (2, 4)) == (8, 12)
    assert padded_size((8, 8), 4) == (8, 8)
    assert all(type(s) is int for s in padded_size((7, 9), (2, 4)))


@pytest.mark.parametrize(
    "shapes, stage, message",
    [
        (((1, 4, 4, 4), (1, 4, 4, 4), (1, 2, 4, 4)), "middle", "stage"),
        (((1, 4, 16), (1, 4, 16), (1, 2, 16)), "global", "4-D"),
        (((1, 4, 4, 4), (1, 4, 4, 5), (1, 2, 4, 4)), "global", "one b, h, w"),
        (((1, 4, 4, 4), (2, 4, 4, 4), (1, 2, 4, 4)), "local", "one b, h, w"),
        (((1, 4, 4, 4), (1, 3, 4, 4), (1, 2, 4, 4)), "local", "one b, h, w"),
    ],
)
def test_grouped_attention_checks_its_maps(shapes, stage, message):
    query, key, value = (torch.randn(*shape) for shape in shapes)
    with pytest.raises(ValueError, match=message):
        grouped_attention(query, key, value, stage, (2, 2))


def test_grouped_attention_checks_groups():
    x = torch.randn(1, 4, 4, 4)
    with pytest.raises(ValueError, match="groups"):
        grouped_attention(x, x, x, "global", 2.5)


def test_self_attention_rejects_bool_widths():
    with pytest.raises(ValueError, match="out_channels"):
        SelfAttention(8, out_channels=True)


def test_smallest_grouping_and_the_divisibility_message():
    """N = P = 1 is a valid grouping; N not a multiple of P is refused with the reason."""
    assert torch.equal(permutation_matrix(1, 1), torch.ones(1, 1)) and eq23_columns(1, 1).tolist() == [0]
    with pytest.raises(ValueError, match=r"^num_positions=12 is not divisible by num_groups=5; the interlaced grouping needs N = P·Q$"):
        permutation_matrix(12, 5)
    for call, message in ((lambda: permutation_matrix(0, 1), "num_positions must be a positive int, got 0"),
                          (lambda: permutation_matrix(4, 0), "num_groups must be a positive int, got 0"),
                          (lambda: eq23_columns(0, 1), "num_positions must be a positive int, got 0"),
                          (lambda: eq23_columns(4, 0), "num_groups must be a positive int, got 0")):
        with pytest.raises(ValueError, match=f"^{message}$"):
            call()


@pytest.mark.parametrize("i, j", [(-1, 0), (4, 0), (0, -1), (0, 8), (4, 8)])
def test_visualize_relation_refuses_a_pixel_outside_the_map(i, j):
    with pytest.raises(ValueError, match=rf"^pixel \({i}, {j}\) is outside the map of size \(4, 8\)$"):
        visualize_relation(i, j, (4, 8), 2, torch.ones(4, 8, 8), torch.ones(8, 4, 4))
    assert visualize_relation(3, 7, (4, 8), 2, torch.ones(4, 8, 8), torch.ones(8, 4, 4))[2].shape == (4, 8)  # the last pixel


def test_visualize_relation_checks_both_relations():
    # size (4, 8), groups (2, 2): Q = (2, 4); global relation [P, Q, Q] = [4, 8, 8], local [Q, P, P] = [8, 4, 4]
    right_global, right_local = torch.ones(4, 8, 8), torch.ones(8, 4, 4)
    for global_rel, local_rel in ((right_global, torch.ones(8, 4, 5)), (torch.ones(4, 8, 9), right_local)):
        with pytest.raises(ValueError, match=r"expected relations of shapes \(4, 8, 8\) and \(8, 4, 4\) \(one image\)"):
            visualize_relation(0, 0, (4, 8), 2, global_rel, local_rel)
    with pytest.raises(ValueError, match=r"^global_relation and local_relation must be tensors \(one image's relations\)$"):
        visualize_relation(0, 0, (4, 8), 2, right_global.tolist(), right_local)


def test_transform_free_isa_names_the_shape_it_got_and_returns_what_is_asked():
    with pytest.raises(ValueError, match=r"x must be a 4-D tensor \[B, C, H, W\], got shape \(3, 4, 4\)"):
        transform_free_isa(torch.randn(3, 4, 4), 2)
    y = transform_free_isa(torch.randn(1, 3, 4, 4), 2)
    assert isinstance(y, torch.Tensor) and y.shape == (1, 3, 4, 4)


def test_affine_form_names_the_type_it_got():
    with pytest.raises(ValueError, match="^module must be a SelfAttention or an InterlacedSparseSelfAttention, got Conv2d$"):
        affine_form(nn.Conv2d(3, 3, 1))


def test_conv_matrix_of_a_bias_free_convolution_keeps_its_dtype():
    # conv(x) = x A + a per pixel; a bias-free float64 conv has a float64 zero offset (the
    # products of affine_form, a @ B, need one dtype)
    from ocnet_edu.nn.relation import _conv_matrix

    conv = nn.Conv2d(3, 2, 1, bias=False).double()
    weight, bias = _conv_matrix(conv)
    x = torch.randn(5, 3, dtype=torch.float64)
    assert bias.dtype == torch.float64 and torch.equal(bias, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(x @ weight + bias, conv(x[:, :, None, None])[:, :, 0, 0])


def test_algorithm1_and_axial_stages_refuse_what_they_cannot_do():
    from ocnet_edu.nn.reference import algorithm1_isa
    from ocnet_edu.nn.zoo import AxialAttention

    identity = lambda t: t  # noqa: E731
    for size in ((5, 4), (4, 5)):  # one axis not divisible is enough
        with pytest.raises(ValueError, match=rf"^Algorithm 1 needs H % P_h == 0 and W % P_w == 0, got \({size[0]}, {size[1]}\) and \(2, 2\)$"):
            algorithm1_isa(torch.randn(1, 3, *size), identity, identity, 2, 2)
    with pytest.raises(ValueError, match=r"^unknown stage 'diagonal'; valid: \('row', 'column'\)$"):
        AxialAttention(8).stage("diagonal")


def test_flavour_and_window_messages_name_the_value():
    from ocnet_edu.nn.flavour import Flavour
    from ocnet_edu.nn.zoo import WindowAttention

    with pytest.raises(ValueError, match=r"^rho must be one of \('conv', 'conv_bn_act'\), got 'bn'$"):
        Flavour("mine", rho="bn")
    with pytest.raises(ValueError, match=r"^pool must be one of \('avg-ceil', 'max-floor'\), got 'max'$"):
        Flavour("mine", pool="max")
    with pytest.raises(ValueError, match=r"^the map \(5, 4\) is not a multiple of the window \(2, 2\)$"):
        WindowAttention(4, (2, 2))(torch.randn(1, 4, 5, 4))


def test_relation_messages_list_the_shapes_and_types_they_got(relations):
    global_rel, local_rel = relations  # size (4, 8), groups (2, 2): [B, 4, 8, 8] and [B, 8, 4, 4]
    with pytest.raises(ValueError, match=r"; got shapes \{'global': \(2, 4, 8, 9\), 'local': None\}$"):
        dense_relation(torch.ones(2, 4, 8, 9), None, (2, 2), (4, 8), stages=("global",))
    with pytest.raises(ValueError, match=r"^local_relation must be a tensor, got list$"):
        dense_relation(global_rel, local_rel.tolist(), (2, 2), (4, 8))
    with pytest.raises(ValueError, match=r"^blocks must be a tensor \[\.\.\., G, n, n\], got list$"):
        block_diagonal([[[1.0]]])


def test_block_diagonal_keeps_the_dtype_and_the_default_order_is_local():
    from ocnet_edu.nn.relation import block_diagonal as bd

    blocks = torch.arange(8, dtype=torch.float64).reshape(2, 2, 2) / 3
    out = bd(blocks)
    assert out.dtype == torch.float64 and torch.equal(out[:2, :2], blocks[0]) and torch.equal(out[2:, 2:], blocks[1])
    assert torch.equal(raster_permutation((4, 6), 2), raster_permutation((4, 6), 2, "local"))
    assert not torch.equal(raster_permutation((4, 6), 2), raster_permutation((4, 6), 2, "global"))


def test_check_int_messages_say_what_was_wanted():
    from ocnet_edu.nn.layers import check_int, check_size

    for value, minimum, message in ((-1, 0, "x must be a non-negative int, got -1"), (0, 1, "x must be a positive int, got 0"),
                                    (1, 2, "x must be an int >= 2, got 1"), (2.0, None, "x must be an int, got 2.0 (float)")):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            check_int(value, "x", minimum)
    with pytest.raises(ValueError, match=r"^size\[0\] must be a positive int, got 0$"):
        check_size((0, 3), "size")


def test_float32_region_turns_autocast_off_on_every_autocast_device():
    from types import SimpleNamespace

    from ocnet_edu.nn.layers import float32_region

    for device in ("cuda", "cpu", "xpu", "mps"):  # a stand-in tensor: only its device type is read
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # autocast warns that a device is not available here
            region = float32_region(SimpleNamespace(device=torch.device(device)))
        assert isinstance(region, torch.autocast) and region.device == device and not region._enabled
    assert not isinstance(float32_region(torch.empty(1, device="meta")), torch.autocast)


def test_grouped_attention_map_checks_each_map():
    x = torch.randn(1, 4, 4, 4)
    for query, key, value in ((x, x, x[0]), (x, x[0], x), (x[0], x, x)):
        with pytest.raises(ValueError, match=r"^query, key and value must be 4-D maps \[b, c, h, w\], got shapes \["):
            grouped_attention(query, key, value, "global", (2, 2))
    with pytest.raises(ValueError, match=r"got shapes \(query, key, value\) \[\(1, 4, 4, 4\), \(1, 3, 4, 4\), \(1, 4, 4, 4\)\]$"):
        grouped_attention(x, x[:, :3], x, "global", (2, 2))
    assert grouped_attention(x, x, x, "global", (2, 2)).relation is None  # the relation only when asked for
    assert grouped_attention(x, x, x, "global", (2, 2), return_relations=True).relation.shape == (1, 4, 4, 4)


def test_raster_permutation_refuses_with_the_reason():
    with pytest.raises(ValueError, match=r"^size \(4, 5\) is not divisible by groups \(2, 2\); pad it first \(see padded_size\)$"):
        raster_permutation((4, 5), 2)
    with pytest.raises(ValueError, match=r"^size \(5, 4\) is not divisible by groups \(2, 2\)"):
        raster_permutation((5, 4), 2)
    with pytest.raises(ValueError, match=r"^order must be one of \('local', 'global'\), got 'raster'$"):
        raster_permutation((4, 4), 2, "raster")


def test_a_strided_nchw_view_is_regrouped_in_nchw():
    from ocnet_edu.nn.isa import _memory_format

    x = torch.randn(1, 3, 8, 8)
    assert _memory_format(x[..., ::2]) == torch.contiguous_format
    assert _memory_format(x.to(memory_format=torch.channels_last)) == torch.channels_last


@pytest.mark.parametrize("widths, name, value", [((8, 0, 4, 8), "key_channels", 0), ((8, 4, 0, 8), "value_channels", 0),
                                                 ((8, 4, 4, -2), "out_channels", -2), ((8, 4, 2.0, 8), "value_channels", 2.0)])
def test_attention_widths_are_named_when_wrong_and_one_channel_is_enough(widths, name, value):
    from ocnet_edu.nn.attention import attention_channels

    with pytest.raises(ValueError, match=rf"^{name} must be a positive int, got {value!r}$"):
        attention_channels(*widths)
    assert attention_channels(2, 1, 1, 1) == (1, 1, 1)


@pytest.mark.parametrize("module", [SelfAttention(8), InterlacedSparseSelfAttention(8, groups=2)])
def test_a_wrong_channel_count_names_the_module_and_both_counts(module):
    x = torch.zeros(1, 4, 6, 5)
    with pytest.raises(ValueError, match=rf"^{type(module).__name__} was built for 8 input channels, got 4 "
                                         r"\(shape \(1, 4, 6, 5\)\)$"):
        module(x)
    assert module.in_channels == 8


def test_the_blocks_of_the_heads_keep_their_options():
    from ocnet_edu.nn.layers import activation, conv_bn_act, conv_bn_relu

    assert type(activation()) is nn.ReLU and activation().inplace
    leaky = activation(0.2)
    assert type(leaky) is nn.LeakyReLU and leaky.negative_slope == 0.2 and leaky.inplace
    block = conv_bn_relu(4, 6, 3, dilation=2)
    assert (block[0].kernel_size, block[0].dilation, block[0].padding) == ((3, 3), (2, 2), (2, 2))
    default = conv_bn_relu(4, 6)
    assert (default[0].kernel_size, default[0].dilation) == ((1, 1), (1, 1)) and type(default[2]) is nn.ReLU
    with pytest.raises(ValueError, match="^kernel_size must be odd for 'same' padding, got 2$"):
        conv_bn_act(4, 6, 2)
