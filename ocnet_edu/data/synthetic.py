"""A small synthetic segmentation dataset, generated on the fly (no files, no downloads).

Each sample is a textured background (class 0) with a few disks and rectangles painted on it;
every foreground class has its own colour, with pixel noise on top, so a small network can learn
the task in minutes on a CPU. Sample ``i`` depends only on ``(seed, i)`` (and its augmentation on
``(seed, epoch, i)``), never on the number of ``DataLoader`` workers or the order of access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ocnet_edu.data._common import GeneratedScenes, Transform

if TYPE_CHECKING:
    from ocnet_edu.config import Config

_PALETTE_STREAM = 2**32 - 1  # an index no sample uses: the stream the class colours come from


class SyntheticShapes(GeneratedScenes):
    """Random disks and rectangles of ``num_classes - 1`` classes on a striped background.

    Args:
        length: number of samples.
        size: ``(height, width)`` of every image.
        num_classes: classes including the background class 0 (at least 2).
        seed: fixes the palette and every sample.
        max_shapes: each image has between 1 and ``max_shapes`` shapes.
        noise: standard deviation of the Gaussian pixel noise (0..255 scale).
        transform: ``transform(image, label, generator) -> (image, label)`` or ``None``.
        first_index: item ``i`` is scene number ``first_index + i`` of the seed's stream. A
            validation set is the same seed (same palette) with ``first_index`` past the
            training set, so the two share classes and colours but no scene.

    ``splits``: ``"train"`` and ``"val"`` (:meth:`from_config`).

    Returns (per item):
        image ``float32`` ``[3, H, W]`` in ``0..255`` and label ``int64`` ``[H, W]`` in
        ``[0, num_classes)`` (before ``transform``).
    """

    splits = ("train", "val")

    def __init__(
        self,
        length: int = 64,
        size: tuple[int, int] = (64, 64),
        num_classes: int = 5,
        seed: int = 0,
        max_shapes: int = 5,
        noise: float = 12.0,
        transform: Transform | None = None,
        first_index: int = 0,
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background + one shape), got {num_classes}")
        self.length = length
        self.size = (int(size[0]), int(size[1]))
        self.num_classes = num_classes
        self.seed = seed
        self.max_shapes = max_shapes
        self.noise = noise
        self.transform = transform
        if first_index < 0:
            raise ValueError(f"first_index must be >= 0, got {first_index}")
        self.first_index = first_index
        self.epoch = 0
        palette_rng = np.random.default_rng([seed, _PALETTE_STREAM])
        # [num_classes, 3] colours, kept away from 0 and 255 so that noise rarely clips
        self.palette = palette_rng.uniform(30.0, 225.0, size=(num_classes, 3))

    @classmethod
    def from_config(cls, cfg: "Config", split: str, transform: Transform | None) -> "SyntheticShapes":
        """Split ``"train"``: ``data.synthetic_length`` scenes from scene 0; ``"val"``: a quarter as
        many (at least one), the scenes right after the training ones, with the same seed (hence
        the same class colours). ``model.num_classes`` classes, ``data.synthetic_size`` images."""
        if split not in cls.splits:
            raise ValueError(f"the synthetic dataset has the splits 'train' and 'val', got {split!r}")
        length = cfg.data.synthetic_length
        validation = split == "val"
        return cls(length=max(1, length // 4) if validation else length, size=cfg.data.synthetic_size,
                   num_classes=cfg.model.num_classes, seed=cfg.runtime.seed, transform=transform,
                   first_index=length if validation else 0)

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``index`` as numpy arrays: image ``float32`` ``[H, W, 3]``, label ``int64`` ``[H, W]``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, self.first_index + index])
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        # background: class-0 colour modulated by stripes of random orientation and period
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(4.0, 12.0)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (2 * np.pi / period))
        image = self.palette[0][None, None, :] + 25.0 * stripes[..., None]
        label = np.zeros((h, w), dtype=np.int64)

        for _ in range(int(rng.integers(1, self.max_shapes + 1))):
            cls = int(rng.integers(1, self.num_classes))
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            extent = rng.uniform(0.08, 0.3) * min(h, w)
            if rng.random() < 0.5:  # disk
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= extent**2
            else:  # axis-aligned rectangle with a random aspect ratio
                aspect = rng.uniform(0.5, 2.0)
                mask = (np.abs(yy - cy) <= extent * aspect) & (np.abs(xx - cx) <= extent / aspect)
            label[mask] = cls
            image[mask] = self.palette[cls]

        return self.add_noise(image, rng), label

    def __repr__(self) -> str:
        return (
            f"SyntheticShapes(length={self.length}, size={self.size}, num_classes={self.num_classes}, "
            f"seed={self.seed}, first_index={self.first_index})"
        )
