"""The five benchmarks of Sec. 4.1, read from their official (or commonly prepared) layouts.

Each dataset is a :class:`torch.utils.data.Dataset` of ``(image, label)`` pairs:

* ``image``: ``float32`` ``[3, H, W]``, RGB in ``0..255`` (normalise with
  :class:`ocnet_edu.data.transforms.Normalize`),
* ``label``: ``int64`` ``[H, W]``, train ids in ``[0, num_classes)``, 255 = ignore.

The raw label values of each dataset are turned into train ids by a 256-entry look-up table
(``lut``): ``lut[raw]`` is the train id, 255 for "ignore", and -1 for a raw value that must not
occur (an error naming the file). Expected folder trees and download pages: ``data/README.md``.
Nothing here downloads anything.

Args shared by every dataset:
    root: the dataset folder (see each class for what it must contain).
    split: a split name, or several joined with ``+`` (e.g. ``"train+val"``).
    transform: ``transform(image, label, generator) -> (image, label)``, e.g.
        :func:`ocnet_edu.data.transforms.paper_train_transforms`; ``None`` returns raw pairs.
    seed: with the epoch (:meth:`SegmentationFolder.set_epoch`) and the sample index it seeds the
        generator handed to ``transform``, so augmentations do not depend on the worker count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import torch
from PIL import Image

from ocnet_edu.data._common import (
    DatasetError,
    SegmentationDataset,
    Transform,
    image_to_tensor,
    sample_generator,
    validate_label,
)
from ocnet_edu.data.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from ocnet_edu.config import Config

Sample = tuple[Path, Path]

__all__ = [
    "ADE20KDataset",
    "COCOStuff10kDataset",
    "COCOStuffDataset",
    "COCO_UNUSED_THING_IDS",
    "CityscapesDataset",
    "LIPDataset",
    "PascalContextDataset",
    "SegmentationFolder",
    "cityscapes_lut",
    "cocostuff_id_lut",
    "cocostuff_lut",
    "load_mat_label",
]


# --------------------------------------------------------------------------------------------
# file readers
# --------------------------------------------------------------------------------------------
def _read_error(path: Path, what: str, error: Exception) -> DatasetError:
    """The :class:`DatasetError` of a file that could not be read, naming it (and, for a
    Pillow decompression bomb, the limit to raise if the file is trusted)."""
    if isinstance(error, Image.DecompressionBombError):
        return DatasetError(f"{path}: cannot read {what}: it has more pixels than Pillow's safety limit "
                            f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); raise that limit if you "
                            f"trust the file ({error})")
    return DatasetError(f"{path}: cannot read {what} ({type(error).__name__}: {error})")


def load_rgb(path: Path) -> np.ndarray:
    """Read an image file as ``uint8`` ``[H, W, 3]``; :class:`DatasetError` naming it on any failure
    (missing, truncated, not an image, larger than Pillow's decompression-bomb limit, ...)."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so that truncated files fail here
            return np.asarray(im.convert("RGB"))
    except Exception as err:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise _read_error(path, "image", err) from err


def load_label(path: Path) -> np.ndarray:
    """Read a single-channel label PNG as ``int64`` ``[H, W]`` (raw values, not yet mapped);
    :class:`DatasetError` naming it on any failure."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DatasetError(f"{path}: a label map must be single-channel, got mode {im.mode!r}")
            return np.asarray(im).astype(np.int64)
    except DatasetError:
        raise
    except Exception as err:
        raise _read_error(path, "label map", err) from err


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else raise ``FileNotFoundError`` naming it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path} (expected layouts: data/README.md)")
    return path


def images_from_list(listing: Path, image_dir: Path, missing: str) -> list[Path]:
    """The ``image_dir / <id>.jpg`` of every non-blank line of the split list ``listing``, in order.

    Raises:
        FileNotFoundError: with the message ``missing`` when ``listing`` does not exist.
        DatasetError: naming ``listing`` when it is empty or lists an image that does not exist.
    """
    if not listing.is_file():
        raise FileNotFoundError(missing)
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{listing}: the split list is empty")
    images = []
    for image_id in ids:
        image = image_dir / f"{image_id}.jpg"
        if not image.is_file():
            raise DatasetError(f"{listing} lists {image_id!r} but {image} does not exist")
        images.append(image)
    return images


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------
class SegmentationFolder(SegmentationDataset):
    """Image/label pairs listed from a folder tree; subclasses say where the files are.

    Subclasses set ``name``, ``num_classes``, ``split_aliases`` (user name -> folder name) and
    ``image_pattern``, and implement :meth:`_split_folders` (the image and label folders of a
    split) and :meth:`_build_lut`; the label of ``image`` is ``label_dir / _label_name(image)``.
    """

    name: ClassVar[str] = "dataset"
    split_aliases: ClassVar[dict[str, str]] = {}
    image_pattern: ClassVar[str] = "*.jpg"

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        require_dir(self.root, f"{self.name} root")
        self.split = split
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.lut = self._build_lut()
        self.samples: list[Sample] = []
        for part in split.split("+"):
            found = self._list_split(self.split_aliases.get(part, part))
            self.samples.extend(found)

    @classmethod
    def from_config(cls, cfg: "Config", split: str, transform: Transform | None) -> "SegmentationFolder":
        """The split read from ``cfg.data.root``, augmentations seeded by ``cfg.runtime.seed``."""
        return cls(cfg.data.root, split, transform=transform, seed=cfg.runtime.seed)

    # -- to implement ------------------------------------------------------------------------
    def _split_folders(self, split: str) -> tuple[Path, Path]:
        """The folders holding the images and the label maps of ``split`` (both must exist)."""
        raise NotImplementedError

    def _build_lut(self) -> np.ndarray:
        raise NotImplementedError

    # -- listing a split -----------------------------------------------------------------------
    def _label_name(self, image: Path) -> str:
        """File name of the label map of ``image``, relative to the label folder."""
        return image.stem + ".png"

    def _list_images(self, split: str, image_dir: Path) -> list[Path]:
        """The images of ``split``: ``image_pattern`` in ``image_dir``, sorted (at least one)."""
        images = sorted(image_dir.glob(self.image_pattern))
        if not images:
            raise DatasetError(f"{image_dir}: no {self.image_pattern} images")
        return images

    def _list_split(self, split: str) -> list[Sample]:
        """(image, label) pairs of one split folder; a missing label map is an error."""
        image_dir, label_dir = self._split_folders(split)
        return self._pair_by_stem(self._list_images(split, image_dir), label_dir, self._label_name)

    @staticmethod
    def _pair_by_stem(images: list[Path], label_dir: Path, label_name: Callable[[Path], str]) -> list[Sample]:
        """Pair each image with ``label_dir / label_name(image)``; missing label -> error."""
        if not images:
            raise DatasetError(f"no images found for this split (looked next to {label_dir})")
        pairs = []
        for image in images:
            label = label_dir / label_name(image)
            if not label.is_file():
                raise DatasetError(f"{image}: its label map {label} does not exist")
            pairs.append((image, label))
        return pairs

    def read_label(self, path: Path) -> np.ndarray:
        """The raw label values ``[H, W]`` (int64) of the label file at ``path`` (a PNG here)."""
        return load_label(path)

    # -- Dataset API -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of image/label pairs."""
        return len(self.samples)

    def map_label(self, raw: np.ndarray, where: Path | str) -> np.ndarray:
        """Raw label values ``[H, W]`` -> train ids ``int64`` ``[H, W]`` via ``self.lut``.

        Raises:
            DatasetError: naming ``where`` if a raw value is not a valid value of this dataset.
        """
        if raw.size and (raw.min() < 0 or raw.max() > 255):
            raise DatasetError(f"{where}: raw label values must be in 0..255, got {raw.min()}..{raw.max()}")
        mapped = self.lut[raw].astype(np.int64)
        bad = mapped == -1
        if bad.any():
            values = np.unique(raw[bad])[:10].tolist()
            raise DatasetError(f"{where}: raw label values {values} are not valid {self.name} label ids")
        validate_label(mapped, self.num_classes, str(where))
        return mapped

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The untransformed pair of sample ``index``: ``[3, H, W]`` float and ``[H, W]`` int64."""
        image_path, label_path = self.samples[index]
        image = load_rgb(image_path)
        raw = self.read_label(label_path)
        if image.shape[:2] != raw.shape:
            raise DatasetError(
                f"{image_path} is {image.shape[1]}x{image.shape[0]} (WxH) but its label map "
                f"{label_path} is {raw.shape[1]}x{raw.shape[0]}"
            )
        label = self.map_label(raw, label_path)
        return image_to_tensor(image), torch.from_numpy(label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` through ``transform`` (seeded by ``(seed, epoch, index)``)."""
        image, label = self.load(index)
        if self.transform is not None:
            image, label = self.transform(image, label, sample_generator(self.seed, self.epoch, index))
        return image, label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
            f"num_classes={self.num_classes}, samples={len(self)})"
        )


