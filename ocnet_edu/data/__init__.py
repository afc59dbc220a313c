"""Datasets, the paper's augmentations and a synthetic benchmark.

See ``data/README.md`` for the on-disk layouts. :func:`build_dataset` picks a dataset by the
name used in :data:`ocnet_edu.config.PAPER_DEFAULTS`.
"""

from __future__ import annotations

from pathlib import Path

from ocnet_edu.data._common import IGNORE_INDEX, DatasetError, sample_generator, sample_seed
from ocnet_edu.data.datasets import (
    ADE20KDataset,
    COCOStuffDataset,
    CityscapesDataset,
    LIPDataset,
    PascalContextDataset,
    SegmentationFolder,
    Transform,
    cityscapes_class_names,
    cityscapes_lut,
    cocostuff_lut,
)
from ocnet_edu.data.synthetic import SyntheticShapes

DATASETS: dict[str, type[SegmentationFolder]] = {
    "cityscapes": CityscapesDataset,
    "ade20k": ADE20KDataset,
    "lip": LIPDataset,
    "pascal_context": PascalContextDataset,
    "coco_stuff": COCOStuffDataset,
}
"""Dataset name (as in the config) -> class."""

NUM_CLASSES: dict[str, int] = {
    "cityscapes": 19,
    "ade20k": 150,
    "lip": 20,
    "pascal_context": 60,
    "coco_stuff": 171,
}
"""Scored classes per dataset in the paper's setting (PASCAL-Context: 59 + background)."""


def build_dataset(
    name: str, root: str | Path, split: str, transform: Transform | None = None, seed: int = 0
) -> SegmentationFolder:
    """Instantiate a dataset by its config name (a key of :data:`DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](root, split, transform=transform, seed=seed)


__all__ = [
    "ADE20KDataset",
    "COCOStuffDataset",
    "CityscapesDataset",
    "DATASETS",
    "DatasetError",
    "IGNORE_INDEX",
    "LIPDataset",
    "NUM_CLASSES",
    "PascalContextDataset",
    "SegmentationFolder",
    "SyntheticShapes",
    "build_dataset",
    "cityscapes_class_names",
    "cityscapes_lut",
    "cocostuff_lut",
    "sample_generator",
    "sample_seed",
]
