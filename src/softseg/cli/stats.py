"""Statistics of ``softseg compare``: means with confidence intervals and paired comparisons, over test cases.

The unit is the test case: with K folds every case is tested once per seed, and its value is the mean
over the seeds (the seeds' spread is part of each case's value, not extra samples). For n cases:

- mean and its 95% interval: Student's t, mean +- t_{0.975, n-1} s / sqrt(n);
- paired comparison with the baseline: differences d_i = value_i - baseline_i, their mean with the same t
  interval, and the two-sided Wilcoxon signed-rank test of d (``scipy.stats.wilcoxon``: exact for n <= 50
  without ties or zeros, the normal approximation otherwise; zero differences are dropped, and all-zero
  differences give p = 1). The p-values are not corrected for the several metrics and configurations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats

LEVEL = 0.95
PAIRED_TEST = "Wilcoxon signed-rank, two-sided"


class Interval(NamedTuple):
    """A mean with its confidence interval over ``n`` values; ``low`` and ``high`` are None when n < 2.

    Convention:
        - ``mean``, ``low``, ``high``: floats (``low``/``high`` None for a single value, never NaN);
          ``n``: the number of values.
        - A plain ``NamedTuple``; :func:`mean_interval` builds one.

    Example:
        >>> Interval(0.5, 0.4, 0.6, 10).high
        0.6
    """

    mean: float
    low: float | None
    high: float | None
    n: int


class PairedComparison(NamedTuple):
    """Mean paired difference (configuration minus baseline) with its interval and a paired test's p-value.

    Convention:
        - ``difference``: :class:`Interval` of the differences; ``p_value``: float in [0, 1], or None with
          fewer than 2 pairs; ``test``: the test's name.
        - A plain ``NamedTuple``; :func:`paired_comparison` builds one.

    Example:
        >>> PairedComparison(Interval(0.1, 0.0, 0.2, 5), 0.06, PAIRED_TEST).p_value
        0.06
    """

    difference: Interval
    p_value: float | None
    test: str


def _values(name: str, values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty sequence of numbers; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must hold finite numbers; got {array[~np.isfinite(array)][:3].tolist()}")
    return array


def mean_interval(values: Sequence[float], *, level: float = LEVEL) -> Interval:
    r"""The mean of ``values`` and its Student-t confidence interval.

    .. math::

        \bar x \pm t_{(1 + \text{level})/2,\ n - 1}\ s / \sqrt{n},\qquad s^2 = \frac{1}{n - 1}\sum_i (x_i - \bar x)^2

    Convention:
        - ``values``: a non-empty 1-D sequence of finite numbers; ``level``: float in (0, 1).
        - Returns an :class:`Interval`; a single value gives ``low = high = None`` (no interval, never NaN);
          equal values give a zero-width interval.
        - Raises ``ValueError`` naming ``values`` (empty, not 1-D, not finite) or ``level``.

    Example:
        >>> interval = mean_interval([1.0, 2.0, 3.0])             # t(0.975, 2) = 4.3027, s / sqrt(3) = 0.5774
        >>> round(interval.mean, 4), round(interval.low, 4), round(interval.high, 4)
        (2.0, -0.4841, 4.4841)
    """
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1); got {level!r}")
    array = _values("values", values)
    mean = float(array.mean())
    if array.size < 2:
        return Interval(mean, None, None, 1)
    half = float(stats.t.ppf((1 + level) / 2, array.size - 1) * array.std(ddof=1) / math.sqrt(array.size))
    return Interval(mean, mean - half, mean + half, int(array.size))


def paired_comparison(values: Sequence[float], baseline: Sequence[float], *, level: float = LEVEL) -> PairedComparison:
    """Mean of the paired differences ``values - baseline`` with its t interval and a Wilcoxon signed-rank p.

    Convention:
        - ``values``, ``baseline``: equal-length 1-D sequences of finite numbers, paired by position (the
          same test cases in the same order); ``level``: float in (0, 1).
        - Returns a :class:`PairedComparison`; p is None with a single pair, 1.0 when every difference is 0.
        - Raises ``ValueError`` naming ``values``/``baseline`` for empty, non-finite or unequal-length input.

    Example:
        >>> result = paired_comparison([0.8, 0.7, 0.8, 0.6, 0.73, 0.75], [0.7, 0.65, 0.6, 0.62, 0.7, 0.6])
        >>> round(result.difference.mean, 4), round(result.p_value, 4)  # one fall, the smallest: p = 2 * 2/64
        (0.085, 0.0625)
    """
    first, second = _values("values", values), _values("baseline", baseline)
    if first.shape != second.shape:
        raise ValueError(f"values and baseline must pair up; got {first.size} and {second.size} values")
    differences = first - second
    interval = mean_interval(differences, level=level)
    if differences.size < 2:
        return PairedComparison(interval, None, PAIRED_TEST)
    if not np.any(differences):
        return PairedComparison(interval, 1.0, PAIRED_TEST)
    p_value = float(stats.wilcoxon(differences, alternative="two-sided").pvalue)
    return PairedComparison(interval, p_value, PAIRED_TEST)


__all__ = ["LEVEL", "PAIRED_TEST", "Interval", "PairedComparison", "mean_interval", "paired_comparison"]
