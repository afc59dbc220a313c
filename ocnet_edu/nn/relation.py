"""The explicit matrix view of ISA: ``W = Wˡ Pᵀ Wᵍ P`` (Eq. 9, 12, 16, 18, 20; App. C–E, I).

Everything here builds the ``N × N`` matrices that the fast implementation in
:mod:`ocnet_edu.nn.isa` never forms, so that the paper's identities can be checked numerically.
The costs are ``O(N²)`` memory: use small maps.

Orders of the ``N = H·W`` pixels (all indices 0-based):

* *raster*: ``h·W + w`` — how a map is flattened, and the order of :func:`dense_relation`;
* *local order*: ``(qh·Q_w + qw)·G + (ph·P_w + pw)`` with ``G = P_h·P_w`` — local groups are
  contiguous blocks, so ``Wˡ`` is block diagonal (Eq. 20);
* *global order*: ``(ph·P_w + pw)·Q + (qh·Q_w + qw)`` with ``Q = Q_h·Q_w`` — global groups are
  contiguous, so ``Wᵍ`` is block diagonal (Eq. 16).

In 1-D the local order *is* the raster order, and the permutation ``P`` of Eq. 12 takes the local
order to the global one: ``(P x)[p·Q + q] = x[q·P + p]``. In 2-D, :func:`raster_permutation`
first reorders the raster pixels into local order; the 2-D ISA is then the 1-D formula with
``P = P_h·P_w`` groups (the 2-D reduction).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.layers import check_int, check_size
from ocnet_edu.nn.isa import (
    STAGES,
    InterlacedSparseSelfAttention,
    ISAOutput,
    check_groups,
    check_stages,
    grouped_attention,
    padded_size,
)

__all__ = [
    "permutation_indices",
    "permutation_matrix",
    "eq23_columns",
    "raster_permutation",
    "raster_permutation_matrix",
    "block_diagonal",
    "dense_relation",
    "transform_free_isa",
    "affine_form",
    "visualize_relation",
]

#: raster grid -> the two group orders, as flat index maps
ORDER_PATTERNS = {
    "local": "(qh ph) (qw pw) -> (qh qw ph pw)",
    "global": "(qh ph) (qw pw) -> (ph pw qh qw)",
}


def _check_divisible(num_positions: int, num_groups: int) -> None:
    """Raise ``ValueError`` unless ``num_positions = P·Q`` with ``P = num_groups`` (both positive ints)."""
    check_int(num_positions, "num_positions", 1)
    check_int(num_groups, "num_groups", 1)
    if num_positions % num_groups:
        raise ValueError(
            f"num_positions={num_positions} is not divisible by num_groups={num_groups}; "
            "the interlaced grouping needs N = P·Q"
        )


def permutation_indices(num_positions: int, num_groups: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Column index of the single 1 in each row of P (Eq. 12): ``[N]`` int64 on ``device``.

    Row ``p·Q + q`` of P picks input position ``q·P + p``: P gathers the positions with the
    same remainder ``p`` (one global group, Eq. 7) into a contiguous block.
    """
    _check_divisible(num_positions, num_groups)
    return rearrange(torch.arange(num_positions, device=device), "(q p) -> (p q)", p=num_groups)


