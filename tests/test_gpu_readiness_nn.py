"""Issue 16, the ``nn``/``heads`` items, checked on the CPU.

* every parameter of every context module gets a gradient after one backward (the condition DDP
  without ``find_unused_parameters`` needs), in the default options and the ablation sweep's;
* ``nn.relation`` runs on the ``meta`` device without creating a CPU tensor;
* DANet's channel attention and CGNL's group sums do not overflow float16;
* ISA keeps a ``channels_last`` input ``channels_last``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from einops import rearrange
from torch import nn

from helpers import CPUTensorCreations

from ocnet_edu.backbones import build_backbone
from ocnet_edu.engine.builders import build_model
from ocnet_edu.experiments.ablations import TABLES, build_config, table_runs
from ocnet_edu.heads import CONTEXT_MODULE_NAMES, RCCAHead
from ocnet_edu.heads.cgnl import CGNLBlock, CGNLHead
from ocnet_edu.heads.danet import ChannelAttention, DANetHead
from ocnet_edu.model import OCNet
from ocnet_edu.nn import relation
from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention, grouped_attention
from ocnet_edu.nn.tracing import crop

# --- every parameter gets a gradient (DDP without find_unused_parameters) ----------------------------


def params_without_grad(model: OCNet, side: int) -> list[str]:
    """Names of the trainable parameters left without ``.grad`` by one backward of the OCNet loss."""
    model.train()
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, side, side, generator=generator)
    target = torch.randint(0, model.num_classes, (2, side, side), generator=generator)
    model.loss(model(images), target).backward()
    return [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]


@pytest.mark.parametrize("name", CONTEXT_MODULE_NAMES)
def test_every_parameter_gets_a_gradient_default_options(name, one_thread):
    torch.manual_seed(0)
    backbone = build_backbone("small", width=8, blocks=[1, 1, 1], head_kernel=1)
    assert params_without_grad(OCNet(backbone, name, num_classes=5), side=48) == []


SWEEP_RUNS = {f"{run.table}: {run.method}": run for table in TABLES for run in table_runs(table)}


@pytest.mark.parametrize("key", sorted(SWEEP_RUNS))
def test_every_parameter_gets_a_gradient_in_the_ablation_sweep(key, tmp_path, one_thread):
    """The models of ``ocnet_edu.experiments.ablations`` (the ``control`` run among them)."""
    torch.manual_seed(0)
    cfg = build_config(SWEEP_RUNS[key], seed=0, iters=1, dry_run=True, out_dir=tmp_path)
    assert params_without_grad(build_model(cfg), side=min(cfg.data.crop_size)) == []


def test_rcca_control_builds_no_attention():
    head = RCCAHead(16, channels=8, recurrence=0)
    assert head.cca is None
    assert not any("cca" in name for name, _ in head.named_parameters())
    assert RCCAHead(16, channels=8, recurrence=1).cca is not None
    assert head(torch.randn(1, 16, 5, 6)).shape == (1, 8, 5, 6)


def test_ablation_control_run_still_trains(tmp_path, one_thread):
    """The control row's model trains a step with every parameter updated by SGD."""
    cfg = build_config(SWEEP_RUNS["control: rcca without attention"], seed=0, iters=1, dry_run=True, out_dir=tmp_path)
    model = build_model(cfg)
    assert cfg.model.context == "rcca" and model.context.recurrence == 0
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert params_without_grad(model, side=32) == []
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {name for name, _ in model.named_parameters()}


# --- meta device: no CPU tensor is created -----------------------------------------------------------


def bias_free(module: nn.Module) -> nn.Module:
    """``module`` with every convolution's bias removed (the path that builds a zero bias)."""
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            conv.bias = None
    return module


