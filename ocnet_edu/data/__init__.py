"""Datasets, the paper's augmentations and two generated benchmarks, behind one registry.

See ``data/README.md`` for the on-disk layouts. :data:`DATASETS` maps every name a config may
use (the five benchmarks of Sec. 4.1, COCO-Stuff in its 164k and 10k layouts, ``synthetic`` and
``digits``) to its class; :func:`dataset_from_config` builds the one a config names.
:data:`IGNORE_INDEX` is the label value that no loss or metric counts.
"""

from __future__ import annotations

from ocnet_edu.data._common import DatasetError, SegmentationDataset, Transform, sample_generator, sample_seed
from ocnet_edu.data.constants import IGNORE_INDEX
from ocnet_edu.data.datasets import (
    ADE20KDataset,
    COCOStuff10kDataset,
    COCOStuffDataset,
    CityscapesDataset,
    LIPDataset,
    PascalContextDataset,
    SegmentationFolder,
    cityscapes_lut,
    cocostuff_id_lut,
    cocostuff_lut,
)
from ocnet_edu.data.custom import ImageMaskFolder, read_classes
from ocnet_edu.data.digits import DigitScenes
from ocnet_edu.data.registry import DATASETS, NUM_CLASSES, build_dataset, dataset_class, dataset_from_config
from ocnet_edu.data.synthetic import SyntheticShapes

__all__ = [
    "ADE20KDataset",
    "COCOStuff10kDataset",
    "COCOStuffDataset",
    "CityscapesDataset",
    "DATASETS",
    "DatasetError",
    "DigitScenes",
    "IGNORE_INDEX",
    "ImageMaskFolder",
    "LIPDataset",
    "NUM_CLASSES",
    "PascalContextDataset",
    "SegmentationDataset",
    "SegmentationFolder",
    "SyntheticShapes",
    "Transform",
    "build_dataset",
    "cityscapes_lut",
    "cocostuff_id_lut",
    "cocostuff_lut",
    "dataset_class",
    "read_classes",
    "dataset_from_config",
    "sample_generator",
    "sample_seed",
]
