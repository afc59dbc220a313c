"""ISA's banded CPU inference pass (``isa_banded``) computes what the explicit path computes (issue 17).

It runs by default for a module in eval mode without autograd on a CPU. It must give the explicit
path's output for every flavour, stage order, padded size, memory format and batch, with one
block or many (``BLOCK_PIXELS`` made small), and must step aside (to ``lean_forward``) wherever a
transform is not a per-pixel map or autograd, autocast, another device or compiling is in play.
"""

from collections import Counter

import pytest
import torch
from einops import rearrange
from torch.utils._python_dispatch import TorchDispatchMode

from ocnet_edu import InterlacedSparseSelfAttention
from ocnet_edu.nn import isa_banded
from ocnet_edu.nn.attention import attend
from ocnet_edu.nn.flavour import FLAVOURS
from ocnet_edu.nn.isa_banded import _copy_block, _new_grouped, banded_applies, blocks, pointwise_steps, run_steps
from ocnet_edu.nn.isa_lean import group_rows
from ocnet_edu.profiling import peak_tensor_bytes
from helpers import randomize_batch_norm

SIZES = [(8, 8), (7, 9), (13, 6), (1, 1)]


def make(flavour="paper", stages=("global", "local"), groups=(2, 4), channels=6):
    torch.manual_seed(0)
    module = InterlacedSparseSelfAttention(channels, 3, 4, 5, groups=groups, stages=stages, flavour=flavour)
    return randomize_batch_norm(module).eval()


def stages_of(module):
    return [(name, module.stage(name)) for name in module.stages]


def explicit(module, x):
    module.fused = False
    try:
        with torch.no_grad():
            return module(x)
    finally:
        module.fused = True


def banded(module, x):
    with torch.no_grad():
        assert banded_applies(stages_of(module), x)
        return module(x)


@pytest.mark.parametrize("block_pixels", [2048, 6])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
@pytest.mark.parametrize("stages", [("global", "local"), ("local", "global"), ("local",)])
def test_banded_equals_explicit(stages, flavour, size, block_pixels, monkeypatch):
    monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", block_pixels)
    module = make(flavour, stages, groups=(3, 2))
    x = torch.randn(2, 6, *size)
    torch.testing.assert_close(banded(module, x), explicit(module, x))


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_channels_last_input_gives_channels_last_output(size, monkeypatch):
    monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", 8)
    module = make()
    x = torch.randn(2, 6, *size).to(memory_format=torch.channels_last)
    out = banded(module, x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, explicit(module, x.contiguous()))


def test_transform_with_relu_and_no_bias_and_several_convolutions():
    """A ρ of two convolutions (the first with an activation after it) and a δ without bias."""
    module = make()
    stage = module.stage("global")
    stage.rho = torch.nn.Sequential(torch.nn.Conv2d(4, 7, 1, bias=False), torch.nn.LeakyReLU(0.2),
                                    torch.nn.Identity(), torch.nn.Conv2d(7, 5, 1))
    x = torch.randn(1, 6, 7, 9)
    torch.testing.assert_close(banded(module, x), explicit(module, x))


def test_the_default_inference_pass_is_banded_and_holds_less(monkeypatch):
    """The module's default CPU inference runs the banded pass, and it holds less than ``lean_forward``."""
    torch.manual_seed(0)
    module = randomize_batch_norm(InterlacedSparseSelfAttention(64, groups=(4, 4))).eval()
    x = torch.randn(1, 64, 48, 48)
    calls = []
    real = isa_banded.banded_forward
    monkeypatch.setattr("ocnet_edu.nn.isa.banded_forward", lambda *a: calls.append(1) or real(*a))
    banded_peak = peak_tensor_bytes(module, x)
    assert calls == [1]
    monkeypatch.setattr("ocnet_edu.nn.isa.banded_steps", lambda *a: None)
    assert banded_peak < peak_tensor_bytes(module, x)


def test_banded_pass_steps_aside_where_it_does_not_apply():
    module = make()
    x = torch.randn(1, 6, 8, 8)
    stages = stages_of(module)
    with torch.no_grad():
        assert banded_applies(stages, x)
        assert not banded_applies(stages, x.to("meta"))
        assert not banded_applies(stages, x.long())
        assert not banded_applies(stages, x.double())  # parameters of another dtype
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not banded_applies(stages, x)
    assert not banded_applies(stages, x)  # autograd
    with pytest.raises(ValueError, match="banded_forward: x must be"):  # called anyway: a clear error
        isa_banded.banded_forward(stages, x, (2, 4), (8, 8))
    with torch.no_grad():
        module.train()  # batch-norm statistics over the whole map: not per pixel
        assert not banded_applies(stages, x)
        module.eval()
        handle = module.stage("local").theta.register_forward_hook(lambda *a: None)
        assert not banded_applies(stages, x)
        handle.remove()
        module.stage("local").delta = torch.nn.Sequential(torch.nn.Conv2d(6, 4, 1), torch.nn.GELU())
        assert not banded_applies(stages, x)
        module.stage("local").delta = torch.nn.Conv2d(6, 4, 3, padding=1)  # not a per-pixel map
        assert not banded_applies(stages, x)


