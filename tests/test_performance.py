"""The performance benchmark's pieces (issue 17): memory counters and the ratio table."""

import pandas as pd
import pytest
import torch

from ocnet_edu import InterlacedSparseSelfAttention, SelfAttention
from ocnet_edu.experiments.performance import allocator_peak_mb, targets_table, variants_for
from ocnet_edu.profiling import PeakTensorMemory, saved_tensor_bytes


def test_at_peak_lists_what_is_alive_and_adds_up_to_the_peak():
    x = torch.randn(1, 16, 8, 8)
    module = SelfAttention(16).eval()
    with torch.no_grad(), PeakTensorMemory((x, *module.parameters(), *module.buffers()), record=True) as tracker:
        module(x)
    assert sum(n for _, _, n in tracker.at_peak) == tracker.peak > 0
    assert all(isinstance(op, str) and isinstance(shape, tuple) for op, shape, _ in tracker.at_peak)


def test_saved_tensor_bytes_counts_what_backward_needs():
    """A ReLU saves its output; a selective checkpoint's cache counts; a checkpointed ISA holds less."""
    from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert saved_tensor_bytes(lambda t: torch.relu(t * 2), x) == x.numel() * 4
    assert saved_tensor_bytes(lambda t: t * 2, x) == 0            # a product by a number saves nothing
    weight = torch.randn(64, 64, requires_grad=True)

    def keep_mm(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op == torch.ops.aten.mm.default else CheckpointPolicy.PREFER_RECOMPUTE

    def mm_then_relu(t):
        contexts = lambda: create_selective_checkpoint_contexts(keep_mm)  # noqa: E731
        return checkpoint(lambda u: torch.relu(u @ weight).sum(), t, use_reentrant=False, context_fn=contexts)

    rows = torch.randn(32, 64, requires_grad=True)
    # held: the product's output (kept by the policy); the ReLU's output is recomputed
    assert saved_tensor_bytes(mm_then_relu, rows) == 32 * 64 * 4
    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(16, groups=(2, 2)).train()
    x = torch.randn(1, 16, 8, 8)
    recomputed = saved_tensor_bytes(isa, x)
    isa.recompute = False
    assert recomputed < 0.7 * saved_tensor_bytes(isa, x)


def test_allocator_peak_sees_a_temporary():
    peak = allocator_peak_mb(lambda: torch.empty(2**20, dtype=torch.uint8).fill_(1))
    assert peak == pytest.approx(1.0, abs=0.01)


def test_variants_follow_the_size():
    assert "isa_algorithm1" not in variants_for((97, 97), "cpu")
    assert "sa_explicit" not in variants_for((128, 256), "cpu") and "sa_explicit" in variants_for((128, 256), "cuda")
    assert variants_for((8, 8), "cpu", ("isa_fused", "sa_fused")) == ["sa_fused", "isa_fused"]


def test_targets_table_compares_side_by_side():
    rows = []
    for mode, sa_time, isa_time in (("inference", 2000.0, 500.0), ("training", 6000.0, 1000.0)):
        rows += [{"size": "8x8", "mode": mode, "variant": "sa_fused", "allocator_peak_mb": 10.0, "rss_peak_mb": 20.0,
                  "time_median_ms": sa_time, "gflops": 10.0},
                 {"size": "8x8", "mode": mode, "variant": "isa_fused", "allocator_peak_mb": 11.0, "rss_peak_mb": 30.0,
                  "time_median_ms": isa_time, "gflops": 2.0, "rate_vs_matmul": 0.4}]
    rows.append({"size": "8x8", "mode": "inference", "variant": "matmul_64", "time_median_ms": 100.0, "gflops": 1.0})
    table = pd.DataFrame(targets_table(rows)).set_index("target")
    memory = table.loc["ISA default / SA fused: peak memory, inference"]
    assert memory["ratio"] == 1.1 and not memory["met"] and memory["rss ratio"] == 1.5
    assert table.loc["ISA default / SA fused: peak memory, training step", "met"]
    speed_up = table.loc["SA fused / ISA default: time, training step (speed-up)"]
    assert speed_up["ratio"] == 6.0 and speed_up["met"] is None    # a target at 128x128 only
    at_128 = pd.DataFrame(targets_table([{**row, "size": "128x128"} for row in rows])).set_index("target")
    assert at_128.loc["SA fused / ISA default: time, training step (speed-up)", "met"]
    assert table.loc["ISA default GFLOP/s / 64² matmul GFLOP/s (inference)", "ratio"] == 0.4
    rows.append({"size": "8x8", "mode": "inference", "variant": "isa_products", "time_median_ms": 300.0, "gflops": 2.4,
                 "rate_vs_matmul": 0.8})
    table = pd.DataFrame(targets_table(rows)).set_index("target")
    ceiling = table.loc["ceiling: ISA's matrix products alone / 64² matmul, GFLOP/s"]
    assert ceiling["ratio"] == 0.8 and ceiling["met"] is None       # information, not a target
    assert not any(label.startswith("with malloc") for label in table.index)  # not measured: no row
    rows[1]["rate_vs_matmul_malloc_kept"] = 0.9   # the inference row of isa_fused
    table = pd.DataFrame(targets_table(rows)).set_index("target")
    kept = table.loc["with malloc keeping freed memory: ISA default / 64² matmul, GFLOP/s"]
    assert kept["ratio"] == 0.9 and kept["met"] is None


def test_throughput_is_the_median_of_rates_paired_within_a_repeat():
    from ocnet_edu.experiments.performance import paired_rate

    # repeats: the machine at full speed, at half speed, and a slow pass of the module alone
    assert paired_rate(2.0, [100.0, 200.0, 400.0], 1.0, [50.0, 100.0, 50.0]) == 1.0
    assert paired_rate(1.0, [10.0, 30.0], 1.0, [10.0, 10.0]) == pytest.approx(2 / 3)  # an even count: the mean of two
    with pytest.raises(ValueError):
        paired_rate(1.0, [10.0, 20.0], 1.0, [10.0])


def test_timed_passes_report_their_page_faults():
    from ocnet_edu.experiments.performance import _measure_times

    times = _measure_times(["isa_fused"], (8, 8), "inference", "cpu", repeats=2, matmul=64, channels=16)
    assert set(times) == {"isa_fused", "matmul", "isa_products", "gflops:isa_products",
                          "faults:isa_fused", "faults:matmul", "faults:isa_products"}
    assert all(len(times[k]) == 2 for k in times if k != "gflops:isa_products")
    assert all(isinstance(n, int) and n >= 0 for k in times if k.startswith("faults:") for n in times[k])


def test_a_timed_pass_that_writes_new_memory_reports_its_pages():
    import resource

    from ocnet_edu.experiments.performance import _pages_mib, _timed

    synced = []
    elapsed, pages = _timed(lambda: torch.ones(2**24), lambda: synced.append(1))  # 64 MiB written once
    assert elapsed > 0 and synced == [1, 1]
    assert pages >= 2**26 // resource.getpagesize() // 2
    page = resource.getpagesize()
    assert _pages_mib([0, 2**20 // page, 2**21 // page]) == 1.0 and _pages_mib([2**19 // page]) == 0.5


def test_product_shapes_records_every_product_of_the_default_path():
    from ocnet_edu.profiling import count_flops, product_shapes

    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(32, groups=(2, 2)).eval()
    x = torch.randn(1, 32, 8, 8)
    with torch.inference_mode():
        shapes = product_shapes(lambda: isa(x))
    products = sum(2 * b * m * k * n for b, m, k, n in shapes)
    # the products are every FLOP of the default path but the fused attention's (4·N·n·d per stage)
    attention = sum(4 * 64 * n * isa.stage(s).key_channels for s, n in (("global", 16), ("local", 4)))
    assert products + attention == count_flops(isa, x)
    assert all(m * k * n > 0 for _, m, k, n in shapes) and len(shapes) >= 8
