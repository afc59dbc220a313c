"""Object context pooling (OCP): the relation module shared by Base-OC, Pyramid-OC and ASP-OC.

Y. Yuan, L. Huang, J. Guo, C. Zhang, X. Chen, J. Wang, "OCNet: Object Context for Semantic
Segmentation", IJCV 2021, Sec. 3.2 ("Object context pooling"). The OCP is either the dense
relation scheme, :class:`~ocnet_edu.nn.attention.SelfAttention` (``"sa"``, Eq. 10–11), or the sparse
one, :class:`~ocnet_edu.nn.isa.InterlacedSparseSelfAttention` (``"isa"``, Eq. 12–21).

This file builds the OCP, runs it, optionally on a downsampled map (the "SA-2×" row of Table 3),
and holds the OCP options of the three OCNet heads in one place, :class:`ObjectContextHead`.
Both OCP kinds map ``[B, C, H, W] → [B, C_out, H, W]`` and, with ``return_relations=True``,
return a named tuple whose first field is that output and whose other fields are the relations
(one for SA, two for ISA).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.flavour import Flavour, get_flavour
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention
from .base import ContextHead

__all__ = ["OCP_KINDS", "DEFAULT_ISA_GROUPS", "ContextOutput", "ObjectContextHead", "build_ocp", "run_ocp"]

#: the two instantiations of the OCP (Sec. 3.2)
OCP_KINDS = ("sa", "isa")

#: ``(P_h, P_w)``; the paper's default (Table 1: "we set P_h = P_w = 8 in all experiments")
DEFAULT_ISA_GROUPS = (8, 8)


class ContextOutput(NamedTuple):
    """A context map and the OCP relations behind it (what ``return_relations=True`` returns).

    Attributes:
        output: ``[B, C, H, W]``.
        relations: the OCP's relations, ``(W,)`` for SA (``[B, n, n]``) and
            ``(W_global, W_local)`` for ISA (shapes in :class:`~ocnet_edu.nn.isa.ISAOutput`).
    """

    output: torch.Tensor
    relations: tuple[torch.Tensor | None, ...]


def build_ocp(
    kind: str,
    in_channels: int,
    key_channels: int | None = None,
    value_channels: int | None = None,
    out_channels: int | None = None,
    groups: tuple[int, int] | None = None,
    stages: tuple[str, ...] | None = None,
    flavour: str | Flavour = "paper",
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
        flavour: ``"paper"`` or a public implementation's :mod:`~ocnet_edu.nn.flavour`.

    Returns:
        The module; call it as ``ocp(x)`` → ``[B, out_channels, H, W]``.
    """
    if kind == "sa":
        for option, value in (("groups", groups), ("stages", stages)):
            if value is not None:
                raise ValueError(f"option {option!r} only applies to the ISA OCP (kind='isa'), not to 'sa'")
        return SelfAttention(in_channels, key_channels, value_channels, out_channels, flavour=flavour)
    if kind == "isa":
        groups = DEFAULT_ISA_GROUPS if groups is None else groups
        stages = ("global", "local") if stages is None else tuple(stages)
        return InterlacedSparseSelfAttention(
            in_channels, key_channels, value_channels, out_channels, groups=groups, stages=stages, flavour=flavour
        )
    raise ValueError(f"unknown OCP kind {kind!r}; valid kinds: {list(OCP_KINDS)}")


def check_downsample(downsample: int) -> int:
    """Validate an OCP downsampling factor (a positive int)."""
    if not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1:
        raise ValueError(f"ocp_downsample must be a positive int, got {downsample!r}")
    return downsample


