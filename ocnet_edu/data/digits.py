"""Digit cards: a small segmentation benchmark where a pixel's class is its object's class.

Each scene is a grey, noisy canvas with a few *cards*: squares of one random colour with a
handwritten digit from scikit-learn's bundled digits data set written on them in a darker shade
of the same colour (``sklearn.datasets.load_digits``: 1797 real 8×8 scans with values 0..16,
shipped inside the package, so nothing is downloaded). Every scan is upsampled bilinearly by
``digit_scale``, so a card is ``8·digit_scale`` pixels square. *Every* pixel of a card is labelled
with the class of its digit (``1 + digit``, so classes ``1..10`` are the digits 0..9); the canvas
around the cards is background (class 0).

Why this needs object context (not in the paper; a CPU-scale stand-in for its benchmarks): the
card colour is drawn independently of the digit, so it says *which object* a pixel belongs to but
never *which class*; a blank corner of a card, or a piece of stroke, looks the same on every card.
The class of a pixel is only determined by the whole digit on its card. A network whose receptive
field (:meth:`~ocnet_edu.backbones.SmallBackbone.receptive_field`) is smaller than a card has to
gather information from the other pixels of the same object, which is what OCNet's object context
(Eq. 1) does: pixels of one card share a colour, so a learned similarity can find them. Version
0.1 of this benchmark labelled only the ink; at output stride 8 its score was dominated by
resolving thin strokes rather than by knowing the digit, and context did not help measurably.

Train and validation scenes use disjoint sets of the 1797 scans (a fixed split by index, the same
for every ``seed``), so the validation score measures generalisation to unseen handwriting.
Sample ``i`` depends only on ``(seed, split, i)`` and its augmentation only on
``(seed, epoch, i)``, like :class:`~ocnet_edu.data.synthetic.SyntheticShapes`.
"""

from __future__ import annotations

import colorsys
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ocnet_edu.data._common import GeneratedScenes, Transform

if TYPE_CHECKING:
    from ocnet_edu.config import Config

__all__ = ["DigitScenes", "NUM_DIGIT_CLASSES", "digit_split_indices", "load_digit_images"]

NUM_DIGIT_CLASSES = 11
"""Background (0) and the ten digits (1..10 for the digits 0..9)."""

DIGIT_SIDE = 8
"""Side of a scikit-learn digit scan, in pixels."""

DIGIT_MAX = 16.0
"""Largest intensity of a scikit-learn digit scan."""

VAL_FRACTION = 0.2
"""Share of the 1797 scans reserved for the validation split."""

_SPLIT_SEED = 20_211_231  # fixes which scans are validation scans; independent of any run seed
_SPLITS = {"train": 0, "val": 1}  # the split's code is part of every sample's random stream
MIN_HUE_GAP = 0.12
"""Smallest distance on the hue circle (of circumference 1) between two cards of one scene."""

MAX_CARDS = 5
"""Most cards per scene (``MAX_CARDS · MIN_HUE_GAP`` must stay below 1)."""

_PLACEMENT_TRIES = 200  # random positions tried per digit before falling back to a free grid cell


@lru_cache(maxsize=1)
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All scikit-learn digit scans: images ``float32`` ``[1797, 8, 8]`` in ``0..16`` and the
    digits ``int64`` ``[1797]`` in ``0..9``.

    Reads ``sklearn/datasets/data/digits.csv.gz`` (the file ``load_digits`` reads: one row per
    scan, 64 pixel values then the digit) without importing scikit-learn, whose import takes
    seconds; if that file is not where this scikit-learn version keeps it, calls
    ``sklearn.datasets.load_digits()`` instead. A test checks that both give the same arrays.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise ImportError("DigitScenes needs scikit-learn (its bundled digits data set): pip install scikit-learn")
    locations = list(spec.submodule_search_locations or [])
    path = Path(locations[0]) / "datasets" / "data" / "digits.csv.gz" if locations else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        table = np.concatenate([bunch.data, bunch.target[:, None]], axis=1).astype(np.float32)
    if table.ndim != 2 or table.shape[1] != DIGIT_SIDE * DIGIT_SIDE + 1:
        raise ValueError(f"unexpected scikit-learn digits table of shape {table.shape}; expected [N, 65]")
    images = np.ascontiguousarray(table[:, :-1].reshape(-1, DIGIT_SIDE, DIGIT_SIDE))
    targets = table[:, -1].astype(np.int64)
    images.setflags(write=False)
    targets.setflags(write=False)
    return images, targets


