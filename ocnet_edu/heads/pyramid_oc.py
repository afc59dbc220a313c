"""Pyramid-OC: object context pooling inside the regions of four pyramid partitions (Fig. 5 c).

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021, Sec. 3.3 ("Combination with PPM"), Sec. 3.4 ("Pyramid-OC") and
Appendix H, Eq. 27–29.

Pipeline (every convolution is ``conv → BN → ReLU``)::

    x [B, C_in, H, W] --3×3 conv--> r [B, 512, H, W]
    for k in (1, 2, 3, 6):  Z^k = the OCP of branch k applied to each of the k×k regions of r
                            (one OCP per branch, its weights shared by the regions; Eq. 27–28)
    u = 1×1 conv 512 → 2048 of r
    concat[Z^1, Z^2, Z^3, Z^6, u] [B, 4096, H, W] --1×1 conv--> y [B, 512, H, W]   (Eq. 29)

Regions when ``k`` does not divide ``H`` (or ``W``). Eq. 27 assumes ``H/k × W/k`` regions. We split
each axis into ``k`` *nearly equal* intervals: with ``H = k·s + e`` (``0 ≤ e < k``) the first ``e``
intervals have ``s + 1`` pixels and the other ``k − e`` have ``s`` (e.g. 128 = 43 + 43 + 42 for
k = 3). Every pixel then belongs to exactly one region and no region is padded, so neither SA nor
ISA needs a key mask for region borders. Batched with einops: the rows split into a "large" band
(``e`` intervals of ``s + 1``) and a "small" band (``k − e`` intervals of ``s``), likewise the
columns; each of the (at most four) rectangles is divisible and is folded into the batch with
``b c (kh h) (kw w) -> (b kh kw) c h w``. (The authors' OCNet.pytorch instead gives the whole
remainder to the last region, ``oc_module/pyramid_oc_block.py``; the regions differ by at most
``k − 1`` pixels per axis from ours.) Under ``torch.export`` (ONNX) the bands, whose number
depends on ``H mod k``, are replaced by the ``k²`` regions one by one at :func:`interval_bounds`,
so that the exported graph holds for every size (:mod:`ocnet_edu.nn.tracing`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from einops import rearrange
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu
from ocnet_edu.nn.tracing import crop, exporting
from .ocp import ObjectContextHead

__all__ = ["PYRAMID", "region_sizes", "interval_bounds", "region_index_map", "map_regions", "PyramidOC"]

#: the pyramid partitions of PPM (Zhao et al., 2017) used by Pyramid-OC
PYRAMID = (1, 2, 3, 6)


def _check_regions(length, k: int) -> None:
    """``ValueError`` unless ``k ≥ 1`` intervals of ``length`` pixels can all be non-empty."""
    if k < 1:
        raise ValueError(f"the number of regions per axis must be positive, got {k}")
    if length < k:
        raise ValueError(f"cannot split {length} pixels into {k} non-empty regions")


def region_sizes(length: int, k: int) -> tuple[int, ...]:
    """Split ``length`` pixels into ``k`` nearly equal intervals, the longer ones first.

    Args:
        length: number of pixels along one axis.
        k: number of intervals.

    Returns:
        ``k`` sizes that sum to ``length`` and differ by at most one.
    """
    _check_regions(length, k)
    small, extra = divmod(length, k)
    return tuple(small + 1 if i < extra else small for i in range(k))


def region_index_map(height: int, width: int, k: int) -> torch.Tensor:
    """The region of every pixel: ``[H, W]`` long tensor with values ``i·k + j`` (row-major).

    Args:
        height, width: map size.
        k: regions per axis.
    """
    rows = torch.repeat_interleave(torch.arange(k), torch.tensor(region_sizes(height, k)))
    cols = torch.repeat_interleave(torch.arange(k), torch.tensor(region_sizes(width, k)))
    return rearrange(rows, "h -> h 1") * k + rearrange(cols, "w -> 1 w")


def _bands(length: int, k: int) -> list[tuple[int, int]]:
    """``(pixels, intervals)`` of the large and the small band along one axis (empty bands dropped)."""
    small, extra = divmod(length, k)
    bands = [(extra * (small + 1), extra), ((k - extra) * small, k - extra)]
    return [band for band in bands if band[1] > 0]


def interval_bounds(length, k: int) -> list[tuple]:
    """``(start, stop)`` of the ``k`` nearly-equal intervals of :func:`region_sizes`, longer first.

    With ``length = k·s + e``, interval ``i`` starts at ``i·s + min(i, e)`` and has
    ``(length − i + k − 1) // k`` pixels (``s + 1`` for ``i < e``, else ``s``): integer arithmetic
    without a branch, so ``length`` may be a symbolic size (export), and each stop is its start
    plus a size that the tracer sees as one expression.
    """
    small, extra = length // k, length % k
    starts = [i * small + (torch.sym_min(i, extra) if i else 0) for i in range(k)]
    return [(start, start + (length - i + k - 1) // k) for i, start in enumerate(starts)]


def _map_regions_one_by_one(x: torch.Tensor, k: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """:func:`map_regions` for ``torch.export``: ``fn`` on each of the ``k²`` regions in turn.

    The bands of :func:`map_regions` exist or not depending on ``H mod k`` (a Python ``if``),
    which a traced graph would fix to the example's case; here every region is cut out with
    :func:`~ocnet_edu.nn.tracing.crop` at :func:`interval_bounds`, valid for every size ≥ k.
    """
    height, width = x.shape[-2:]
    rows = [torch.cat([fn(crop(x, row, col)) for col in interval_bounds(width, k)], dim=3)
            for row in interval_bounds(height, k)]
    return torch.cat(rows, dim=2)


def map_regions(x: torch.Tensor, k: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply ``fn`` to each region of a ``k × k`` nearly-equal partition of ``x`` independently.

    Args:
        x: ``[B, C, H, W]`` with ``H, W ≥ k``.
        k: regions per axis.
        fn: maps a batch of regions ``[B·kh·kw, C, h, w]`` to ``[B·kh·kw, C', h, w]`` and treats
            every batch entry independently (as SA and ISA do, up to BN batch statistics in
            training mode).

    Returns:
        ``[B, C', H, W]``: the regions' outputs put back in place (Eq. 28).
    """
    batch, _, height, width = x.shape
    for length in (height, width):
        _check_regions(length, k)
    if exporting():
        return _map_regions_one_by_one(x, k, fn)
    rows = []
    top = 0
    for band_h, count_h in _bands(height, k):
        left = 0
        row = []
        for band_w, count_w in _bands(width, k):
            block = x[:, :, top : top + band_h, left : left + band_w]
            regions = rearrange(block, "b c (kh h) (kw w) -> (b kh kw) c h w", kh=count_h, kw=count_w)
            out = fn(regions)
            row.append(rearrange(out, "(b kh kw) c h w -> b c (kh h) (kw w)", b=batch, kh=count_h, kw=count_w))
            left += band_w
        rows.append(torch.cat(row, dim=3))
        top += band_h
    return torch.cat(rows, dim=2)


