"""Scoring and predicting published models with their sources' own test pipelines.

``python -m ocnet_edu evaluate --published SOURCE:ARCH PATH --data ROOT [--tta none|ms-flip]``
(and ``predict`` with ``--out``) loads a published checkpoint
(:func:`ocnet_edu.zoo.published.load_published`), reads the split with the source's input
normalisation (``model.preprocess``: channel order, mean, std on the 0–255 scale) and predicts
every image as the source's tester does. The pipelines, read from the sources:

* **openseg** (openseg.pytorch ``segmentor/tester.py``, ``configs/cityscapes/R_101_D_8.json`` and
  ``R_101_D_8_TEST.json``): single scale: the whole 1024×2048 image (``ss_test``); ``ms-flip``
  (``ms_test``): scales 0.5, 0.75, …, 2.0, each size ``int(h·s) × int(w·s)``, the normalised
  image resized bilinearly with ``align_corners=True``, the logits of it and of its mirror image
  resized back (``align_corners=True``) and *summed* (we average: the same argmax).
* **mmseg** (mmsegmentation 1.2.2 ``configs/_base_/datasets/cityscapes.py``,
  ``configs/_base_/models/isanet_r50-d8.py``, ``mmseg/models/segmentors/seg_tta.py``): single
  scale: ``test_cfg=dict(mode='whole')``, logits resized with ``align_corners=False``;
  ``ms-flip`` (``tta_pipeline``): ``img_ratios`` 0.5, 0.75, …, 1.75, sizes ``int(x·r + 0.5)``,
  flip and no flip, each prediction resized to the image and turned into *softmax
  probabilities*, which are averaged (``SegTTAModel.merge_preds``).

What we do not reproduce, and why it does not matter for Cityscapes val: mmseg's test
``Resize(scale=(2048, 1024), keep_ratio=True)`` (the identity for 1024×2048 images; we predict
other sizes as they are) and its resizing of the 8-bit image with OpenCV before normalising (we
resize the normalised float image with the same half-pixel bilinear sampling; the per-channel
normalisation is affine, so the two differ only by OpenCV's 8-bit rounding); openseg's
``only_pad`` to 2048×1024 and ``INTER_CUBIC`` resizing to the original size (identities for
1024×2048 images). Both mmseg ISANet Cityscapes configs of 512×1024 crops test ``whole``
images; the 769×769 ones (``slide``, crop 769, stride 513, ``align_corners=True``) are not
among the loadable archs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from ocnet_edu.data.registry import build_dataset, dataset_class
from ocnet_edu.engine.evaluate import evaluate_model
from ocnet_edu.engine.predict import predict_to_folder
from ocnet_edu.zoo.published import ARCHS, Preprocess, load_published

__all__ = ["TTA_MODES", "TestPipeline", "PIPELINES", "parse_published", "published_dataset", "evaluate_published",
           "predict_published"]

#: the test-time augmentation choices of ``--tta``
TTA_MODES = ("none", "ms-flip")


@dataclass(frozen=True)
class TestPipeline:
    """A source's test-time prediction (options of :func:`~ocnet_edu.engine.evaluate.multi_scale_logits`).

    Attributes:
        scales: resize factors of the image.
        flip: add the mirror image's prediction.
        merge: ``"logits"`` or ``"softmax"``: what is averaged over scales and flips.
        rounding: of the scaled sizes (``"floor"``: openseg; ``"half-up"``: mmcv).
        align_corners: of resizing the image to a scale and the logits back to the image.
    """

    __test__ = False  # not a pytest test class

    scales: tuple[float, ...]
    flip: bool
    merge: str
    rounding: str
    align_corners: bool

    def options(self) -> dict[str, Any]:
        """The keyword options of ``multi_scale_logits`` beyond ``scales`` and ``flip``."""
        return {"merge": self.merge, "rounding": self.rounding, "align_corners": self.align_corners}


_OPENSEG_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
_MMSEG_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

PIPELINES: dict[str, dict[str, TestPipeline]] = {
    "openseg": {"none": TestPipeline((1.0,), False, "logits", "floor", True),
                "ms-flip": TestPipeline(_OPENSEG_SCALES, True, "logits", "floor", True)},
    "mmseg": {"none": TestPipeline((1.0,), False, "logits", "half-up", False),
              "ms-flip": TestPipeline(_MMSEG_RATIOS, True, "softmax", "half-up", False)},
}
"""``PIPELINES[source][tta]``: each source's single-scale and multi-scale + flip test."""


