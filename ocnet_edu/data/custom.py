"""Your own data: a folder of images and masks, a list of class names, and an ignore value.

The layout (config name ``folder``)::

    my_data/
    ├── classes.txt               one class name per line; line k (from 0) is class k
    ├── images/<split>/NAME.jpg   (or .jpeg, .png, .bmp, .tif); any split names, e.g. train, val
    └── masks/<split>/NAME.png    single-channel PNG, the same size as its image: pixel value k
                                  is class k, ``ignore_index`` (default 255) means "not labelled"

Any other mask value is an error naming the file, so a mask saved in colour or with a class
beyond ``classes.txt`` fails loudly instead of training on wrong labels. The number of classes
is the length of ``classes.txt``; a config whose ``model.num_classes`` differs is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ocnet_edu.data._common import DatasetError, Transform
from ocnet_edu.data.constants import IGNORE_INDEX
from ocnet_edu.data.datasets import SegmentationFolder, require_dir

if TYPE_CHECKING:
    from ocnet_edu.config import Config

__all__ = ["ImageMaskFolder", "read_classes"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_classes(path: Path) -> list[str]:
    """The class names of ``classes.txt`` (one per line, blank lines skipped, at least two, unique).

    Raises:
        FileNotFoundError: naming ``path`` when it does not exist.
        DatasetError: naming ``path`` for fewer than two classes, duplicates, or more than 255.
    """
    if not path.is_file():
        raise FileNotFoundError(f"class list not found: {path} (one class name per line; line k is class k)")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) < 2:
        raise DatasetError(f"{path}: needs at least two classes (e.g. background and one object), got {len(names)}")
    if len(set(names)) != len(names):
        twice = sorted({name for name in names if names.count(name) > 1})
        raise DatasetError(f"{path}: class names must be unique; repeated: {twice}")
    if len(names) > IGNORE_INDEX:
        raise DatasetError(f"{path}: at most {IGNORE_INDEX} classes fit an 8-bit mask, got {len(names)}")
    return names


class ImageMaskFolder(SegmentationFolder):
    """Image/mask pairs of your own (module docstring: layout, values, errors).

    Args:
        root: the folder holding ``classes.txt``, ``images/`` and ``masks/``.
        split: a split folder name under ``images/`` and ``masks/`` (several joined with ``+``).
        transform, seed: as for every dataset (:mod:`ocnet_edu.data.datasets`).
        ignore_index: the mask value meaning "not labelled" (0..255); it becomes the library's
            ignore value 255. It may not be a class index.

    Attributes:
        classes: the class names; ``num_classes`` is their number.
    """

    name: ClassVar[str] = "folder"

    def __init__(self, root: str | Path, split: str, transform: Transform | None = None, seed: int = 0,
                 ignore_index: int = IGNORE_INDEX) -> None:
        root = Path(root)
        require_dir(root, "folder dataset root")
        self.classes = read_classes(root / "classes.txt")
        self.num_classes = len(self.classes)
        if not 0 <= ignore_index <= 255 or ignore_index < self.num_classes:
            raise ValueError(f"ignore_index must be in {self.num_classes}..255 (not a class index of "
                             f"{root / 'classes.txt'}), got {ignore_index}")
        self.ignore_index = ignore_index
        super().__init__(root, split, transform=transform, seed=seed)

    @classmethod
    def from_config(cls, cfg: "Config", split: str, transform: Transform | None) -> "ImageMaskFolder":
        """The split read from ``cfg.data.root`` with ``cfg.data.ignore_index``; the class count of
        ``classes.txt`` must equal ``cfg.model.num_classes``."""
        from ocnet_edu.config import ConfigError

        dataset = cls(cfg.data.root, split, transform=transform, seed=cfg.runtime.seed,
                      ignore_index=cfg.data.ignore_index)
        if dataset.num_classes != cfg.model.num_classes:
            raise ConfigError(f"config key 'model.num_classes' is {cfg.model.num_classes} but "
                              f"{dataset.root / 'classes.txt'} lists {dataset.num_classes} classes")
        return dataset

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        images = require_dir(self.root / "images" / split, f"images of split {split!r}")
        masks = require_dir(self.root / "masks" / split, f"masks of split {split!r}")
        return images, masks

    def _list_images(self, split: str, image_dir: Path) -> list[Path]:
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
        return images

    def _build_lut(self) -> np.ndarray:
        """Mask value -> train id: ``k`` -> ``k`` for the classes, ``ignore_index`` -> 255, else invalid."""
        lut = np.full(256, -1, dtype=np.int16)
        lut[: self.num_classes] = np.arange(self.num_classes)
        lut[self.ignore_index] = IGNORE_INDEX
        return lut
