"""The statistics of softseg compare against scipy's own tests and hand values."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from softseg.cli.stats import mean_interval, paired_comparison

finite = st.floats(-1.0, 1.0, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(st.lists(finite, min_size=2, max_size=30))
def test_mean_interval_equals_scipys_one_sample_t_interval(values):
    interval = mean_interval(values)
    assert interval.mean == pytest.approx(np.mean(values), abs=1e-12) and interval.n == len(values)
    if np.std(values) > 1e-6:
        reference = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
        assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high), abs=1e-9)
    else:
        assert interval.high - interval.low < 1e-4


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(finite, finite), min_size=2, max_size=30))
def test_paired_comparison_equals_scipys_paired_t_interval_and_wilcoxon(pairs):
    values, baseline = (list(column) for column in zip(*pairs, strict=True))
    result = paired_comparison(values, baseline)
    differences = np.subtract(values, baseline)
    assert result.difference.mean == pytest.approx(differences.mean(), abs=1e-12)
    if np.std(differences) > 1e-6:
        reference = stats.ttest_rel(values, baseline).confidence_interval(0.95)
        assert (result.difference.low, result.difference.high) == pytest.approx(
            (reference.low, reference.high), abs=1e-9
        )
    if np.any(differences):
        assert result.p_value == pytest.approx(stats.wilcoxon(differences).pvalue)
    else:
        assert result.p_value == 1.0
    assert 0.0 <= result.p_value <= 1.0


def test_hand_values():
    # Ten cases all better by 0.01..0.10: every rank positive, exact two-sided p = 2 / 2**10.
    better = paired_comparison([0.5 + k / 100 for k in range(1, 11)], [0.5] * 10)
    assert better.p_value == pytest.approx(2 / 1024) and better.difference.mean == pytest.approx(0.055)
    # t(0.975, 9) = 2.262157; s = 0.0302765 -> half-width 0.0216585.
    assert better.difference.high - better.difference.mean == pytest.approx(0.0216585, abs=1e-6)
    single = mean_interval([0.7])
    assert (single.mean, single.low, single.high, single.n) == (0.7, None, None, 1)
    one_pair = paired_comparison([0.7], [0.5])
    assert one_pair.p_value is None and one_pair.difference.mean == pytest.approx(0.2)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: mean_interval([]), r"values must be a non-empty sequence of numbers; got shape \(0,\)"),
        (lambda: mean_interval([0.1, float("nan")]), r"values must hold finite numbers; got \[nan\]"),
        (lambda: mean_interval([0.1, 0.2], level=1.0), r"level must lie in \(0, 1\); got 1.0"),
        (lambda: paired_comparison([0.1, 0.2], [0.1]), "values and baseline must pair up; got 2 and 1 values"),
        (lambda: paired_comparison([0.1], [float("inf")]), r"baseline must hold finite numbers; got \[inf\]"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