# --------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------
def _cityscapes_labels() -> list:
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The Cityscapes label table comes from the 'cityscapesscripts' package; install it with "
            "`pip install cityscapesscripts`."
        ) from err
    return list(labels)


def cityscapes_lut() -> np.ndarray:
    """``int16`` ``[256]``: Cityscapes label id -> train id (0..18), 255 for the ignored ids.

    Built from ``cityscapesscripts.helpers.labels`` (ids 0..33). A label id whose train id is 255
    or -1 (e.g. 'unlabeled', 'license plate') maps to 255; the raw value 255 also maps to 255
    (it is where an id of -1 ends up in an 8-bit PNG). Any other raw value is invalid (-1).
    """
    lut = np.full(256, -1, dtype=np.int16)
    lut[255] = IGNORE_INDEX
    for label in _cityscapes_labels():
        if 0 <= label.id < 255:
            lut[label.id] = label.trainId if 0 <= label.trainId < 255 else IGNORE_INDEX
    return lut


class CityscapesDataset(SegmentationFolder):
    """Cityscapes fine annotations, 19 classes.

    ``root`` contains ``leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png`` and
    ``gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png``; splits ``train``,
    ``val``, ``test`` (``train+val`` for the paper's 100K train+val schedule).
    """

    name = "Cityscapes"
    num_classes = 19
    image_pattern = "*/*_leftImg8bit.png"

    def _build_lut(self) -> np.ndarray:
        return cityscapes_lut()

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        return (require_dir(self.root / "leftImg8bit" / split, "Cityscapes image split"),
                require_dir(self.root / "gtFine" / split, "Cityscapes label split"))

    def _label_name(self, image: Path) -> str:
        return f"{image.parent.name}/{image.name[: -len('_leftImg8bit.png')]}_gtFine_labelIds.png"


