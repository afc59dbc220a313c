"""Dilated ResNet-50/101, the OCNet backbone of Sec. 3.4 ("following PSPNet").

The network is ResNet v1.5 (He et al., 2016, with the stride of a down-sampling Bottleneck on the
3×3 convolution, as in torchvision), modified for dense prediction:

* ``layer3`` and ``layer4`` keep the resolution of ``layer2`` (their strides are removed) and use
  dilation rates 2 and 4 instead, so the output stride is 8 (Sec. 3.4).
* **First block of a dilated stage** (``first_block_dilation``). Two conventions exist and both
  are available:

  - ``"previous"`` (default): the first Bottleneck of ``layer3`` uses dilation 1 and the first of
    ``layer4`` dilation 2 — the rate the removed stride would have produced — and the remaining
    blocks use 2 and 4. This is torchvision's ``replace_stride_with_dilation`` and the
    ``_nostride_dilate`` rule of the authors' own openseg.pytorch
    (``lib/models/backbones/resnet/resnet_backbone.py``, ``DilatedResnetBackbone``).
  - ``"full"``: every block of ``layer3`` uses 2 and every block of ``layer4`` uses 4, first block
    included. This is what hszhao/semseg's PSPNet (``model/pspnet.py``) and the first OCNet
    release (PkuRainBow/OCNet.pytorch, ``network/resnet101_baseline.py``) do.

  Only ``"previous"`` makes the dilated network the exact "à trous" equivalent of the strided
  one: its output-stride-8 features, sampled every 4th pixel, equal the output-stride-32 features
  of the same weights (tested in ``tests/test_backbones.py``).

  The two variants have the same parameters (dilation carries no weights), so an ImageNet
  checkpoint loads into either.
* **Stem.** ``deep_stem=False`` is torchvision's 7×7/2 convolution. ``deep_stem=True`` is the
  PSPNet "deep base" (ResNet-v1c family): three 3×3 convolutions (stride 2, 1, 1) with widths
  64, 64, 128, so ``layer1`` receives 128 channels. Its parameter names are those of the
  PSPNet/CSAIL ImageNet checkpoints: ``conv1, bn1, conv2, bn2, conv3, bn3`` followed by the usual
  ``layer1 ...`` keys (``layer1.0.conv1`` and ``layer1.0.downsample.0`` then have 128 input
  channels). The stem is followed by a 3×3/2 max-pool in both cases.

With the default stem the ``state_dict`` keys are identical to torchvision's ``resnet50`` /
``resnet101`` (``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var,num_batches_tracked}``,
``layerX.Y.{conv1,bn1,conv2,bn2,conv3,bn3}.*``, ``layerX.0.downsample.{0,1}.*``), and ``fc.*`` when
``with_fc=True``. The ``fc`` layer exists only so that key lists and parameter counts can be
compared with torchvision; :meth:`DilatedResNet.forward` never uses it.

Shapes (input ``[B, 3, H, W]``, default widths, output stride 8, ``⌈·⌉`` for sizes that do not
divide): ``layer1`` ``[B, 256, H/4, W/4]``, ``layer2`` ``[B, 512, H/8, W/8]``, ``layer3``
``[B, 1024, H/8, W/8]``, ``layer4`` ``[B, 2048, H/8, W/8]``.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import nn

from ocnet_edu.nn.layers import check_input

__all__ = ["BackboneFeatures", "Bottleneck", "DilatedResNet", "resnet50", "resnet101"]

_BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_DILATIONS = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}


def init_conv_bn_(network: nn.Module) -> None:
    """He (fan-out) initialisation of every convolution; every BatchNorm to weight 1, bias 0.

    The initialisation of both backbones (ResNet, HRNet) before any pretrained weights load.
    """
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class BackboneFeatures(NamedTuple):
    """What every ``ocnet_edu`` backbone returns.

    Attributes:
        out: the representation the context module consumes, ``[B, out_channels, h, w]``
            (ResNet: ``layer4``; HRNet: the concatenated four branches).
        aux: the representation the auxiliary head consumes, ``[B, aux_channels, h', w']``
            (ResNet: ``layer3``; HRNet: the same tensor as ``out``, Sec. 4.2).
        stages: all stage outputs, highest resolution first for HRNet and in network order for
            ResNet (``layer1 … layer4``).
    """

    out: torch.Tensor
    aux: torch.Tensor
    stages: tuple[torch.Tensor, ...]


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
    """A bias-free convolution with 'same' padding and its BatchNorm (two separate modules)."""
    padding = dilation * (kernel_size - 1) // 2
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                     dilation=dilation, bias=False)
    return conv, nn.BatchNorm2d(out_channels)


class Bottleneck(nn.Module):
    """ResNet v1.5 Bottleneck: 1×1 → 3×3 (stride, dilation) → 1×1 (×4 channels), plus a shortcut.

    Parameter names follow torchvision (``conv1 bn1 conv2 bn2 conv3 bn3 downsample.0 downsample.1``)
    and, identically, the HRNet ``layer1`` blocks.

    Args:
        in_channels: channels of the input.
        width: channels of the inner 1×1/3×3 convolutions; the block outputs ``4·width``.
        stride: stride of the 3×3 convolution (and of the projection shortcut).
        dilation: dilation (and padding) of the 3×3 convolution.
        projection: use a 1×1 conv + BN shortcut (``downsample``). Required whenever the stride is
            not 1 or ``in_channels != 4·width``.

    Shapes:
        ``[B, in_channels, H, W] -> [B, 4·width, ⌈H/stride⌉, ⌈W/stride⌉]``.
    """

    expansion: int = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1, dilation: int = 1,
                 projection: bool = False) -> None:
        super().__init__()
        out_channels = width * self.expansion
        if not projection and (stride != 1 or in_channels != out_channels):
            raise ValueError(
                f"Bottleneck({in_channels}->{out_channels}, stride {stride}) needs projection=True"
            )
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride=stride, dilation=dilation)
        self.conv3, self.bn3 = _conv_bn(width, out_channels, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if projection:
            self.downsample = nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride=stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, width·4, H/stride, W/stride]``: the residual block."""
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + shortcut)


