"""Evaluating a segmentation model: single- or multi-scale, with flipping and sliding windows.

``python -m ocnet_edu evaluate --config RUN/config.yaml --checkpoint RUN/final.pt
[--scales 0.75 1 1.25 1.5 1.75] [--flip] [--sliding]`` (also under ``torchrun``: each process
scores its share of the images and the confusion matrices are summed across processes).

* :func:`sliding_window_logits` tiles an image larger than the training crop with crops of
  that size at stride ``2/3`` of it, and averages the overlapping logits (needed for the
  1024×2048 Cityscapes images, which do not fit a crop-trained model's memory in one piece).
* :func:`multi_scale_logits` resizes the image to each scale, optionally adds the horizontally
  flipped prediction, and averages the softmax-free logits resized back to the input size (or,
  as mmsegmentation's test-time augmentation does, the softmax probabilities; see
  :mod:`ocnet_edu.engine.published` for the published models' test pipelines).
* :func:`evaluate_model` accumulates :class:`~ocnet_edu.metrics.ConfusionMatrix` (mIoU, pixel
  accuracy) and :class:`~ocnet_edu.metrics.BoundaryFScore` (Table 6) over a dataset.
* :func:`checkpoint_session` is the set-up that :func:`evaluate` and
  :func:`ocnet_edu.engine.predict.predict` share: processes, the trained model, the split.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.config import Config, validate_config
from ocnet_edu.data.transforms import check_flip_pairs
from ocnet_edu.engine import checkpoint as ckpt
from ocnet_edu.engine import distributed
from ocnet_edu.engine.builders import build_eval_dataset, build_model
from ocnet_edu.metrics import BoundaryFScore, BoundaryScores, ConfusionMatrix, SegmentationScores

#: how :func:`multi_scale_logits` combines the predictions of the scales and flips
MERGES = ("logits", "softmax")
#: how a scaled size is rounded: Python's ``round``, down (openseg: ``int(h * s)``), half up (mmcv)
ROUNDINGS = ("round", "floor", "half-up")

__all__ = ["MERGES", "ROUNDINGS", "check_scales", "scaled_size", "checkpoint_session", "dataset_flip_pairs", "evaluate", "evaluate_model", "load_model",
           "multi_scale_logits", "shard_with_progress", "sliding_window_logits"]


def _forward(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The logits of ``model`` (the eval-mode tensor, or the ``logits`` of a training output)."""
    out = model(image)
    return out.logits if hasattr(out, "logits") else out


def sliding_window_logits(
    model: nn.Module, image: torch.Tensor, num_classes: int, crop_size: Sequence[int], stride_rate: float = 2 / 3
) -> torch.Tensor:
    """Logits ``[B, K, H, W]`` of ``image`` ``[B, 3, H, W]`` from overlapping ``crop_size`` tiles.

    Images smaller than the crop are padded with zeros (the normalised mean) at the bottom and
    right and the logits cropped back. Every pixel is covered at least once.
    """
    crop_h, crop_w = (int(c) for c in crop_size)
    if min(crop_h, crop_w) < 1 or not 0 < stride_rate <= 1:
        raise ValueError(f"sliding windows need a positive crop size and a stride rate in (0, 1], "
                         f"got crop {tuple(crop_size)} and stride rate {stride_rate}")
    batch, _, height, width = image.shape
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    padded = F.pad(image, (0, pad_w, 0, pad_h))
    full_h, full_w = padded.shape[-2:]
    stride_h, stride_w = max(1, int(crop_h * stride_rate)), max(1, int(crop_w * stride_rate))
    rows = max(1, math.ceil((full_h - crop_h) / stride_h) + 1)
    cols = max(1, math.ceil((full_w - crop_w) / stride_w) + 1)
    logits = image.new_zeros(batch, num_classes, full_h, full_w)
    count = image.new_zeros(1, 1, full_h, full_w)
    for r in range(rows):
        for c in range(cols):
            top = min(r * stride_h, full_h - crop_h)
            left = min(c * stride_w, full_w - crop_w)
            tile = padded[..., top: top + crop_h, left: left + crop_w]
            logits[..., top: top + crop_h, left: left + crop_w] += _forward(model, tile)
            count[..., top: top + crop_h, left: left + crop_w] += 1
    return (logits / count)[..., :height, :width]


def dataset_flip_pairs(dataset) -> tuple[tuple[int, int], ...]:
    """The left/right class pairs of ``dataset`` (``flip_pairs``; that of ``dataset.dataset`` for
    a ``Subset``), or none."""
    return getattr(dataset, "flip_pairs", getattr(getattr(dataset, "dataset", None), "flip_pairs", ()))