def run_ocp(ocp: nn.Module, x: torch.Tensor, downsample: int = 1, return_relations: bool = False,
            flavour: str | Flavour = "paper"):
    """Apply ``ocp`` to ``x``, optionally on a ``downsample×`` pooled copy of ``x``.

    With ``downsample > 1`` the map is pooled with a ``downsample × downsample`` window, the
    OCP runs on the small map, and its output is upsampled bilinearly back to ``H × W``. This is
    the "SA-2×" variant of Table 3. How, is the ``flavour``'s choice
    (:class:`~ocnet_edu.nn.flavour.Flavour` ``pool`` and ``align_corners``): the paper's flavour
    average-pools with ``ceil_mode=True`` (an odd border row/column forms a smaller window of its
    own) and up-samples with ``align_corners=False``; openseg's ASP-OC max-pools with
    ``ceil_mode=False`` (an odd border row/column is dropped) and up-samples with
    ``align_corners=True``.

    Args:
        ocp: a module built by :func:`build_ocp`.
        x: ``[B, C, H, W]``.
        downsample: pooling factor; 1 means none.
        return_relations: also return the relation maps, computed on the pooled grid.
        flavour: the :mod:`~ocnet_edu.nn.flavour` whose pooling and up-sampling to use.

    Returns:
        ``y [B, C_out, H, W]``, or :class:`ContextOutput` ``(y, relations)``.
    """
    flavour = get_flavour(flavour)
    height, width = x.shape[-2:]
    if downsample > 1:
        if flavour.pool == "max-floor":
            if min(height, width) < downsample:
                raise ValueError(f"a {height}x{width} map is smaller than the {downsample}x{downsample} max-pooling "
                                 f"window of flavour {flavour.name!r}")
            x = F.max_pool2d(x, kernel_size=downsample, stride=downsample)
        else:
            x = F.avg_pool2d(x, kernel_size=downsample, stride=downsample, ceil_mode=True)
    out = ocp(x, return_relations=return_relations)
    y, *relations = out if return_relations else (out,)
    if downsample > 1:
        y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=flavour.align_corners)
    return ContextOutput(y, tuple(relations)) if return_relations else y


class ObjectContextHead(ContextHead):
    """Base of the OCNet heads (Base-OC, Pyramid-OC, ASP-OC): the reduction and the OCP options.

    The OCP options are handled here, once: :meth:`new_ocp` builds an OCP from them (a head
    may hold one or several) and :meth:`object_context` runs one with the head's
    ``ocp_downsample``.

    Args:
        in_channels: channels of the backbone map (2048 for ResNet-101).
        channels: channels of the 3×3 reduction ``reduce`` and of every OCP's input and output.
        ocp: ``"sa"`` or ``"isa"`` — the OCP instantiation (Sec. 3.2).
        key_channels: θ/φ channels of the OCP (default ``channels // 2``).
        value_channels: δ channels of the OCP (default ``channels // 2``).
        groups: ``(P_h, P_w)`` of the ISA OCP (default ``(8, 8)``); only for ``ocp="isa"``.
        stages: ISA stage order (default global then local, Table 1); only for ``ocp="isa"``.
        ocp_downsample: run the OCP on a map pooled by this factor and upsample its output
            bilinearly (1 = the paper's text; 2 = "SA-2×" of Table 3); see :func:`run_ocp`.
        flavour: the OCP's :mod:`~ocnet_edu.nn.flavour` (``"paper"``; others load published
            weights), also its pooling when ``ocp_downsample > 1``.
        reduce_bias, slope: of the 3×3 reduction (see :class:`~ocnet_edu.heads.base.ContextHead`).

    Attributes:
        reduce, ocp_downsample, flavour, out_channels.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        ocp: str,
        key_channels: int | None = None,
        value_channels: int | None = None,
        groups: tuple[int, int] | None = None,
        stages: tuple[str, ...] | None = None,
        ocp_downsample: int = 1,
        flavour: str | Flavour = "paper",
        reduce_bias: bool = False,
        slope: float = 0.0,
    ) -> None:
        downsample = check_downsample(ocp_downsample)
        super().__init__(in_channels, channels, reduce_bias, slope)
        self.ocp_downsample = downsample
        self.flavour = get_flavour(flavour)
        self._ocp_options = dict(
            kind=ocp, in_channels=channels, key_channels=key_channels, value_channels=value_channels,
            out_channels=channels, groups=groups, stages=stages, flavour=self.flavour,
        )

    def new_ocp(self) -> nn.Module:
        """A new OCP built from the head's options: ``[B, channels, H, W] → [B, channels, H, W]``."""
        return build_ocp(**self._ocp_options)

    def object_context(self, ocp: nn.Module, reduced: torch.Tensor, return_relations: bool = False):
        """Run ``ocp`` on ``reduced [B, channels, H, W]`` with the head's ``ocp_downsample``.

        Returns:
            ``[B, channels, H, W]``, or :class:`ContextOutput` when ``return_relations``.
        """
        return run_ocp(ocp, reduced, self.ocp_downsample, return_relations, self.flavour)
