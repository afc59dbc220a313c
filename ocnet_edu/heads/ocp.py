"""Object context pooling (OCP): the relation module shared by Base-OC, Pyramid-OC and ASP-OC.

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021, Sec. 3.2 ("Object context pooling"). The OCP is either the dense
relation scheme, :class:`~ocnet_edu.nn.attention.SelfAttention` (``"sa"``, Eq. 10–11), or the sparse
one, :class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention` (``"isa"``, Eq. 12–21).

This file only builds the OCP and runs it, optionally on a downsampled map (the "SA-2×" row of
Table 3). Both OCP kinds map ``[B, C, H, W] → [B, C_out, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention

__all__ = ["OCP_KINDS", "DEFAULT_ISA_GROUPS", "build_ocp", "run_ocp"]

#: the two instantiations of the OCP (Sec. 3.2)
OCP_KINDS = ("sa", "isa")

#: ``(P_h, P_w)``; the paper's default (Table 1: "we set P_h = P_w = 8 in all experiments")
DEFAULT_ISA_GROUPS = (8, 8)


def build_ocp(
    kind: str,
    in_channels: int,
    key_channels: int | None = None,
    value_channels: int | None = None,
    out_channels: int | None = None,
    groups: tuple[int, int] | None = None,
    stages: tuple[str, ...] | None = None,
) -> nn.Module:
    """Build the OCP of one kind.

    Args:
        kind: ``"sa"`` (dense relation) or ``"isa"`` (interlaced sparse relation).
        in_channels: ``C`` of the input ``[B, C, H, W]``.
        key_channels: θ/φ channels (default ``C // 2``, Sec. 3.2: "θ, φ and δ halve the input
            channels").
        value_channels: δ channels (default ``C // 2``).
        out_channels: ρ channels (default ``C``).
        groups: ``(P_h, P_w)`` of ISA, default ``(8, 8)``; must be ``None`` for ``"sa"`` (a
            dense relation has no groups, and silently ignoring the option would hide a typo).
        stages: ISA stage order, default ``("global", "local")``; the Table 1 ablations use
            ``("local", "global")``, ``("global",)`` and ``("local",)``. ``None`` for ``"sa"``.

    Returns:
        The module; call it as ``ocp(x)`` → ``[B, out_channels, H, W]``.
    """
    if kind == "sa":
        for option, value in (("groups", groups), ("stages", stages)):
            if value is not None:
                raise ValueError(f"option {option!r} only applies to the ISA OCP (kind='isa'), not to 'sa'")
        return SelfAttention(in_channels, key_channels, value_channels, out_channels)
    if kind == "isa":
        groups = DEFAULT_ISA_GROUPS if groups is None else groups
        stages = ("global", "local") if stages is None else tuple(stages)
        return InterlacedSparseSelfAttention(in_channels, key_channels, value_channels, out_channels, groups=groups,
                                             stages=stages)
    raise ValueError(f"unknown OCP kind {kind!r}; valid kinds: {list(OCP_KINDS)}")


def check_downsample(downsample: int) -> int:
    """Validate an OCP downsampling factor (a positive int)."""
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise ValueError(f"ocp_downsample must be a positive int, got {downsample!r}")
    return downsample


def run_ocp(ocp: nn.Module, x: torch.Tensor, downsample: int = 1, return_relations: bool = False):
    """Apply ``ocp`` to ``x``, optionally on a ``downsample×`` average-pooled copy of ``x``.

    With ``downsample > 1`` the map is average-pooled with a ``downsample × downsample`` window
    (``ceil_mode=True``, so an odd border row/column forms a smaller window of its own), the OCP
    runs on the small map, and its output is upsampled bilinearly back to ``H × W``
    (``align_corners=False``). This is the "SA-2×" variant of Table 3.

    Args:
        ocp: a module built by :func:`build_ocp`.
        x: ``[B, C, H, W]``.
        downsample: pooling factor; 1 means none.
        return_relations: also return the relation maps, as a tuple: ``(W,)`` for SA
            (``[B, n, n]``), ``(W_global, W_local)`` for ISA; computed on the pooled grid.

    Returns:
        ``y [B, C_out, H, W]`` or ``(y, relations)``.
    """
    height, width = x.shape[-2:]
    if downsample > 1:
        x = F.avg_pool2d(x, kernel_size=downsample, stride=downsample, ceil_mode=True)
    if isinstance(ocp, SelfAttention):
        out = ocp(x, return_relation=return_relations)
        y, relations = (out[0], (out[1],)) if return_relations else (out, ())
    else:
        out = ocp(x, return_relations=return_relations)
        y, relations = (out[0], tuple(out[1:])) if return_relations else (out, ())
    if downsample > 1:
        y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
    return (y, relations) if return_relations else y
