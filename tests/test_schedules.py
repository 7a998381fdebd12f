"""Schedules of loss weights: values at chosen steps (by hand), the shared (start, end, steps, begin) shape,
any callable as a weight, and bad input."""

import math

import pytest
import torch

from softseg import schedules
from softseg.schedules import value_at


def test_constant_and_step():
    assert [schedules.constant(0.25)(t) for t in (0, 1, 10**9)] == [0.25, 0.25, 0.25]
    piecewise = schedules.step([1.0, 0.5, 0.0], boundaries=[10, 20])
    assert [piecewise(t) for t in (0, 9, 10, 19, 20, 1000)] == [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    assert repr(piecewise) == "step([1.0, 0.5, 0.0], boundaries=[10, 20])"


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        # begin = 10, steps = 20: start up to t = 10, end from t = 30.
        (schedules.linear(2.0, 1.0, steps=20, begin=10), {0: 2.0, 10: 2.0, 15: 1.75, 20: 1.5, 30: 1.0, 99: 1.0}),
        (schedules.cosine(0.0, 1.0, steps=20, begin=10),
         {0: 0.0, 15: (1 - math.cos(math.pi / 4)) / 2, 20: 0.5, 25: (1 - math.cos(3 * math.pi / 4)) / 2, 30: 1.0}),
        (schedules.exponential(1.0, 0.0001, steps=20, begin=10), {0: 1.0, 15: 0.1, 20: 0.01, 25: 0.001, 40: 0.0001}),
        (schedules.exponential(0.01, 1.0, steps=2), {0: 0.01, 1: 0.1, 2: 1.0, 3: 1.0}),
    ],
)
def test_values_at_chosen_steps(schedule, expected):
    for t, value in expected.items():
        assert schedule(t) == pytest.approx(value, rel=1e-12, abs=1e-15), t


def test_shaped_schedules_share_their_end_points():
    for make in (schedules.linear, schedules.cosine, schedules.exponential):
        schedule = make(0.5, 2.0, steps=7, begin=3)
        assert schedule(0) == schedule(3) == 0.5
        assert schedule(10) == pytest.approx(2.0) and schedule(10_000) == pytest.approx(2.0)
        values = [schedule(t) for t in range(3, 11)]
        assert values == sorted(values)  # monotone from start to end
    assert repr(schedules.cosine(1.0, 0.0, steps=5)) == "cosine(1.0, 0.0, steps=5, begin=0)"


def test_value_at_takes_numbers_schedules_and_callables():
    assert value_at("w", 0.5, 7) == 0.5
    assert value_at("w", schedules.linear(0.0, 1.0, steps=10), 5) == 0.5
    assert value_at("w", lambda t: t / 100, 25) == 0.25
    assert value_at("w", lambda t: torch.tensor(0.75), 1) == 0.75      # a 0-d tensor from a user's callable


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (lambda: schedules.linear(1.0, 0.0, steps=0), ValueError, "steps must be >= 1; got 0"),
        (lambda: schedules.cosine(1.0, 0.0, steps=1.5), TypeError, "steps must be an int; got float"),
        (lambda: schedules.linear(1.0, 0.0, steps=5, begin=-1), ValueError, "begin must be >= 0; got -1"),
        (lambda: schedules.linear(float("nan"), 0.0, steps=5), ValueError, "start must be finite; got nan"),
        (lambda: schedules.linear("1", 0.0, steps=5), TypeError, "start must be a real number; got str"),
        (lambda: schedules.exponential(1.0, 0.0, steps=5), ValueError, "end must be > 0.0; got 0.0"),
        (lambda: schedules.exponential(-1.0, 1.0, steps=5), ValueError, "start must be > 0.0; got -1.0"),
        (lambda: schedules.constant(True), TypeError, "value must be a real number; got bool"),
        (lambda: schedules.step([1.0, 0.0], boundaries=[5, 6]), ValueError,
         "values must have one entry more than boundaries; got 2 values and 2 boundaries"),
        (lambda: schedules.step([1.0, 0.5, 0.0], boundaries=[6, 6]), ValueError,
         r"boundaries must be strictly increasing; got \[6, 6\]"),
        (lambda: schedules.step([1.0, 0.0], boundaries=[0]), ValueError, r"boundaries\[0\] must be >= 1; got 0"),
        (lambda: schedules.step([1.0, "a"], boundaries=[3]), TypeError, r"values\[1\] must be a real number; got str"),
        (lambda: schedules.step(1.0, boundaries=[3]), TypeError, "values must be a sequence of numbers; got float"),
    ],
)
def test_bad_construction(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_steps_and_values():
    schedule = schedules.linear(1.0, 0.0, steps=10)
    with pytest.raises(ValueError, match="the schedule's step must be >= 0; got -1"):
        schedule(-1)
    with pytest.raises(TypeError, match="the schedule's step must be an int; got float"):
        schedule(1.0)
    with pytest.raises(TypeError, match="the schedule's step must be an int; got bool"):
        schedule(True)
    with pytest.raises(ValueError, match=r"weights\['ce'\] at step 3 must be finite; got nan"):
        value_at("weights['ce']", lambda t: float("nan"), 3)
    with pytest.raises(TypeError, match=r"weights\['ce'\] at step 0 must be a real number; got str"):
        value_at("weights['ce']", lambda t: "1", 0)
