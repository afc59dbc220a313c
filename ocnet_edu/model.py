"""OCNet: backbone → object context module → classifier, plus an auxiliary head (Fig. 5 (a)).

The pipeline of Sec. 3.4 and the training setting of Sec. 4.2:

* **backbone**: dilated ResNet-101 (output stride 8) or HRNetV2-W48 (output stride 4), see
  :mod:`ocnet_edu.backbones`;
* **context module** on the backbone's final representation (Base-OC, Pyramid-OC, ASP-OC or a
  baseline), built by :func:`ocnet_edu.heads.build_context_module` from a name, or passed in as any
  ``nn.Module`` with an ``out_channels`` attribute that maps ``[B, C_in, h, w]`` to
  ``[B, out_channels, h, w]``;
* **classifier**: ``Dropout2d`` then a 1×1 convolution to ``num_classes``;
* **auxiliary head** (training only) on ResNet's stage 3 (``layer3``, 1024 channels) or on
  HRNet's final representation: 3×3 conv → BN → ReLU → ``Dropout2d`` → 1×1 conv; its loss is
  weighted by 0.4 following PSPNet (Sec. 4.2);
* both logit maps are bilinearly up-sampled to the input size.

Return convention of :meth:`OCNet.forward`: in ``eval()`` mode the logits tensor
``[B, num_classes, H, W]``; in ``train()`` mode an :class:`OCNetOutput` named tuple
``(logits, aux_logits)`` (``aux_logits`` is ``None`` when the model has no auxiliary head). The
choice depends only on ``self.training``, never on tensor values, so ``torch.compile`` traces
each mode once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.backbones import BACKBONES, build_backbone
from ocnet_edu.nn.layers import check_input

__all__ = ["OCNet", "OCNetOutput"]


class OCNetOutput(NamedTuple):
    """Training-mode output of :class:`OCNet`.

    Attributes:
        logits: ``[B, num_classes, H, W]`` from the context module and classifier.
        aux_logits: ``[B, num_classes, H, W]`` from the auxiliary head, or ``None``.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None


def _channels_of(module: nn.Module, attribute: str, role: str) -> int:
    value = getattr(module, attribute, None)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"the {role} ({type(module).__name__}) must define a positive int attribute {attribute!r}")
    return value


class OCNet(nn.Module):
    """OCNet for semantic segmentation (Fig. 5 (a), Sec. 3.4).

    Args:
        backbone: a name from :data:`ocnet_edu.backbones.BACKBONES` (``"resnet101"``,
            ``"hrnetv2_w48"``, ...) or a module returning
            :class:`~ocnet_edu.backbones.BackboneFeatures` with ``out_channels`` and
            ``aux_channels`` attributes.
        context: a name understood by :func:`ocnet_edu.heads.build_context_module` (e.g.
            ``"base_oc_isa"``) or a module with an ``out_channels`` attribute.
        num_classes: number of output classes (19 for Cityscapes).
        pretrained: local ImageNet checkpoint for a backbone given by name.
        aux_weight: weight of the auxiliary loss in :meth:`loss` (0.4, Sec. 4.2). ``0`` builds no
            auxiliary head.
        aux_hidden_channels: channels of the auxiliary head's 3×3 convolution (512).
        dropout: ``Dropout2d`` probability before both 1×1 classifiers.
        align_corners: for the bilinear up-sampling of the logits.
        in_channels: image channels.

    Attributes:
        backbone, context, classifier, aux_head (``None`` without auxiliary head).

    Shapes:
        ``forward``: ``[B, in_channels, H, W]`` → ``[B, num_classes, H, W]`` (eval) or
        :class:`OCNetOutput` of two such tensors (train).
    """

    def __init__(
        self,
        backbone: str | nn.Module = "resnet101",
        context: str | nn.Module = "base_oc_isa",
        num_classes: int = 19,
        pretrained: str | None = None,
        aux_weight: float = 0.4,
        aux_hidden_channels: int = 512,
        dropout: float = 0.1,
        align_corners: bool = True,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if isinstance(backbone, str):
            if backbone not in BACKBONES:
                raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
            backbone = build_backbone(backbone, pretrained=pretrained)
        elif pretrained is not None:
            raise ValueError(
                "pretrained= only applies to a backbone given by name; load weights into your module first"
            )
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
        feature_channels = _channels_of(backbone, "out_channels", "backbone")
        aux_in_channels = _channels_of(backbone, "aux_channels", "backbone")

        if isinstance(context, str):
            try:
                from ocnet_edu.heads import build_context_module
            except ImportError as error:
                raise ImportError(
                    f"context={context!r} needs ocnet_edu.heads.build_context_module, which could not be "
                    f"imported ({error}); pass a context nn.Module instead"
                ) from error
            context = build_context_module(context, in_channels=feature_channels)
        if not isinstance(context, nn.Module):
            raise TypeError(f"context must be a name or an nn.Module, got {type(context).__name__}")
        context_channels = _channels_of(context, "out_channels", "context module")

        self.in_channels = in_channels
        self.num_classes = num_classes
        self.aux_weight = float(aux_weight)
        self.align_corners = align_corners
        self.backbone = backbone
        self.context = context
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(context_channels, num_classes, kernel_size=1)
        self.aux_head: nn.Sequential | None = None
        if aux_weight > 0:
            self.aux_head = nn.Sequential(
                nn.Conv2d(aux_in_channels, aux_hidden_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(aux_hidden_channels),
                nn.ReLU(inplace=True),
                nn.Dropout2d(dropout),
                nn.Conv2d(aux_hidden_channels, num_classes, kernel_size=1),
            )

    def _upsample(self, logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: torch.Tensor) -> torch.Tensor | OCNetOutput:
        """Args:
            x: images ``[B, in_channels, H, W]``.

        Returns:
            eval mode: logits ``[B, num_classes, H, W]``; train mode: :class:`OCNetOutput`.
        """
        check_input(x, self.in_channels, type(self).__name__)
        size = x.shape[-2:]
        features = self.backbone(x)
        logits = self._upsample(self.classifier(self.dropout(self.context(features.out))), size)
        if not self.training:
            return logits
        aux_logits = None
        if self.aux_head is not None:
            aux_logits = self._upsample(self.aux_head(features.aux), size)
        return OCNetOutput(logits, aux_logits)

    def loss(self, output: OCNetOutput, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
        """Cross-entropy on the logits plus ``aux_weight`` × cross-entropy on the auxiliary logits.

        Args:
            output: the training-mode output of :meth:`forward`.
            target: labels ``[B, H, W]`` (int64), ``ignore_index`` where unlabelled.
            ignore_index: label excluded from the loss.

        Returns:
            A scalar tensor (Sec. 4.2: weights 1 and 0.4).
        """
        if not isinstance(output, OCNetOutput):
            raise TypeError("loss() expects the training-mode OCNetOutput; call model.train() first")
        from ocnet_edu.losses import segmentation_loss

        return segmentation_loss(output.logits, target, output.aux_logits, aux_weight=self.aux_weight,
                                 ignore_index=ignore_index)
