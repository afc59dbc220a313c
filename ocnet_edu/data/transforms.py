"""The training augmentations of Sec. 4.2, on ``(image, label)`` tensor pairs.

"For the data augmentation, we perform random flipping horizontally, random scaling in the range
of [0.5, 2] and random brightness jittering within the range of [-10, 10]" (Sec. 4.2); the
network then sees a fixed-size random crop (e.g. 512x1024 on Cityscapes).

Conventions:

* ``image``: ``float32`` ``[3, H, W]``, values in ``0..255`` until :class:`Normalize`;
* ``label``: ``int64`` ``[H, W]``, 255 = ignore;
* every transform is called as ``t(image, label, generator)`` and draws its random numbers from
  the ``torch.Generator`` it is given (never from the global RNG), so a pipeline is reproducible
  from one seed. Geometric transforms move image and label together, so they stay aligned.
* a transform's output does not depend on where it runs: ``F.interpolate`` on the CPU gives
  results that differ in the last bit with the number of threads (the work is split differently
  between vectorised and scalar code), and a ``DataLoader`` worker runs on one thread while the
  main process (``workers=0``) runs on many, so :class:`RandomScale` resamples inside
  :func:`torch_threads` ``(1)``. Hence the same weights whatever ``runtime.workers`` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ocnet_edu.data.constants import IGNORE_INDEX

Pair = tuple[torch.Tensor, torch.Tensor]

IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
"""ImageNet RGB mean on the 0..255 scale (what ImageNet-pretrained backbones expect)."""
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
"""ImageNet RGB standard deviation on the 0..255 scale."""


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(count)``, restoring the previous count after.

    Used around CPU resampling, whose last bits depend on the thread count: with one thread the
    result is the same in the main process and in every ``DataLoader`` worker.
    """
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class Compose:
    """Apply transforms in order, passing the same generator to each.

    Args:
        transforms: callables ``t(image, label, generator) -> (image, label)``.
    """

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> Pair:
        """Each transform in turn, on ``image [3, H, W]`` and ``label [H, W]``, with ``generator``."""
        for t in self.transforms:
            image, label = t(image, label, generator)
        return image, label

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def swap_pairs(label: torch.Tensor, pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """``label`` with the ids of every pair ``(a, b)`` exchanged (``a`` ↔ ``b``); other values kept.

    Mirroring an image turns a left arm into a right arm: for data sets with left/right classes
    (LIP: ``LIPDataset.flip_pairs``) a horizontal flip must also swap those labels.
    """
    if not pairs:
        return label
    out = label.clone()
    for a, b in pairs:
        out[label == a] = b
        out[label == b] = a
    return out


def check_flip_pairs(pairs: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Validate left/right class pairs: non-negative ints, each id in at most one pair."""
    pairs = tuple((int(a), int(b)) for a, b in pairs)
    ids = [i for pair in pairs for i in pair]
    if any(i < 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"flip pairs must be disjoint pairs of distinct non-negative class ids, got {pairs}")
    return pairs


class RandomHorizontalFlip:
    """Mirror image ``[3, H, W]`` and label ``[H, W]`` left-right with probability ``p``.

    ``pairs``: class ids ``(left, right)`` exchanged in the mirrored label (:func:`swap_pairs`).
    """

    def __init__(self, p: float = 0.5, pairs: Sequence[tuple[int, int]] = ()) -> None:
        self.p = p
        self.pairs = check_flip_pairs(pairs)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> Pair:
        """The pair mirrored (pairs swapped) with probability ``p``, else unchanged."""
        if float(torch.rand((), generator=generator)) < self.p:
            return image.flip(-1), swap_pairs(label.flip(-1), self.pairs)
        return image, label

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p}" + (f", pairs={self.pairs})" if self.pairs else ")")


IMAGE_MODES = ("bilinear", "nearest-exact")
"""The resampling modes :class:`RandomScale` takes for the image (the label is always nearest-exact)."""


class RandomScale:
    """Resize by a factor ``s ~ U[scale_range]`` (Sec. 4.2: [0.5, 2]).

    The output size is ``round(H·s) x round(W·s)``, computed on one thread (:func:`torch_threads`)
    so that it does not depend on the number of threads; with ``base_size`` set, ``s`` multiplies the
    factor that first brings the longer side to ``base_size``. The image is resampled with
    ``image_mode`` (bilinear by default), the label always with ``"nearest-exact"`` (the
    pixel-centre-aligned nearest neighbour: no new label values, no half-pixel shift).

    Args:
        scale_range: ``(low, high)`` of the uniform scale factor.
        base_size: optional long-side size the scale is relative to.
        image_mode: ``F.interpolate`` mode for the image (``"bilinear"`` or ``"nearest-exact"``).
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.5, 2.0),
        base_size: int | None = None,
        image_mode: str = "bilinear",
    ) -> None:
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if image_mode not in IMAGE_MODES:
            raise ValueError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.base_size = base_size
        self.image_mode = image_mode

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> Pair:
        """The pair resized by one random factor: ``[3, H', W']`` and ``[H', W']``."""
        s = _uniform(generator, *self.scale_range)
        h, w = label.shape
        if self.base_size is not None:
            s *= self.base_size / max(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
        with torch_threads(1):  # the same bits in the main process and in every DataLoader worker
            # bilinear's align_corners defaults to False: pixel centres aligned, like "nearest-exact"
            image = F.interpolate(image[None], size=size, mode=self.image_mode)[0]
            label = F.interpolate(label[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
        return image, label

    def __repr__(self) -> str:
        return f"RandomScale(scale_range={self.scale_range}, base_size={self.base_size}, image_mode={self.image_mode!r})"


class RandomBrightness:
    """Add one offset ``δ ~ U[-delta, delta]`` to all channels of a ``0..255`` image, then clamp.

    Sec. 4.2: "random brightness jittering within the range of [-10, 10]". The label is untouched.
    """

    def __init__(self, delta: float = 10.0) -> None:
        self.delta = float(delta)

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> Pair:
        """The image shifted by one random offset and clamped to ``0..255``; the label unchanged."""
        shift = _uniform(generator, -self.delta, self.delta)
        return (image + shift).clamp_(0.0, 255.0), label

    def __repr__(self) -> str:
        return f"RandomBrightness(delta={self.delta})"


class RandomCrop:
    """Crop a random ``crop_size = (h, w)`` window; pad first if the input is smaller.

    Padding is added at the bottom and right: the image with ``image_fill`` (per-channel, the
    dataset mean by default, which :class:`Normalize` turns into 0), the label with 255, so padded
    pixels are ignored by the loss. The window's top-left corner is uniform over valid positions.

    Args:
        crop_size: ``(height, width)`` of the output.
        image_fill: per-channel value for padded image pixels (0..255 scale).
        label_fill: value for padded label pixels.
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        image_fill: Sequence[float] = IMAGENET_MEAN,
        label_fill: int = IGNORE_INDEX,
    ) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.image_fill = tuple(float(v) for v in image_fill)
        self.label_fill = label_fill

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator) -> Pair:
        """A random ``crop_size`` window of the (padded) pair: ``[3, h, w]`` and ``[h, w]``."""
        ch, cw = self.crop_size
        h, w = label.shape
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        if pad_h or pad_w:
            fill = rearrange(torch.tensor(self.image_fill, dtype=image.dtype), "c -> c 1 1")
            padded = fill.expand(image.shape[0], h + pad_h, w + pad_w).clone()
            padded[:, :h, :w] = image
            image = padded
            label = F.pad(label, (0, pad_w, 0, pad_h), value=self.label_fill)
            h, w = h + pad_h, w + pad_w
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        return image[:, top : top + ch, left : left + cw], label[top : top + ch, left : left + cw]

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size})"


class Normalize:
    """``(image - mean) / std`` per channel, with mean and std on the ``0..255`` scale."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = rearrange(torch.tensor([float(v) for v in mean]), "c -> c 1 1")
        self.std = rearrange(torch.tensor([float(v) for v in std]), "c -> c 1 1")

    def __call__(self, image: torch.Tensor, label: torch.Tensor, generator: torch.Generator | None = None) -> Pair:
        """The normalised image; the label unchanged."""
        return (image - self.mean) / self.std, label

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def paper_train_transforms(
    crop_size: tuple[int, int],
    scale_range: tuple[float, float] = (0.5, 2.0),
    brightness: float = 10.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    base_size: int | None = None,
    normalize: bool = True,
    hflip: bool = True,
    flip_pairs: Sequence[tuple[int, int]] = (),
) -> Compose:
    """Sec. 4.2's pipeline (``hflip=False`` drops the flip, for data whose classes are not mirror
    symmetric, e.g. digits): flip -> scale -> brightness -> crop (pad with mean / 255) -> normalise.

    ``flip_pairs``: left/right class ids swapped when an image is mirrored (the dataset's
    ``flip_pairs``; LIP's arms, legs and shoes)."""
    steps: list = [
        RandomHorizontalFlip(0.5 if hflip else 0.0, flip_pairs),
        RandomScale(scale_range, base_size=base_size),
        RandomBrightness(brightness),
        RandomCrop(crop_size, image_fill=mean),
    ]
    if normalize:
        steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transforms(mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Compose:
    """Evaluation pipeline: only :class:`Normalize` (full-resolution images, no randomness)."""
    return Compose([Normalize(mean, std)])
