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
    """A ReLU saves its output; a checkpointed ISA saves far less than one that is not."""
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    assert saved_tensor_bytes(lambda t: torch.relu(t * 2), x) == x.numel() * 4
    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(16, groups=(2, 2)).train()
    x = torch.randn(1, 16, 8, 8)
    recomputed = saved_tensor_bytes(isa, x)
    isa.recompute = False
    assert recomputed * 4 < saved_tensor_bytes(isa, x)


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
                  "time_median_ms": isa_time, "gflops": 2.0}]
    rows.append({"size": "8x8", "mode": "inference", "variant": "matmul_64", "time_median_ms": 100.0, "gflops": 1.0})
    table = pd.DataFrame(targets_table(rows)).set_index("target")
    memory = table.loc["ISA default / SA fused: peak memory, inference"]
    assert memory["ratio"] == 1.1 and not memory["met"] and memory["rss ratio"] == 1.5
    assert table.loc["ISA default / SA fused: peak memory, training step", "met"]
    assert table.loc["SA fused / ISA default: time, training step (speed-up)", "ratio"] == 6.0
    assert table.loc["ISA default GFLOP/s / 64² matmul GFLOP/s (inference)", "ratio"] == 0.4