# --------------------------------------------------------------------------------------------
# ADE20K
# --------------------------------------------------------------------------------------------
class ADE20KDataset(SegmentationFolder):
    """ADE20K (SceneParsing / ADEChallengeData2016), 150 classes.

    ``root`` contains ``ADEChallengeData2016/images/{training,validation}/*.jpg`` and
    ``ADEChallengeData2016/annotations/{training,validation}/*.png``. Raw 0 ("other") -> 255,
    raw ``k`` in 1..150 -> ``k - 1``. Splits: ``train``/``training``, ``val``/``validation``.
    """

    name = "ADE20K"
    num_classes = 150
    split_aliases = {"train": "training", "val": "validation"}

    def _build_lut(self) -> np.ndarray:
        lut = np.full(256, -1, dtype=np.int16)
        lut[0] = IGNORE_INDEX
        lut[1:151] = np.arange(150)
        return lut

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        base = require_dir(self.root / "ADEChallengeData2016", "ADE20K")
        return (require_dir(base / "images" / split, "ADE20K image split"),
                require_dir(base / "annotations" / split, "ADE20K label split"))


# --------------------------------------------------------------------------------------------
# LIP
# --------------------------------------------------------------------------------------------
class LIPDataset(SegmentationFolder):
    """LIP single-person human parsing, 20 classes (background 0 + 19 parts).

    ``root`` contains ``TrainVal_images/{train,val}_images/*.jpg`` and
    ``TrainVal_parsing_annotations/{train,val}_segmentations/*.png`` (the two official zips
    unpacked side by side). Raw values 0..19 are the train ids; 255 is kept as ignore.
    """

    name = "LIP"
    num_classes = 20
    flip_pairs = ((14, 15), (16, 17), (18, 19))
    """Left/right classes (arm, leg, shoe) that a horizontal flip exchanges."""

    def _build_lut(self) -> np.ndarray:
        lut = np.full(256, -1, dtype=np.int16)
        lut[:20] = np.arange(20)
        lut[255] = IGNORE_INDEX
        return lut

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        return (require_dir(self.root / "TrainVal_images" / f"{split}_images", "LIP image split"),
                require_dir(self.root / "TrainVal_parsing_annotations" / f"{split}_segmentations",
                            "LIP label split"))


