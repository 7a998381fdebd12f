r"""Soft targets from several raters: mean, majority vote and a Dice-weighted mean.

``masks`` holds R rater label maps per case, (B, R, \*spatial), integer class indices. Binary masks are
the case ``num_classes=2`` (channel 1 is the foreground).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from softseg.labels._common import check_index_map, check_num_classes
from softseg.scores import tversky_index
from softseg.statistics import region_statistics


def _check_masks(masks: object, num_classes: int) -> Tensor:
    masks, _ = check_index_map("masks", masks, num_classes, min_ndim=3)
    if masks.shape[1] < 1:
        raise ValueError(
            f"masks must hold at least one rater in dimension 1, (B, R, *spatial); got shape {tuple(masks.shape)}"
        )
    return masks


def _vote_counts(masks: Tensor, num_classes: int, rater_weight: Tensor | None = None) -> Tensor:
    """(B, C, *spatial) sum over raters of (weighted) votes, float32, without a (B, R, C, ...) one-hot."""
    batch, raters = masks.shape[:2]
    pixels = math.prod(masks.shape[2:])  # explicit: reshape(0, R, -1) is ambiguous for an empty batch
    flat = masks.reshape(batch, raters, pixels).long()
    votes = torch.zeros(batch, num_classes, flat.shape[-1], dtype=torch.float32, device=masks.device)
    for r in range(raters):
        src = torch.ones_like(flat[:, r], dtype=torch.float32)
        if rater_weight is not None:
            src = src * rater_weight[:, r : r + 1].to(torch.float32)
        votes.scatter_add_(1, flat[:, r].unsqueeze(1), src.unsqueeze(1))
    return votes.reshape(batch, num_classes, *masks.shape[2:])


def rater_mean(masks: Tensor, num_classes: int) -> Tensor:
    r"""Fraction of raters that chose each class: y_c(i) = (1/R) sum_r [m_r(i) = c].

    Convention:
        - ``masks``: (B, R, \*spatial) integer class indices in [0, C), R >= 1 raters per case.
        - Returns float32 (B, C, \*spatial), summing to 1 over C (the QUBIQ/LIDC soft target).

    Example:
        >>> masks = torch.tensor([[[0, 1], [1, 1], [1, 0]]])      # B=1, R=3, N=2
        >>> rater_mean(masks, 2)
        tensor([[[0.3333, 0.3333],
                 [0.6667, 0.6667]]])
    """
    num_classes = check_num_classes(num_classes)
    masks = _check_masks(masks, num_classes)
    return _vote_counts(masks, num_classes) / masks.shape[1]


def majority_vote(masks: Tensor, num_classes: int) -> Tensor:
    r"""The class most raters chose at each pixel: argmax_c sum_r [m_r(i) = c]; ties go to the lower class.

    Convention:
        - ``masks``: (B, R, \*spatial) integer class indices in [0, C).
        - Returns int64 class indices (B, \*spatial). A tie (e.g. two raters disagreeing) resolves to the
          smallest tied class index, so with two raters and two classes a disputed pixel is background.

    Example:
        >>> masks = torch.tensor([[[0, 1, 2], [1, 1, 0], [1, 2, 2]]])   # B=1, R=3, N=3
        >>> majority_vote(masks, 3)
        tensor([[1, 1, 2]])
        >>> majority_vote(torch.tensor([[[0, 1], [1, 0]]]), 2)           # ties: lower class
        tensor([[0, 0]])
    """
    num_classes = check_num_classes(num_classes)
    masks = _check_masks(masks, num_classes)
    # argmax returns the first maximal index, which is the lower-class tie rule.
    return _vote_counts(masks, num_classes).argmax(1)


def rater_agreement(masks: Tensor, num_classes: int) -> Tensor:
    r"""Dice of each rater with the mean of the other raters, averaged over the classes either one uses.

    For case b and rater r, with tp, fp, fn from :func:`softseg.region_statistics` between rater r's
    labels and the mean of the other R - 1 raters' one-hots (the soft-correct form):

    .. math::

        D_{br} = \frac{1}{|A_{br}|}\sum_{c \in A_{br}} \frac{2\,tp_c}{2\,tp_c + fp_c + fn_c}

    where A_br are the classes present in rater r or in another rater. With a single rater every D is 1.

    Convention:
        - ``masks``: (B, R, \*spatial) integer class indices in [0, C). Returns float32 (B, R) in [0, 1].

    Example:
        >>> masks = torch.tensor([[[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]]])
        >>> rater_agreement(masks, 2)
        tensor([[0.7333, 0.7333, 0.5000]])
    """
    num_classes = check_num_classes(num_classes)
    masks = _check_masks(masks, num_classes)
    batch, raters = masks.shape[:2]
    if raters == 1:
        return torch.ones(batch, 1, device=masks.device)
    votes = _vote_counts(masks, num_classes)
    flat_masks = masks.reshape(batch * raters, *masks.shape[2:]).long()
    # Each rater's own vote leaves the sum: the others' mean, without a (B, R, C, ...) one-hot.
    own = torch.zeros((batch * raters, num_classes, *masks.shape[2:]), dtype=torch.float32, device=masks.device)
    own.scatter_(1, flat_masks.unsqueeze(1), 1.0)
    others = (votes.repeat_interleave(raters, 0) - own) / (raters - 1)
    stats = region_statistics(others, flat_masks)
    dice = tversky_index(stats, alpha=0.5, beta=0.5)
    used = (stats.tp + stats.fp + stats.fn > 0).to(dice.dtype)
    agreement = (dice * used).sum(1) / used.sum(1).clamp_min(1)
    return agreement.reshape(batch, raters).to(torch.float32)


def dice_weighted_mean(masks: Tensor, num_classes: int) -> Tensor:
    r"""Rater mean weighted by each rater's agreement with the others (:func:`rater_agreement`).

    .. math::

        y_c(i) = \frac{\sum_r D_{br}\,[m_r(i) = c]}{\sum_r D_{br}}

    Raters who disagree with the rest count less; with two raters (symmetric Dice) or identical raters it
    equals :func:`rater_mean`. If every rater has agreement 0 the plain mean is returned.

    Convention:
        - ``masks``: (B, R, \*spatial) integer class indices in [0, C). Binary: ``num_classes=2``.
        - Returns float32 (B, C, \*spatial) summing to 1 over C.

    Example:
        >>> masks = torch.tensor([[[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]]])
        >>> dice_weighted_mean(masks, 2)[0, 1]                  # the third rater counts less
        tensor([0.0000, 0.7458, 0.7458, 1.0000])
    """
    num_classes = check_num_classes(num_classes)
    masks = _check_masks(masks, num_classes)
    weight = rater_agreement(masks, num_classes)
    total = weight.sum(1, keepdim=True)
    weight = torch.where(total > 0, weight / torch.where(total > 0, total, 1), 1.0 / masks.shape[1])
    return _vote_counts(masks, num_classes, weight)
