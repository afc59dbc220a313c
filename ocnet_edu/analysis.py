"""Does the learned relation approximate object context? A measurement (Sec. 3.1, Fig. 1, 6, 7).

The paper's central claim is that the dense relation ``W`` learned by SA or ISA is a soft
surrogate of the binary relation of Eq. 3: pixel ``i`` should put its weight on pixels of its own
class. :func:`same_class_mass` turns the claim into a number: the relation mass that falls on
pixels of the query's class, averaged over query pixels, next to what a *uniform* relation would
put there (the fraction of pixels of that class). A relation that ignores classes scores the
uniform value; the binary relation of Eq. 3 (rows normalised) scores 1.

:func:`relation_of` extracts the dense relation of the OCP inside a Base-OC head of a model, and
:func:`labels_at` brings a label map down to the feature-map resolution the relation lives at.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ocnet_edu.nn.isa import InterlacedSparseSelfAttention, padded_size, split_padding
from ocnet_edu.nn.relation import dense_relation

__all__ = ["same_class_mass", "labels_at", "ocp_relation", "relation_of"]


def same_class_mass(
    relation: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relation mass on same-class pixels, and the uniform baseline, per image.

    Args:
        relation: ``[B, N, N]`` row-stochastic relation (raster order).
        labels: ``[B, N]`` or ``[B, H, W]`` (with ``H·W = N``) integer labels.
        ignore_index: query pixels with this label are skipped; key pixels with it never count
            as "same class".

    Returns:
        ``(mass [B], uniform [B])``: means over the labelled query pixels of
        ``Σ_j W_ij [l_j = l_i]`` and of ``#{j : l_j = l_i} / N``. NaN for an image with no
        labelled pixel.
    """
    if labels.dim() == 3:
        labels = rearrange(labels, "b h w -> b (h w)")
    if relation.dim() != 3 or relation.shape[-1] != relation.shape[-2] or labels.shape != relation.shape[:2]:
        raise ValueError(f"expected relation [B, N, N] and labels [B, N], got {tuple(relation.shape)} and "
                         f"{tuple(labels.shape)}")
    valid = labels != ignore_index
    same = (labels[:, :, None] == labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    mass = (relation * same).sum(-1)
    uniform = same.sum(-1) / labels.shape[-1]
    count = valid.sum(-1)
    nan = torch.full_like(count, float("nan"), dtype=relation.dtype)
    mean = lambda v: torch.where(count > 0, (v * valid).sum(-1) / count.clamp(min=1), nan)  # noqa: E731
    return mean(mass), mean(uniform.to(relation.dtype))


def labels_at(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resampling of ``[B, H, W]`` labels to ``size`` (the feature map's)."""
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")[:, 0].long()


@torch.no_grad()
def ocp_relation(ocp: nn.Module, reduced: torch.Tensor) -> torch.Tensor:
    """The dense relation ``[B, h·w, h·w]`` of an SA or ISA OCP on ``reduced [B, C, h, w]``,
    over the map's own cells in raster order.

    For ISA it is Eq. 9 (:func:`dense_relation`). In the paper's flavour padded keys are masked,
    so every row sums to one. In the ``zeros-split`` padding of the openseg and mmseg flavours
    (:func:`~ocnet_edu.nn.isa.split_padding`) the padded zeros take part as keys: the relation is
    built over the whole padded grid and the padded rows and columns are dropped, so a row sums
    to one minus the weight that pixel gives to padding.
    """
    out = ocp(reduced, return_relations=True)
    if not isinstance(ocp, InterlacedSparseSelfAttention):
        return out.relation
    size = tuple(reduced.shape[-2:])
    if ocp.flavour.padding != "zeros-split":
        return dense_relation(out.global_relation, out.local_relation, ocp.groups, size, ocp.stages)
    grid = padded_size(size, ocp.groups)
    left, _, top, _ = split_padding(size, ocp.groups)
    dense = dense_relation(out.global_relation, out.local_relation, ocp.groups, grid, ocp.stages)
    rows = torch.arange(top, top + size[0], device=dense.device)[:, None] * grid[1]
    cells = (rows + torch.arange(left, left + size[1], device=dense.device)).flatten()
    return dense[:, cells][:, :, cells]


def relation_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The dense relation ``[B, h·w, h·w]`` of the OCP in a Base-OC head of an OCNet model
    (:func:`ocp_relation`: Eq. 9 for ISA; an SA OCP's relation is dense already).

    Args:
        model: an :class:`~ocnet_edu.model.OCNet` whose ``context`` has ``reduce`` and ``ocp``.
        images: ``[B, 3, H, W]``.
    """
    context = model.context
    if not hasattr(context, "ocp") or not hasattr(context, "reduce"):
        raise ValueError(f"relation_of needs a Base-OC head with an OCP, got {type(context).__name__}")
    was_training = model.training
    model.eval()
    relation = ocp_relation(context.ocp, context.reduce(model.backbone(images).out))
    model.train(was_training)
    return relation
