"""Backbones of OCNet (Sec. 3.4): dilated ResNet-50/101 and HRNetV2.

Every backbone maps ``[B, 3, H, W]`` to a :class:`BackboneFeatures` ``(out, aux, stages)`` and
exposes ``out_channels`` (channels of ``out``, fed to the context module), ``aux_channels``
(channels of ``aux``, fed to the auxiliary head) and ``output_stride``.

=================  ============  ============  ======  =========================================
name               out_channels  aux_channels  stride  notes
=================  ============  ============  ======  =========================================
``resnet50``       2048          1024          8       torchvision key layout
``resnet101``      2048          1024          8       the paper's ResNet backbone
``resnet50_deep``  2048          1024          8       PSPNet deep stem (3× 3×3 conv)
``resnet101_deep`` 2048          1024          8       PSPNet deep stem
``hrnetv2_w18``    270           270           4
``hrnetv2_w32``    480           480           4
``hrnetv2_w48``    720           720           4       the paper's HRNet backbone
``small``          128           64            8       CPU-scale runs only (not in the paper)
=================  ============  ============  ======  =========================================

Pretrained weights always come from a local file (:mod:`ocnet_edu.backbones.imagenet`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ocnet_edu.backbones.hrnet import HRNet, hrnetv2_w18, hrnetv2_w32, hrnetv2_w48
from ocnet_edu.backbones.imagenet import LoadReport, load_pretrained, read_state_dict
from ocnet_edu.backbones.resnet import BackboneFeatures, Bottleneck, DilatedResNet, resnet50, resnet101
from ocnet_edu.backbones.small import SmallBackbone

__all__ = [
    "BACKBONES",
    "BackboneFeatures",
    "Bottleneck",
    "DilatedResNet",
    "HRNet",
    "SmallBackbone",
    "LoadReport",
    "build_backbone",
    "hrnetv2_w18",
    "hrnetv2_w32",
    "hrnetv2_w48",
    "load_pretrained",
    "read_state_dict",
    "resnet50",
    "resnet101",
]

BACKBONES: tuple[str, ...] = (
    "resnet50", "resnet101", "resnet50_deep", "resnet101_deep", "hrnetv2_w18", "hrnetv2_w32", "hrnetv2_w48", "small",
)


def build_backbone(name: str, pretrained: str | None = None, **options: Any) -> nn.Module:
    """Build a backbone by name (see the table in the module docstring).

    Args:
        name: one of :data:`BACKBONES`.
        pretrained: optional path to a local ImageNet checkpoint.
        **options: constructor arguments; only ``"small"`` accepts any (``width``, ``blocks``,
            see :class:`SmallBackbone`); the paper's backbones have fixed architectures.

    Returns:
        The backbone module, with ``out_channels``, ``aux_channels`` and ``output_stride``.

    Raises:
        ValueError: unknown ``name``, or options for a backbone that takes none.
        TypeError: an option ``SmallBackbone`` does not accept.
    """
    if name == "small":
        if pretrained is not None:
            raise ValueError("the small CPU backbone has no pretrained weights")
        unknown = sorted(set(options) - {"width", "blocks", "head_kernel"})
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for backbone 'small'; "
                            "valid options: ['blocks', 'head_kernel', 'width']")
        return SmallBackbone(**options)
    if options:
        raise ValueError(f"backbone {name!r} takes no options, got {sorted(options)}")
    if name in ("resnet50", "resnet50_deep"):
        return resnet50(pretrained=pretrained, deep_stem=name.endswith("_deep"))
    if name in ("resnet101", "resnet101_deep"):
        return resnet101(pretrained=pretrained, deep_stem=name.endswith("_deep"))
    if name == "hrnetv2_w18":
        return hrnetv2_w18(pretrained=pretrained)
    if name == "hrnetv2_w32":
        return hrnetv2_w32(pretrained=pretrained)
    if name == "hrnetv2_w48":
        return hrnetv2_w48(pretrained=pretrained)
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