def permutation_matrix(
    num_positions: int,
    num_groups: int,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The permutation matrix P of Eq. 12, ``[N, N]``: ``(P @ x)[p·Q + q] = x[q·P + p]``.

    Valid for every ``N`` divisible by ``P`` (not only ``N = P²``). ``dtype`` defaults to
    ``torch.get_default_dtype()``, ``device`` to the default device.
    """
    rows = permutation_indices(num_positions, num_groups, device=device)
    return torch.eye(num_positions, dtype=dtype, device=rows.device)[rows]


def eq23_columns(num_positions: int, num_groups: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Eq. 23 (App. C) *as printed*, 0-based: row ``i`` has its 1 at ``(i mod P)·P + ⌊i/P⌋``.

    It agrees with :func:`permutation_indices` when ``N = P²`` but not in general (the general
    column is ``(i mod Q)·P + ⌊i/Q⌋``); for ``P ≠ Q`` the printed formula repeats columns or
    leaves the range ``[0, N)``. Returned unchecked (only ``N, P ≥ 1`` are required) so that
    this can be shown.
    """
    num_positions, num_groups = check_int(num_positions, "num_positions", 1), check_int(num_groups, "num_groups", 1)
    i = torch.arange(num_positions, device=device)
    return (i % num_groups) * num_groups + i // num_groups


def raster_permutation(
    size: tuple[int, int],
    groups: int | Sequence[int],
    order: str = "local",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Raster index of the pixel at each position of the local (or global) order: ``[H·W]``.

    ``x_flat[raster_permutation(...)]`` reorders a raster-flattened map into that order.
    """
    p_h, p_w = check_groups(groups)
    height, width = check_size(size)
    if height % p_h or width % p_w:
        raise ValueError(f"size {size} is not divisible by groups {(p_h, p_w)}; pad it first (see padded_size)")
    if order not in ORDER_PATTERNS:
        raise ValueError(f"order must be one of {tuple(ORDER_PATTERNS)}, got {order!r}")
    raster = torch.arange(height * width, device=device).reshape(height, width)
    return rearrange(raster, ORDER_PATTERNS[order], ph=p_h, pw=p_w)


def raster_permutation_matrix(
    size: tuple[int, int],
    groups: int | Sequence[int],
    order: str = "local",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The permutation matrix S of :func:`raster_permutation`: ``S @ x_flat`` is in that order."""
    rows = raster_permutation(size, groups, order, device=device)
    return torch.eye(rows.numel(), dtype=dtype, device=rows.device)[rows]


def block_diagonal(blocks: torch.Tensor) -> torch.Tensor:
    """Place ``G`` blocks on a diagonal: ``[..., G, n, n] -> [..., G·n, G·n]`` (Eq. 16, 20)."""
    if not isinstance(blocks, torch.Tensor):
        raise ValueError(f"blocks must be a tensor [..., G, n, n], got {type(blocks).__name__}")
    if blocks.dim() < 3 or blocks.shape[-1] != blocks.shape[-2]:
        raise ValueError(f"expected blocks [..., G, n, n], got shape {tuple(blocks.shape)}")
    eye = torch.eye(blocks.shape[-3], dtype=blocks.dtype, device=blocks.device)
    spread = torch.einsum("...gij,gk->...gikj", blocks, eye)
    return rearrange(spread, "... g i k j -> ... (g i) (k j)")


def _raster_relation(relation: torch.Tensor, size: tuple[int, int], groups: tuple[int, int], stage: str) -> torch.Tensor:
    """One stage's block-diagonal relation moved to raster order: ``[B, N, N]``."""
    position = torch.empty(size[0] * size[1], dtype=torch.long, device=relation.device)
    position[raster_permutation(size, groups, stage, device=relation.device)] = torch.arange(
        position.numel(), device=relation.device
    )
    full = block_diagonal(relation)
    return full[:, position][:, :, position]


def _relation_shapes(size: tuple[int, int], groups: tuple[int, int]) -> dict[str, tuple[int, int, int]]:
    """One image's relation shape for each stage: global ``(G, Q, Q)``, local ``(Q, G, G)``.

    ``G = P_h·P_w`` and ``Q = Q_h·Q_w`` counted over the padded grid (:func:`padded_size`).
    """
    grid_h, grid_w = padded_size(size, groups)
    num_global = groups[0] * groups[1]
    num_local = (grid_h // groups[0]) * (grid_w // groups[1])
    return {"global": (num_global, num_local, num_local), "local": (num_local, num_global, num_global)}


def _check_relations(
    given: dict[str, torch.Tensor | None], stages: tuple[str, ...], size: tuple[int, int], groups: tuple[int, int]
) -> None:
    """``ValueError`` unless each stage in ``stages`` has a ``[B, ...]`` relation of its shape, one ``B``.

    Also rejects a relation given for a stage that is not in ``stages``: it would be ignored.
    """
    expected = _relation_shapes(size, groups)
    wanted = " and ".join(f"{stage}_relation [B, {', '.join(map(str, expected[stage]))}]" for stage in stages)
    context = f"for size {size}, groups {groups} and stages {stages} expected {wanted}"
    shapes = {stage: None if rel is None else tuple(getattr(rel, "shape", ())) for stage, rel in given.items()}
    for stage, relation in given.items():
        if stage not in stages and relation is not None:
            raise ValueError(f"{stage}_relation is given but stages={stages} has no {stage!r} stage")
    for stage in stages:
        if given[stage] is None:
            raise ValueError(f"stages={stages} includes {stage!r} but its relation is None")
        if not isinstance(given[stage], torch.Tensor):
            raise ValueError(f"{stage}_relation must be a tensor, got {type(given[stage]).__name__}")
        if given[stage].dim() != 4 or tuple(given[stage].shape[1:]) != expected[stage]:
            raise ValueError(f"{context}; got shapes {shapes}")
    if len({given[stage].shape[0] for stage in stages}) != 1:
        raise ValueError(f"{context} with one batch size B; got shapes {shapes}")


def dense_relation(
    global_relation: torch.Tensor | None,
    local_relation: torch.Tensor | None,
    groups: int | Sequence[int],
    size: tuple[int, int],
    stages: Sequence[str] = STAGES,
) -> torch.Tensor:
    """The dense relation ``W`` of Eq. 9 in raster order, ``[B, H·W, H·W]``.

    For the transform-free ISA, ``y_flat = W @ x_flat`` exactly; for the learned module see
    :func:`affine_form`. In the local-order basis ``S`` (:func:`raster_permutation_matrix`),
    ``S W Sᵀ = Wˡ Pᵀ Wᵍ P`` with ``P = permutation_matrix(N, P_h·P_w)``.

    Args:
        global_relation: ``[B, P_h·P_w, Q_h·Q_w, Q_h·Q_w]``, ``None`` if (and only if) that
            stage is absent.
        local_relation: ``[B, Q_h·Q_w, P_h·P_w, P_h·P_w]`` or ``None``.
        groups: ``(P_h, P_w)``.
        size: ``(H, W)`` of the input; if it is not a multiple of the groups the relations are
            over the padded grid and the result is cropped to the real pixels.
        stages: the order the stages ran in.

    Raises:
        ValueError: a relation whose shape does not fit ``groups`` and ``size`` (e.g. the two
            relations swapped, or another size), relations of different batch sizes, or a
            malformed ``groups``/``size``/``stages``; the message names the expected shapes.
            (Relations of another grouping with the same ``P_h·P_w`` and ``Q_h·Q_w`` have the
            same shapes and cannot be detected.)
    """
    groups, stages, size = check_groups(groups), check_stages(stages), check_size(size)
    given = {"global": global_relation, "local": local_relation}
    _check_relations(given, stages, size, groups)
    grid = padded_size(size, groups)
    dense = None
    for stage in stages:
        step = _raster_relation(given[stage], grid, groups, stage)
        dense = step if dense is None else step @ dense  # later stages act on earlier outputs
    valid = torch.arange(grid[0] * grid[1], device=dense.device).reshape(grid)[: size[0], : size[1]].flatten()
    return dense[:, valid][:, :, valid]


def transform_free_isa(
    x: torch.Tensor, groups: int | Sequence[int], stages: Sequence[str] = STAGES, return_relations: bool = False
):
    """ISA with θ = φ = δ = ρ = identity: every stage is ``softmax(X Xᵀ/√C) X`` within groups.

    Then ``y_flat = dense_relation(...) @ x_flat`` holds exactly, which isolates the claim of
    Eq. 9 from the learned transforms.

    Args:
        x: ``[B, C, H, W]``.
        groups: ``(P_h, P_w)``.
        stages: stage order, as for :class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention`.
        return_relations: also return the relations of both stages.

    Returns:
        ``y [B, C, H, W]``, or :class:`~ocnet_edu.nn.isa.ISAOutput`
        ``(y, global_relation, local_relation)``.
    """
    groups, stages = check_groups(groups), check_stages(stages)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W], got shape {tuple(getattr(x, 'shape', ()))}")
    relations: dict[str, torch.Tensor | None] = {name: None for name in STAGES}
    for stage in stages:
        x, relations[stage] = grouped_attention(x, x, x, stage, groups, return_relations=return_relations)
    return ISAOutput(x, relations["global"], relations["local"]) if return_relations else x


def _conv_matrix(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1×1 convolution as ``(A [C_in, C_out], a [C_out])``: ``conv(x) = x A + a`` per pixel."""
    weight = rearrange(conv.weight, "o i 1 1 -> i o")
    bias = conv.bias
    if bias is None:
        bias = torch.zeros(conv.out_channels, dtype=weight.dtype, device=weight.device)
    return weight, bias


def affine_form(module: SelfAttention | InterlacedSparseSelfAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M [C_in, C_out], c [C_out])`` such that the module computes ``Z = W X M + 1 cᵀ``.

    ``X [N, C_in]`` is the input with pixels as rows (raster order) and ``W`` the dense relation
    (the module's own for SA, :func:`dense_relation` for ISA). Derivation: δ(X) = X Aᵀ + 1aᵀ and
    ρ(Y) = Y Bᵀ + 1bᵀ are 1×1 convolutions; since ``W 1 = 1`` (rows sum to one),
    ``ρ(W δ(X)) = W X AᵀBᵀ + 1 (B a + b)ᵀ``. Stages compose: ``(M₁, c₁)`` then ``(M₂, c₂)``
    gives ``(M₁M₂, M₂ᵀc₁ + c₂)``. θ and φ only shape W, so BN does not enter M or c.
    """
    if not isinstance(module, (SelfAttention, InterlacedSparseSelfAttention)):
        raise ValueError(
            f"module must be a SelfAttention or an InterlacedSparseSelfAttention, got {type(module).__name__}"
        )
    stages = [module] if isinstance(module, SelfAttention) else [module.stage(s) for s in module.stages]
    matrix, offset = None, None
    for stage in stages:
        a, a_bias = _conv_matrix(stage.delta)
        b, b_bias = _conv_matrix(stage.rho)
        m, c = a @ b, a_bias @ b + b_bias
        if matrix is None:
            matrix, offset = m, c
        else:
            matrix, offset = matrix @ m, offset @ m + c
    return matrix, offset


def _check_one_image_relations(
    size: tuple[int, int], groups: tuple[int, int], global_relation: torch.Tensor, local_relation: torch.Tensor
) -> tuple[int, int]:
    """``(Q_h, Q_w)`` for ``size`` and ``groups``; ``ValueError`` unless the relations are one image's."""
    p_h, p_w = groups
    grid_h, grid_w = padded_size(size, groups)
    q_h, q_w = grid_h // p_h, grid_w // p_w
    expected_global, expected_local = _relation_shapes(size, groups).values()
    if not all(isinstance(rel, torch.Tensor) for rel in (global_relation, local_relation)):
        raise ValueError("global_relation and local_relation must be tensors (one image's relations)")
    if tuple(global_relation.shape) != expected_global or tuple(local_relation.shape) != expected_local:
        raise ValueError(
            f"for size {size} and groups {groups} expected relations of shapes {expected_global} and "
            f"{expected_local} (one image), got {tuple(global_relation.shape)} and {tuple(local_relation.shape)}"
        )
    return q_h, q_w


def visualize_relation(
    i: int,
    j: int,
    size: tuple[int, int],
    groups: int | Sequence[int],
    global_relation: torch.Tensor,
    local_relation: torch.Tensor,
    layout: str = "raster",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 2: the global, local and dense relation of pixel ``(i, j)`` as maps.

    Args:
        i, j: row and column of the query pixel.
        size: ``(H, W)`` of the ISA input.
        groups: ``(P_h, P_w)``.
        global_relation: ``[P_h·P_w, Q_h·Q_w, Q_h·Q_w]`` (one image).
        local_relation: ``[Q_h·Q_w, P_h·P_w, P_h·P_w]``.
        layout: ``"raster"`` puts each dense weight at its pixel, so the dense map equals row
            ``i·W + j`` of :func:`dense_relation`. ``"paper"`` reproduces Algorithm 2's final
            reshape ``(P_h, Q_h, P_w, Q_w)``, which tiles the image into ``P_h × P_w``
            subsampled copies (one per global group) — the checkerboard of App. I.

    Returns:
        ``global_map [Q_h, Q_w]`` (weights on the query's global group), ``local_map [P_h, P_w]``
        (weights on its local group) and ``dense_map`` (``[H, W]`` raster; the padded grid for
        ``"paper"``).
    """
    p_h, p_w = check_groups(groups)
    height, width = check_size(size)
    i, j = check_int(i, "i"), check_int(j, "j")
    if not (0 <= i < height and 0 <= j < width):
        raise ValueError(f"pixel ({i}, {j}) is outside the map of size {size}")
    if layout not in ("raster", "paper"):
        raise ValueError(f"layout must be 'raster' or 'paper', got {layout!r}")
    q_h, q_w = _check_one_image_relations(size, (p_h, p_w), global_relation, local_relation)
    global_index = (i % p_h) * p_w + (j % p_w)
    local_index = (i // p_h) * q_w + (j // p_w)
    global_rel = global_relation[global_index, local_index]
    local_rel = local_relation[local_index, global_index]
    # row `local_index` of every global group: the members of the query's local group
    dense = global_relation[:, local_index] * local_rel[:, None]  # [(ph pw), (qh qw)]
    global_map = rearrange(global_rel, "(qh qw) -> qh qw", qh=q_h)
    local_map = rearrange(local_rel, "(ph pw) -> ph pw", ph=p_h)
    if layout == "paper":
        return global_map, local_map, rearrange(dense, "(ph pw) (qh qw) -> (ph qh) (pw qw)", ph=p_h, qh=q_h)
    dense_map = rearrange(dense, "(ph pw) (qh qw) -> (qh ph) (qw pw)", ph=p_h, qh=q_h)
    return global_map, local_map, dense_map[:height, :width]
