"""Segmentation losses: cross-entropy with ignore label (:data:`~ocnet_edu.data.IGNORE_INDEX`),
OHEM, and the poly learning-rate policy.

Sec. 4.2: the final output is trained with weight 1 and the auxiliary output with weight 0.4;
online hard example mining (OHEM) is an option (the OCNet authors use it for the Cityscapes test
server: keep the pixels whose probability of the true class is below 0.7, but never fewer than a
minimum number).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ocnet_edu.data.constants import IGNORE_INDEX

__all__ = ["poly_lr_factor", "ohem_kept_mask", "ohem_cross_entropy", "segmentation_loss"]


def poly_lr_factor(iteration: int, max_iters: int, power: float = 0.9) -> float:
    """The poly policy ``(1 - iteration / max_iters) ** power`` (Sec. 4.2)."""
    if max_iters <= 0:
        raise ValueError(f"max_iters must be positive, got {max_iters}")
    return max(0.0, 1.0 - iteration / max_iters) ** power


def ohem_kept_mask(
    logits: torch.Tensor, target: torch.Tensor, thresh: float = 0.7, min_kept: int = 100_000, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Which pixels OHEM keeps: ``[B, H, W]`` bool.

    A labelled pixel is *hard* when the predicted probability of its true class is at most the
    threshold. All hard pixels are kept; if there are fewer than ``min_kept``, the threshold is
    raised to the ``min_kept``-th smallest probability so that at least that many are kept.
    """
    with torch.no_grad():
        valid = target != ignore_index
        prob = logits.float().softmax(dim=1)
        true_prob = prob.gather(1, target.clamp(min=0, max=logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        true_prob = true_prob.masked_fill(~valid, 2.0)  # never kept
        num_valid = int(valid.sum())
        threshold = thresh
        if min_kept > 0 and num_valid > 0:
            k = min(min_kept, num_valid)
            kth = true_prob.flatten().kthvalue(k).values.item()
            threshold = max(threshold, kth)
        return valid & (true_prob <= threshold)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    thresh: float = 0.7,
    min_kept: int = 100_000,
    ignore_index: int = IGNORE_INDEX,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy averaged over the pixels :func:`ohem_kept_mask` keeps."""
    kept = ohem_kept_mask(logits, target, thresh, min_kept, ignore_index)
    masked_target = target.masked_fill(~kept, ignore_index)
    return F.cross_entropy(logits, masked_target, weight=weight, ignore_index=ignore_index)


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    aux_logits: torch.Tensor | None = None,
    aux_weight: float = 0.4,
    ohem: bool = False,
    ohem_thresh: float = 0.7,
    ohem_min_kept: int = 100_000,
    class_weights: torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """``CE(final) + aux_weight · CE(aux)`` with optional OHEM (on both) and class weights.

    The one formula of the training loss (Sec. 4.2): :meth:`ocnet_edu.model.OCNet.loss`, which the
    training loop calls, passes its outputs and its ``aux_weight`` here.
    """

    def one(output: torch.Tensor) -> torch.Tensor:
        """The (OHEM or plain) cross-entropy of one logit map ``[B, K, H, W]`` against ``target``."""
        if ohem:
            return ohem_cross_entropy(output, target, ohem_thresh, ohem_min_kept, ignore_index, class_weights)
        return F.cross_entropy(output, target, weight=class_weights, ignore_index=ignore_index)

    total = one(logits)
    if aux_logits is not None and aux_weight > 0:
        total = total + aux_weight * one(aux_logits)
    return total
