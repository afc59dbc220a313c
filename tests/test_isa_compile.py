"""Issue 12: ISA compiles with ``torch.compile`` for changing input sizes (dynamic shapes).

``padded_size`` used ``math.ceil(h / p) * p``; on a symbolic size that puts a float division and a
``CeilToInt`` into the graph, which Inductor failed to generate code for on a second input size.
The padded size is now integer arithmetic (``-(-h // p) * p``).

Compiling is slow on a CPU (Inductor: tens of seconds per graph), so one test looks at the traced
graphs of a divisible and an uneven size (fast, backend-independent) and one compiles the uneven
graph with Inductor, for two sizes.
"""

import pytest
import torch

from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
              pytest.mark.compile]

SIZES = [(8, 8), (7, 9)]  # divisible by the groups (2, 2), and not


@pytest.fixture()
def module():
    torch.manual_seed(0)
    return InterlacedSparseSelfAttention(8, key_channels=4, value_channels=4, groups=(2, 2))


def test_dynamic_graph_has_no_float_arithmetic_on_sizes(module, one_thread):
    """The graphs Dynamo traces with symbolic sizes have no ``/`` or ``ceil`` (only ``//``)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm

    compiled = torch.compile(module, backend=capture, dynamic=True)
    for size in SIZES:
        compiled(torch.randn(1, 8, *size)).sum().backward()
    assert len(graphs) == 2  # with and without padding
    for code in graphs:
        assert "ceil" not in code and "truediv" not in code, code


def test_compiles_for_changing_sizes_inductor(module, one_thread):
    """Inductor (C++ on the CPU) compiles one dynamic graph for uneven sizes; outputs equal eager.

    Two sizes that both need padding share one graph (a divisible size adds the graph without
    padding, checked above without Inductor's slow C++ compile); the second size must reuse it.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    module.eval()
    compiled = torch.compile(module, backend="inductor", dynamic=True)
    with torch.no_grad():
        for size in [(7, 9), (9, 13)]:
            x = torch.randn(2, 8, *size)
            torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