def parse_published(text: str) -> tuple[str, str]:
    """``"SOURCE:ARCH"`` → ``(source, arch)``, checked against :data:`~ocnet_edu.zoo.published.ARCHS`.

    Raises:
        ValueError: naming ``--published`` and the valid choices.
    """
    source, colon, arch = text.partition(":")
    choices = ", ".join(f"{s}:{a}" for s in ARCHS for a in ARCHS[s])
    if not colon or source not in ARCHS or arch not in ARCHS[source]:
        raise ValueError(f"--published takes SOURCE:ARCH, one of {choices}; got {text!r}")
    return source, arch


class _SourceInput:
    """Dataset transform: the 0–255 RGB image ``[3, H, W]`` → the source's network input."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator=None):
        return self.preprocess(image[None] / 255.0)[0], label


def published_dataset(name: str, root: str | Path, split: str, preprocess: Preprocess):
    """The split ``split`` of dataset ``name`` under ``root`` (its official layout), each image
    normalised by ``preprocess`` (``model.preprocess``), full resolution."""
    return build_dataset(name, root, split, transform=_SourceInput(preprocess))


def _session(published: str, checkpoint: str | Path, dataset: str, root: str | Path, split: str, tta: str,
             num_classes: int | None, device: str):
    """``(model, dataset, pipeline, num_classes)`` of a published checkpoint on a split."""
    source, arch = parse_published(published)
    if tta not in TTA_MODES:
        raise ValueError(f"--tta must be one of {TTA_MODES}, got {tta!r}")
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"published checkpoint not found: {str(checkpoint)!r} (--published {published})")
    classes = num_classes if num_classes is not None else dataset_class(dataset).num_classes
    model = load_published(checkpoint, source, arch, classes).to(device)
    data = published_dataset(dataset, root, split, model.preprocess)
    return model, data, PIPELINES[source][tta], classes


def evaluate_published(published: str, checkpoint: str | Path, root: str | Path, dataset: str = "cityscapes",
                       split: str = "val", tta: str = "none", num_classes: int | None = None, device: str = "cpu",
                       out: str | Path | None = None, progress: bool = True,
                       images: int | None = None) -> dict[str, Any]:
    """Score a published checkpoint with its source's test pipeline (one process).

    Args:
        published: ``"SOURCE:ARCH"``, e.g. ``"openseg:base_ocnet"``.
        checkpoint: the checkpoint file.
        root: the dataset folder (official layout); ``dataset``: its registry name; ``split``.
        tta: ``"none"`` or ``"ms-flip"`` (:data:`PIPELINES`).
        num_classes: of the checkpoint (default: the dataset's).
        device: where to run.
        out: write the scores as JSON here.
        images: score only the first ``images`` images of the split (a quick look; the
            published scores are over the whole split).

    Returns:
        The scores of :func:`~ocnet_edu.engine.evaluate.evaluate_model` plus ``published``,
        ``checkpoint`` and ``pipeline``.
    """
    model, data, pipeline, classes = _session(published, checkpoint, dataset, root, split, tta, num_classes, device)
    if images is not None:
        data = Subset(data, range(min(images, len(data))))
    result = evaluate_model(model, data, classes, device, pipeline.scales, pipeline.flip, progress=progress,
                            tta_options=pipeline.options())
    result.update(published=published, checkpoint=str(checkpoint), pipeline=asdict(pipeline))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result


def predict_published(published: str, checkpoint: str | Path, root: str | Path, out_dir: str | Path,
                      dataset: str = "cityscapes", split: str = "val", tta: str = "none",
                      num_classes: int | None = None, device: str = "cpu", train_ids: bool = False,
                      progress: bool = True) -> list[Path]:
    """Write a published checkpoint's predictions for ``split`` as PNG label maps
    (:func:`~ocnet_edu.engine.predict.predict_to_folder`); arguments as in :func:`evaluate_published`."""
    model, data, pipeline, classes = _session(published, checkpoint, dataset, root, split, tta, num_classes, device)
    return predict_to_folder(model, data, out_dir, classes, device, pipeline.scales, pipeline.flip,
                             train_ids=train_ids, progress=progress, tta_options=pipeline.options())