def test_relation_functions_run_on_meta_without_cpu_tensors():
    meta = torch.device("meta")
    isa = bias_free(InterlacedSparseSelfAttention(8, groups=(2, 2))).to(meta)
    sa = bias_free(SelfAttention(8)).to(meta)
    x = torch.empty(1, 3, 5, 7, device=meta)
    with CPUTensorCreations() as created:
        results = [
            relation.permutation_indices(12, 3, device=meta),
            relation.permutation_matrix(12, 3, dtype=torch.float16, device=meta),
            relation.eq23_columns(12, 3, device=meta),
            relation.raster_permutation((4, 6), (2, 3), "global", device=meta),
            relation.raster_permutation_matrix((4, 6), (2, 3), dtype=torch.float64, device=meta),
            relation.block_diagonal(torch.empty(2, 3, 4, 4, device=meta)),
        ]
        y, global_rel, local_rel = relation.transform_free_isa(x, (2, 2), return_relations=True)
        results += [y, relation.dense_relation(global_rel, local_rel, (2, 2), (5, 7))]
        results += relation.visualize_relation(1, 2, (5, 7), (2, 2), global_rel[0], local_rel[0])
        for module in (isa, sa):
            results += relation.affine_form(module)
    assert created.ops == []
    assert all(t.device == meta for t in results)
    assert results[1].dtype == torch.float16 and results[4].dtype == torch.float64
    assert results[7].shape == (1, 35, 35)


def test_permutation_matrices_with_device_and_dtype_equal_the_defaults():
    assert torch.equal(relation.permutation_matrix(12, 3, torch.float64, "cpu"),
                       relation.permutation_matrix(12, 3).double())
    assert torch.equal(relation.raster_permutation_matrix((4, 6), (2, 3), "local", torch.float64, "cpu"),
                       relation.raster_permutation_matrix((4, 6), (2, 3)).double())
    for order in ("global", "local"):  # S @ x_flat is x_flat in that order
        pixels = torch.arange(24.0, dtype=torch.float64)
        assert torch.equal(relation.raster_permutation_matrix((4, 6), (2, 3), order, torch.float64) @ pixels,
                           pixels[relation.raster_permutation((4, 6), (2, 3), order)])


def test_block_diagonal_keeps_the_dtype_of_its_blocks():
    blocks = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert relation.block_diagonal(blocks.to(dtype)).dtype == dtype


def test_crop_gathers_on_the_device_of_its_input_for_any_leading_axes():
    with CPUTensorCreations() as created:
        out = crop(torch.empty(2, 3, 5, 7, device="meta"), (1, 4), (2, 6))
    assert created.ops == [] and out.shape == (2, 3, 3, 4)
    x = torch.arange(60.0).reshape(3, 4, 5)  # [C, H, W], and a bare [H, W]
    assert torch.equal(crop(x, (1, 3), (0, 4)), x[..., 1:3, 0:4])
    assert torch.equal(crop(x[0], (2, 4), (1, 5)), x[0, 2:4, 1:5])


@pytest.mark.parametrize("train", [False, True])
def test_isa_default_path_on_a_padded_meta_map_creates_no_cpu_tensor(train):
    """The lean path's index tensors (grouping a padded map by slot) and masks are made on the
    input's device: meta stands in for CUDA, where a CPU index would fail."""
    isa = InterlacedSparseSelfAttention(8, groups=(2, 2)).to("meta").train(train)
    x = torch.empty(2, 8, 5, 7, device="meta", requires_grad=train)
    with torch.set_grad_enabled(train), CPUTensorCreations() as created:
        y = isa(x)
    assert created.ops == [] and y.shape == (2, 8, 5, 7) and y.device.type == "meta"


# --- float16: no overflow in DANet's channel attention and CGNL --------------------------------------


def activations(channels: int, scale: float = 4.5) -> torch.Tensor:
    """float16 activations of magnitude ``scale`` on a 64×128 map (a Cityscapes feature map)."""
    generator = torch.Generator().manual_seed(0)
    return (torch.randn(1, channels, 64, 128, generator=generator) * scale).half()


