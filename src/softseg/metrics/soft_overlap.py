r"""Soft overlap: soft Dice and soft Jaccard of probabilities against soft targets, and the QUBIQ
thresholded multi-level Dice. Functional forms and torchmetrics classes.

The statistics are :func:`softseg.region_statistics` (tp = sum min(x, y), the soft-correct form), so
``soft_dice_score = 1 - softseg.dice_loss`` and ``soft_jaccard_score = 1 - softseg.jaccard_loss`` with
the same options, whenever no (image, class) is empty in both prediction and target (or with
``empty="one"``, the losses' rule for empty entries).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from softseg._checks import (
    ACTIVATIONS,
    check_choice,
    check_ignore_index,
    check_mask,
    check_number,
    check_tensor,
    target_kind,
)
from softseg.activation import Activation
from softseg.aggregation import Aggregation
from softseg.metrics._counted import activate_counted
from softseg.metrics._region import (
    RegionScoreMetric,
    TverskyScoreMetric,
    check_score_options,
    keep_classes,
    score_statistics,
)
from softseg.statistics import RegionStatistics, region_statistics

QUBIQ_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _check_norm(norm: object) -> int:
    if isinstance(norm, bool) or norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2; got {norm!r}")
    return norm


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int (the C of probs); got {num_classes!r}")
    return num_classes


def _soft_statistics(probs, target, *, activation, norm, ignore_index, mask) -> RegionStatistics:
    # Excluded pixels are cleared before the activation: a NaN or inf there reaches no sum (_counted.py).
    probs, target, *_ = activate_counted(probs, target, activation=activation, ignore_index=ignore_index, mask=mask)
    return region_statistics(probs, target, norm=norm, ignore_index=ignore_index, mask=mask)


def _soft_score(
    probs,
    target,
    *,
    alpha,
    activation,
    smooth,
    norm,
    weight,
    include_background,
    aggregation,
    active_classes,
    presence_threshold,
    empty,
    ignore_index,
    mask,
    reduction,
    worst_q,
) -> Tensor:
    check_score_options(
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        reduction=reduction,
        worst_q=worst_q,
        include_background=include_background,
        smooth=smooth,
    )
    _check_norm(norm)
    stats = _soft_statistics(probs, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask)
    stats, weight = keep_classes(stats, include_background, weight)
    return score_statistics(
        stats,
        alpha=alpha,
        beta=alpha,
        smooth=smooth,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        weight=weight,
        reduction=reduction,
        worst_q=worst_q,
    )


def soft_dice_score(
    probs: Tensor,
    target: Tensor,
    *,
    activation: Activation = "none",
    smooth: float = 0.0,
    norm: int = 1,
    weight: Tensor | Sequence[float] | None = None,
    include_background: bool = True,
    aggregation: Aggregation = "global",
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "skip",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
    worst_q: float | None = None,
) -> Tensor:
    r"""Soft Dice score between probabilities and a (soft) target: one minus the Dice semimetric loss.

    .. math::

        D_c = \frac{2\,tp_c + 2s}{2\,tp_c + fp_c + fn_c + 2s}
            = 1 - \frac{\|x_c - y_c\|_1}{\|x_c\|_1 + \|y_c\|_1}\quad(\text{norm } 1,\ s = 0)

    It is 1 exactly when the probabilities equal the soft target (the classic product form is not).

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities (``activation="none"``, default; ``"softmax"`` or
          ``"sigmoid"`` to pass logits).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype, or class
          probabilities (B, C, \*spatial) of a float dtype in [0, 1].
        - ``ignore_index`` (index targets) and ``mask`` (bool, True = counts) leave pixels out of every sum;
          their values are never read (NaN or inf there changes nothing). An empty batch gives 0.
        - ``aggregation``, ``active_classes``, ``empty``, ``worst_q``, ``weight``, ``reduction``: as
          :func:`softseg.metrics.dice_score` (``empty="skip"`` leaves out entries with no mass in
          prediction and target; nothing active gives 0).
        - Sums in float32 (float64 for float64 input); the result has that dtype.

    Example:
        >>> y = torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> soft_dice_score(y, y)
        tensor(1.)
        >>> soft_dice_score(torch.tensor([[[0.2, 0.7, 0.5]]]), y)          # 1 - 0.2941
        tensor(0.7059)
    """
    return _soft_score(
        probs,
        target,
        alpha=0.5,
        activation=activation,
        smooth=smooth,
        norm=norm,
        weight=weight,
        include_background=include_background,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        ignore_index=ignore_index,
        mask=mask,
        reduction=reduction,
        worst_q=worst_q,
    )


def soft_jaccard_score(
    probs: Tensor,
    target: Tensor,
    *,
    activation: Activation = "none",
    smooth: float = 0.0,
    norm: int = 1,
    weight: Tensor | Sequence[float] | None = None,
    include_background: bool = True,
    aggregation: Aggregation = "global",
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "skip",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
    worst_q: float | None = None,
) -> Tensor:
    r"""Soft Jaccard (IoU) score: one minus the Jaccard metric loss, sum min(x, y) / sum max(x, y).

    .. math::

        J_c = \frac{tp_c + s}{tp_c + fp_c + fn_c + s} = \frac{\sum_i \min(x_i, y_i)}{\sum_i \max(x_i, y_i)}
        \quad(\text{norm } 1,\ s = 0)

    Convention:
        As :func:`soft_dice_score` (probabilities by default, index or soft targets, ``ignore_index`` /
        ``mask``, aggregation and empty rules, float32 sums).

    Example:
        >>> x = torch.tensor([[[0.2, 0.7, 0.5]]])
        >>> y = torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> soft_jaccard_score(x, y)                                      # 1.2 / 2.2
        tensor(0.5455)
    """
    return _soft_score(
        probs,
        target,
        alpha=1.0,
        activation=activation,
        smooth=smooth,
        norm=norm,
        weight=weight,
        include_background=include_background,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        ignore_index=ignore_index,
        mask=mask,
        reduction=reduction,
        worst_q=worst_q,
    )


def _check_thresholds(thresholds: object) -> tuple[float, ...]:
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = (thresholds,)
    if not isinstance(thresholds, Sequence) or isinstance(thresholds, str) or not thresholds:
        raise TypeError(f"thresholds must be a non-empty sequence of numbers in [0, 1); got {thresholds!r}")
    values = tuple(check_number(f"thresholds[{i}]", t, minimum=0.0) for i, t in enumerate(thresholds))
    if any(t >= 1 for t in values):
        raise ValueError(f"thresholds must lie in [0, 1) (a pixel counts when its value is > t); got {values}")
    return values


def thresholded_statistics(
    probs: Tensor,
    target: Tensor,
    *,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
) -> RegionStatistics:
    r"""Statistics of prediction and target both binarised at each threshold: shape (B, K, C).

    For threshold t: tp, fp, fn of [x > t] against [y > t] (:func:`softseg.region_statistics` of the 0/1
    tensors). An index target is its own binarisation (its one-hot is 0/1 for every t < 1).

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities; ``target``: class indices or probabilities
          (B, C, \*spatial); ``ignore_index`` / ``mask`` as :func:`softseg.region_statistics`.
        - Returns statistics of shape (B, K, C) for K thresholds, in the accumulation dtype (float32).

    Example:
        >>> stats = thresholded_statistics(torch.tensor([[[0.3, 0.8]]]), torch.tensor([[[0.6, 0.6]]]), thresholds=(0.5,))
        >>> stats.tp, stats.fp, stats.fn
        (tensor([[[1.]]]), tensor([[[0.]]]), tensor([[[1.]]]))
    """
    thresholds = _check_thresholds(thresholds)
    check_tensor("probs", probs)
    kind = target_kind(probs, target)
    if mask is not None:
        check_mask(mask, probs)
    per_threshold = []
    for t in thresholds:
        binary_target = target if kind == "index" else (target > t).to(probs.dtype)
        per_threshold.append(
            region_statistics((probs > t).to(probs.dtype), binary_target, ignore_index=ignore_index, mask=mask)
        )
    return RegionStatistics(*(torch.stack(parts, 1) for parts in zip(*per_threshold)))


def _score_thresholds(stats: RegionStatistics, **options) -> Tensor:
    """Mean over thresholds (dimension 1) of the aggregated Dice of each threshold."""
    scores = [
        score_statistics(RegionStatistics(*(s[:, k] for s in stats)), alpha=0.5, beta=0.5, **options)
        for k in range(stats.tp.shape[1])
    ]
    return torch.stack(scores).mean(0)


def thresholded_dice_score(
    probs: Tensor,
    target: Tensor,
    *,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
    activation: Activation = "none",
    include_background: bool = True,
    aggregation: Aggregation = "image",
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "one",
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Multi-level Dice of the QUBIQ challenge: binarise prediction and target at each threshold, average.

    .. math::

        \mathrm{TD} = \frac{1}{K}\sum_{k=1}^{K} \mathrm{Dice}\big([x > t_k],\ [y > t_k]\big),\qquad
        t = 0.1, 0.2, \dots, 0.9

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities (``activation="none"``; or ``"softmax"``/``"sigmoid"``);
          binary tasks use C = 1. ``target``: soft (B, C, \*spatial) (e.g. :func:`softseg.labels.rater_mean`)
          or class indices.
        - A pixel counts at threshold t when its value is strictly greater than t.
        - Empty at a threshold in both prediction and target: Dice 1 (``empty="one"``, QUBIQ's rule; the
          high thresholds are often empty); ``empty="skip"`` leaves such entries out.
        - ``aggregation``: ``"image"`` by default (one score per case, then the mean over cases, as QUBIQ),
          or ``"global"``/``"class"``; per threshold, then the mean over thresholds.
        - ``ignore_index`` / ``mask`` leave pixels out (NaN or inf there changes nothing);
          ``reduction="none"`` gives the per-class (global) or per-(image, class) scores averaged over
          thresholds. A threshold with nothing active (possible only with ``empty="skip"``) contributes 0
          to the mean over thresholds.

    Example:
        >>> target = torch.tensor([[[0.0, 1/3, 2/3, 1.0]]])      # mean of 3 raters, (B=1, C=1, N=4)
        >>> thresholded_dice_score(target, target)
        tensor(1.)
        >>> thresholded_dice_score(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), target, thresholds=(0.2, 0.5))
        tensor(0.9000)
    """
    check_score_options(
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        reduction=reduction,
        worst_q=None,
        include_background=include_background,
    )
    probs, target, *_ = activate_counted(probs, target, activation=activation, ignore_index=ignore_index, mask=mask)
    stats = thresholded_statistics(probs, target, thresholds=thresholds, ignore_index=ignore_index, mask=mask)
    stats, weight = keep_classes(stats, include_background, weight)
    return _score_thresholds(
        stats,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        weight=weight,
        reduction=reduction,
    )