def scaled_size(size: tuple[int, int], scale: float, rounding: str = "round") -> tuple[int, int]:
    """``(h, w)`` times ``scale``, rounded by ``rounding`` (:data:`ROUNDINGS`), at least 1."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    rule = {"round": round, "floor": math.floor, "half-up": lambda v: math.floor(v + 0.5)}[rounding]
    return tuple(max(1, int(rule(n * scale))) for n in size)


def multi_scale_logits(model: nn.Module, image: torch.Tensor, num_classes: int, scales: Sequence[float] = (1.0,),
                       flip: bool = False, crop_size: Sequence[int] | None = None,
                       flip_pairs: Sequence[tuple[int, int]] = (), merge: str = "logits", rounding: str = "round",
                       align_corners: bool = True) -> torch.Tensor:
    """Average of the logits at several scales (and their mirror images), at the input size.

    Args:
        model: in eval mode, mapping ``[B, 3, h, w]`` to logits ``[B, K, h, w]``.
        image: ``[B, 3, H, W]`` normalised images.
        num_classes: ``K``.
        scales: resize factors (the paper's multi-scale test uses 0.75 … 1.75).
        flip: also predict the horizontally flipped image and flip the logits back.
        crop_size: if given, predict each scaled image with :func:`sliding_window_logits`.
        flip_pairs: class ids ``(left, right)`` whose channels are exchanged in the logits of a
            mirrored image before they are added (the dataset's ``flip_pairs``; LIP).
        merge: ``"logits"`` (average the logits; openseg sums them, the same argmax) or
            ``"softmax"`` (average the class probabilities, as mmsegmentation's ``SegTTAModel``).
        rounding: of the scaled sizes (:func:`scaled_size`).
        align_corners: of the bilinear resizing of the image to a scale and of the logits back.

    Returns:
        ``[B, K, H, W]``: averaged logits, or averaged probabilities for ``merge="softmax"``.
    """
    check_scales(scales)
    if merge not in MERGES:
        raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
    height, width = image.shape[-2:]
    channel_order = _flip_channel_order(num_classes, flip_pairs).to(image.device)
    total = image.new_zeros(image.shape[0], num_classes, height, width)

    def predict(x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, K, h, w]`` of one scaled image (sliding windows if ``crop_size``)."""
        return _forward(model, x) if crop_size is None else sliding_window_logits(model, x, num_classes, crop_size)

    def back(logits: torch.Tensor) -> torch.Tensor:
        """Logits of a scaled image at the input size, as probabilities for ``merge="softmax"``."""
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=align_corners)
        return logits.softmax(dim=1) if merge == "softmax" else logits

    for scale in scales:
        size = scaled_size((height, width), scale, rounding)
        scaled = image if size == (height, width) else F.interpolate(image, size=size, mode="bilinear",
                                                                     align_corners=align_corners)
        total += back(predict(scaled))
        if flip:
            total += back(predict(scaled.flip(-1)).flip(-1)[:, channel_order])
    return total / (len(scales) * (2 if flip else 1))


def _flip_channel_order(num_classes: int, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``[K]`` channel indices that exchange each ``(left, right)`` pair (identity elsewhere)."""
    order = torch.arange(num_classes)
    for a, b in check_flip_pairs(flip_pairs):
        order[a], order[b] = b, a
    return order


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """The test scales as floats; ``ValueError`` unless there is at least one and each is a
    finite number > 0 (a scale of 0 would predict a 1×1 image and report a meaningless score)."""
    values = tuple(float(s) for s in scales)
    bad = [s for s in values if not (math.isfinite(s) and s > 0)]
    if not values or bad:
        raise ValueError(f"test scales must be finite numbers > 0, got {list(scales)}")
    return values


def shard_with_progress(length: int, progress: bool, desc: str) -> Iterator[int]:
    """This process's indices of a dataset of ``length`` items (:func:`distributed.shard`), with a
    progress bar on rank 0 if ``progress``."""
    from tqdm import tqdm  # plain bars: tqdm.auto warns in notebooks without ipywidgets

    return iter(tqdm(distributed.shard(length), disable=not (progress and distributed.is_main()), desc=desc,
                     unit="img"))


@torch.inference_mode()
def evaluate_model(
    model: nn.Module,
    dataset,
    num_classes: int,
    device: torch.device | str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: Sequence[int] | None = None,
    boundary_tolerances: Sequence[int] = (3, 5, 9, 12),
    progress: bool = False,
    flip_pairs: Sequence[tuple[int, int]] | None = None,
    tta_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (items ``(image [3,H,W], label [H,W])``), one image at a time.

    ``tta_options``: further keyword options of :func:`multi_scale_logits` (``merge``,
    ``rounding``, ``align_corners``; a published model's test pipeline).

    ``flip_pairs`` (left/right classes for ``flip``) defaults to the dataset's ``flip_pairs``
    attribute (that of ``dataset.dataset`` for a ``Subset``), else none. The result holds mIoU,
    pixel and mean accuracy, per-class IoU, and the boundary F-score per tolerance, averaged over
    classes (``boundary_f``) and per class (``boundary_f_per_class``, ``None`` where a class
    was never scored).

    Under ``torch.distributed`` each rank takes every ``world_size``-th image and the
    accumulators are summed across ranks before scoring.
    """
    device = torch.device(device)
    if flip_pairs is None:
        flip_pairs = dataset_flip_pairs(dataset)
    model.eval()
    confusion = ConfusionMatrix(num_classes, device=device)
    boundary = BoundaryFScore(num_classes, tolerances=boundary_tolerances, device=device)
    for index in shard_with_progress(len(dataset), progress, "evaluate"):
        image, label = dataset[index]
        image, label = image[None].to(device), label[None].to(device)
        pred = multi_scale_logits(model, image, num_classes, scales, flip, crop_size, flip_pairs,
                                  **(tta_options or {})).argmax(1)
        confusion.update(pred, label)
        boundary.update(pred, label)
    result = _as_dict(confusion.reduce_().compute(), boundary.reduce_().compute())
    return {**result, "images": len(dataset), "scales": list(scales), "flip": flip}


def _as_dict(scores: SegmentationScores, bf: BoundaryScores) -> dict[str, Any]:
    """The scores as JSON-ready builtins (NaN, a class never seen, becomes ``None``)."""
    return {
        "miou": scores.miou,
        "pixel_acc": scores.pixel_acc,
        "mean_acc": scores.mean_acc,
        "iou": [None if math.isnan(v) else v for v in scores.iou.tolist()],
        "boundary_f": {str(k): v for k, v in bf.mean.items()},
        "boundary_f_per_class": {str(k): [None if math.isnan(v) else v for v in values.tolist()]
                                 for k, values in bf.per_class.items()},
    }


def load_model(cfg: Config, checkpoint: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The model of ``cfg`` with the weights of ``checkpoint`` (a training checkpoint or a bare
    state dict), on ``device``, in eval mode.

    Raises:
        ocnet_edu.engine.checkpoint.CheckpointError: the file is corrupted or was trained with
            another ``model`` config (a checkpoint without a stored model config only warns).
    """
    model = build_model(cfg)
    state = ckpt.load(checkpoint, map_location="cpu")
    ckpt.check_model_config(state, ckpt.model_config(cfg), checkpoint)
    model.load_state_dict(state["model"] if "model" in state else state)
    return model.to(device).eval()


@contextmanager
def checkpoint_session(cfg: Config, checkpoint: str | Path, split: str | None = None) -> Iterator[tuple]:
    """The set-up of scoring or predicting a trained model: yields ``(ctx, model, dataset)``.

    Starts the process group if launched by torchrun (:func:`distributed.setup`), loads
    ``checkpoint`` into the model of ``cfg`` on this process's device (:func:`load_model`) and
    builds the evaluation split ``split`` (default ``data.val_split``); tears the group down on exit.
    """
    validate_config(cfg)
    ctx = distributed.setup(cfg.runtime.device, cfg.runtime.dist_timeout)
    try:
        yield ctx, load_model(cfg, checkpoint, ctx.device), build_eval_dataset(cfg, split)
    finally:
        distributed.cleanup()


def evaluate(
    cfg: Config,
    checkpoint: str | Path,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding: bool = False,
    split: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Load ``checkpoint`` into the model of ``cfg`` and score it on ``split`` (default: the
    validation split); write the scores as JSON to ``out`` (on rank 0) if given."""
    with checkpoint_session(cfg, checkpoint, split) as (ctx, model, dataset):
        result = evaluate_model(model, dataset, cfg.model.num_classes, ctx.device, scales, flip,
                                cfg.data.crop_size if sliding else None, progress=progress)
    result["checkpoint"] = str(checkpoint)
    if ctx.is_main and out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result
