"""ISA's default path (``isa_lean.lean_forward``) computes what the explicit path computes (issue 17).

The explicit path (``fused=False``) runs each stage through ``grouped_attention`` on maps; it is
checked against Algorithm 1 and the explicit matrices in ``test_isa.py``. Here the lean path must
give the same outputs, input and parameter gradients and batch-norm statistics, for every flavour,
stage order, padded size and memory format, with and without recomputation in backward.
"""

import copy

import pytest
import torch
from einops import rearrange

from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention
from ocnet_edu.nn.flavour import FLAVOURS
from ocnet_edu.profiling import peak_tensor_bytes
from helpers import RecordedOps, randomize_batch_norm

SIZES = [(8, 8), (7, 9), (12, 20)]


def make(flavour="paper", stages=("global", "local"), groups=(2, 4)):
    torch.manual_seed(0)
    module = InterlacedSparseSelfAttention(6, 3, 4, 5, groups=groups, stages=stages, flavour=flavour).double()
    return randomize_batch_norm(module)


def run(module, x, fused, recompute=True):
    """Output, gradients (input, parameters) and the buffers after one pass."""
    module = copy.deepcopy(module)
    module.fused, module.recompute = fused, recompute
    x = x.clone().requires_grad_(True)
    y = module(x)
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype).to(
        memory_format=torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
    grads = torch.autograd.grad((y * weights).sum(), [x, *module.parameters()])
    return y, grads, [b.clone() for b in module.buffers()]


def assert_same(a, b):
    (y_a, g_a, buf_a), (y_b, g_b, buf_b) = a, b
    torch.testing.assert_close(y_a, y_b)
    for u, v in zip(g_a, g_b):
        torch.testing.assert_close(u, v)
    for u, v in zip(buf_a, buf_b):
        torch.testing.assert_close(u, v, rtol=0, atol=0) if u.dtype == torch.long else torch.testing.assert_close(u, v)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("train", [False, True])
def test_lean_equals_explicit(size, flavour, train):
    module = make(flavour).train(train)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    assert_same(run(module, x, fused=True), run(module, x, fused=False))


@pytest.mark.parametrize("stages", [("local", "global"), ("global",), ("local",)])
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_lean_equals_explicit_for_every_stage_order(stages, size):
    module = make(stages=stages).train()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    assert_same(run(module, x, fused=True), run(module, x, fused=False))


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_recomputation_changes_nothing_but_memory(size):
    """Checkpointed stages: same gradients, and batch-norm statistics updated exactly once."""
    module = make().train()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    with_recompute, without = run(module, x, True, recompute=True), run(module, x, True, recompute=False)
    assert_same(with_recompute, without)
    counts = [b for b in with_recompute[2] if b.dtype == torch.long]
    assert counts and all(int(c) == 1 for c in counts)
    # ... and it does hold less for backward (recompute is the module's default)
    from ocnet_edu.profiling import saved_tensor_bytes

    lean = copy.deepcopy(module)
    held = saved_tensor_bytes(lean, x.clone().requires_grad_(True))
    lean.recompute = False
    assert make().recompute and held < saved_tensor_bytes(lean, x.clone().requires_grad_(True))


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_channels_last_input(size):
    module = make().train()
    x = torch.randn(2, 6, *size, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    lean, explicit = run(module, x, fused=True), run(module, x, fused=False)
    assert lean[0].is_contiguous(memory_format=torch.channels_last)
    assert_same(lean, explicit)


def test_lean_inference_holds_less_than_fused_self_attention():
    """No intermediate is kept alive: the peak of tensors alive at once is below SA's (one stage)."""
    torch.manual_seed(0)
    x = torch.randn(1, 64, 32, 32)
    isa = InterlacedSparseSelfAttention(64, groups=(4, 4)).eval()
    sa = SelfAttention(64).eval()
    lean = peak_tensor_bytes(isa, x)
    isa.fused = False
    explicit = peak_tensor_bytes(isa, x)
    assert lean < peak_tensor_bytes(sa, x) and lean < explicit


def test_eval_batch_norm_is_folded_only_where_it_is_a_plain_affine_map():
    from ocnet_edu.nn.isa_lean import apply_pointwise, folded_1x1

    torch.manual_seed(0)
    block = torch.nn.Sequential(torch.nn.Conv2d(8, 6, 1, bias=True), torch.nn.BatchNorm2d(6), torch.nn.ReLU())
    randomize_batch_norm(block)
    block.eval()
    rows = torch.randn(3, 5, 8)
    as_map = block(rearrange(rows, "g n c -> c (g n) 1").unsqueeze(0))
    expected = rearrange(as_map[0, :, :, 0], "c (g n) -> g n c", g=3)
    with torch.no_grad():
        assert torch.allclose(folded_1x1(block[0], block[1], rows), rearrange(
            block[1](block[0](rearrange(rows, "g n c -> (g n) c 1 1"))), "(g n) c 1 1 -> g n c", g=3), atol=1e-5)
        assert torch.allclose(apply_pointwise(block, rows), expected, atol=1e-5)
        before = rows.clone()
        apply_pointwise(block, rows)
        assert torch.equal(rows, before)                         # the in-place ReLU never touches the input
    seen = []
    block[1].register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        assert torch.allclose(apply_pointwise(block, rows), expected, atol=1e-5)
    assert seen == [torch.Size([15, 6, 1, 1])]                   # a hooked norm runs as a module


@pytest.mark.parametrize("grad", [True, False])  # training pads and rearranges; inference scatters by index
@pytest.mark.parametrize("stage", ["global", "local"])
@pytest.mark.parametrize("size", [(5, 7), (8, 8), (11, 5)])
def test_grouping_a_padded_map_is_padding_then_rearranging(stage, size, grad):
    from ocnet_edu.nn.isa_lean import RASTER, ROW_PATTERNS, group_rows, ungroup_rows

    groups, batch, padded = (2, 4), 2, (-(-size[0] // 2) * 2, -(-size[1] // 4) * 4)
    rows = torch.randn(batch, size[0] * size[1], 3, requires_grad=grad)
    raster = torch.nn.functional.pad(rearrange(rows, "b (h w) c -> b h w c", h=size[0]),
                                     (0, 0, 0, padded[1] - size[1], 0, padded[0] - size[0]))
    expected = rearrange(raster, f"{RASTER} -> {ROW_PATTERNS[stage]}", ph=2, pw=4)
    with torch.set_grad_enabled(grad):
        with RecordedOps() as grouping:
            grouped = group_rows(rows, stage, groups, size, padded)
        with RecordedOps() as ungrouping:
            back = ungroup_rows(grouped, stage, groups, batch, size, padded)
    assert torch.equal(grouped, expected)
    assert torch.equal(back, rows)
    # the path taken: by slot only for a padded map without autograd, padding only with autograd
    by_slot, padding = padded != size and not grad, padded != size and grad
    assert ("index_copy_" in grouping.names, "constant_pad_nd" in grouping.names) == (by_slot, padding)
    assert ("index_select" in ungrouping.names) == by_slot
    if grad:
        (gradient,) = torch.autograd.grad(grouped.square().sum(), rows)
        assert torch.equal(gradient, 2 * rows)                   # every pixel once, the padding nowhere


def test_products_in_blocks_change_nothing(monkeypatch):
    import ocnet_edu.nn.isa_lean as lean

    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(16, groups=(2, 2))
    randomize_batch_norm(isa)
    isa.eval()
    x = torch.randn(2, 16, 9, 10)
    with torch.inference_mode():
        whole = isa(x)
        monkeypatch.setattr(lean, "CHUNK_ROWS", 7)             # 180 rows: 26 blocks, the last one short
        blocks = isa(x)
    assert torch.allclose(blocks, whole, atol=1e-6)


def test_training_with_frozen_batch_norm_recomputes_and_matches_explicit():
    """``freeze_bn`` trains with batch-norms in eval mode: no folding there (the in-place ReLU would
    overwrite a product's output that the selective checkpoint keeps), and the same gradients."""
    torch.manual_seed(0)
    lean = InterlacedSparseSelfAttention(16, groups=(2, 2))
    randomize_batch_norm(lean)
    lean.train()
    for module in lean.modules():                 # frozen statistics (what freeze_bn does), the rest trains
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    explicit = copy.deepcopy(lean)
    explicit.fused = False
    x = torch.randn(2, 16, 6, 8)
    grads = []
    for module in (lean, explicit):
        module.zero_grad()
        module(x).square().mean().backward()
        grads.append([p.grad.clone() for p in module.parameters()])
    assert lean.recompute and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(*grads))


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_the_export_path_computes_what_the_default_path_computes(size, monkeypatch):
    """While exporting, ISA always pads (by Q·P − H ≥ 0), crops with index gathers and skips the
    lean path: the same output, checked here without an exporter by switching the flag."""
    from ocnet_edu.nn import isa as isa_module

    module = make().eval()
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
        monkeypatch.setattr(isa_module, "exporting", lambda: True)
        torch.testing.assert_close(module(x), expected)


def test_selective_checkpointing_keeps_the_products_and_recomputes_the_rest():
    from torch.utils.checkpoint import CheckpointPolicy

    from ocnet_edu.nn.isa_lean import SAVED_OPS, _save_products

    assert all(_save_products(None, op) == CheckpointPolicy.MUST_SAVE for op in SAVED_OPS)
    assert _save_products(None, torch.ops.aten.relu.default) == CheckpointPolicy.PREFER_RECOMPUTE


# --- each fast path is taken where it is meant to be (the numbers are the same either way) ----------


def test_only_a_plain_eval_batch_norm_without_autograd_is_folded():
    from ocnet_edu.nn.isa_lean import _foldable_norm

    class OwnNorm(torch.nn.BatchNorm2d):
        pass

    def hooked(register):
        norm = torch.nn.BatchNorm2d(4).eval()
        register(norm)(lambda *args: None)
        return norm

    norm = torch.nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        assert _foldable_norm(norm) and _foldable_norm(torch.nn.SyncBatchNorm(4).eval())
        for other in (torch.nn.BatchNorm2d(4), OwnNorm(4).eval(), torch.nn.BatchNorm2d(4, track_running_stats=False).eval(),
                      hooked(lambda n: n.register_forward_hook), hooked(lambda n: n.register_forward_pre_hook)):
            assert not _foldable_norm(other)
    assert not _foldable_norm(norm)  # with autograd


def test_a_1x1_convolution_with_valid_padding_is_a_plain_product():
    from ocnet_edu.nn.isa_lean import _plain_1x1

    assert _plain_1x1(torch.nn.Conv2d(4, 3, 1)) and _plain_1x1(torch.nn.Conv2d(4, 3, 1, padding="valid"))
    assert not _plain_1x1(torch.nn.Conv2d(4, 3, 1, padding=1)) and not _plain_1x1(torch.nn.Conv2d(4, 4, 1, groups=2))


def test_products_with_autograd_are_one_product_however_many_rows(monkeypatch):
    """(``out=`` products, those of the blocks, cannot be differentiated.)"""
    import ocnet_edu.nn.isa_lean as lean

    monkeypatch.setattr(lean, "CHUNK_ROWS", 4)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1)
    rows = torch.randn(2, 10, 3, requires_grad=True)  # 20 rows: five blocks without autograd
    with RecordedOps() as ops:
        out = lean.linear_1x1(conv, rows)
    assert ops.count("addmm") + ops.count("mm") == 1
    (gradient,) = torch.autograd.grad(out.sum(), rows)
    assert torch.allclose(gradient, conv.weight[:, :, 0, 0].sum(0).expand_as(rows))


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_an_nchw_input_gives_an_nchw_output(flavour, size):
    """ρ's first convolution writes NCHW directly (also when ρ is conv → BN → act). With split
    zero padding the output is a window of that NCHW map, a view (no copy)."""
    module = make(flavour).eval()
    with torch.no_grad():
        y = module(torch.randn(2, 6, *size, dtype=torch.float64))
    padded = (8, 12) if module.flavour.padding == "zeros-split" and size == (7, 9) else size
    assert y.shape == (2, 5, *size) and y.stride() == torch.empty(2, 5, *padded).stride()


def test_lean_forward_recomputes_only_when_asked(monkeypatch):
    import ocnet_edu.nn.isa_lean as lean

    module, checkpointed = make().train(), []
    real = lean._checkpointed
    monkeypatch.setattr(lean, "_checkpointed", lambda fn, stage, *args: checkpointed.append(stage) or real(fn, stage, *args))
    stages = [(name, module.stage(name)) for name in module.stages]
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True)
    lean.lean_forward(stages, x, module.groups, (8, 8))
    assert checkpointed == []
    lean.lean_forward(stages, x, module.groups, (8, 8), recompute=True)
    assert checkpointed == [module.stage("global"), module.stage("local")]


def test_lean_forward_runs_a_sequence_of_three_stages():
    """global → local → global: each ρ runs in the grouping of the stage after it."""
    from ocnet_edu.nn.isa import grouped_attention
    from ocnet_edu.nn.isa_lean import lean_forward

    module = make().eval()  # 6 → 5 → 5 channels
    third = randomize_batch_norm(copy.deepcopy(module.stage("local")))
    stages = [("global", module.stage("global")), ("local", module.stage("local")), ("global", third)]
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = x
        for name, stage in stages:
            expected = stage.rho(grouped_attention(*stage.transforms(expected), name, module.groups).output)
        torch.testing.assert_close(lean_forward(stages, x, module.groups, (8, 8)), expected)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rows, blocks", [(8, 1), (10, 3), (3, 1), (20, 5)])
def test_products_run_in_blocks_beyond_two_blocks_of_rows(monkeypatch, rows, blocks, bias):
    """Up to ``2 · CHUNK_ROWS`` rows one product, beyond it ``⌈M / CHUNK_ROWS⌉`` blocks (with and
    without a bias: ``addmm`` or ``mm`` into the output)."""
    import ocnet_edu.nn.isa_lean as lean

    monkeypatch.setattr(lean, "CHUNK_ROWS", 4)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 1, bias=bias)
    x = torch.randn(1, rows, 3)
    with torch.no_grad(), RecordedOps() as ops:
        out = lean.linear_1x1(conv, x)
    assert ops.count("addmm") + ops.count("mm") == blocks
    torch.testing.assert_close(out, torch.nn.functional.linear(x, conv.weight[:, :, 0, 0], conv.bias))