# --------------------------------------------------------------------------------------------
# PASCAL-Context
# --------------------------------------------------------------------------------------------
class PascalContextDataset(SegmentationFolder):
    """PASCAL-Context, 59 classes + background (the paper's setting: 60 scored classes).

    ``root`` contains ``VOCdevkit/VOC2010/JPEGImages/{id}.jpg``, the prepared masks
    ``VOCdevkit/VOC2010/SegmentationClassContext/{id}.png`` (0 = background, 1..59 = the 59
    classes, 255 = ignore) and ``VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt``.

    Args:
        include_background: ``True`` (default, Sec. 4.1 "59 semantic classes and 1 background
            class"): background is class 0 and is scored, 60 classes. ``False``: the 59-class
            setting, background -> 255 and class ``k`` -> ``k - 1``.
    """

    name = "PASCAL-Context"
    num_classes = 60

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Transform | None = None,
        seed: int = 0,
        include_background: bool = True,
    ) -> None:
        self.include_background = include_background
        self.num_classes = 60 if include_background else 59
        super().__init__(root, split, transform, seed)

    def _build_lut(self) -> np.ndarray:
        lut = np.full(256, -1, dtype=np.int16)
        lut[255] = IGNORE_INDEX
        if self.include_background:
            lut[:60] = np.arange(60)
        else:
            lut[0] = IGNORE_INDEX
            lut[1:60] = np.arange(59)
        return lut

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        base = require_dir(self.root / "VOCdevkit" / "VOC2010", "PASCAL-Context VOC2010")
        return (require_dir(base / "JPEGImages", "PASCAL-Context image"),
                require_dir(base / "SegmentationClassContext", "PASCAL-Context label"))

    def _list_images(self, split: str, image_dir: Path) -> list[Path]:
        """The images named by ``ImageSets/SegmentationContext/{split}.txt``, in its order."""
        listing = image_dir.parent / "ImageSets" / "SegmentationContext" / f"{split}.txt"
        return images_from_list(listing, image_dir, f"PASCAL-Context split list not found: {listing}")


# --------------------------------------------------------------------------------------------
# COCO-Stuff
# --------------------------------------------------------------------------------------------
COCO_UNUSED_THING_IDS: tuple[int, ...] = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
"""The 11 of the 91 COCO thing ids (1..91) that were never annotated; COCO-Stuff ids 1..182
minus these are the 171 classes (80 things + 91 stuff ids 92..182)."""


def cocostuff_id_lut() -> np.ndarray:
    """``int16`` ``[256]``: COCO-Stuff class id -> train id 0..170 (the one mapping of both layouts).

    COCO-Stuff numbers its classes 1..182 (things 1..91, stuff 92..182) and uses 0 for
    "unlabeled". The train id of a used class id is its rank among the 171 used ids in
    increasing order; 0 and the 11 unused thing ids map to 255; ids 183..255 are invalid (-1).
    """
    used = [i for i in range(1, 183) if i not in COCO_UNUSED_THING_IDS]
    assert len(used) == 171
    lut = np.full(256, -1, dtype=np.int16)
    lut[:183] = IGNORE_INDEX
    lut[used] = np.arange(171)
    return lut


