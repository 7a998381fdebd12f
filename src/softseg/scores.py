"""Scores from statistics: the Tversky index (Dice, Jaccard) and the Matthews correlation, shared by losses and metrics."""

from __future__ import annotations

import torch
from torch import Tensor

from softseg.statistics import RegionStatistics

LOG_EPS = 1e-7  # floor of T inside -log T (log_loss), so a prediction with no overlap gives a finite loss


def tversky_index(
    stats: RegionStatistics,
    *,
    alpha: float,
    beta: float,
    smooth: float = 0.0,
    smooth_denominator: float | None = None,
) -> Tensor:
    r"""T = (tp + s) / (tp + alpha fp + beta fn + s_d) for every entry of ``stats``, s_d = s unless given.

    alpha = beta = 1/2 is Dice, alpha = beta = 1 is Jaccard (IoU). An entry with an empty prediction and
    an empty target (denominator 0) scores 1, with a zero, finite gradient. ``smooth_denominator`` exists
    for peers with separate numerator and denominator terms (MONAI's smooth_nr, smooth_dr); with
    s_d != s the loss at the target is no longer 0.

    Convention:
        - ``stats``: :class:`~softseg.statistics.RegionStatistics` of any shape ((B, C) per image, (1, C)
          pooled); the result has that shape and dtype. ``alpha``, ``beta``, ``smooth`` >= 0, keyword-only,
          unchecked here (the losses validate them).
        - Activation and ignored pixels are settled before, in the statistics.
        - Empty entry (tp = fp = fn = 0, s = 0): 1, so its loss 1 - T is 0, with a zero gradient.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v]]) for v in (1.2, 0.2, 0.8, 1.0)))
        >>> tversky_index(stats, alpha=1.0, beta=1.0)
        tensor([[0.5455]])
    """
    # The branches skip ops that would add 0 or repeat a product: on a GPU each op costs a launch.
    numerator = stats.tp + smooth if smooth else stats.tp
    smooth_denominator = smooth if smooth_denominator is None else smooth_denominator
    if alpha == beta:
        denominator = stats.tp + alpha * (stats.fp + stats.fn)
    else:
        denominator = stats.tp + alpha * stats.fp + beta * stats.fn
    if smooth_denominator:
        denominator = denominator + smooth_denominator
    # != 0 rather than > 0: with inputs outside [0, 1] (MONAI's other_act=torch.tanh) the ratio stays defined.
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1), 1)


def matthews_correlation(
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    tn: Tensor,
    *,
    smooth_numerator: float = 0.0,
    smooth_denominator: float = 0.0,
) -> Tensor:
    r"""Matthews correlation coefficient of (soft) confusion counts, entry by entry.

    .. math::

        \mathrm{MCC} = \frac{tp\, tn - fp\, fn + s_n}{\sqrt{(tp + fp)(tp + fn)(tn + fp)(tn + fn) + s_d}}

    An entry with fp = fn = 0 (the prediction equals the target) scores 1, also where the product is 0
    (an empty class, or a class everywhere), as MONAI does; any other entry with a zero denominator
    scores 0 (scikit-learn's convention), with a zero, finite gradient.

    Convention:
        - ``tp``, ``fp``, ``fn``, ``tn``: tensors of one shape, >= 0 (the result has it); the smoothing
          terms exist for the peers' compatibility layers (MONAI's ``smooth_nr``, ``smooth_dr``).
        - In [-1, 1] for non-negative counts and no smoothing; scale-free, so counts may be divided by
          the number of pixels first (no overflow of the product in float32).

    Example:
        >>> matthews_correlation(*(torch.tensor([v]) for v in (3.0, 1.0, 1.0, 5.0)))   # (15 - 1) / sqrt(4 * 4 * 6 * 6)
        tensor([0.5833])
        >>> matthews_correlation(*(torch.tensor([v]) for v in (0.0, 0.0, 0.0, 4.0)))   # empty class, predicted empty
        tensor([1.])
    """
    numerator = tp * tn - fp * fn
    if smooth_numerator:
        numerator = numerator + smooth_numerator
    squared = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    if smooth_denominator:
        squared = squared + smooth_denominator
    positive = squared > 0
    score = torch.where(positive, numerator / torch.where(positive, squared, 1).sqrt(), 0)
    return torch.where((fp == 0) & (fn == 0), 1, score)


def power(value: Tensor, gamma: float) -> Tensor:
    r"""value ** gamma with 0 (and a zero gradient) where value <= 0, so gamma < 1 never yields inf or NaN.

    .. math::

        \mathrm{power}(v, \gamma) = v^\gamma \ (v > 0),\qquad 0 \ (v \le 0)

    Convention:
        - ``value``: any float tensor (per-entry losses); returned with the same shape and dtype.
        - ``gamma``: a positive float, validated by the caller; ``gamma == 1`` returns ``value`` itself.
        - Entries <= 0 (a loss of exactly 0, or a rounding error below it) give 0 with a zero gradient.

    Example:
        >>> power(torch.tensor([0.0, 0.25, 1.0]), 0.5)
        tensor([0.0000, 0.5000, 1.0000])
    """
    if gamma == 1:
        return value
    positive = value > 0
    return torch.where(positive, torch.where(positive, value, 1) ** gamma, 0)