def test_channel_attention_float16_is_finite_and_equals_float32():
    """``X Xᵀ`` sums 8192 products of ~20: about 1.7e5 > 65504, which used to give inf − inf = NaN."""
    x = activations(8)
    assert torch.isinf(torch.einsum("bcn,bdn->bcd", x.flatten(2), x.flatten(2))).any()  # the overflow
    cam = ChannelAttention()
    with torch.no_grad():
        cam.gamma.fill_(1.0)
    reference, reference_relation = cam(x.float(), return_relations=True)
    y, rel = cam.half()(x, return_relations=True)
    assert y.dtype == rel.dtype == torch.float16
    assert torch.isfinite(y).all() and torch.isfinite(rel).all()
    torch.testing.assert_close(y.float(), reference, rtol=1e-2, atol=2e-2)
    torch.testing.assert_close(rel.float(), reference_relation, rtol=1e-2, atol=1e-3)


def test_cgnl_float16_is_finite_and_equals_float32():
    """The per-group sum over c·h·w (here 4·64·128 products) overflows float16."""
    x = activations(16)
    block = CGNLBlock(16, channel_groups=4).eval()
    reference = block(x.float())
    y = copy.deepcopy(block).half()(x)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), reference, rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("head_class", [CGNLHead, DANetHead])
def test_heads_under_cpu_autocast_float16_are_finite(head_class):
    """Under autocast the reductions still run in float32 (autocast would cast an einsum to float16)."""
    torch.manual_seed(0)
    head = head_class(8, channels=16).eval()
    for module in head.modules():
        if hasattr(module, "gamma"):
            nn.init.ones_(module.gamma)
    x = activations(8, scale=12.0).float()  # the reduction's output is then ~4.5 as above
    reference = head(x)
    with torch.autocast("cpu", dtype=torch.float16):
        y = head(x)
    assert torch.isfinite(y).all()
    # float16 convolutions around the reductions: compare relative to the whole output
    assert (y.float() - reference).norm() / reference.norm() < 5e-3


def test_channel_attention_float64_stays_float64():
    """Only lower precisions are raised to float32."""
    cam = ChannelAttention().double()
    x = torch.randn(1, 16, 5, 6, dtype=torch.float64)
    flat = x.flatten(2)
    energy = torch.einsum("bcn,bdn->bcd", flat, flat)
    expected = (energy.amax(dim=-1, keepdim=True) - energy).softmax(dim=-1)
    assert torch.equal(cam(x, return_relations=True).relation, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cgnl_float32_and_float64_paths_are_unchanged(dtype):
    """In float32 and float64 the block computes bit for bit what it computed before (no casts)."""
    torch.manual_seed(0)
    block = CGNLBlock(16, channel_groups=4).to(dtype).eval()
    x = torch.randn(2, 16, 6, 7, dtype=dtype)
    phi = rearrange(block.phi(x), "b (g c) h w -> b g (c h w)", g=4)
    g = rearrange(block.g(x), "b (g c) h w -> b g (c h w)", g=4)
    attention = torch.einsum("bgn,bgn->bg", phi, g)
    theta = rearrange(block.theta(x), "b (g c) h w -> b g c h w", g=4)
    out = rearrange(torch.einsum("bg,bgchw->bgchw", attention, theta), "b g c h w -> b (g c) h w")
    assert torch.equal(block(x), block.norm(block.z(out)) + x)


# --- channels_last ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_isa_keeps_channels_last(size):
    torch.manual_seed(0)
    module = InterlacedSparseSelfAttention(8, groups=(2, 2)).eval()
    x = torch.randn(2, 8, *size)
    x_last = x.contiguous(memory_format=torch.channels_last)
    y, y_last = module(x), module(x_last)
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    assert y.is_contiguous()
    torch.testing.assert_close(y_last, y, rtol=1e-5, atol=1e-6)


def test_grouped_attention_output_has_the_input_memory_format():
    """ρ sees a channels_last map when θ, φ, δ gave one (and the same values as in NCHW)."""
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 9) for _ in range(3))
    out = grouped_attention(query, key, value, "global", (2, 2)).output
    last = [t.contiguous(memory_format=torch.channels_last) for t in (query, key, value)]
    out_last = grouped_attention(*last, "global", (2, 2)).output
    assert out_last.is_contiguous(memory_format=torch.channels_last) and out.is_contiguous()
    torch.testing.assert_close(out_last, out, rtol=1e-5, atol=1e-6)
