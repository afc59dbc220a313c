"""Context as a set of pixels: PPM (Eq. 22), ASPP (Eq. 2) and object context (Eq. 3).

Eq. 1 describes a pixel ``i`` by averaging a transform of the pixels in its context set
``I_i``. The methods differ only in how they pick ``I_i``; here each choice is returned as a
boolean mask ``[N, N]`` whose row ``i`` marks ``I_i`` (pixels in raster order ``h·W + w`` for a
2-D grid). All indices are 0-based, so Eq. 22's ``⌊(j−1)k/N⌋`` becomes ``⌊j·k/N⌋``.

Ignore labels: in :func:`object_context` and :func:`binary_relation_matrix`, a pixel whose
label is ``ignore_index`` (255 by default) has an empty context set and belongs to no other
pixel's context set — it has no object to inherit a class from.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from einops import rearrange

__all__ = [
    "ppm_context",
    "aspp_context",
    "object_context",
    "binary_relation_matrix",
    "context_set",
    "context_representation",
]


def _grid(size: int | Sequence[int]) -> tuple[int, ...]:
    dims = (size,) if isinstance(size, int) else tuple(size)
    if len(dims) not in (1, 2) or not all(isinstance(d, int) and d > 0 for d in dims):
        raise ValueError(f"size must be a positive int N or a pair (H, W), got {size!r}")
    return dims


def _coordinates(dims: tuple[int, ...]) -> list[torch.Tensor]:
    """Per axis, the coordinate of every raster pixel: ``[N]`` each."""
    grids = torch.meshgrid(*(torch.arange(d) for d in dims), indexing="ij")
    return [g.flatten() for g in grids]


def ppm_context(size: int | Sequence[int], k: int) -> torch.Tensor:
    """PPM context for the ``k × k`` (or ``k`` in 1-D) pyramid partition, Eq. 22: ``[N, N]`` bool.

    Pixel ``j`` is in ``I_i`` when it falls in the same bin ``⌊coord·k / length⌋`` along every
    axis. The bins are a strict partition; PyTorch's adaptive pooling uses the same bins when
    the length is a multiple of ``k`` but overlapping ones otherwise.
    """
    dims = _grid(size)
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"the partition k must be a positive int, got {k!r}")
    same = torch.ones(1, dtype=torch.bool)
    for coord, length in zip(_coordinates(dims), dims):
        bins = coord * k // length
        same = same & (bins[:, None] == bins[None, :])
    return same


def aspp_context(size: int | Sequence[int], rates: Sequence[int] = (12, 24, 36)) -> torch.Tensor:
    """ASPP context, Eq. 2: ``[N, N]`` bool.

    In 1-D, ``j ∈ I_i`` iff ``|i − j| ∈ rates``. In 2-D, the off-centre taps of a 3×3 convolution
    with each dilation rate: offsets ``(a·r, b·r)`` with ``a, b ∈ {−1, 0, 1}``, not both zero.
    """
    dims = _grid(size)
    if not rates or any((not isinstance(r, int)) or r <= 0 for r in rates):
        raise ValueError(f"rates must be positive ints, got {rates!r}")
    # Scatter the (at most 8 per rate) taps of every pixel instead of comparing all N² pairs of
    # coordinates: memory is the N² bools of the answer, not N² int64 offsets per axis.
    coords = torch.stack(_coordinates(dims), dim=-1)  # [N, d]
    extent = torch.tensor(dims)
    place = torch.tensor([math.prod(dims[k + 1:]) for k in range(len(dims))])  # raster index weights
    rows = torch.arange(coords.shape[0])
    mask = torch.zeros(coords.shape[0], coords.shape[0], dtype=torch.bool)
    for r in rates:
        for step in itertools.product((-1, 0, 1), repeat=len(dims)):
            if not any(step):
                continue
            target = coords + r * torch.tensor(step)
            inside = ((target >= 0) & (target < extent)).all(dim=-1)
            mask[rows[inside], (target[inside] * place).sum(-1)] = True
    return mask


def _flat_labels(labels: torch.Tensor) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dim() not in (1, 2):
        raise ValueError(f"labels must be [N] or [H, W], got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    return rearrange(labels, "h w -> (h w)") if labels.dim() == 2 else labels


def object_context(labels: torch.Tensor, ignore_index: int | None = 255) -> torch.Tensor:
    """Object context, Eq. 3: ``I_i = {j : l_j = l_i}`` as an ``[N, N]`` bool mask.

    Args:
        labels: ``[N]`` or ``[H, W]`` integer label map.
        ignore_index: label of unlabelled pixels (see the module docstring); ``None`` to treat
            every value as a class.
    """
    flat = _flat_labels(labels)
    same = flat[:, None] == flat[None, :]
    if ignore_index is not None:
        # an unlabelled pixel has the same label only as other unlabelled pixels: clearing their
        # rows clears their columns too (the relation stays symmetric)
        same &= rearrange(flat != ignore_index, "n -> n 1")
    return same


def binary_relation_matrix(labels: torch.Tensor, ignore_index: int | None = 255) -> torch.Tensor:
    """The binary relation matrix of Sec. 3.1: ``[N, N]`` float, 1 where two pixels share a class.

    It records only *which pixels co-occur in a class*, so renaming the classes (any permutation
    of class ids) leaves it unchanged.
    """
    return object_context(labels, ignore_index).float()


def context_set(mask: torch.Tensor, i: int) -> torch.Tensor:
    """The indices ``I_i`` of row ``i`` of a context mask: ``[|I_i|]`` int64."""
    return torch.nonzero(mask[i]).flatten()


def context_representation(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 1 with δ = ρ = identity: the mean of ``x`` over each pixel's context set.

    Args:
        x: ``[N, C]`` pixel features (raster order).
        mask: ``[N, N]`` context mask.

    Returns:
        ``[N, C]``; a pixel with an empty context set gets zeros.
    """
    if x.dim() != 2 or mask.shape != (x.shape[0], x.shape[0]):
        raise ValueError(f"expected x [N, C] and mask [N, N], got {tuple(x.shape)} and {tuple(mask.shape)}")
    weights = mask.to(x.dtype)
    counts = weights.sum(dim=1, keepdim=True).clamp(min=1)
    return weights @ x / counts
