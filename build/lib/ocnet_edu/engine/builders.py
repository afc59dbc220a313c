"""From a :class:`~ocnet_edu.config.Config` to the objects of a run: model, datasets, optimiser.

* :func:`build_model`: OCNet from ``cfg.model`` (its ``aux_weight`` from ``cfg.loss``);
* :func:`build_train_dataset`: ``data.split`` with the paper's augmentations (Sec. 4.2);
* :func:`build_eval_dataset`: ``data.val_split`` (or any split) with evaluation transforms only;
* :func:`build_optimizer`, :func:`build_scheduler`: SGD with momentum and weight decay, and the
  poly learning rate ``lr · (1 − iter/max_iter)^0.9`` (Sec. 4.2);
* :func:`loss_options`: the keyword options of the loss (OHEM, class weights) from ``cfg.loss``.

Datasets come from the one registry, :data:`ocnet_edu.data.DATASETS`, by ``cfg.data.dataset``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ocnet_edu.config import Config
from ocnet_edu.data.registry import dataset_class, dataset_from_config
from ocnet_edu.data.transforms import eval_transforms, paper_train_transforms
from ocnet_edu.losses import poly_lr_factor

__all__ = [
    "build_eval_dataset",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "build_train_dataset",
    "loss_options",
]


def build_model(cfg: Config) -> nn.Module:
    """OCNet from ``cfg.model`` (backbone, context module and its options, classes, dropout),
    with the auxiliary loss weight ``cfg.loss.aux_weight`` (0 builds no auxiliary head)."""
    from ocnet_edu.backbones import build_backbone
    from ocnet_edu.heads import build_context_module
    from ocnet_edu.model import OCNet

    backbone = build_backbone(cfg.model.backbone, pretrained=cfg.model.pretrained, **cfg.model.backbone_options)
    context = build_context_module(cfg.model.context, in_channels=backbone.out_channels, **cfg.model.context_options)
    return OCNet(backbone, context, num_classes=cfg.model.num_classes, aux_weight=cfg.loss.aux_weight,
                 dropout=cfg.model.dropout)


def build_train_dataset(cfg: Config) -> Dataset:
    """The training split ``cfg.data.split`` with Sec. 4.2's augmentations (flip, which also swaps
    the dataset's left/right classes, scale, brightness, crop) and normalisation."""
    data = cfg.data
    transform = paper_train_transforms(data.crop_size, data.scale_range, data.brightness, base_size=data.base_size,
                                       hflip=data.hflip, flip_pairs=dataset_class(data.dataset).flip_pairs)
    return dataset_from_config(cfg, data.split, transform)


def build_eval_dataset(cfg: Config, split: str | None = None) -> Dataset:
    """The evaluation split ``split`` (default ``cfg.data.val_split``) at full resolution, only
    normalised. For the generated datasets ``"val"`` holds scenes training never sees."""
    return dataset_from_config(cfg, split or cfg.data.val_split, eval_transforms())


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.SGD:
    """SGD over all parameters with ``cfg.optim``'s learning rate, momentum and weight decay."""
    return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                           weight_decay=cfg.optim.weight_decay)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The poly policy (:func:`~ocnet_edu.losses.poly_lr_factor`) over ``cfg.schedule.max_iters``,
    stepped once per iteration."""
    max_iters, power = cfg.schedule.max_iters, cfg.optim.poly_power
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: poly_lr_factor(it, max_iters, power))


def loss_options(cfg: Config, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Keyword options of :meth:`ocnet_edu.model.OCNet.loss` from ``cfg.loss``: OHEM (on/off,
    threshold, minimum kept pixels) and the class weights as a tensor on ``device`` (or ``None``)."""
    weights = cfg.loss.class_weights
    return {
        "ohem": cfg.loss.ohem,
        "ohem_thresh": cfg.loss.ohem_thresh,
        "ohem_min_kept": cfg.loss.ohem_min_kept,
        "class_weights": None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device),
    }
