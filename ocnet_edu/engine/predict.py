"""Predicted label maps written as PNG files: ``python -m ocnet_edu predict``.

Scores on a test set whose labels are not public (Cityscapes ``test`` for Table 7, PASCAL-Context
or COCO-Stuff test sets) come from the benchmark's server, which takes one label image per test
image. This module runs the same inference as :mod:`ocnet_edu.engine.evaluate` (scales, flip, sliding
window) and writes, for every image of a split, ``<out>/<image stem>.png``: an 8-bit map of the
dataset's *raw* label ids (for Cityscapes the ``labelIds`` of ``cityscapesscripts``, which the
server expects, e.g. 7 for road; train id 0 would be "unlabeled"), or of train ids with
``train_ids=True``.

A split is read by the dataset's own loader, so its label files must exist; the official
Cityscapes package ships placeholder ``gtFine`` maps for ``test``, which is all this needs.
Under ``torchrun`` every process writes its share of the images.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ocnet_edu.config import Config
from ocnet_edu.engine.evaluate import checkpoint_session, dataset_flip_pairs, multi_scale_logits, shard_with_progress

__all__ = ["output_names", "predict", "predict_to_folder", "train_to_raw_ids"]


def train_to_raw_ids(dataset, num_classes: int) -> np.ndarray:
    """``uint8`` ``[num_classes]``: for each train id, the raw label id the dataset's files use.

    Inverts the dataset's look-up table (``dataset.lut``, raw id → train id), taking the smallest
    raw id of each train id; a dataset without a table (generated scenes) stores train ids.

    Raises:
        ValueError: some train id has no raw id (the table does not cover ``num_classes``).
    """
    lut = getattr(dataset, "lut", None)
    if lut is None:
        return np.arange(num_classes, dtype=np.uint8)
    lut = np.asarray(lut)
    table = np.zeros(num_classes, dtype=np.uint8)
    for train_id in range(num_classes):
        raw = np.flatnonzero(lut == train_id)
        if raw.size == 0:
            raise ValueError(f"{type(dataset).__name__} has no raw label id for train id {train_id}")
        table[train_id] = raw[0]
    return table


def output_names(dataset) -> list[str]:
    """File names of the predictions, one per item: the image's stem + ``.png`` for datasets read
    from files (``dataset.samples``), ``000123.png`` for generated ones.

    Raises:
        ValueError: two images share a stem (their predictions would overwrite each other).
    """
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return [f"{index:06d}.png" for index in range(len(dataset))]
    names = [Path(image).stem + ".png" for image, _ in samples]
    twice = [name for name, count in Counter(names).items() if count > 1]
    if twice:
        raise ValueError(f"two images of the split would both be written as {twice[0]}")
    return names


@torch.inference_mode()
def predict_to_folder(
    model: nn.Module,
    dataset,
    out_dir: str | Path,
    num_classes: int,
    device: torch.device | str = "cpu",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: Sequence[int] | None = None,
    train_ids: bool = False,
    progress: bool = False,
    tta_options: dict | None = None,
) -> list[Path]:
    """Write the prediction of every item of ``dataset`` (this rank's share under
    ``torch.distributed``) to ``out_dir``; return the paths written.

    Args:
        model: the segmentation model (put in eval mode here).
        dataset: items ``(image [3, H, W] normalised, label)``; the label is not used.
        out_dir: folder for the PNG files (created).
        num_classes: ``K`` of the model.
        scales, flip, crop_size: inference as in :func:`ocnet_edu.engine.evaluate.multi_scale_logits`
            (left/right classes from ``dataset.flip_pairs``).
        train_ids: write train ids ``0..K-1`` instead of the dataset's raw label ids.
        progress: a progress bar on rank 0.
        tta_options: further keyword options of ``multi_scale_logits`` (a published model's
            test pipeline, :mod:`ocnet_edu.engine.published`).
    """
    device = torch.device(device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(dataset)
    to_raw = np.arange(num_classes, dtype=np.uint8) if train_ids else train_to_raw_ids(dataset, num_classes)
    flip_pairs = dataset_flip_pairs(dataset)
    model.eval()
    written = []
    for index in shard_with_progress(len(dataset), progress, "predict"):
        image, _ = dataset[index]
        logits = multi_scale_logits(model, image[None].to(device), num_classes, scales, flip, crop_size, flip_pairs,
                                    **(tta_options or {}))
        prediction = logits.argmax(1)[0].cpu().numpy()
        path = out_dir / names[index]
        Image.fromarray(to_raw[prediction], mode="L").save(path)
        written.append(path)
    return written


def predict(
    cfg: Config,
    checkpoint: str | Path,
    out_dir: str | Path,
    split: str | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    sliding: bool = False,
    train_ids: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Load ``checkpoint`` into the model of ``cfg`` and write its predictions for ``split``
    (default ``data.val_split``) to ``out_dir``; see :func:`predict_to_folder`."""
    with checkpoint_session(cfg, checkpoint, split) as (ctx, model, dataset):
        return predict_to_folder(model, dataset, out_dir, cfg.model.num_classes, ctx.device, scales, flip,
                                 cfg.data.crop_size if sliding else None, train_ids, progress)
