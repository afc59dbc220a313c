"""Issue 12: ISA compiles with ``torch.compile`` for changing input sizes (dynamic shapes).

``padded_size`` used ``math.ceil(h / p) * p``; on a symbolic size that puts a float division and a
``CeilToInt`` into the graph, which Inductor failed to generate code for on a second input size.
The padded size is now integer arithmetic (``-(-h // p) * p``).

Compiling is slow on a CPU (Inductor: tens of seconds per graph), so one test looks at the traced
graph (fast, backend-independent) and one compiles with Inductor for both sizes.
"""

import pytest
import torch

from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

SIZES = [(8, 8), (7, 9)]  # divisible by the groups (2, 2), and not


@pytest.fixture()
def module():
    torch.manual_seed(0)
    return InterlacedSparseSelfAttention(8, key_channels=4, value_channels=4, groups=(2, 2))


def test_dynamic_graph_has_no_float_arithmetic_on_sizes(module, one_thread):
    """The graph Dynamo traces with symbolic sizes has no ``/`` or ``ceil`` (only ``//``)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm.code)
        return gm

    compiled = torch.compile(module, backend=capture, dynamic=True)
    compiled(torch.randn(1, 8, *SIZES[1])).sum().backward()
    assert graphs
    for code in graphs:
        assert "ceil" not in code and "truediv" not in code, code


def test_compiles_for_two_sizes_inductor(module, one_thread):
    """Inductor (C++ on the CPU) generates code for both sizes; outputs equal eager."""
    module.eval()
    compiled = torch.compile(module, backend="inductor", dynamic=True)
    with torch.no_grad():
        for size in SIZES:
            x = torch.randn(2, 8, *size)
            torch.testing.assert_close(compiled(x), module(x), rtol=1e-5, atol=1e-5)