class _ProbabilityScoreMetric(RegionScoreMetric):
    """Base of the metrics of probabilities: the activation and ``ignore_index`` they apply in ``update``."""

    def _keep_pixel_options(self, activation, ignore_index, include_background, weight) -> None:
        check_choice("activation", activation, ACTIVATIONS)
        check_ignore_index(ignore_index)
        self.activation, self.ignore_index = activation, ignore_index
        self._keep_classes(include_background, weight)


class _SoftScoreMetric(_ProbabilityScoreMetric, TverskyScoreMetric):

    def __init__(
        self,
        *,
        num_classes: int,
        activation: Activation = "none",
        smooth: float = 0.0,
        norm: int = 1,
        weight: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        aggregation: Aggregation = "global",
        active_classes: str = "all",
        presence_threshold: float = 0.01,
        empty: str = "skip",
        ignore_index: int | None = None,
        reduction: str = "mean",
        worst_q: float | None = None,
        **kwargs,
    ) -> None:
        _check_num_classes(num_classes)
        check_score_options(
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
            worst_q=worst_q,
            include_background=include_background,
            smooth=smooth,
        )
        self.norm = _check_norm(norm)
        super().__init__(state_shape=(num_classes,), aggregation=aggregation, **kwargs)
        self._keep_pixel_options(activation, ignore_index, include_background, weight)
        self.options = dict(
            smooth=smooth,
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
            worst_q=worst_q,
        )

    def _statistics(self, probs: Tensor, target: Tensor, mask: Tensor | None = None) -> RegionStatistics:
        return _soft_statistics(
            probs, target, activation=self.activation, norm=self.norm, ignore_index=self.ignore_index, mask=mask
        )


