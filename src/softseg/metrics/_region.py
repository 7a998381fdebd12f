"""Shared machinery of the overlap metrics: options, empty and present-class rules, worst-q% tails, states.

Statistics come from :func:`softseg.region_statistics` (soft) or :func:`softseg.metrics.confusion_statistics`
(hard), scores from :func:`softseg.scores.tversky_index`, averaging from :func:`softseg.aggregation.aggregate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

from softseg._checks import ACTIVE_CLASSES, REDUCTIONS, check_choice, check_number, check_weight, check_weight_values
from softseg.aggregation import Aggregation, aggregate, parse_aggregation
from softseg.scores import tversky_index
from softseg.statistics import RegionStatistics

EMPTY_RULES = ("skip", "one")


def check_score_options(
    *,
    aggregation: Aggregation,
    active_classes: str,
    presence_threshold: float,
    empty: str,
    reduction: str,
    worst_q: float | None,
    include_background: bool,
    smooth: float = 0.0,
) -> dict[str, float]:
    """Validate the options shared by every overlap metric; returns the parsed aggregation."""
    parts = parse_aggregation(aggregation)
    check_choice("active_classes", active_classes, ACTIVE_CLASSES)
    check_number("presence_threshold", presence_threshold, minimum=0.0)
    check_choice("empty", empty, EMPTY_RULES)
    check_choice("reduction", reduction, REDUCTIONS)
    check_number("smooth", smooth, minimum=0.0)
    if not isinstance(include_background, bool):
        raise TypeError(f"include_background must be a bool; got {type(include_background).__name__}")
    if reduction == "none" and len(parts) > 1:
        raise ValueError(f"reduction='none' needs a single aggregation level; got the mix {parts}")
    if worst_q is not None:
        q = check_number("worst_q", worst_q, minimum=0.0, strict=True)
        if q > 100:
            raise ValueError(f"worst_q is a percentage in (0, 100]; got {q}")
        if len(parts) > 1 or "global" in parts:
            raise ValueError(f"worst_q needs per-image scores: aggregation 'image' or 'class'; got {aggregation!r}")
        if reduction != "mean":
            raise ValueError(f"worst_q averages the worst images, so reduction must be 'mean'; got {reduction!r}")
    return parts


def drop_background(stats: RegionStatistics, include_background: bool) -> RegionStatistics:
    if include_background:
        return stats
    if stats.tp.shape[-1] < 2:
        raise ValueError("include_background=False drops class 0, but there is a single class; keep it True")
    return RegionStatistics(*(s[..., 1:] for s in stats))


def keep_classes(
    stats: RegionStatistics, include_background: bool, weight: Tensor | Sequence[float] | None
) -> tuple[RegionStatistics, Tensor | None]:
    """The statistics of the kept classes (class 0 dropped unless ``include_background``) and their weights."""
    stats = drop_background(stats, include_background)
    return stats, check_weight(
        weight, stats.tp.shape[-1], include_background=include_background, device=stats.tp.device
    )


def _with_activity(
    stats: RegionStatistics, active_classes: str, empty: str, threshold: float
) -> tuple[RegionStatistics, str, float]:
    """Express the empty rule through ``aggregate``'s present-class test.

    ``empty="skip"`` with all classes: an (image, class) counts when the prediction or the target has
    mass there (tp + fp + fn > 0); encoded as target_max in {0, 1} with threshold 1/2.
    """
    if active_classes == "present" or empty == "one":
        return stats, active_classes, threshold
    used = (stats.tp + stats.fp + stats.fn > 0).to(stats.tp.dtype)
    return RegionStatistics(stats.tp, stats.fp, stats.fn, used), "present", 0.5


def _worst_mean(values: Tensor, q: float) -> Tensor:
    """Mean of the lowest ceil(q% of n) values (0 for no values)."""
    if values.numel() == 0:
        return values.new_zeros(())
    k = max(1, math.ceil(q / 100 * values.numel() - 1e-9))
    return values.sort().values[:k].mean()


def score_statistics(
    stats: RegionStatistics,
    *,
    alpha: float,
    beta: float,
    smooth: float = 0.0,
    aggregation: Aggregation = "global",
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "skip",
    weight: Tensor | None = None,
    reduction: str = "mean",
    worst_q: float | None = None,
) -> Tensor:
    """Tversky index per entry of ``stats`` (B, C), averaged by ``aggregation`` over the active entries."""
    if weight is not None:  # a metric's weight is checked at construction: again here, it may have changed
        check_weight_values("weight", weight)
    stats, active_classes, threshold = _with_activity(stats, active_classes, empty, presence_threshold)

    def entry_score(entry_stats: RegionStatistics) -> Tensor:
        return tversky_index(entry_stats, alpha=alpha, beta=beta, smooth=smooth)

    if worst_q is None:
        return aggregate(
            stats,
            entry_score,
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=threshold,
            weight=weight,
            reduction=reduction,
        )
    # Worst-q% tail (Wang et al., NeurIPS 2023): the same per-image / per-class means as aggregate(),
    # but averaged over the lowest q% instead of all of them.
    scores = entry_score(stats)
    active = torch.ones_like(scores) if active_classes == "all" else (stats.target_max > threshold).to(scores.dtype)
    class_weight = scores.new_ones(scores.shape[-1]) if weight is None else weight.to(scores)
    level = next(iter(parse_aggregation(aggregation)))
    if level == "image":
        mass = (active * class_weight).sum(1)
        per_image = (scores * active * class_weight).sum(1) / mass.clamp_min(torch.finfo(scores.dtype).tiny)
        return _worst_mean(per_image[mass > 0], worst_q)
    tails, counted = [], []
    for c in range(scores.shape[1]):
        column = scores[:, c][active[:, c] > 0]
        tails.append(_worst_mean(column, worst_q))
        counted.append(float(column.numel() > 0))
    counted_t = torch.tensor(counted, dtype=scores.dtype, device=scores.device) * class_weight
    total = counted_t.sum()
    return (torch.stack(tails) * counted_t).sum() / total if total > 0 else scores.new_zeros(())


class RegionScoreMetric(Metric):
    """Base of the overlap metric classes: per-(image, class) statistics kept as exact sufficient states.

    Global aggregation keeps sums of tp, fp, fn (and the max of target_max): constant memory, summed
    (max-reduced) across processes. Image and class aggregation (and worst-q% tails) need every image's
    statistics: they are kept as "cat" states of shape (images, ...), 4 numbers per (image, class), which
    grow with the number of images and are gathered across processes. Both are exact under sync.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, *, state_shape: Sequence[int], aggregation: Aggregation, **kwargs) -> None:
        super().__init__(**kwargs)
        self.state_shape = tuple(state_shape)
        self.pooled = parse_aggregation(aggregation).keys() == {"global"}
        for name in RegionStatistics._fields:
            if self.pooled:
                reduce = "max" if name == "target_max" else "sum"
                self.add_state(
                    name, default=torch.zeros(1, *self.state_shape, dtype=torch.float64), dist_reduce_fx=reduce
                )
            else:
                self.add_state(name, default=[], dist_reduce_fx="cat")

    def _keep_classes(self, include_background: bool, weight: Tensor | Sequence[float] | None) -> None:
        """Store ``include_background`` and the class weights of the kept classes (C: last state dimension)."""
        num_classes = self.state_shape[-1]
        self.include_background = include_background
        self.weight = check_weight(
            weight, num_classes - (not include_background), include_background=include_background
        )

    def _statistics(self, *args, **kwargs) -> RegionStatistics:  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, stats: RegionStatistics) -> Tensor:  # pragma: no cover - abstract
        """Score of the (background-dropped) statistics."""
        raise NotImplementedError

    def update(self, *args, **kwargs) -> None:
        stats = self._statistics(*args, **kwargs)
        if tuple(stats.tp.shape[1:]) != self.state_shape:
            raise ValueError(
                f"{type(self).__name__} was built for statistics of shape {self.state_shape} per image "
                f"(num_classes); this batch gives {tuple(stats.tp.shape[1:])}"
            )
        for name, value in zip(RegionStatistics._fields, stats):
            value = value.detach().to(torch.float64)
            if self.pooled:
                if not len(value):  # an empty batch adds nothing (and amax over it is undefined)
                    continue
                current = getattr(self, name)
                pooled = value.amax(0, keepdim=True) if name == "target_max" else value.sum(0, keepdim=True)
                setattr(self, name, torch.maximum(current, pooled) if name == "target_max" else current + pooled)
            else:
                getattr(self, name).append(value)

    def _sync_dist(self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None) -> None:
        # A process that never updated holds empty lists, which torchmetrics gathers as a 1-D float32
        # tensor: its shape and dtype differ from the other ranks' (images, ...) float64 rows and the
        # gather fails. Give it zero rows of the right shape (the states are restored after the sync).
        if not self.pooled:
            for name in RegionStatistics._fields:
                if not getattr(self, name):
                    setattr(self, name, [self._no_rows()])
        super()._sync_dist(dist_sync_fn, process_group)

    def _no_rows(self) -> Tensor:
        return torch.zeros(0, *self.state_shape, dtype=torch.float64, device=self.device)

    def compute(self) -> Tensor:
        if self.pooled:
            stats = RegionStatistics(self.tp, self.fp, self.fn, self.target_max)
        else:
            values = [getattr(self, name) for name in RegionStatistics._fields]
            if any(isinstance(v, list) and not v for v in values):
                stats = RegionStatistics(*(self._no_rows() for _ in values))
            else:
                stats = RegionStatistics(*(dim_zero_cat(v) for v in values))
        return self._score(drop_background(stats, self.include_background))


class TverskyScoreMetric(RegionScoreMetric):
    """A :class:`RegionScoreMetric` scoring the Tversky index with alpha = beta = ``_alpha``, options in ``options``."""

    _alpha: float

    def _score(self, stats: RegionStatistics) -> Tensor:
        return score_statistics(stats, alpha=self._alpha, beta=self._alpha, weight=self.weight, **self.options)
