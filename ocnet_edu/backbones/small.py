"""A small convolutional backbone for CPU-scale training, with a known receptive field.

Not from the paper: the paper's backbones (dilated ResNet-101, HRNetV2-W48) need a GPU. This one
exists so that the training stack, the tests and the CPU-scale experiments run in minutes, and so
that the receptive field — how far a pixel's feature can see — is a number we control. A context
module is only worth something if the backbone alone cannot see the whole object; with this
backbone that condition can be set, and measured (:meth:`SmallBackbone.receptive_field`).

Layout: a stem (3×3 conv, stride 2), then stages of ``blocks`` 3×3 conv→BN→ReLU layers; the first
layer of stage 2 and stage 3 has stride 2 (output stride 8 after three stages), the channels
double at each stride. The auxiliary head reads the penultimate stage, like ResNet's layer3.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ocnet_edu.nn.layers import conv_bn_relu
from ocnet_edu.backbones.resnet import BackboneFeatures

__all__ = ["SmallBackbone", "receptive_field"]


class SmallBackbone(nn.Module):
    """A plain conv net with output stride 8.

    Args:
        width: channels of the stem; stage ``s`` has ``width · 2^s`` channels.
        blocks: 3×3 conv layers per stage (three stages); more layers, larger receptive field.
        in_channels: image channels.
        head_kernel: kernel of the last (dilated) layer at stride 8: 3 (default) or 1. With 1
            the receptive field shrinks by 32 pixels, which the digit benchmark uses to make sure
            the backbone alone cannot see a whole object.

    Shapes:
        ``[B, in_channels, H, W]`` → :class:`BackboneFeatures` with ``out``
        ``[B, 8·width, ⌈H/8⌉, ⌈W/8⌉]`` and ``aux`` ``[B, 4·width, ⌈H/8⌉, ⌈W/8⌉]``.
    """

    output_stride = 8

    def __init__(self, width: int = 16, blocks: Sequence[int] = (1, 1, 1), in_channels: int = 3,
                 head_kernel: int = 3) -> None:
        super().__init__()
        blocks = tuple(blocks)
        if head_kernel not in (1, 3):
            raise ValueError(f"head_kernel must be 1 or 3, got {head_kernel}")
        if width < 1 or len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"need width >= 1 and three stages of >= 1 blocks, got width={width}, blocks={blocks}")
        self.stem = _strided(in_channels, width)
        stages = []
        channels = width
        for index, count in enumerate(blocks):
            out = width * 2**index
            layers = [_strided(channels, out) if index > 0 else conv_bn_relu(channels, out, 3)]
            layers += [conv_bn_relu(out, out, 3) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out
        self.stages = nn.ModuleList(stages)
        # stage 3 keeps the stride-8 resolution: a dilated stage as in the paper's ResNet
        self.head_stage = nn.Sequential(conv_bn_relu(channels, 2 * channels, head_kernel, dilation=2 if head_kernel > 1 else 1))
        self.blocks = blocks
        self.out_channels = 2 * channels
        self.aux_channels = channels

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """``[B, 3, H, W]`` → :class:`BackboneFeatures` (``out`` at stride 8, ``aux`` the stage before)."""
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        out = self.head_stage(x)
        return BackboneFeatures(out=out, aux=outputs[-1], stages=(*outputs, out))

    def receptive_field(self) -> int:
        """Side (in input pixels) of the square an output feature depends on
        (:func:`receptive_field` over this backbone's layers)."""
        return receptive_field(self.modules())[0]


def _strided(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 conv with stride 2 → BN → ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def receptive_field(modules: Iterable[nn.Module], field: int = 1, jump: int = 1) -> tuple[int, int]:
    """Receptive field and jump after a chain of convolutions, by the usual recursion.

    Each ``nn.Conv2d`` with kernel ``k`` and dilation ``d`` (first spatial axis; square kernels
    assumed) widens the field by ``(k - 1)·d`` times the current jump, then multiplies the jump by
    its stride. Other modules are skipped, so pass only the modules of the path from input to
    output, in order (e.g. ``backbone.modules()``, then a head's, starting from the backbone's
    ``(field, jump)``: a 3×3 convolution at output stride 8 adds 16 pixels).

    Args:
        modules: the layers in the order the input passes them.
        field: side of the square (input pixels) one input of the chain already depends on.
        jump: input pixels between two neighbouring inputs of the chain (the product of strides so far).

    Returns:
        ``(field, jump)`` at the chain's output.
    """
    for module in modules:
        if isinstance(module, nn.Conv2d):
            field += (module.kernel_size[0] - 1) * module.dilation[0] * jump
            jump *= module.stride[0]
    return field, jump
