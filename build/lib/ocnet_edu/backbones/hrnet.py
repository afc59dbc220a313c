"""HRNetV2 (Sun et al., 2019), the second OCNet backbone of Sec. 3.4.

HRNet keeps a high-resolution branch through the whole network and adds lower-resolution
branches stage by stage, exchanging information between all of them after every module:

* **stem**: two 3×3 stride-2 convolutions (64 channels) → output stride 4;
* **stage 1** (``layer1``): four Bottlenecks, 64 → 256 channels;
* **stages 2, 3, 4**: 2, 3, 4 parallel branches at strides 4, 8, 16, 32 with widths
  ``C, 2C, 4C, 8C`` (``C = 48`` for HRNetV2-W48), made of ``num_modules = 1, 4, 3``
  high-resolution modules. Each module runs ``num_blocks = 4`` BasicBlocks per branch and then
  *fuses*: output branch ``i`` is ``ReLU(Σ_j f_ij(x_j))`` where ``f_ii`` is the identity,
  ``f_ij`` for a lower-resolution ``j > i`` is a 1×1 conv + BN followed by bilinear up-sampling,
  and ``f_ij`` for a higher-resolution ``j < i`` is ``i − j`` stride-2 3×3 convs + BN (ReLU
  between them);
* **transitions** between stages: a new branch is made from the lowest-resolution output of the
  previous stage by stride-2 3×3 conv + BN + ReLU; existing branches pass through unchanged
  (or through a 3×3 conv if their width changes, which the standard configurations never do);
* **HRNetV2 representation**: the four branch outputs are bilinearly up-sampled to the highest
  resolution and concatenated: ``[B, C+2C+4C+8C, H/4, W/4]`` (720 channels for W48). OCNet puts its
  context module, and its auxiliary head (Sec. 4.2), on this tensor.

Parameter names follow the official HRNet ImageNet checkpoints (``conv1 bn1 conv2 bn2 layer1
transition1 stage2 transition2 stage3 transition3 stage4``; e.g.
``stage2.0.branches.0.0.conv1.weight``, ``stage2.0.fuse_layers.1.0.0.0.weight``,
``transition3.3.0.0.weight``), so ``hrnetv2_w48_imagenet_pretrained.pth`` loads after its
classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``)
is dropped. Positions that hold ``None`` in the official code (``fuse_layers.i.i`` and unchanged
transitions) hold a parameter-free ``nn.Identity`` here, which yields the same keys.

Up-sampling uses ``align_corners=True`` by default, as the segmentation code of HRNet and the
authors' openseg.pytorch do (``lib/models/backbones/hrnet/hrnet_backbone.py``); the ImageNet
classification code up-samples with nearest neighbour inside ``fuse_layers``, which carries no
weights either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.backbones.resnet import BackboneFeatures, Bottleneck, init_conv_bn_
from ocnet_edu.nn.layers import check_input

__all__ = ["BasicBlock", "HighResolutionModule", "HRNet", "hrnetv2_w18", "hrnetv2_w32", "hrnetv2_w48"]


def _conv3x3_bn(in_channels: int, out_channels: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    """``Sequential(conv3x3, BN[, ReLU])`` — indices 0/1 match the official parameter names."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 conv + BN layers with an identity shortcut (He et al., 2016).

    Args:
        channels: input and output channels.

    Shapes:
        ``[B, channels, H, W] -> [B, channels, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W] -> [B, C, H, W]``: two 3×3 convolutions plus the identity."""
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + x)


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by the all-to-all fusion (module docstring).

    Args:
        widths: channels of each branch, highest resolution first; branch ``k`` has stride
            ``2^k`` relative to branch 0.
        num_blocks: BasicBlocks per branch.
        align_corners: passed to the bilinear up-sampling of lower-resolution branches.

    Shapes:
        ``forward``: a list of ``[B, widths[k], H/2^k, W/2^k]`` → a list of the same shapes.
    """

    def __init__(self, widths: Sequence[int], num_blocks: int, align_corners: bool = True) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.align_corners = align_corners
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(width) for _ in range(num_blocks)]) for width in self.widths
        )
        fuse_layers = []
        for i, width_i in enumerate(self.widths):
            row: list[nn.Module] = []
            for j, width_j in enumerate(self.widths):
                if j > i:  # lower resolution: 1×1 conv + BN, then up-sample in forward
                    row.append(nn.Sequential(nn.Conv2d(width_j, width_i, 1, bias=False), nn.BatchNorm2d(width_i)))
                elif j == i:
                    row.append(nn.Identity())
                else:  # higher resolution: i − j stride-2 convs; ReLU on all but the last
                    steps = [_conv3x3_bn(width_j, width_j, stride=2) for _ in range(i - j - 1)]
                    steps.append(_conv3x3_bn(width_j, width_i, stride=2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """One map per branch ``[B, C_i, H/2^i, W/2^i]`` in, the same shapes out, each branch
        refined and then fused with every other (up-/down-sampled to its resolution)."""
        if len(xs) != len(self.widths):
            raise ValueError(f"expected {len(self.widths)} branch inputs, got {len(xs)}")
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            size = xs[i].shape[-2:]
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                if j > i:
                    y = F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)
                total = total + y
            fused.append(self.relu(total))
        return fused


def _transition(previous: Sequence[int], current: Sequence[int]) -> nn.ModuleList:
    """Maps the outputs of one stage to the inputs of the next (module docstring)."""
    layers: list[nn.Module] = []
    for i, width in enumerate(current):
        if i < len(previous):
            layers.append(nn.Identity() if previous[i] == width else _conv3x3_bn(previous[i], width))
        else:  # new branch, grown from the lowest-resolution previous output
            steps = [_conv3x3_bn(previous[-1], previous[-1], stride=2) for _ in range(i - len(previous))]
            steps.append(_conv3x3_bn(previous[-1], width, stride=2))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def _check_hrnet_options(widths: tuple[int, ...], num_modules: tuple[int, ...], sizes: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless HRNetV2 gets 4 widths, 3 module counts and positive sizes."""
    if len(widths) != 4 or len(num_modules) != 3:
        raise ValueError(f"HRNetV2 needs 4 widths and 3 num_modules, got {widths} and {num_modules}")
    if min(widths + num_modules + sizes) < 1:
        raise ValueError("all HRNet widths, counts and channels must be positive")


class HRNet(nn.Module):
    """HRNetV2 backbone returning the concatenated multi-resolution representation.

    Args:
        widths: branch widths of stage 4 (stages 2 and 3 use the first 2 and 3); ``(48, 96, 192,
            384)`` for W48, ``(18, 36, 72, 144)`` for W18, ``(32, 64, 128, 256)`` for W32.
        num_modules: number of high-resolution modules in stages 2, 3, 4 (``(1, 4, 3)``).
        num_blocks: BasicBlocks per branch in every module (4).
        stem_channels: channels of the two stem convolutions (64).
        stage1_width: inner width of the stage-1 Bottlenecks, which output ``4·stage1_width`` (64).
        stage1_blocks: Bottlenecks in stage 1 (4).
        in_channels: input image channels.
        align_corners: for every bilinear up-sampling (fusion and final concatenation).
        pretrained: path to a local HRNet ImageNet checkpoint (classification-head keys ignored).

    Attributes:
        out_channels: ``sum(widths)`` (720 for W48).
        aux_channels: equal to ``out_channels`` (the auxiliary head sees the same tensor).
        output_stride: 4.
        stage_channels: ``widths``.

    Shapes:
        ``forward``: ``[B, in_channels, H, W]`` → :class:`BackboneFeatures` with ``out`` =
        ``aux`` = ``[B, sum(widths), ⌈H/4⌉, ⌈W/4⌉]`` and ``stages`` the four branch outputs
        ``[B, widths[k], ⌈H/2^(k+2)⌉, ⌈W/2^(k+2)⌉]``.
    """

    output_stride: int = 4

    def __init__(
        self,
        widths: Sequence[int] = (48, 96, 192, 384),
        num_modules: Sequence[int] = (1, 4, 3),
        num_blocks: int = 4,
        stem_channels: int = 64,
        stage1_width: int = 64,
        stage1_blocks: int = 4,
        in_channels: int = 3,
        align_corners: bool = True,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        widths, num_modules = tuple(widths), tuple(num_modules)
        _check_hrnet_options(widths, num_modules, (num_blocks, stem_channels, stage1_width, stage1_blocks, in_channels))
        self.in_channels = in_channels
        self.align_corners = align_corners

        self.conv1 = nn.Conv2d(in_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.conv2 = nn.Conv2d(stem_channels, stem_channels, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)

        stage1_out = stage1_width * Bottleneck.expansion
        blocks = [Bottleneck(stem_channels, stage1_width, projection=stem_channels != stage1_out)]
        blocks += [Bottleneck(stage1_out, stage1_width) for _ in range(stage1_blocks - 1)]
        self.layer1 = nn.Sequential(*blocks)

        previous: tuple[int, ...] = (stage1_out,)
        for stage, modules in zip((2, 3, 4), num_modules):
            current = widths[:stage]
            self.add_module(f"transition{stage - 1}", _transition(previous, current))
            self.add_module(
                f"stage{stage}",
                nn.Sequential(*[HighResolutionModule(current, num_blocks, align_corners) for _ in range(modules)]),
            )
            previous = current

        self.stage_channels: tuple[int, ...] = widths
        self.out_channels: int = sum(widths)
        self.aux_channels: int = self.out_channels
        self.reset_parameters()
        if pretrained is not None:
            from ocnet_edu.backbones.imagenet import HRNET_IGNORED_PREFIXES, load_pretrained

            load_pretrained(self, pretrained, ignore_prefixes=HRNET_IGNORED_PREFIXES)

    def reset_parameters(self) -> None:
        """He (fan-out) initialisation of convolutions; BN weight 1, bias 0."""
        init_conv_bn_(self)

    @staticmethod
    def _run_transition(transition: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(xs[i] if i < len(xs) else xs[-1]) for i, layer in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> BackboneFeatures:
        """Args:
            x: images ``[B, in_channels, H, W]``.

        Returns:
            :class:`BackboneFeatures` (``out`` = ``aux`` = the HRNetV2 concatenation,
            ``stages`` = the four branch outputs).
        """
        check_input(x, self.in_channels, type(self).__name__)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        xs = self.stage2(self._run_transition(self.transition1, xs))
        xs = self.stage3(self._run_transition(self.transition2, xs))
        xs = self.stage4(self._run_transition(self.transition3, xs))
        size = xs[0].shape[-2:]
        upsampled = [xs[0]] + [
            F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners) for y in xs[1:]
        ]
        out = torch.cat(upsampled, dim=1)
        return BackboneFeatures(out=out, aux=out, stages=tuple(xs))


def hrnetv2_w18(pretrained: str | None = None) -> HRNet:
    """HRNetV2-W18: widths ``(18, 36, 72, 144)``, 270 output channels."""
    return HRNet(widths=(18, 36, 72, 144), pretrained=pretrained)


def hrnetv2_w32(pretrained: str | None = None) -> HRNet:
    """HRNetV2-W32: widths ``(32, 64, 128, 256)``, 480 output channels."""
    return HRNet(widths=(32, 64, 128, 256), pretrained=pretrained)


def hrnetv2_w48(pretrained: str | None = None) -> HRNet:
    """HRNetV2-W48, the paper's HRNet backbone: widths ``(48, 96, 192, 384)``, 720 output channels."""
    return HRNet(widths=(48, 96, 192, 384), pretrained=pretrained)
