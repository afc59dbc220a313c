"""ocnet_edu.nn.reach: supports measured by back-propagation, and path lengths over them."""

from __future__ import annotations

import pytest
import torch

from ocnet_edu.heads.rcca import CrissCrossAttention
from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention
from ocnet_edu.nn.reach import dependency_support, hop_distances, path_length, reach
from ocnet_edu.nn.relation import dense_relation
from ocnet_edu.nn.zoo import WindowAttention

H, W = 4, 6
N = H * W


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(1, 4, H, W, dtype=torch.double, generator=torch.Generator().manual_seed(0))


def coordinates() -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of every raster pixel: ``[N]`` each."""
    idx = torch.arange(N)
    return idx // W, idx % W


def test_sa_is_dense_and_one_step(x):
    sa = SelfAttention(4).double().eval()
    support = dependency_support(sa, x)
    assert support.shape == (N, N) and bool(support.all())
    assert path_length([support]) == 1


def test_isa_support_is_the_support_of_eq9_and_two_steps(x):
    torch.manual_seed(0)
    groups = (2, 3)
    stages = [InterlacedSparseSelfAttention(4, groups=groups, stages=(s,)).double().eval() for s in ("global", "local")]
    supports = [dependency_support(m, x) for m in stages]
    rows, cols = coordinates()
    same_global = (rows[:, None] % 2 == rows[None] % 2) & (cols[:, None] % 3 == cols[None] % 3)
    same_local = (rows[:, None] // 2 == rows[None] // 2) & (cols[:, None] // 3 == cols[None] // 3)
    assert torch.equal(supports[0], same_global) and torch.equal(supports[1], same_local)
    _, global_rel, local_rel = InterlacedSparseSelfAttention(4, groups=groups).double().eval()(x, return_relations=True)
    eq9 = dense_relation(global_rel, local_rel, groups, (H, W))[0]
    assert torch.equal(reach(supports)[-1], eq9 > 0)
    assert path_length(supports) == 2
    distance = hop_distances(supports)
    assert torch.equal(distance == 1, same_global)        # the first step reaches its global group
    assert bool((distance == 2).any()) and bool((distance > 0).all())


def test_criss_cross_needs_two_steps(x):
    torch.manual_seed(0)
    cca = CrissCrossAttention(4, 2).double().eval()
    with torch.no_grad():
        cca.gamma.fill_(1.0)       # γ = 0 at initialisation would make the step the identity
    support = dependency_support(cca, x)
    rows, cols = coordinates()
    cross = (rows[:, None] == rows[None]) | (cols[:, None] == cols[None])
    assert torch.equal(support, cross)
    assert int(support[0].sum()) == H + W - 1
    assert path_length([support]) is None and path_length([support, support]) == 2
    assert torch.equal(dependency_support(lambda t: cca(cca(t)), x), reach([support, support])[-1])


def test_windows_never_connect(x):
    support = dependency_support(WindowAttention(4, (2, 3)).double().eval(), x)
    rows, cols = coordinates()
    same_window = (rows[:, None] // 2 == rows[None] // 2) & (cols[:, None] // 3 == cols[None] // 3)
    assert torch.equal(support, same_window)
    assert path_length([support] * 5) is None
    assert int((hop_distances([support]) < 0).sum()) == N * N - N * 6


def test_bad_inputs():
    with pytest.raises(ValueError, match="one image"):
        dependency_support(lambda t: t, torch.zeros(2, 1, 2, 2))
    with pytest.raises(ValueError, match="map size"):
        dependency_support(lambda t: t[..., :1], torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="at least one step"):
        reach([])
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        reach([torch.ones(2, 3, dtype=torch.bool)])


def test_hop_distances_of_a_chain_and_of_pairs_never_reached():
    # a step that joins each pixel to its right neighbour (and keeps itself), on 3 pixels:
    # 0 reaches 1 after one step and 2 after two; nothing flows leftwards
    step = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.bool)  # [output i, input j]
    assert hop_distances([step, step]).tolist() == [[1, -1, -1], [1, 1, -1], [2, 1, 1]]
    assert hop_distances([torch.eye(2, dtype=torch.bool)]).dtype == torch.int64


def test_reach_of_float_steps_and_of_no_step():
    step = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # 0/1 floats, read as booleans
    (reached,) = reach([step])
    assert reached.dtype == torch.bool and reached.tolist() == [[True, False], [True, True]]
    with pytest.raises(ValueError, match="^a mechanism needs at least one step$"):
        reach([])


def test_dependency_support_of_a_per_pixel_map_with_more_channels_than_rows():
    # a 1×1 convolution mixes channels but not pixels: each output pixel depends on itself only
    conv = torch.nn.Conv2d(5, 3, kernel_size=1).double()
    x = torch.randn(1, 5, 2, 3, dtype=torch.double)
    assert torch.equal(dependency_support(conv, x), torch.eye(6, dtype=torch.bool))


def test_dependency_support_keeps_the_channel_mix_on_the_device_of_the_output():
    """The mix is drawn on the CPU (the same numbers on every device), then moved: on meta, a
    stand-in for CUDA, a mix left on the CPU would fail."""
    x = torch.empty(1, 2, 3, 3, device="meta")
    support = dependency_support(lambda t: 2 * t, x)
    assert support.device.type == "meta" and support.shape == (9, 9)