def cocostuff_lut() -> np.ndarray:
    """``int16`` ``[256]``: stuffthingmaps PNG value -> train id 0..170.

    In the COCO-Stuff 164k ``stuffthingmaps`` PNGs a pixel stores ``class id - 1`` (0..181) and
    255 for "unlabeled"; the class ids go through :func:`cocostuff_id_lut`, so the 11 unused
    thing ids and 255 map to 255 and values 182..254 are invalid.
    """
    lut = np.full(256, -1, dtype=np.int16)
    lut[:182] = cocostuff_id_lut()[1:183]
    lut[255] = IGNORE_INDEX
    return lut


class COCOStuffDataset(SegmentationFolder):
    """COCO-Stuff, 171 classes, from the 164k ``stuffthingmaps`` PNG layout.

    ``root`` contains ``images/{split}/*.jpg`` and ``annotations/{split}/*.png`` with
    ``split`` in ``train2017``/``val2017`` (aliases ``train``/``val``); any other split folder
    with the same convention (e.g. the 10k subset converted to PNG) also works.
    """

    name = "COCO-Stuff"
    num_classes = 171
    split_aliases = {"train": "train2017", "val": "val2017"}

    def _build_lut(self) -> np.ndarray:
        return cocostuff_lut()

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        return (require_dir(self.root / "images" / split, "COCO-Stuff image split"),
                require_dir(self.root / "annotations" / split, "COCO-Stuff label split"))


def load_mat_label(path: Path) -> np.ndarray:
    """The label map ``S`` of a COCO-Stuff 10k ``.mat`` file as ``int64`` ``[H, W]`` (class ids).

    Raises:
        DatasetError: naming the file when it does not exist, is not a MATLAB file, or holds no
            2-D ``S``.
        ImportError: SciPy (which reads ``.mat``) is not installed.
    """
    try:
        from scipy.io import loadmat
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("COCO-Stuff 10k labels are MATLAB .mat files, read with SciPy; install the 'datasets' "
                          "extra: pip install 'ocnet_edu[datasets]'") from err
    if not path.is_file():
        raise DatasetError(f"{path}: the label file does not exist")
    try:
        content = loadmat(path, variable_names=["S"])
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, ...
        raise _read_error(path, "MATLAB label file", err) from err
    if "S" not in content:
        raise DatasetError(f"{path}: the .mat file holds no label map 'S' (COCO-Stuff 10k stores one per image)")
    label = np.asarray(content["S"])
    if label.ndim != 2:
        raise DatasetError(f"{path}: 'S' must be a 2-D label map, got shape {label.shape}")
    return label.astype(np.int64)


class COCOStuff10kDataset(SegmentationFolder):
    """COCO-Stuff 10k (the paper's Table 11: 9k train / 1k test images), 171 classes.

    ``root`` is the official ``cocostuff-10k-v1.1`` folder: ``images/{name}.jpg``,
    ``annotations/{name}.mat`` (``S``: the label map, 0 = unlabeled, 1..182 = COCO-Stuff class
    ids; ``names``) and ``imageLists/{train,test}.txt`` (one image name per line, no extension).
    Splits ``train`` and ``test`` (alias ``val``, so that the configs' ``val_split`` scores the
    test images). Class ids become train ids by :func:`cocostuff_id_lut`, the mapping of the
    164k layout; unlabeled pixels and the 11 unused thing ids become 255.
    """

    name = "COCO-Stuff 10k"
    num_classes = 171
    split_aliases = {"val": "test"}

    def _build_lut(self) -> np.ndarray:
        return cocostuff_id_lut()

    def _split_folders(self, split: str) -> tuple[Path, Path]:
        return (require_dir(self.root / "images", "COCO-Stuff 10k image"),
                require_dir(self.root / "annotations", "COCO-Stuff 10k label"))

    def _label_name(self, image: Path) -> str:
        return image.stem + ".mat"

    def _list_images(self, split: str, image_dir: Path) -> list[Path]:
        """The images named by ``imageLists/{split}.txt``, in its order."""
        listing = self.root / "imageLists" / f"{split}.txt"
        return images_from_list(listing, image_dir,
                                f"COCO-Stuff 10k split list not found: {listing} (splits: train, test)")

    def read_label(self, path: Path) -> np.ndarray:
        """The raw class ids of ``S`` in the ``.mat`` file at ``path``."""
        return load_mat_label(path)