def test_pointwise_steps_fold_an_eval_batch_norm():
    torch.manual_seed(0)
    block = randomize_batch_norm(torch.nn.Sequential(torch.nn.Conv2d(4, 3, 1), torch.nn.BatchNorm2d(3),
                                                     torch.nn.LeakyReLU(0.1))).eval()
    with torch.no_grad():
        steps = pointwise_steps(block)
        assert [isinstance(step, float) for step in steps] == [False, True] and steps[1] == pytest.approx(0.1)
        x = torch.randn(2, 4, 3, 5)
        rows = rearrange(x, "b c h w -> (b h w) c")
        torch.testing.assert_close(run_steps(steps, rows), rearrange(block(x), "b c h w -> (b h w) c"))
        kept = rows.clone()
        run_steps([0.0], rows)
        assert torch.equal(rows, kept)  # the caller's rows are not written unless owned


@pytest.mark.parametrize("height,width,multiple", [(97, 97, 8), (128, 256, 8), (7, 9, 3), (1, 1, 8), (40, 3, 2)])
@pytest.mark.parametrize("block_pixels", [2048, 10])
def test_blocks_cover_the_rows_once_in_whole_bands(height, width, multiple, block_pixels, monkeypatch):
    monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", block_pixels)
    spans = blocks(height, width, multiple)
    assert sorted(row for first, last in spans for row in range(first, last)) == list(range(height))
    assert all(first % multiple == 0 for first, _ in spans)
    sizes = [last - first for first, last in spans]
    assert sizes[0] == max(sizes)  # the first block sizes the work buffers
    most = max(1, min(block_pixels, height * width // 8) // (multiple * width)) * multiple
    assert max(sizes) < 1.5 * most + multiple
    if len(spans) > 1:
        assert min(sizes) >= most / 2


@pytest.mark.parametrize("stage", ["global", "local"])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (5, 3)])
def test_blocks_copied_into_groups_are_the_grouped_padded_map(stage, size, monkeypatch):
    monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", 4)
    groups, batch, channels = (3, 2), 2, 5
    padded = (-(-size[0] // 3) * 3, -(-size[1] // 2) * 2)
    geometry = {"groups": groups, "batch": batch, "size": size, "padded": padded}
    raster = torch.randn(batch, size[0] * size[1], channels)
    expected = group_rows(raster, stage, groups, size, padded)  # padding zeros, then grouping
    grouped, view = _new_grouped(stage, tuple(expected.shape), raster, geometry, [])
    back = torch.full_like(raster, float("nan"))
    for b in range(batch):
        for first, last in blocks(*size, groups[0]):
            rows = rearrange(raster[b], "(h w) c -> h w c", w=size[1])[first:last]
            _copy_block(rows, view[b], first, groups, into_groups=True)
            _copy_block(rearrange(back[b], "(h w) c -> h w c", w=size[1])[first:last], view[b], first, groups,
                        into_groups=False)
    assert torch.equal(grouped, expected)
    assert torch.equal(back, raster)


@pytest.mark.parametrize("value_channels", [4, 6])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_over_query_chunks_equals_attend_and_reuses_the_queries(value_channels, masked, monkeypatch):
    """Chunks of groups give what one call gives; with e = d the output is the queries' memory."""
    monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", 10)  # 2 groups of 5 positions per chunk: 4 chunks for 7 groups
    torch.manual_seed(0)
    query, key = torch.randn(7, 5, 4), torch.randn(7, 5, 4)
    value = torch.randn(7, 5, value_channels)
    mask = torch.rand(7, 5) > 0.3 if masked else None
    if masked:
        mask[:, 0] = True  # every group keeps a valid key
    expected = attend(query, key, value, key_mask=mask, fused=True).output
    out = isa_banded.attend_over_queries(query.clone() if value_channels != 4 else query, key, value, mask)
    torch.testing.assert_close(out, expected)
    assert (out.data_ptr() == query.data_ptr()) == (value_channels == 4)


def test_the_second_stage_takes_the_first_stages_memory(monkeypatch):
    """Stage 2's q, k, v live in the memory of stage 1's dead q, k, v (no new map for them)."""
    module = make(groups=(2, 2))
    x = torch.randn(1, 6, 8, 8)
    made = []
    real = isa_banded._new_grouped
    monkeypatch.setattr(isa_banded, "_new_grouped", lambda *a: made.append(a[0]) or real(*a))
    pointers = []
    real_attend = isa_banded.attend_over_queries

    def record(query, key, value, mask):
        pointers.append({t.untyped_storage().data_ptr() for t in (query, key, value)})
        return real_attend(query, key, value, mask)

    monkeypatch.setattr(isa_banded, "attend_over_queries", record)
    out = banded(module, x)
    torch.testing.assert_close(out, explicit(module, x))
    assert made == ["global"] * 3 + ["local"] * 3
    # e = 4 != d = 3 here: stage 1's output is new, and stage 2's q, k, v take all three of stage 1's
    assert pointers[1] == pointers[0]


class NewStorages(TorchDispatchMode):
    """Records, per operator, how many outputs own a storage that did not exist before the op."""

    def __init__(self):
        super().__init__()
        self.made = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        out = func(*args, **(kwargs or {}))
        for t in _tensors(out):
            if t.untyped_storage().data_ptr() not in before and t.untyped_storage().nbytes():
                self.made[func.overloadpacket.__name__] += 1
        return out


def _tensors(tree):
    return [leaf for leaf in torch.utils._pytree.tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


@pytest.mark.parametrize("size", [(16, 16), (15, 13)])
def test_products_write_into_reused_buffers_and_activations_run_in_place(size, monkeypatch):
    """No matrix product makes its own output (each writes into a work buffer or the result), no
    activation copies its input, and the number of new tensors does not grow with the number of
    blocks: the work buffers are made once per pass."""
    module = make(groups=(2, 2))  # paper flavour: θ, φ with two conv → BN → ReLU blocks
    stages = stages_of(module)
    x = torch.randn(1, 6, *size)
    padded = (-(-size[0] // 2) * 2, -(-size[1] // 2) * 2)
    counts = {}
    for block_pixels in (2 * size[1], 4 * size[1]):  # 8 and 4 blocks (one eighth of the map at most)
        monkeypatch.setattr(isa_banded, "BLOCK_PIXELS", block_pixels)
        # (the attention, whose kernel the dispatch mode would see decomposed, is left out: counted here
        # are the transforms and copies around it)
        monkeypatch.setattr(isa_banded, "attend_over_queries", lambda query, key, value, mask: value)
        with torch.no_grad(), NewStorages() as recorder:
            isa_banded.banded_forward(stages, x, (2, 2), padded)
        counts[block_pixels] = recorder.made
    many, few = counts.values()
    assert not {"addmm", "mm", "bmm", "baddbmm", "relu", "leaky_relu"} & set(many)
    assert many["clone"] == (0 if padded == size else len(stages))  # only the key masks (einops' repeat)
    assert many == few


def test_the_workspace_hands_out_the_same_memory_for_the_same_name():
    work = isa_banded.Workspace(torch.zeros(1))
    first = work("a", 6, 3)
    assert work("a", 6, 3).data_ptr() == first.data_ptr()       # the same size: the same buffer
    assert work("a", 4, 3).data_ptr() == first.data_ptr()       # fewer rows: a prefix of it
    assert work("a", 4, 3).shape == (4, 3) and work("a", 4, 3).is_contiguous()
    assert work("b", 6, 3).data_ptr() != first.data_ptr()       # another name: another buffer
    assert work("a", 6, 5).data_ptr() != first.data_ptr()       # other columns: another buffer
    assert work("a", 8, 3).shape == (8, 3)                      # more rows: a larger buffer ...
    assert work("a", 8, 3).data_ptr() == work("a", 6, 3).data_ptr()  # ... kept from then on


def test_pointwise_steps_refuse_what_is_not_a_chain_starting_with_a_convolution():
    with torch.no_grad():
        assert pointwise_steps(torch.nn.Sequential()) is None
        assert pointwise_steps(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(2, 2, 1))) is None
        assert pointwise_steps(torch.nn.Conv2d(2, 3, 1, groups=1)) is not None
        assert pointwise_steps(torch.nn.Conv2d(2, 2, 1, groups=2)) is None  # grouped: not one product


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_last_projection_without_bias(channels_last):
    """ρ of the last stage a bare 1×1 convolution without bias, into either memory format."""
    module = make()
    module.stage("local").rho = torch.nn.Conv2d(4, 5, 1, bias=False)
    x = torch.randn(2, 6, 7, 9)
    x_in = x.to(memory_format=torch.channels_last) if channels_last else x
    torch.testing.assert_close(banded(module, x_in), explicit(module, x))


def test_a_one_channel_input_gives_a_contiguous_output():
    """A ``[B, 1, H, W]`` map is contiguous and channels_last at once: the output is plain NCHW."""
    torch.manual_seed(0)
    module = randomize_batch_norm(InterlacedSparseSelfAttention(1, 3, 4, 5, groups=(2, 2))).eval()
    x = torch.randn(2, 1, 6, 5)
    out = banded(module, x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, explicit(module, x))