def digit_split_indices(split: str) -> np.ndarray:
    """Sorted indices (into :func:`load_digit_images`) of the scans that ``split`` may use.

    A fixed permutation of the scans, the same on every machine and for every run seed, puts the
    first ``VAL_FRACTION`` of them in ``"val"`` and the rest in ``"train"``; the two sets are
    disjoint and together cover all scans.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    count = len(load_digit_images()[0])
    order = np.random.default_rng(_SPLIT_SEED).permutation(count)
    num_val = int(round(VAL_FRACTION * count))
    chosen = order[:num_val] if split == "val" else order[num_val:]
    return np.sort(chosen)


def _check_arguments(split: str, length: int, size: tuple[int, int], digit_scale: int,
                     digits_per_scene: tuple[int, int], noise: float, num_classes: int) -> None:
    """Raise ``ValueError`` for the bad arguments listed under :class:`DigitScenes`."""
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {sorted(_SPLITS)}, got {split!r}")
    if int(length) < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with positive sides, got {size}")
    if isinstance(digit_scale, bool) or int(digit_scale) != digit_scale or digit_scale < 1:
        raise ValueError(f"digit_scale must be a positive integer, got {digit_scale}")
    low, high = (int(v) for v in digits_per_scene)
    if not 1 <= low <= high <= MAX_CARDS:
        raise ValueError(f"digits_per_scene must be (low, high) with 1 <= low <= high <= {MAX_CARDS}, "
                         f"got {digits_per_scene}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    if num_classes != NUM_DIGIT_CLASSES:
        raise ValueError(f"digit scenes have {NUM_DIGIT_CLASSES} classes (background + 10 digits), "
                         f"got num_classes={num_classes}")
    side = DIGIT_SIDE * int(digit_scale)
    h, w = int(size[0]), int(size[1])
    cells = (h // side) * (w // side)
    if cells < high:
        raise ValueError(
            f"a {h}x{w} canvas holds at most {cells} non-overlapping digits of {side}x{side} pixels "
            f"(digit_scale={digit_scale}), fewer than the {high} asked for; use a larger size, a smaller "
            f"digit_scale or fewer digits_per_scene"
        )


class DigitScenes(GeneratedScenes):
    """Scenes of a few coloured cards with a handwritten digit each; every card pixel carries its
    digit's class.

    Args:
        split: ``"train"`` or ``"val"``; they draw from disjoint sets of scans
            (:func:`digit_split_indices`).
        length: number of scenes.
        size: ``(height, width)`` of the canvas.
        seed: fixes every scene (with ``split`` and the index) and the augmentation stream.
        transform: ``transform(image, label, generator) -> (image, label)`` or ``None``.
        digits_per_scene: ``(low, high)``: each scene has between ``low`` and ``high`` digits
            (inclusive); at most five, so that their hues can be ``MIN_HUE_GAP`` apart.
        digit_scale: integer upsampling factor; a card is ``8·digit_scale`` pixels square.
        noise: standard deviation of the Gaussian pixel noise (0..255 scale).
        num_classes: must be 11 (background + ten digits); accepted so that callers passing the
            config's ``num_classes`` get a clear error if it is wrong.

    Returns (per item):
        image ``float32`` ``[3, H, W]`` in ``0..255`` and label ``int64`` ``[H, W]`` in
        ``[0, 11)`` (before ``transform``).

    Raises:
        ValueError: a bad split, length, size, scale, noise or digit count, or a canvas too
            small to hold ``digits_per_scene[1]`` digits side by side.
    """

    num_classes = NUM_DIGIT_CLASSES
    splits = tuple(_SPLITS)

    def __init__(
        self,
        split: str = "train",
        length: int = 64,
        size: tuple[int, int] = (64, 64),
        seed: int = 0,
        transform: Transform | None = None,
        digits_per_scene: tuple[int, int] = (2, 3),
        digit_scale: int = 4,
        noise: float = 12.0,
        num_classes: int = NUM_DIGIT_CLASSES,
    ) -> None:
        _check_arguments(split, length, size, digit_scale, digits_per_scene, noise, num_classes)
        self.split = split
        self.length = int(length)
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.transform = transform
        self.digits_per_scene = (int(digits_per_scene[0]), int(digits_per_scene[1]))
        self.digit_scale = int(digit_scale)
        self.digit_side = DIGIT_SIDE * self.digit_scale
        self.noise = float(noise)
        self.epoch = 0
        images, targets = load_digit_images()
        self.digit_indices = digit_split_indices(split)
        # [N, side, side] upsampled scans of this split in 0..1, and their digits [N]
        scans = torch.from_numpy(images[self.digit_indices] / DIGIT_MAX)[:, None]
        self.glyphs = F.interpolate(scans, scale_factor=self.digit_scale, mode="bilinear",
                                    align_corners=False)[:, 0].clamp(0.0, 1.0).numpy()
        self.digits = targets[self.digit_indices]

    @classmethod
    def from_config(cls, cfg: "Config", split: str, transform: Transform | None) -> "DigitScenes":
        """``data.synthetic_length`` scenes of ``data.synthetic_size`` pixels for ``split``
        (``"train"`` or ``"val"``), cards of ``data.digit_scale``; checks ``model.num_classes``."""
        data = cfg.data
        return cls(split=split, length=data.synthetic_length, size=data.synthetic_size, seed=cfg.runtime.seed,
                   transform=transform, digit_scale=data.digit_scale, num_classes=cfg.model.num_classes)

    def _positions(self, rng: np.random.Generator, count: int) -> list[tuple[int, int]]:
        """Top-left corners of ``count`` non-overlapping ``side × side`` boxes on the canvas.

        Random positions are tried first (rejection sampling); a digit that finds no free spot
        in ``_PLACEMENT_TRIES`` tries goes to a random free cell of the ``side``-pixel grid,
        which the constructor's check guarantees to exist.
        """
        h, w = self.size
        side = self.digit_side
        placed: list[tuple[int, int]] = []

        def free(top: int, left: int) -> bool:
            """Whether a box at ``(top, left)`` overlaps none of the boxes placed so far."""
            return all(abs(top - t) >= side or abs(left - l) >= side for t, l in placed)

        for _ in range(count):
            for _ in range(_PLACEMENT_TRIES):
                top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
                if free(top, left):
                    placed.append((top, left))
                    break
            else:
                # the grid cells are disjoint, but a randomly placed box may straddle several
                grid = [(r * side, c * side) for r in range(h // side) for c in range(w // side)]
                options = [cell for cell in grid if free(*cell)]
                if not options:  # earlier random boxes blocked every cell: restart on the grid
                    placed = []
                    cells = rng.permutation(len(grid))[:count]
                    return [grid[int(i)] for i in cells]
                placed.append(options[int(rng.integers(len(options)))])
        return placed

    @staticmethod
    def _hues(rng: np.random.Generator, count: int) -> list[float]:
        """``count`` hues in ``[0, 1)`` at least ``MIN_HUE_GAP`` apart on the colour circle, so
        that the cards of one scene never share a colour."""
        start = rng.uniform(0.0, 1.0)
        gaps = rng.dirichlet(np.ones(count)) * (1.0 - count * MIN_HUE_GAP) + MIN_HUE_GAP
        offsets = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
        return [float((start + o) % 1.0) for o in rng.permutation(offsets)]

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene ``index`` as numpy arrays: image ``float32`` ``[H, W, 3]`` in ``0..255``, label
        ``int64`` ``[H, W]``."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, _SPLITS[self.split], index])
        h, w = self.size
        side = self.digit_side
        # background: one grey level per scene with a faint per-channel tint
        background = rng.uniform(20.0, 90.0) * rng.uniform(0.85, 1.0, size=3)
        image = np.broadcast_to(background, (h, w, 3)).astype(np.float64)
        label = np.zeros((h, w), dtype=np.int64)
        count = int(rng.integers(self.digits_per_scene[0], self.digits_per_scene[1] + 1))
        hues = self._hues(rng, count)
        for (top, left), hue in zip(self._positions(rng, count), hues):
            which = int(rng.integers(len(self.digits)))
            glyph = self.glyphs[which]  # [side, side] in 0..1
            # card and ink share one random hue, drawn independently of the digit: the colour
            # tells which card a pixel is on, never which digit is written on it
            card = 255.0 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 0.8), rng.uniform(0.75, 0.95)))
            ink = card * rng.uniform(0.15, 0.35)
            box = image[top: top + side, left: left + side]
            box[...] = card + glyph[..., None] * (ink - card)
            label[top: top + side, left: left + side] = int(self.digits[which]) + 1
        return self.add_noise(image, rng), label

    def __repr__(self) -> str:
        return (
            f"DigitScenes(split={self.split!r}, length={self.length}, size={self.size}, seed={self.seed}, "
            f"digits_per_scene={self.digits_per_scene}, digit_scale={self.digit_scale})"
        )
