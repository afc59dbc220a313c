"""Write a small image/mask folder in the layout of :mod:`ocnet_edu.data.custom`.

The book's guide "Train OCNet on your own data" and the tests need a folder that looks exactly
like a user's: JPEG images, single-channel PNG masks with an ignore value, a ``classes.txt``.
:func:`write_example_folder` draws the scenes with :class:`~ocnet_edu.data.synthetic.SyntheticShapes`
(coloured disks and rectangles) and saves them in that layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ocnet_edu.data.synthetic import SyntheticShapes

__all__ = ["write_example_folder"]


def write_example_folder(root: str | Path, splits: dict[str, int] | None = None, size: tuple[int, int] = (64, 64),
                         classes: tuple[str, ...] = ("background", "disk", "square", "bar"),
                         ignore_index: int = 255, ignore_border: int = 2, seed: int = 0) -> Path:
    """Write ``root/{classes.txt, images/<split>/*.jpg, masks/<split>/*.png}``; return ``root``.

    Args:
        splits: images per split (default ``{"train": 24, "val": 8}``).
        size: (height, width) of every image.
        classes: the class names; the scenes have ``len(classes)`` classes, 0 the background.
        ignore_index: the mask value written where the label is unknown: a band of
            ``ignore_border`` pixels around every object, as annotators leave at object edges.
        seed: fixes the class colours and every scene; the splits are consecutive, disjoint runs
            of the same seed's scenes (same colours, no scene twice).
    """
    root = Path(root)
    splits = {"train": 24, "val": 8} if splits is None else splits
    (root).mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    first = 0
    for split, count in splits.items():
        scenes = SyntheticShapes(length=count, size=size, num_classes=len(classes), seed=seed, first_index=first)
        first += count
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, label = scenes[i]
            mask = label.numpy().astype(np.uint8)
            if ignore_border:
                mask = _ignore_edges(mask, ignore_border, ignore_index)
            Image.fromarray(image.permute(1, 2, 0).clamp(0, 255).byte().numpy()).save(
                root / "images" / split / f"{split}_{i:04d}.jpg", quality=95)
            Image.fromarray(mask, mode="L").save(root / "masks" / split / f"{split}_{i:04d}.png")
    return root


def _ignore_edges(mask: np.ndarray, width: int, ignore_index: int) -> np.ndarray:
    """``mask`` with ``ignore_index`` on pixels within ``width`` of a different class."""
    height, wide = mask.shape
    padded = np.pad(mask, width, mode="edge")  # the image border is not an object edge
    edge = np.zeros(mask.shape, dtype=bool)
    for dy in range(2 * width + 1):
        for dx in range(2 * width + 1):
            edge |= padded[dy:dy + height, dx:dx + wide] != mask
    out = mask.copy()
    out[edge] = ignore_index
    return out
