"""Dense relation: self-attention (SA), Eq. 4 and Eq. 10–11 of the OCNet paper.

Shapes use the axis glossary of :mod:`ocnet_edu.nn.isa`: ``b`` batch, ``c`` channels, ``h``/``w``
height and width, ``n`` positions attended over (``h·w`` for SA).

The paper's transforms (Sec. 3.2):

* θ (query) and φ (key): two consecutive ``1×1 conv → BN → ReLU`` to ``key_channels``;
* δ (value): one ``1×1 conv`` to ``value_channels``;
* ρ (output): one ``1×1 conv`` to ``out_channels``;
* relation ``W = softmax(θ(X) φ(X)ᵀ / √d)`` with ``d = key_channels`` (Eq. 10),
  output ``Z = ρ(W δ(X))`` (Eq. 11).

Because δ and ρ are plain (affine) convolutions and every row of W sums to one, the whole module
is ``Z = W X M + 1 cᵀ`` for a matrix M and vector c built from the δ/ρ weights; see
:func:`ocnet_edu.nn.relation.affine_form`.

Relations, everywhere in the package: a module (SA, ISA, the heads, the baselines' attention
blocks) returns its output alone, and with ``return_relations=True`` a named tuple whose first
field is the output and whose other fields are the relations (:class:`AttentionOutput` here,
:class:`~ocnet_edu.nn.isa.ISAOutput` for ISA). The functions :func:`attend` and
:func:`~ocnet_edu.nn.isa.grouped_attention` always return the :class:`AttentionOutput` pair, its
relation ``None`` unless asked for.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ocnet_edu.nn.flavour import Flavour, get_flavour
from ocnet_edu.nn.layers import check_input, conv_bn_act

__all__ = ["AttentionOutput", "attend", "attention_channels", "SelfAttention"]


class AttentionOutput(NamedTuple):
    """An attention's output and its relation (what ``return_relations=True`` returns).

    Attributes:
        output: the attended values (``[b, n, e]`` for :func:`attend`, ``[B, C_out, H, W]`` for
            :class:`SelfAttention`).
        relation: the row-stochastic relation ``W`` (``[b, n, n]``; ``[B, H·W, H·W]`` in raster
            order for :class:`SelfAttention`), or ``None`` when it was not asked for.
    """

    output: torch.Tensor
    relation: torch.Tensor | None


def attention_channels(
    in_channels: int, key_channels: int | None, value_channels: int | None, out_channels: int | None
) -> tuple[int, int, int]:
    """The widths of θ/φ, δ and ρ with the paper's defaults (Sec. 3.2), checked.

    Args:
        in_channels: ``C_in`` of the input.
        key_channels: θ/φ channels, ``None`` for ``C_in // 2`` ("θ, φ and δ halve the channels").
        value_channels: δ channels, ``None`` for ``C_in // 2``.
        out_channels: ρ channels, ``None`` for ``C_in``.

    Returns:
        ``(key_channels, value_channels, out_channels)``.

    Raises:
        ValueError: a width (or ``in_channels``) that is not a positive int.
    """
    key_channels = in_channels // 2 if key_channels is None else key_channels
    value_channels = in_channels // 2 if value_channels is None else value_channels
    out_channels = in_channels if out_channels is None else out_channels
    widths = {"in_channels": in_channels, "key_channels": key_channels, "value_channels": value_channels,
              "out_channels": out_channels}
    for name, value in widths.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return key_channels, value_channels, out_channels


def _key_bias(key_mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[b, m]`` bool mask → score bias ``[b, 1, m]`` (dtype/device of ``like``): 0 for a valid key.

    A large finite negative number instead of -inf: a row whose keys are all padding (a padded
    query, later cropped away) then gets a uniform row instead of NaNs.
    """
    bias = torch.zeros(key_mask.shape, dtype=like.dtype, device=like.device)
    bias = bias.masked_fill(~key_mask, torch.finfo(like.dtype).min)
    return rearrange(bias, "b m -> b 1 m")


def attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    return_relations: bool = False,
    fused: bool = True,
) -> AttentionOutput:
    """Scaled dot-product attention over groups of positions (Eq. 10–11 and Eq. 14–15).

    Args:
        query: ``[b, n, d]`` — θ(X) of ``b`` independent groups of ``n`` positions.
        key: ``[b, n, d]`` — φ(X).
        value: ``[b, n, e]`` — δ(X).
        key_mask: optional bool ``[b, n]``; ``False`` marks a key (a padded position) that must
            receive zero relation weight. Every query row must keep at least one valid key
            unless the query itself is padding (its output is then arbitrary and is discarded).
        return_relations: also return the relation matrix ``W [b, n, n]`` (rows sum to one).
        fused: use :func:`torch.nn.functional.scaled_dot_product_attention` when the relation
            is not requested. The explicit softmax path is always used when it is.

    Returns:
        ``AttentionOutput(output [b, n, e], relation)``, ``relation`` being ``W [b, n, n]`` or,
        unless ``return_relations``, ``None`` (a function always returns the pair; the modules
        return their output alone unless asked).
    """
    scale = 1.0 / math.sqrt(query.shape[-1])
    bias = None if key_mask is None else _key_bias(key_mask, like=query)
    if fused and not return_relations:
        # PyTorch's fused kernels (flash / memory-efficient) only take 4-D [batch, heads, n, d]
        # inputs whose last axis is contiguous; otherwise SDPA silently falls back to the math
        # path, which materialises the n x n matrix. One head axis and a contiguous layout make
        # the fused kernels eligible.
        q, k, v = (rearrange(t, "b n d -> b 1 n d").contiguous() for t in (query, key, value))
        mask = None if bias is None else rearrange(bias, "b 1 m -> b 1 1 m")
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # its default scale is 1/√d, Eq. 10's
        return AttentionOutput(rearrange(out, "b 1 n e -> b n e"), None)
    scores = torch.einsum("bnd,bmd->bnm", query, key) * scale
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    out = torch.einsum("bnm,bme->bne", weights, value)
    return AttentionOutput(out, weights if return_relations else None)


class SelfAttention(nn.Module):
    """Self-attention over all ``H·W`` positions: the dense relation scheme (Eq. 10–11).

    Args:
        in_channels: ``C_in`` of the input ``[B, C_in, H, W]``.
        key_channels: channels of θ(X) and φ(X); default ``C_in // 2``; also the ``d`` of Eq. 10.
        value_channels: channels of δ(X); default ``C_in // 2``.
        out_channels: channels of ρ(·), the output; default ``C_in``.
        flavour: ``"paper"`` (default) or another :mod:`~ocnet_edu.nn.flavour` (ρ with BN and
            activation, leaky ReLU, convolution biases) so that published weights load.

    Attributes:
        flavour: the :class:`~ocnet_edu.nn.flavour.Flavour`.
        fused: when True (default) the forward pass without relation maps uses PyTorch's fused
            ``scaled_dot_product_attention``; the explicit path gives the same numbers.
    """

    def __init__(
        self,
        in_channels: int,
        key_channels: int | None = None,
        value_channels: int | None = None,
        out_channels: int | None = None,
        flavour: str | Flavour = "paper",
    ) -> None:
        super().__init__()
        self.flavour = get_flavour(flavour)
        key_channels, value_channels, out_channels = attention_channels(
            in_channels, key_channels, value_channels, out_channels
        )
        self.in_channels = in_channels
        self.key_channels = key_channels
        self.value_channels = value_channels
        self.out_channels = out_channels
        self.fused = True
        self.theta = self._key_transform()
        self.phi = self._key_transform()
        self.delta = nn.Conv2d(in_channels, value_channels, kernel_size=1, bias=self.flavour.value_bias)
        if self.flavour.rho == "conv":
            self.rho = nn.Conv2d(value_channels, out_channels, kernel_size=1)
        else:
            self.rho = conv_bn_act(value_channels, out_channels, slope=self.flavour.slope)

    def _key_transform(self) -> nn.Sequential:
        """θ or φ: two ``1×1 conv → BN → activation`` to ``key_channels`` (Sec. 3.2)."""
        options = {"bias": self.flavour.key_bias, "slope": self.flavour.slope}
        return nn.Sequential(conv_bn_act(self.in_channels, self.key_channels, **options),
                             conv_bn_act(self.key_channels, self.key_channels, **options))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, in_channels, H, W]``."""
        check_input(x, self.in_channels, type(self).__name__)

    def transforms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """θ(X), φ(X), δ(X) as maps ``[B, key/key/value channels, H, W]``.

        All three are pointwise, so applying them before grouping pixels (as ISA does) is the
        same as applying them inside each group.
        """
        return self.theta(x), self.phi(x), self.delta(x)

    def forward(self, x: torch.Tensor, return_relations: bool = False):
        """Args:
            x: ``[B, C_in, H, W]``.
            return_relations: also return the dense relation ``W [B, H·W, H·W]`` (raster order).

        Returns:
            ``y [B, C_out, H, W]``, or ``AttentionOutput(y, W)``.
        """
        self.check_input(x)
        height, width = x.shape[-2:]
        query, key, value = (rearrange(t, "b c h w -> b (h w) c") for t in self.transforms(x))
        out, relation = attend(query, key, value, return_relations=return_relations, fused=self.fused)
        y = self.rho(rearrange(out, "b (h w) c -> b c h w", h=height, w=width))
        return AttentionOutput(y, relation) if return_relations else y