class SoftDiceScore(_SoftScoreMetric):
    r"""Accumulating :func:`soft_dice_score`: D_c = 2 tp_c / (2 tp_c + fp_c + fn_c), tp = sum min(x, y).

    ``update(probs, target, mask=None)``; ``compute()`` over all updates and processes.

    Convention:
        As :func:`soft_dice_score`; ``num_classes`` (the C of ``probs``) fixes the state size. States as
        :class:`softseg.metrics.DiceScore` (float64 sums for global aggregation; per-image statistics
        otherwise), exact under multi-process sync.

    Example:
        >>> metric = SoftDiceScore(num_classes=1)
        >>> metric.update(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        >>> metric.compute()
        tensor(0.7059, dtype=torch.float64)
    """

    _alpha = 0.5


class SoftJaccardScore(_SoftScoreMetric):
    r"""Accumulating :func:`soft_jaccard_score`: J_c = sum min(x, y) / sum max(x, y).

    Convention:
        As :func:`soft_jaccard_score` and :class:`SoftDiceScore`.

    Example:
        >>> metric = SoftJaccardScore(num_classes=1)
        >>> metric.update(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        >>> metric.compute()
        tensor(0.5455, dtype=torch.float64)
    """

    _alpha = 1.0


class ThresholdedDiceScore(_ProbabilityScoreMetric):
    r"""Accumulating :func:`thresholded_dice_score` (QUBIQ): mean over thresholds t of Dice([x > t], [y > t]).

    Convention:
        As :func:`thresholded_dice_score`; ``num_classes`` is the C of ``probs``. States: per-threshold
        statistics, summed for ``aggregation="global"``, one row per image otherwise (the default
        ``"image"``: grows with the number of images); exact under multi-process sync.

    Example:
        >>> metric = ThresholdedDiceScore(num_classes=1, thresholds=(0.2, 0.5))
        >>> target = torch.tensor([[[0.0, 1/3, 2/3, 1.0]]])
        >>> metric.update(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), target)
        >>> metric.update(target, target)
        >>> metric.compute()                                     # (0.9 + 1) / 2
        tensor(0.9500, dtype=torch.float64)
    """

    def __init__(
        self,
        *,
        num_classes: int,
        thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
        activation: Activation = "none",
        include_background: bool = True,
        aggregation: Aggregation = "image",
        active_classes: str = "all",
        presence_threshold: float = 0.01,
        empty: str = "one",
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
        **kwargs,
    ) -> None:
        _check_num_classes(num_classes)
        check_score_options(
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
            worst_q=None,
            include_background=include_background,
        )
        self.thresholds = _check_thresholds(thresholds)
        super().__init__(state_shape=(len(self.thresholds), num_classes), aggregation=aggregation, **kwargs)
        self._keep_pixel_options(activation, ignore_index, include_background, weight)
        self.options = dict(
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
        )

    def _statistics(self, probs: Tensor, target: Tensor, mask: Tensor | None = None) -> RegionStatistics:
        probs, target, *_ = activate_counted(
            probs, target, activation=self.activation, ignore_index=self.ignore_index, mask=mask
        )
        return thresholded_statistics(
            probs, target, thresholds=self.thresholds, ignore_index=self.ignore_index, mask=mask
        )

    def _score(self, stats: RegionStatistics) -> Tensor:
        return _score_thresholds(stats, weight=self.weight, **self.options)