class PyramidOC(ObjectContextHead):
    """Pyramid-OC context module (Sec. 3.4, Eq. 27–29).

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        ocp: ``"sa"`` or ``"isa"``.
        channels: channels after the 3×3 reduction and of every branch output (512).
        pyramid: regions per axis of each branch (``(1, 2, 3, 6)``).
        key_channels, value_channels, groups, stages: the options of every OCP (defaults
            ``channels // 2``, ``channels // 2``, ``(8, 8)`` applied inside each region, global
            then local), see :class:`~ocnet_edu.heads.ocp.ObjectContextHead`.

    Attributes:
        reduce, ocps (one per pyramid level, ``ModuleList``), expand (1×1, 512 → 4·512),
        fuse (1×1, 2·4·512 → 512), out_channels.

    Shapes:
        ``[B, in_channels, H, W] → [B, channels, H, W]``; needs ``H, W ≥ max(pyramid)``.
    """

    def __init__(
        self,
        in_channels: int,
        ocp: str = "isa",
        channels: int = 512,
        pyramid: Sequence[int] = PYRAMID,
        key_channels: int | None = None,
        value_channels: int | None = None,
        groups: tuple[int, int] | None = None,
        stages: tuple[str, ...] | None = None,
    ) -> None:
        levels = tuple(pyramid)
        if not levels or min(levels) < 1:
            raise ValueError(f"pyramid must be a non-empty sequence of positive ints, got {pyramid!r}")
        super().__init__(in_channels, channels, ocp, key_channels, value_channels, groups, stages)
        self.pyramid = levels
        self.ocps = nn.ModuleList(self.new_ocp() for _ in self.pyramid)
        self.expand = conv_bn_relu(channels, len(levels) * channels, kernel_size=1)
        self.fuse = conv_bn_relu(2 * len(levels) * channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, in_channels, H, W] → [B, channels, H, W]``."""
        reduced = self.reduce(x)
        contexts = [
            map_regions(reduced, k, partial(self.object_context, ocp)) for k, ocp in zip(self.pyramid, self.ocps)
        ]
        return self.fuse(torch.cat([*contexts, self.expand(reduced)], dim=1))
