"""Flavours: the paper's self-attention block and the variants of two public implementations.

The library follows the paper (Sec. 3.2) by default. Two public code bases trained OCNet/ISANet
models whose weights are published, and their blocks differ from the paper in a few small
choices. Each choice is an option of our own modules, and a *flavour* names one set of them so
that those weights load exactly (:mod:`ocnet_edu.zoo.published`):

===========  ==========================  =======================  =========================
option       ``paper``                   ``openseg`` (ISA block)  ``mmseg`` (ISAHead)
===========  ==========================  =======================  =========================
padding      masked (bottom/right)       zeros split over both    zeros split over both
             padded keys get weight 0    sides, taking part as    sides, taking part as
                                         keys, cropped at the end keys, cropped at the end
ρ            1×1 conv (+bias)            1×1 conv → BN → act      1×1 conv → BN → ReLU
activation   ReLU                        leaky ReLU, slope 0.01   ReLU
θ/φ bias     no (BN follows)             no                       no
δ bias       yes                         no                       yes
===========  ==========================  =======================  =========================

``openseg_oc`` is openseg's dense block of Base-OC/ASP-OC (``base_oc_block.py``): θ/φ convs with
a bias, leaky ReLU 0.01, δ and ρ plain convs with a bias (ρ as in the paper). When the block runs
on a down-sampled map (ASP-OC's ``scale=2``, :func:`ocnet_edu.heads.ocp.run_ocp`), openseg
max-pools (``nn.MaxPool2d(2)``: an odd last row/column is dropped) and up-samples the output
with ``align_corners=True``; the paper's "SA-2×" (Table 3) does not say how, and our default
average-pools (``ceil_mode=True``: an odd last row/column is a window of its own) and
up-samples with ``align_corners=False``.

Sources: openseg-group/openseg.pytorch ``lib/models/modules/isa_block.py``,
``base_oc_block.py``, ``lib/models/tools/module_helper.py`` (``BNReLU`` with ``inplace_abn``
is ``InPlaceABNSync``: BN then leaky ReLU 0.01); open-mmlab/mmsegmentation
``mmseg/models/decode_heads/isa_head.py`` and ``mmseg/models/utils/self_attention_block.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Flavour", "FLAVOURS", "PADDINGS", "POOLS", "RHOS", "get_flavour"]

#: how ISA treats sizes that are not multiples of the groups
PADDINGS = ("masked", "zeros-split")
#: the output transform ρ of one attention block
RHOS = ("conv", "conv_bn_act")
#: how a block run on a down-sampled map pools it: average (ceil mode) or max (floor mode)
POOLS = ("avg-ceil", "max-floor")


@dataclass(frozen=True)
class Flavour:
    """The choices of one implementation of the self-attention block (see the module table).

    Attributes:
        name: the flavour's name.
        padding: ``"masked"`` or ``"zeros-split"`` (ISA only).
        rho: ``"conv"`` (plain 1×1 conv with bias) or ``"conv_bn_act"`` (conv without bias,
            BN, activation).
        slope: negative slope of every activation of the block (0 = ReLU).
        key_bias: θ/φ convolutions carry a bias.
        value_bias: δ carries a bias.
        pool: ``"avg-ceil"`` or ``"max-floor"``: the pooling before a down-sampled OCP.
        align_corners: of the bilinear up-sampling after a down-sampled OCP.
    """

    name: str
    padding: str = "masked"
    rho: str = "conv"
    slope: float = 0.0
    key_bias: bool = False
    value_bias: bool = True
    pool: str = "avg-ceil"
    align_corners: bool = False

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.rho not in RHOS:
            raise ValueError(f"rho must be one of {RHOS}, got {self.rho!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")


FLAVOURS: dict[str, Flavour] = {
    "paper": Flavour("paper"),
    "openseg": Flavour("openseg", padding="zeros-split", rho="conv_bn_act", slope=0.01, value_bias=False),
    "openseg_oc": Flavour("openseg_oc", slope=0.01, key_bias=True, pool="max-floor", align_corners=True),
    "mmseg": Flavour("mmseg", padding="zeros-split", rho="conv_bn_act"),
}


def get_flavour(flavour: str | Flavour) -> Flavour:
    """A :class:`Flavour` from its name (or itself); ``ValueError`` naming the choices otherwise."""
    if isinstance(flavour, Flavour):
        return flavour
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}; choose one of {sorted(FLAVOURS)}")
    return FLAVOURS[flavour]
