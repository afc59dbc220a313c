"""Evaluation metrics: confusion-matrix scores (mIoU, Sec. 4) and the boundary F-score (Table 6).

Confusion matrix
    ``mat[t, p]`` counts pixels whose target is class ``t`` and prediction is ``p``; pixels whose
    target is ``ignore_index`` (255) are not counted. From it (``tp = diag``, ``gt = row sums``,
    ``pr = column sums``):

    * ``iou[c] = tp / (gt + pr - tp)``, NaN when the class is in neither target nor prediction;
      ``miou`` is the mean over the non-NaN classes (as the Cityscapes script does);
    * ``pixel_acc = sum(tp) / sum(mat)``;
    * ``acc[c] = tp / gt`` (NaN when ``gt = 0``), ``mean_acc`` the mean over non-NaN classes.

Boundary F-score (Table 6: "boundary F-score ... within 3, 5, 9 and 12 pixels width")
    The paper does not define it; we use the DAVIS-style measure (Perazzi et al., 2016) that the
    authors' code base evaluates with (openseg-group/openseg.pytorch,
    ``lib/metrics/F1_running_score.py``), computed per image and per class ``c``:

    1. masks ``P = (pred == c)``, ``G = (target == c)``, both set to 0 where the target is 255;
    2. boundary of a mask ``M``: the pixels where ``M`` differs from at least one of its east,
       south and south-east neighbours that lie inside the image (one-pixel-wide contours, the
       ``seg2bmap`` convention of Martin et al.);
    3. a boundary pixel of one map is *matched* if a boundary pixel of the other lies within
       Euclidean distance ``d`` (the tolerance in pixels: 3, 5, 9, 12), i.e. inside the disk
       ``dy² + dx² <= d²``;
    4. ``precision = matched(P) / |∂P|``, ``recall = matched(G) / |∂G|``,
       ``F = 2PR / (P + R)`` (0 when ``P + R = 0``); if exactly one of ``∂P, ∂G`` is empty,
       ``F = 0``; if both are empty the image is skipped for that class, unless
       ``count_empty=True``, which scores it ``F = 1`` as the authors' code does;
    5. the dataset score of class ``c`` is the mean of its per-image ``F`` values.

Both accumulators have ``reduce_(group)``, which sums their state over ``torch.distributed`` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from ocnet_edu.data.constants import IGNORE_INDEX
from ocnet_edu.engine.distributed import all_reduce_sum

__all__ = [
    "BoundaryFScore",
    "BoundaryScores",
    "ConfusionMatrix",
    "SegmentationScores",
    "boundary_map",
    "dilate_disk",
]


@dataclass
class SegmentationScores:
    """Scores from a confusion matrix; per-class tensors are ``[K]`` with NaN for absent classes."""

    miou: float
    iou: torch.Tensor
    pixel_acc: float
    mean_acc: float
    acc: torch.Tensor


class ConfusionMatrix:
    """Accumulates a ``[K, K]`` (target, prediction) confusion matrix over batches.

    Args:
        num_classes: ``K``.
        ignore_index: target value of pixels that are not counted.
        device: where the matrix lives (put it on the GPU for NCCL all-reduce).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, device: torch.device | str | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch.

        Args:
            pred: integer class predictions, any shape, e.g. ``[B, H, W]`` (take ``argmax(1)`` of
                logits ``[B, K, H, W]`` first).
            target: integer labels of the same shape, ``ignore_index`` for unscored pixels.

        Raises:
            ValueError: on a shape mismatch or a (non-ignored) value outside ``[0, K)``.
        """
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        k = self.num_classes
        target = target.reshape(-1).to(self.mat.device, torch.int64)
        pred = pred.reshape(-1).to(self.mat.device, torch.int64)
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        for name, values in (("target", target), ("pred", pred)):
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= k:
                raise ValueError(f"{name} values must be in [0, {k}) (or {self.ignore_index} in target), got {low}..{high}")
        counts = torch.bincount(target * k + pred, minlength=k * k)
        self.mat += rearrange(counts, "(t p) -> t p", t=k)

    def reduce_(self, group: object | None = None) -> "ConfusionMatrix":
        """Sum the matrix over all ranks (no-op unless ``torch.distributed`` is initialised)."""
        all_reduce_sum(self.mat, group)
        return self

    def compute(self) -> SegmentationScores:
        """mIoU, per-class IoU, pixel accuracy and mean (per-class) accuracy."""
        mat = self.mat.double()
        tp = mat.diagonal()
        gt = mat.sum(1)
        pr = mat.sum(0)
        union = gt + pr - tp
        # tp <= gt <= union, so a zero denominator has a zero numerator: 0/0 is the NaN of a class
        # in neither map (iou) or not in the target (acc), and of an empty matrix (pixel_acc)
        iou = tp / union
        acc = tp / gt
        return SegmentationScores(
            miou=float(iou.nanmean()),
            iou=iou.cpu(),
            pixel_acc=float(tp.sum() / mat.sum()),
            mean_acc=float(acc.nanmean()),
            acc=acc.cpu(),
        )


# --------------------------------------------------------------------------------------------
# boundary F-score
# --------------------------------------------------------------------------------------------
def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    """One-pixel-wide boundary of binary masks (``seg2bmap`` convention).

    Args:
        mask: ``bool`` ``[..., H, W]``.

    Returns:
        ``bool`` ``[..., H, W]``: ``True`` where the mask differs from its east, south or
        south-east neighbour (neighbours outside the image are not considered).
    """
    b = torch.zeros_like(mask)
    b[..., :, :-1] = mask[..., :, :-1] ^ mask[..., :, 1:]  # east (b is all False before: = is |=)
    b[..., :-1, :] |= mask[..., :-1, :] ^ mask[..., 1:, :]  # south
    b[..., :-1, :-1] |= mask[..., :-1, :-1] ^ mask[..., 1:, 1:]  # south-east
    return b


def _disk(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()


def dilate_disk(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation by the Euclidean disk ``dy² + dx² <= radius²``.

    Args:
        mask: ``bool`` ``[N, H, W]``.
        radius: disk radius in pixels, ``>= 0`` (0 returns the mask).

    Returns:
        ``bool`` ``[N, H, W]``: pixels within distance ``radius`` of a ``True`` pixel.

    Raises:
        ValueError: if ``radius`` is negative.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0 pixels, got {radius}")
    if radius == 0:
        return mask.clone()
    kernel = rearrange(_disk(radius, mask.device), "kh kw -> 1 1 kh kw")
    x = rearrange(mask.float(), "n h w -> n 1 h w")
    return rearrange(F.conv2d(x, kernel, padding=radius) > 0.5, "n 1 h w -> n h w")


@dataclass
class BoundaryScores:
    """``per_class[d]``: ``[K]`` boundary F per class at tolerance ``d`` px (NaN: never scored);
    ``mean[d]``: the mean over the non-NaN classes."""

    per_class: dict[int, torch.Tensor]
    mean: dict[int, float]


class BoundaryFScore:
    """Per-class boundary F-score at several pixel tolerances (see the module docstring).

    Args:
        num_classes: ``K``.
        tolerances: distances in pixels (Table 6: 3, 5, 9, 12).
        ignore_index: target value of unscored pixels.
        count_empty: score an image with the class in neither map as ``F = 1`` (authors' code)
            instead of skipping it.
    """

    def __init__(
        self,
        num_classes: int,
        tolerances: Sequence[int] = (3, 5, 9, 12),
        ignore_index: int = IGNORE_INDEX,
        count_empty: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.tolerances = tuple(int(t) for t in tolerances)
        if not self.tolerances or min(self.tolerances) < 0:
            raise ValueError(f"tolerances must be one or more distances >= 0 pixels, got {tuple(tolerances)}")
        self.ignore_index = ignore_index
        self.count_empty = count_empty
        # [T, K] sums of per-image F and numbers of scored images
        self.f_sum = torch.zeros(len(self.tolerances), num_classes, dtype=torch.float64, device=device)
        self.count = torch.zeros_like(self.f_sum)

    @torch.no_grad()
    def image_scores(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boundary F of one image.

        Args:
            pred: integer ``[H, W]``.
            target: integer ``[H, W]`` (``ignore_index`` allowed).

        Returns:
            ``f [T, K]`` (float64) and ``scored [T, K]`` (bool: whether the image counts for
            that class).
        """
        if pred.shape != target.shape or pred.dim() != 2:
            raise ValueError(f"expected two [H, W] maps, got {tuple(pred.shape)} and {tuple(target.shape)}")
        k, t = self.num_classes, len(self.tolerances)
        device = self.f_sum.device
        pred, target = pred.to(device), target.to(device)
        valid = target != self.ignore_index
        f = torch.zeros(t, k, dtype=torch.float64, device=device)
        scored = torch.zeros(t, k, dtype=torch.bool, device=device)
        classes = torch.arange(k, device=device)
        p_masks = (pred[None] == classes[:, None, None]) & valid  # [K, H, W]
        g_masks = (target[None] == classes[:, None, None]) & valid
        p_bound, g_bound = boundary_map(p_masks), boundary_map(g_masks)
        n_p = p_bound.sum((1, 2)).double()  # [K]
        n_g = g_bound.sum((1, 2)).double()
        both_empty = (n_p == 0) & (n_g == 0)
        one_empty = (n_p == 0) ^ (n_g == 0)
        active = ~(both_empty | one_empty)
        idx = active.nonzero().flatten()
        for ti, tol in enumerate(self.tolerances):
            if idx.numel():
                p_match = (p_bound[idx] & dilate_disk(g_bound[idx], tol)).sum((1, 2)).double()
                g_match = (g_bound[idx] & dilate_disk(p_bound[idx], tol)).sum((1, 2)).double()
                precision, recall = p_match / n_p[idx], g_match / n_g[idx]
                denom = precision + recall
                f[ti, idx] = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), 0.0)
            f[ti, both_empty] = 1.0
            scored[ti] = active | one_empty | (both_empty & self.count_empty)
        return f, scored

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of images: ``pred`` and ``target`` integer ``[B, H, W]`` (or ``[H, W]``)."""
        if pred.dim() == 2:
            pred, target = pred[None], target[None]
        for p, g in zip(pred, target):
            f, scored = self.image_scores(p, g)
            self.f_sum += torch.where(scored, f, 0.0)
            self.count += scored.double()

    def reduce_(self, group: object | None = None) -> "BoundaryFScore":
        """Sum the accumulators over all ranks (no-op unless ``torch.distributed`` is initialised)."""
        all_reduce_sum(self.f_sum, group)
        all_reduce_sum(self.count, group)
        return self

    def compute(self) -> BoundaryScores:
        """Per-class mean boundary F per tolerance, and its class mean."""
        # a class never scored has f_sum = count = 0, and 0/0 is its NaN
        per = (self.f_sum / self.count).cpu()
        return BoundaryScores(
            per_class={tol: per[i] for i, tol in enumerate(self.tolerances)},
            mean={tol: float(per[i].nanmean()) for i, tol in enumerate(self.tolerances)},
        )
