"""The one registry of datasets: every dataset a config can name, read from files or generated.

``cfg.data.dataset`` is a key of :data:`DATASETS`; the class it names builds itself from the
config (:meth:`~ocnet_edu.data._common.SegmentationDataset.from_config`: a folder dataset reads
``data.root``, the generated ones read ``data.synthetic_length``, ``data.synthetic_size``, ...).
A class also carries what other parts of the library need to know about its dataset: the number
of scored classes (read by :data:`ocnet_edu.config.PAPER_DEFAULTS`) and the left/right classes
a horizontal flip exchanges (read by the training transforms and by flipped evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ocnet_edu.data import datasets as folders
from ocnet_edu.data._common import SegmentationDataset, Transform
from ocnet_edu.data.custom import ImageMaskFolder
from ocnet_edu.data.datasets import SegmentationFolder
from ocnet_edu.data.digits import DigitScenes
from ocnet_edu.data.synthetic import SyntheticShapes

if TYPE_CHECKING:
    from ocnet_edu.config import Config

__all__ = ["DATASETS", "NUM_CLASSES", "build_dataset", "dataset_class", "dataset_from_config"]

DATASETS: dict[str, type[SegmentationDataset]] = {
    "cityscapes": folders.CityscapesDataset,
    "ade20k": folders.ADE20KDataset,
    "lip": folders.LIPDataset,
    "pascal_context": folders.PascalContextDataset,
    "coco_stuff": folders.COCOStuffDataset,
    "cocostuff10k": folders.COCOStuff10kDataset,
    "folder": ImageMaskFolder,
    "synthetic": SyntheticShapes,
    "digits": DigitScenes,
}
"""Dataset name (as in the config) -> class."""

NUM_CLASSES: dict[str, int] = {
    name: cls.num_classes for name, cls in DATASETS.items() if isinstance(getattr(cls, "num_classes", None), int)
}
"""Scored classes per dataset with a fixed class count (PASCAL-Context: 59 + background), read
from the classes; the synthetic shapes take theirs from the config."""


def dataset_class(name: str) -> type[SegmentationDataset]:
    """The class registered as ``name``; ``ValueError`` listing the names if there is none."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def build_dataset(
    name: str, root: str | Path, split: str, transform: Transform | None = None, seed: int = 0
) -> SegmentationFolder:
    """A dataset read from files (a folder dataset of :data:`DATASETS`) by its config name."""
    cls = dataset_class(name)
    if not issubclass(cls, SegmentationFolder):
        raise ValueError(f"{name!r} is generated, not read from a folder; use dataset_from_config")
    return cls(root, split, transform=transform, seed=seed)


def dataset_from_config(cfg: "Config", split: str, transform: Transform | None = None) -> SegmentationDataset:
    """The dataset ``cfg.data.dataset`` for ``split``, built by its class from ``cfg``."""
    return dataset_class(cfg.data.dataset).from_config(cfg, split, transform)