def _check_resnet_options(depth: int, output_stride: int, first_block_dilation: str, base_width: int,
                          in_channels: int) -> None:
    """Raise ``ValueError`` naming the argument of :class:`DilatedResNet` that is out of range."""
    if depth not in _BLOCKS_PER_STAGE:
        raise ValueError(f"depth must be one of {sorted(_BLOCKS_PER_STAGE)}, got {depth}")
    if output_stride not in _DILATIONS:
        raise ValueError(f"output_stride must be one of {sorted(_DILATIONS)}, got {output_stride}")
    if first_block_dilation not in ("previous", "full"):
        raise ValueError(f"first_block_dilation must be 'previous' or 'full', got {first_block_dilation!r}")
    if base_width < 1 or in_channels < 1:
        raise ValueError(f"base_width and in_channels must be positive, got {base_width}, {in_channels}")


class DilatedResNet(nn.Module):
    """Dilated ResNet-50/101 returning its stage features (Sec. 3.4; see the module docstring).

    Args:
        depth: 50 or 101.
        output_stride: 8 (paper: ``layer3``/``layer4`` dilated by 2/4), 16 (``layer4`` dilated by
            2) or 32 (the plain classification network).
        first_block_dilation: ``"previous"`` or ``"full"``; which dilation the first block of a
            dilated stage uses (module docstring).
        deep_stem: three 3×3 convolutions instead of one 7×7 (PSPNet deep base).
        stem_width: width of the deep stem's first two convolutions (its third has twice that);
            default ``base_width`` (64, 64, 128: openseg's "deepbase"); mmsegmentation's
            ResNetV1c uses 32 (32, 32, 64).
        pool_ceil_mode: ``ceil_mode`` of the stem's max-pool (openseg's ResNet uses ``True``,
            which adds a row/column for even sizes: 256 → 129).
        base_width: width of ``layer1``'s inner convolutions (64 in the paper). Stage ``i`` has
            inner width ``base_width·2^(i-1)`` and outputs four times that; smaller values give a
            cheap network with the same topology for tests.
        in_channels: input image channels.
        with_fc: also create the ImageNet classifier ``fc`` (unused by ``forward``) so that keys
            and parameter counts match torchvision's.
        num_fc_classes: output size of ``fc``.
        pretrained: path to a local ImageNet checkpoint loaded with
            :func:`ocnet_edu.backbones.imagenet.load_pretrained` (``fc.*`` is ignored).

    Attributes:
        out_channels: channels of ``layer4`` (2048 by default).
        aux_channels: channels of ``layer3`` (1024 by default).
        output_stride: the ``output_stride`` argument.
        stage_channels: output channels of ``layer1 … layer4``.

    Shapes:
        ``forward``: ``[B, in_channels, H, W]`` → :class:`BackboneFeatures` with ``out`` =
        ``layer4`` ``[B, out_channels, H/os, W/os]`` and ``aux`` = ``layer3``.
    """

    def __init__(
        self,
        depth: int = 101,
        output_stride: int = 8,
        first_block_dilation: Literal["previous", "full"] = "previous",
        deep_stem: bool = False,
        base_width: int = 64,
        in_channels: int = 3,
        with_fc: bool = False,
        num_fc_classes: int = 1000,
        pretrained: str | None = None,
        stem_width: int | None = None,
        pool_ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.stem_width = base_width if stem_width is None else stem_width
        self.pool_ceil_mode = pool_ceil_mode
        _check_resnet_options(depth, output_stride, first_block_dilation, base_width, in_channels)
        self.depth = depth
        self.output_stride = output_stride
        self.first_block_dilation = first_block_dilation
        self.deep_stem = deep_stem
        self.in_channels = in_channels
        stem_out = self._build_stem(base_width)
        self.stage_channels: tuple[int, ...] = self._build_stages(stem_out, base_width)
        self.out_channels: int = self.stage_channels[3]
        self.aux_channels: int = self.stage_channels[2]
        self.fc: nn.Linear | None = nn.Linear(self.out_channels, num_fc_classes) if with_fc else None
        self.reset_parameters()
        if pretrained is not None:
            from ocnet_edu.backbones.imagenet import load_pretrained

            load_pretrained(self, pretrained, ignore_prefixes=("fc.",))

    def _build_stem(self, base_width: int) -> int:
        """Stem (output stride 2: conv, then 4: max-pool); returns its output channels."""
        if self.deep_stem:
            width = self.stem_width
            self.conv1, self.bn1 = _conv_bn(self.in_channels, width, 3, stride=2)
            self.conv2, self.bn2 = _conv_bn(width, width, 3)
            self.conv3, self.bn3 = _conv_bn(width, 2 * width, 3)
            stem_out = 2 * width
        else:
            self.conv1 = nn.Conv2d(self.in_channels, base_width, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(base_width)
            stem_out = base_width
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=self.pool_ceil_mode)
        return stem_out

    def _build_stages(self, channels: int, base_width: int) -> tuple[int, ...]:
        """``layer1 … layer4`` with the strides and dilations of ``output_stride``; their channels."""
        previous_dilation = 1
        stage_channels = []
        for index, (num_blocks, dilation) in enumerate(zip(_BLOCKS_PER_STAGE[self.depth],
                                                           _DILATIONS[self.output_stride])):
            width = base_width * 2**index
            # layer1 never down-samples (the max-pool did); the others do unless dilated.
            stride = 1 if index == 0 or dilation > 1 else 2
            first_dilation = previous_dilation if self.first_block_dilation == "previous" else dilation
            blocks = [Bottleneck(channels, width, stride=stride, dilation=first_dilation, projection=True)]
            channels = width * Bottleneck.expansion
            blocks += [Bottleneck(channels, width, dilation=dilation) for _ in range(num_blocks - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            stage_channels.append(channels)
            previous_dilation = dilation
        return tuple(stage_channels)

    def reset_parameters(self) -> None:
        """He (fan-out) initialisation of convolutions; BN weight 1, bias 0; default ``fc``."""
        init_conv_bn_(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and max-pool: ``[B, in_channels, H, W] -> [B, C_stem, H/4, W/4]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Args:
            x: images ``[B, in_channels, H, W]``.

        Returns:
            :class:`BackboneFeatures` (``out`` = ``layer4``, ``aux`` = ``layer3``,
            ``stages`` = ``(layer1, layer2, layer3, layer4)``).
        """
        check_input(x, self.in_channels, type(self).__name__)
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return BackboneFeatures(out=c4, aux=c3, stages=(c1, c2, c3, c4))


def resnet50(pretrained: str | None = None, deep_stem: bool = False, output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-50 (``DilatedResNet(depth=50, ...)``); see :class:`DilatedResNet`."""
    return DilatedResNet(depth=50, output_stride=output_stride, deep_stem=deep_stem, pretrained=pretrained)


def resnet101(pretrained: str | None = None, deep_stem: bool = False, output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-101, the paper's backbone; see :class:`DilatedResNet`."""
    return DilatedResNet(depth=101, output_stride=output_stride, deep_stem=deep_stem, pretrained=pretrained)
