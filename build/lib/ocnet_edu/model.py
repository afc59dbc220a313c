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

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.backbones import BACKBONES, build_backbone
from ocnet_edu.data.constants import IGNORE_INDEX
from ocnet_edu.losses import segmentation_loss
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
    """``module.<attribute>`` (a channel count), checked to be a positive int."""
    value = getattr(module, attribute, None)
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"the {role} ({type(module).__name__}) must define a positive int attribute {attribute!r}")
    return value


def _check_options(num_classes: int, aux_weight: float, dropout: float) -> None:
    """Raise ``ValueError`` for a non-positive class count, a negative aux weight or a bad dropout."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if aux_weight < 0:
        raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _resolve_backbone(backbone: str | nn.Module, pretrained: str | None) -> nn.Module:
    """The backbone module: built by name (with ``pretrained`` weights), or the module given."""
    if isinstance(backbone, str):
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}")
        return build_backbone(backbone, pretrained=pretrained)
    if pretrained is not None:
        raise ValueError("pretrained= only applies to a backbone given by name; load weights into your module first")
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    return backbone


def _resolve_context(context: str | nn.Module, in_channels: int) -> nn.Module:
    """The context module: built by name for ``in_channels`` backbone channels, or the module given."""
    if isinstance(context, str):
        try:
            from ocnet_edu.heads import build_context_module
        except ImportError as error:
            raise ImportError(
                f"context={context!r} needs ocnet_edu.heads.build_context_module, which could not be "
                f"imported ({error}); pass a context nn.Module instead"
            ) from error
        context = build_context_module(context, in_channels=in_channels)
    if not isinstance(context, nn.Module):
        raise TypeError(f"context must be a name or an nn.Module, got {type(context).__name__}")
    return context


def _aux_head(in_channels: int, hidden_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The auxiliary head (Sec. 4.2): 3×3 conv → BN → ReLU → ``Dropout2d`` → 1×1 conv to the classes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden_channels),
        nn.ReLU(inplace=True),
        nn.Dropout2d(dropout),
        nn.Conv2d(hidden_channels, num_classes, kernel_size=1),
    )


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
        _check_options(num_classes, aux_weight, dropout)
        backbone = _resolve_backbone(backbone, pretrained)
        feature_channels = _channels_of(backbone, "out_channels", "backbone")
        aux_in_channels = _channels_of(backbone, "aux_channels", "backbone")
        context = _resolve_context(context, feature_channels)
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
            self.aux_head = _aux_head(aux_in_channels, aux_hidden_channels, num_classes, dropout)

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

    def loss(self, output: OCNetOutput, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
             **options: Any) -> torch.Tensor:
        """Cross-entropy on the logits plus ``aux_weight`` × cross-entropy on the auxiliary logits.

        The training loop calls this, so the model's ``aux_weight`` (which also decides whether
        there is an auxiliary head) is the one weight of the auxiliary loss; the formula itself
        is :func:`ocnet_edu.losses.segmentation_loss`, computed in float32 (also under autocast).

        Args:
            output: the training-mode output of :meth:`forward`.
            target: labels ``[B, H, W]`` (int64), ``ignore_index`` where unlabelled.
            ignore_index: label excluded from the loss.
            options: ``ohem``, ``ohem_thresh``, ``ohem_min_kept``, ``class_weights`` of
                :func:`~ocnet_edu.losses.segmentation_loss` (the config's ``loss`` section).

        Returns:
            A scalar tensor (Sec. 4.2: weights 1 and 0.4).
        """
        if not isinstance(output, OCNetOutput):
            raise TypeError("loss() expects the training-mode OCNetOutput; call model.train() first")
        aux_logits = None if output.aux_logits is None else output.aux_logits.float()
        return segmentation_loss(output.logits.float(), target, aux_logits, aux_weight=self.aux_weight,
                                 ignore_index=ignore_index, **options)
