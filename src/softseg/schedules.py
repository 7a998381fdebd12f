r"""Schedules of a loss weight over training: a value for every step (or epoch) counter t = 0, 1, 2, ...

:class:`softseg.CompoundLoss` takes a number, one of these, or any callable ``f(t) -> float`` as the
weight of each term. The four shaped schedules share one signature, ``(start, end, *, steps, begin=0)``:
``start`` until step ``begin``, then a transition of ``steps`` steps, then ``end`` for good:

.. math::

    w(t) = \begin{cases} \text{start} & t \le \text{begin} \\
    \text{start} + (\text{end} - \text{start})\, s(u),\ u = (t - \text{begin}) / \text{steps} & \text{during} \\
    \text{end} & t \ge \text{begin} + \text{steps} \end{cases}

with s(u) = u (:func:`linear`), (1 - cos(pi u)) / 2 (:func:`cosine`), or the geometric interpolation
start (end / start)^u (:func:`exponential`, start and end > 0). :func:`step` is piecewise constant and
:func:`constant` never changes. The counter is whatever the caller advances: optimisation steps or epochs.

Convention:
    Every schedule is called with an int step t >= 0 and returns a float; ``start``, ``end`` and the values
    are finite numbers, ``steps`` >= 1 and ``begin`` >= 0 ints (``TypeError``/``ValueError`` naming the
    argument otherwise). Schedules are immutable; their repr is the call that builds them.

Example:
    >>> from softseg import schedules
    >>> ramp = schedules.linear(0.0, 1.0, steps=4)
    >>> [ramp(t) for t in range(6)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    >>> schedules.step([1.0, 0.5, 0.0], boundaries=[10, 20])(15)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from softseg._checks import check_number

__all__ = ["Schedule", "constant", "cosine", "exponential", "linear", "step", "value_at"]


def _check_counter(t: object) -> int:
    if isinstance(t, bool) or not isinstance(t, int):
        raise TypeError(f"the schedule's step must be an int; got {type(t).__name__}")
    if t < 0:
        raise ValueError(f"the schedule's step must be >= 0; got {t}")
    return t


def _check_steps(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


class Schedule:
    """A weight as a function of the step counter: ``schedule(t) -> float`` for every int t >= 0.

    Build one with :func:`constant`, :func:`step`, :func:`linear`, :func:`cosine` or :func:`exponential`;
    any callable ``f(t) -> float`` serves as well where a schedule is expected.

    Convention:
        ``t``: an int >= 0 (``TypeError``/``ValueError`` otherwise); returns a float. Immutable; the repr
        is the call that builds it.

    Example:
        >>> linear(1.0, 0.25, steps=100)
        linear(1.0, 0.25, steps=100, begin=0)
    """

    def __init__(self, name: str, arguments: str, rule: Callable[[int], float]) -> None:
        self._name, self._arguments, self._rule = name, arguments, rule

    def __call__(self, t: int) -> float:
        return float(self._rule(_check_counter(t)))

    def __repr__(self) -> str:
        return f"{self._name}({self._arguments})"


def constant(value: float) -> Schedule:
    r"""The same value at every step: w(t) = value.

    Convention:
        ``value``: a finite real number.

    Example:
        >>> constant(0.25)(10_000)
        0.25
    """
    value = check_number("value", value)
    return Schedule("constant", repr(value), lambda t: value)


def step(values: Sequence[float], *, boundaries: Sequence[int]) -> Schedule:
    r"""Piecewise constant: values[k] for boundaries[k - 1] <= t < boundaries[k].

    .. math::

        w(t) = \text{values}_k,\qquad k = \#\{j : \text{boundaries}_j \le t\}

    Convention:
        ``values``: finite numbers, one more than ``boundaries``; ``boundaries``: strictly increasing
        ints >= 1 (the step at which the next value takes over).

    Example:
        >>> handover = step([1.0, 0.0], boundaries=[500])              # 1 for t < 500, then 0
        >>> handover(499), handover(500)
        (1.0, 0.0)
    """
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"values must be a sequence of numbers; got {type(values).__name__}")
    if isinstance(boundaries, str) or not isinstance(boundaries, Sequence):
        raise TypeError(f"boundaries must be a sequence of ints; got {type(boundaries).__name__}")
    values = [check_number(f"values[{k}]", v) for k, v in enumerate(values)]
    boundaries = [_check_steps(f"boundaries[{k}]", b, 1) for k, b in enumerate(boundaries)]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"values must have one entry more than boundaries; got {len(values)} values and {len(boundaries)} boundaries"
        )
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries must be strictly increasing; got {boundaries}")
    return Schedule(
        "step", f"{values!r}, boundaries={boundaries!r}", lambda t: values[sum(b <= t for b in boundaries)]
    )


def _transition(name: str, start: object, end: object, steps: object, begin: object, shape) -> Schedule:
    start, end = check_number("start", start), check_number("end", end)
    steps, begin = _check_steps("steps", steps, 1), _check_steps("begin", begin, 0)

    def rule(t: int) -> float:
        progress = min(max(t - begin, 0) / steps, 1.0)
        return shape(start, end, progress)

    return Schedule(name, f"{start!r}, {end!r}, steps={steps}, begin={begin}", rule)


def linear(start: float, end: float, *, steps: int, begin: int = 0) -> Schedule:
    r"""From ``start`` to ``end`` in a straight line over ``steps`` steps after ``begin``.

    .. math::

        w(t) = \text{start} + (\text{end} - \text{start})\, u,\qquad
        u = \min(\max(t - \text{begin}, 0) / \text{steps}, 1)

    Convention:
        ``start``, ``end``: finite numbers; ``steps`` >= 1 and ``begin`` >= 0: ints.

    Example:
        >>> ramp = linear(1.0, 0.25, steps=10_000)
        >>> ramp(0), ramp(5_000), ramp(20_000)
        (1.0, 0.625, 0.25)
    """
    return _transition("linear", start, end, steps, begin, lambda a, b, u: a + (b - a) * u)


def cosine(start: float, end: float, *, steps: int, begin: int = 0) -> Schedule:
    r"""From ``start`` to ``end`` along half a cosine (flat at both ends) over ``steps`` steps after ``begin``.

    .. math::

        w(t) = \text{start} + (\text{end} - \text{start})\, \frac{1 - \cos(\pi u)}{2},\qquad
        u = \min(\max(t - \text{begin}, 0) / \text{steps}, 1)

    Convention:
        As :func:`linear`.

    Example:
        >>> handover = cosine(0.0, 1.0, steps=100)
        >>> handover(0), handover(50), handover(100)
        (0.0, 0.5, 1.0)
    """
    return _transition(
        "cosine", start, end, steps, begin, lambda a, b, u: a + (b - a) * (1 - math.cos(math.pi * u)) / 2
    )


def exponential(start: float, end: float, *, steps: int, begin: int = 0) -> Schedule:
    r"""From ``start`` to ``end`` geometrically (a constant factor per step) over ``steps`` steps after ``begin``.

    .. math::

        w(t) = \text{start}\, (\text{end} / \text{start})^u,\qquad
        u = \min(\max(t - \text{begin}, 0) / \text{steps}, 1)

    Convention:
        ``start`` and ``end`` > 0 (a geometric path never reaches 0: use :func:`linear` or :func:`cosine`
        to hand a term over completely); ``steps``, ``begin`` as :func:`linear`.

    Example:
        >>> decay = exponential(1.0, 0.01, steps=100)
        >>> decay(0), round(decay(50), 6), decay(100)
        (1.0, 0.1, 0.01)
    """
    for name, value in (("start", start), ("end", end)):
        check_number(name, value, minimum=0.0, strict=True)
    return _transition("exponential", start, end, steps, begin, lambda a, b, u: a * (b / a) ** u)


def value_at(name: str, weight: float | Callable[[int], float], t: int) -> float:
    """The value of a weight (a number, a :class:`Schedule` or any callable of the step) at step ``t``.

    Convention:
        ``name`` labels the weight in error messages. The value must be a finite real number >= 0:
        otherwise ``TypeError``/``ValueError`` naming ``name`` and the step.

    Example:
        >>> value_at("weights['dice']", linear(0.0, 1.0, steps=10), 5)
        0.5
        >>> value_at("weights['ce']", lambda t: -1.0, 3)
        Traceback (most recent call last):
        ...
        ValueError: weights['ce'] at step 3 must be >= 0.0; got -1.0
    """
    value = weight(t) if callable(weight) else weight
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # a 0-d tensor or numpy scalar returned by a user's callable
    return check_number(f"{name} at step {t}", value, minimum=0.0)
