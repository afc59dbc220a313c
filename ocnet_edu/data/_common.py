"""Shared helpers for the dataset modules: sample seeding and the image/label converters.

Every dataset in :mod:`ocnet_edu.data` returns a pair ``(image, label)``:

* ``image``: ``float32`` tensor ``[3, H, W]`` with RGB values in ``0..255`` (not normalised;
  normalisation is the last step of the transform pipeline, :class:`~ocnet_edu.data.transforms.Normalize`,
  because the paper's brightness jitter of ``[-10, 10]`` is defined on the ``0..255`` scale),
* ``label``: ``int64`` tensor ``[H, W]`` of train ids in ``[0, num_classes)`` with
  :data:`IGNORE_INDEX` (255) for pixels that are not scored.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Callable, ClassVar

import numpy as np
import torch
from einops import rearrange

from ocnet_edu.data.constants import IGNORE_INDEX

if TYPE_CHECKING:
    from ocnet_edu.config import Config

Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
"""``transform(image, label, generator) -> (image, label)``, e.g.
:func:`ocnet_edu.data.transforms.paper_train_transforms`."""


class DatasetError(ValueError):
    """Raised when a file of a dataset is missing, unreadable or holds invalid values.

    The message always names the offending file (or folder).
    """


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that depends only on ``(seed, epoch, index)``.

    Data loading is then reproducible whatever the number of ``DataLoader`` workers and whatever
    order the workers fetch samples in: sample ``index`` of epoch ``epoch`` always gets the same
    random numbers.
    """
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`sample_seed`."""
    return torch.Generator().manual_seed(sample_seed(seed, epoch, index))


def image_to_tensor(array: np.ndarray) -> torch.Tensor:
    """``uint8``/float array ``[H, W, 3]`` -> ``float32`` tensor ``[3, H, W]`` in ``0..255``."""
    return rearrange(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), "h w c -> c h w")


def validate_label(label: np.ndarray, num_classes: int, where: str) -> None:
    """Check that every value of ``label`` is in ``[0, num_classes)`` or equals :data:`IGNORE_INDEX`.

    Args:
        label: integer array ``[H, W]`` of (mapped) train ids.
        num_classes: number of scored classes.
        where: the file name to put in the error message.

    Raises:
        DatasetError: naming ``where`` and listing (up to ten of) the bad values.
    """
    bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
    if bad.any():
        values = np.unique(label[bad])[:10].tolist()
        raise DatasetError(
            f"{where}: label values {values} are outside [0, {num_classes}) and are not the "
            f"ignore value {IGNORE_INDEX}"
        )


class SegmentationDataset(torch.utils.data.Dataset):
    """What every dataset of the registry (:data:`ocnet_edu.data.DATASETS`) has in common.

    ``num_classes`` (scored classes), ``ignore_index`` (:data:`IGNORE_INDEX`), ``flip_pairs``
    (class ids ``(left, right)`` that a horizontal flip exchanges; none for most data sets),
    ``splits`` (the split names it has, checked when a config is loaded; ``None``: whatever
    folders the dataset's root holds), an
    augmentation stream chosen by :meth:`set_epoch`, and :meth:`from_config`, the dataset's
    builder from a :class:`~ocnet_edu.config.Config`.
    """

    num_classes: int
    ignore_index: ClassVar[int] = IGNORE_INDEX
    flip_pairs: ClassVar[tuple[tuple[int, int], ...]] = ()
    splits: ClassVar[tuple[str, ...] | None] = None
    epoch: int = 0

    @classmethod
    def from_config(cls, cfg: "Config", split: str, transform: Transform | None) -> "SegmentationDataset":
        """The dataset of ``cfg.data`` for ``split``, its samples passed through ``transform``."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call before building the epoch's iterator)."""
        self.epoch = epoch


class GeneratedScenes(SegmentationDataset):
    """Base of the datasets generated on the fly (synthetic shapes, digit scenes).

    A subclass sets ``length``, ``seed``, ``transform`` and ``epoch`` and implements
    ``generate(index) -> (image [H, W, 3] float32, label [H, W] int64)``. Item ``index`` is scene
    ``first_index + index`` of the seed's stream; its augmentation draws from
    :func:`sample_generator` of ``(seed, epoch, first_index + index)``, so it does not depend on
    the number of DataLoader workers.
    """

    first_index: int = 0
    noise: float = 0.0

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index``: image ``float32`` ``[H, W, 3]`` in ``0..255``, label ``int64`` ``[H, W]``."""
        raise NotImplementedError

    def add_noise(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The last step of ``generate``: Gaussian pixel noise of std ``self.noise`` from ``rng``,
        clipped to ``0..255``, as ``float32`` ``[H, W, 3]``."""
        image = image + rng.normal(0.0, self.noise, size=image.shape)
        return np.clip(image, 0.0, 255.0).astype(np.float32)

    def __len__(self) -> int:
        """Number of scenes."""
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Scene ``index`` as tensors ``[3, H, W]`` and ``[H, W]``, through ``transform``."""
        image_np, label_np = self.generate(index)
        image, label = image_to_tensor(image_np), torch.from_numpy(label_np)
        if self.transform is not None:
            generator = sample_generator(self.seed, self.epoch, self.first_index + index)
            image, label = self.transform(image, label, generator)
        return image, label

