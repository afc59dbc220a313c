"""Block diagrams traced from the modules: shapes, parameters and wiring equal the modules' own."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from ocnet_edu.diagrams import block_description, draw_blocks, trace_blocks
from ocnet_edu.heads import build_context_module
from ocnet_edu.model import OCNet

HEADS = [("base_oc_isa", ()), ("base_oc_sa", ()), ("pyramid_oc_isa", ()), ("asp_oc_isa", ("atrous",))]


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(0)
    return torch.randn(2, 24, 12, 12)


@pytest.mark.parametrize("name,expand", HEADS)
def test_parameters_and_output_equal_the_module(name, expand, x):
    torch.manual_seed(0)
    head = build_context_module(name, in_channels=24, channels=16).eval()
    blocks = trace_blocks(head, x, expand=expand)
    assert blocks[0].name == "input" and blocks[0].out_shape == tuple(x.shape)
    assert blocks[-1].name == "output" and blocks[-1].out_shape == tuple(head(x).shape)
    parts = blocks[1:-1]
    assert sum(b.params for b in parts) == n_params(head)
    for block in parts:
        assert block.params == n_params(head.get_submodule(block.name))
        assert block.type == type(head.get_submodule(block.name)).__name__
        assert block.calls >= 1
    assert head.training is False  # the mode is left as it was


def test_base_oc_shapes_and_wiring(x):
    head = build_context_module("base_oc_isa", in_channels=24, channels=16).eval()
    blocks = {b.name: b for b in trace_blocks(head, x)}
    with torch.no_grad():
        reduced = head.reduce(x)
        context = head.ocp(reduced)
    assert blocks["reduce"].in_shape == tuple(x.shape) and blocks["reduce"].out_shape == tuple(reduced.shape)
    assert blocks["ocp"].in_shape == tuple(reduced.shape) and blocks["ocp"].out_shape == tuple(context.shape)
    assert blocks["fuse"].in_shape == (2, 32, 12, 12)  # the concatenation of context and reduced
    assert set(blocks["fuse"].sources) == {"reduce", "ocp"} and blocks["fuse"].concat
    assert blocks["ocp"].sources == ("reduce",) and not blocks["ocp"].concat
    assert blocks["reduce"].sources == ("input",)
    assert blocks["output"].sources == ("fuse",)


def test_pyramid_oc_regions_and_asp_oc_branches(x):
    pyramid = build_context_module("pyramid_oc_isa", in_channels=24, channels=16, groups=(2, 2)).eval()
    blocks = {b.name: b for b in trace_blocks(pyramid, x)}
    # one OCP per level; 12 = 3 * 4 = 6 * 2: every level divides the map, one call each
    for level, k in enumerate(pyramid.pyramid):
        block = blocks[f"ocps.{level}"]
        assert block.in_shape == (2 * k * k, 16, 12 // k, 12 // k) and block.calls == 1
        assert block.sources == ("reduce",)
    assert blocks["fuse"].in_shape[1] == 4 * 16 + 4 * 16 and blocks["fuse"].concat
    assert set(blocks["fuse"].sources) == {"ocps.0", "ocps.1", "ocps.2", "ocps.3", "expand"}
    # a size that 3 and 6 do not divide: the region bands run as several calls of one OCP
    uneven = trace_blocks(pyramid, torch.randn(1, 24, 13, 13))
    calls = {b.name: b.calls for b in uneven}
    assert calls["ocps.0"] == 1 and calls["ocps.2"] == 4 and calls["ocps.3"] == 4

    asp = build_context_module("asp_oc_isa", in_channels=24, channels=8).eval()
    blocks = {b.name: b for b in trace_blocks(asp, x, expand=("atrous",))}
    branches = ["ocp", "atrous.pointwise", "atrous.dilated.0", "atrous.dilated.1", "atrous.dilated.2"]
    assert set(blocks["fuse"].sources) == set(branches) and blocks["fuse"].in_shape[1] == 5 * 8
    assert all(blocks[b].out_shape == (2, 8, 12, 12) for b in branches)
    assert blocks["atrous.dilated.1"].sources == ("input",) and blocks["ocp"].sources == ("reduce",)
    # without expand, the branches are one part whose output is a list of shapes
    whole = {b.name: b for b in trace_blocks(asp, x)}
    assert whole["atrous"].out_shape == ((2, 8, 12, 12),) * 4
    with pytest.raises(ValueError, match="expand"):
        trace_blocks(asp, x, expand=("nonexistent",))


def test_parts_that_do_not_run_and_meta_tensors():
    with torch.device("meta"):
        net = OCNet("small", "base_oc_isa", num_classes=3).eval()
    blocks = {b.name: b for b in trace_blocks(net, torch.empty(1, 3, 32, 32, device="meta"))}
    assert blocks["aux_head"].calls == 0 and blocks["aux_head"].in_shape is None  # eval(): no aux head
    assert blocks["context"].sources == ("backbone",)
    assert blocks["output"].out_shape == (1, 3, 32, 32)
    assert sum(b.params for b in blocks.values()) == n_params(net)


def test_block_description():
    assert block_description(nn.Sequential(nn.Conv2d(4, 4, 3, dilation=12), nn.ReLU())) == "3×3 conv, dilation 12"
    assert block_description(nn.Conv2d(4, 2, 1)) == "1×1 conv"
    assert block_description(nn.Dropout2d()) == "Dropout2d"


def test_draw_blocks_nodes_and_arrows(x):
    head = build_context_module("base_oc_isa", in_channels=24, channels=16).eval()
    blocks = trace_blocks(head, x)
    fig, ax = plt.subplots()
    positions = draw_blocks(blocks, ax, {"ocp": "ISA"}, title="Base-OC")
    assert set(positions) == {"input", "reduce", "ocp", "concat→fuse", "fuse", "output"}
    assert [positions[n][0] for n in ("input", "reduce", "ocp", "concat→fuse", "fuse", "output")] == list(range(6))
    # arrows: input→reduce, reduce→ocp, reduce→concat, ocp→concat, concat→fuse, fuse→output
    arrows = [a for a in ax.texts if getattr(a, "arrow_patch", None) is not None]
    assert len(arrows) == 6
    assert any("ISA" in t.get_text() for t in ax.texts)
    plt.close(fig)
