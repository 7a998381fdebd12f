"""Where the sums run and how per-class scores are averaged: global, image and class aggregation.

DESIGN.md section 3. ``global`` pools tp, fp, fn over the batch and all pixels (one score per class,
mIoU^D); ``image`` scores every (image, class) and averages over each image's active classes, then over
images (mIoU^I); ``class`` scores every (image, class) and averages over the images where the class is
active, then over classes (mIoU^C).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, Union

import torch
from torch import Tensor

from softseg._checks import ACTIVE_CLASSES, REDUCTIONS, check_choice, check_number
from softseg.statistics import RegionStatistics

Level = Literal["global", "image", "class"]
Aggregation = Union[Level, Mapping[str, float]]
LEVELS: tuple[str, ...] = ("global", "image", "class")


def parse_aggregation(aggregation: object) -> dict[str, float]:
    """The aggregation option as {level: mixing weight}: a level name weighs 1, a mapping is checked.

    Convention:
        - ``aggregation``: ``"global"``, ``"image"``, ``"class"``, or a non-empty mapping from those names to
          finite non-negative weights, not all zero.
        - Returns a new dict of floats. An unknown level is a ``ValueError``; anything that is neither a
          string nor a non-empty mapping is a ``TypeError``.

    Example:
        >>> parse_aggregation("image")
        {'image': 1.0}
        >>> parse_aggregation({"image": 0.5, "class": 0.5})
        {'image': 0.5, 'class': 0.5}
    """
    if isinstance(aggregation, str):
        check_choice("aggregation", aggregation, LEVELS)
        return {aggregation: 1.0}
    if not isinstance(aggregation, Mapping) or not aggregation:
        raise TypeError(
            "aggregation must be 'global', 'image', 'class' or a non-empty mapping such as "
            f"{{'image': 0.5, 'class': 0.5}}; got {aggregation!r}"
        )
    parts = {}
    for level, weight in aggregation.items():
        check_choice("aggregation key", level, LEVELS)
        parts[level] = check_number(f"aggregation[{level!r}]", weight, minimum=0.0)
    if sum(parts.values()) <= 0:
        raise ValueError(f"aggregation weights must not all be zero; got {dict(aggregation)}")
    return parts


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    # 0 where nothing is averaged; the where() keeps the gradient finite there.
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1), 0)


def _times(value: Tensor | None, factor: Tensor | None) -> Tensor | None:
    """value * factor, where None is a tensor of ones."""
    if factor is None:
        return value
    return factor if value is None else value * factor


def _weighted_mean(values: Tensor, weights: Tensor | None, *, dim: int | None) -> Tensor:
    """sum(values) / sum(weights) over ``dim`` (all dims for None), 0 where the weights sum to 0.

    ``weights`` None means ones: the divisor is the number of entries (values are already weighted), and
    no entries (an empty batch) give 0, never NaN.
    """
    if weights is None:
        count = values.numel() if dim is None else values.shape[dim]
        total = values.sum() if dim is None else values.sum(dim)
        return total / count if count else total
    if dim is None:
        return _safe_divide(values.sum(), weights.sum())
    return _safe_divide(values.sum(dim), weights.sum(dim))


def aggregate(
    stats: RegionStatistics,
    entry_loss: Callable[[RegionStatistics], Tensor],
    *,
    aggregation: Aggregation = "global",
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Score per (image, class) or per class with ``entry_loss`` and average as ``aggregation`` says.

    With L the entry losses, a the active indicator and w the class weights (1 when ``weight`` is None):

    - global: stats pooled over the batch; mean = sum_c w_c a_c L_c / sum_c w_c a_c.
    - image: per image m_b = sum_c w_c a_bc L_bc / sum_c w_c a_bc; mean over images with an active class.
    - class: per class m_c = sum_b a_bc L_bc / sum_b a_bc; weighted mean (w) over classes active in
      at least one image.
    - a mapping {level: k}: sum of k times each level's result.

    Convention:
        - ``active_classes="all"`` counts every class; ``"present"`` only those whose target max over the
          aggregation set exceeds ``presence_threshold`` (the batch for global, the image otherwise).
        - Nothing active: the mean is 0 (no NaN).
        - ``reduction="sum"``: sum of w a L over entries. ``reduction="none"``: the tensor w a L itself,
          shape (C,) for global, (B, C) for image and class (inactive entries are 0); a mixed
          aggregation has no single such tensor and raises.
        - ``stats`` come from :func:`softseg.region_statistics` (activation and ignored pixels are settled
          there); ``weight``: one value per class of ``stats``, or None.

    Example:
        >>> from softseg.scores import tversky_index
        >>> stats = RegionStatistics(                      # 2 images, 2 classes; class 1 absent in image 1
        ...     tp=torch.tensor([[1.0, 1.0], [1.0, 0.0]]), fp=torch.tensor([[0.0, 1.0], [0.0, 2.0]]),
        ...     fn=torch.zeros(2, 2), target_max=torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
        >>> def dice(s):
        ...     return 1 - tversky_index(s, alpha=0.5, beta=0.5)
        >>> aggregate(stats, dice, aggregation="image", reduction="none")
        tensor([[0.0000, 0.3333],
                [0.0000, 1.0000]])
        >>> aggregate(stats, dice, aggregation="image")                          # (1/6 + 1/2) / 2
        tensor(0.3333)
        >>> aggregate(stats, dice, aggregation="image", active_classes="present")  # (1/6 + 0) / 2
        tensor(0.0833)
    """
    parts = parse_aggregation(aggregation)
    check_choice("active_classes", active_classes, ACTIVE_CLASSES)
    check_choice("reduction", reduction, REDUCTIONS)
    threshold = check_number("presence_threshold", presence_threshold, minimum=0.0)
    if reduction == "none" and len(parts) > 1:
        raise ValueError(f"reduction='none' needs a single aggregation level; got the mix {parts}")

    total = None
    for level, mix in parts.items():
        level_stats = stats.sum_images() if level == "global" else stats
        losses = entry_loss(level_stats)
        # None stands for "all ones" (every class active, no class weights): the products and divisions it
        # saves are a kernel launch each on a GPU, where this small-tensor tail costs more than the statistics.
        active = None if active_classes == "all" else (level_stats.target_max > threshold).to(losses.dtype)
        class_weight = None if weight is None else weight.to(losses)
        weighted = _times(_times(losses, active), class_weight)
        counts = _times(active, class_weight)  # w a per entry (None: all ones)
        counts = None if counts is None else counts.expand_as(losses)
        if reduction == "none":
            return weighted[0] if level == "global" else weighted
        if reduction == "sum":
            value = weighted.sum()
        elif level == "global":
            value = _weighted_mean(weighted, counts, dim=None)
        elif level == "image":
            per_image = _weighted_mean(weighted, counts, dim=1)
            counted = None if counts is None else (counts.sum(1) > 0).to(losses.dtype)  # images with a class
            value = _weighted_mean(_times(per_image, counted), counted, dim=None)
        else:
            per_class = _weighted_mean(_times(losses, active), active, dim=0)
            counted = class_weight if active is None else _times((active.sum(0) > 0).to(losses.dtype), class_weight)
            value = _weighted_mean(_times(per_class, counted), counted, dim=None)
        total = mix * value if total is None else total + mix * value
    return total
