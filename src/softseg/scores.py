"""Scores from statistics: the Tversky index and its Dice and Jaccard cases, shared by losses and metrics."""

from __future__ import annotations

import torch
from torch import Tensor

from softseg.statistics import RegionStatistics


def tversky_index(stats: RegionStatistics, *, alpha: float, beta: float, smooth: float = 0.0) -> Tensor:
    r"""T = (tp + s) / (tp + alpha fp + beta fn + s) for every entry of ``stats``.

    alpha = beta = 1/2 is Dice, alpha = beta = 1 is Jaccard (IoU). An entry with an empty prediction and
    an empty target (denominator 0) scores 1, with a zero, finite gradient.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v]]) for v in (1.2, 0.2, 0.8, 1.0)))
        >>> tversky_index(stats, alpha=1.0, beta=1.0)
        tensor([[0.5455]])
    """
    numerator = stats.tp + smooth
    denominator = stats.tp + alpha * stats.fp + beta * stats.fn + smooth
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 1)


def power(value: Tensor, gamma: float) -> Tensor:
    """value ** gamma with 0 (and a zero gradient) where value <= 0, so gamma < 1 never yields inf or NaN."""
    if gamma == 1:
        return value
    positive = value > 0
    return torch.where(positive, torch.where(positive, value, 1) ** gamma, 0)