def _block(*layers):
    torch.manual_seed(0)
    return randomize_batch_norm(torch.nn.Sequential(*layers))


def _ops(module, rows, grad=False):
    from ocnet_edu.nn.isa_lean import apply_pointwise

    with torch.set_grad_enabled(grad), RecordedOps() as ops:
        out = apply_pointwise(module, rows)
    return out, ops.names


def _as_map(module, rows):
    """``module`` run as a map: the reference for ``apply_pointwise``."""
    with torch.no_grad():
        out = module(rearrange(rows, "g n c -> c (g n) 1").unsqueeze(0).clone())
    return rearrange(out[0, :, :, 0], "c (g n) -> g n c", g=rows.shape[0])


def test_pointwise_inference_folds_batch_norm_and_overwrites_only_its_own_products():
    """Eval mode without autograd: conv → BN is one product (no batch-norm op), a ReLU after a
    product runs in place on it, and the caller's rows are never overwritten."""
    rows = torch.randn(2, 5, 4)
    before = rows.clone()
    conv = lambda: torch.nn.Conv2d(4, 4, 1)  # noqa: E731
    cases = [
        (_block(conv(), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval(), ["addmm", "relu_"]),
        (_block(torch.nn.Sequential(conv(), torch.nn.BatchNorm2d(4)), torch.nn.ReLU()).eval(), ["addmm", "relu_"]),
        (_block(conv(), torch.nn.ReLU()).eval(), ["addmm", "relu_"]),
        (_block(torch.nn.ReLU(), conv()).eval(), ["relu", "addmm"]),  # the input itself: not in place
        (_block(conv(), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), conv(), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval(),
         ["addmm", "relu_", "addmm", "relu_"]),
    ]
    for module, expected in cases:
        out, names = _ops(module, rows)
        assert [n for n in names if n in ("addmm", "mm", "relu", "relu_", "convolution") or "batch_norm" in n] == expected
        torch.testing.assert_close(out, _as_map(module, rows))
        assert torch.equal(rows, before)


def test_pointwise_batch_norm_in_training_or_with_autograd_runs_as_a_module():
    rows = torch.randn(2, 5, 4)
    module = _block(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    _, names = _ops(module.train(), rows)  # training statistics: not foldable, then an in-place ReLU
    assert "convolution" not in names and any("batch_norm" in n for n in names) and "relu_" in names
    _, names = _ops(module.eval(), rows, grad=True)  # autograd: a product, then batch-norm and ReLU as modules
    assert "convolution" not in names and any("batch_norm" in n for n in names) and "relu_" not in names
