r"""A weighted sum of named loss terms whose weights may follow a schedule over training.

:class:`CompoundLoss` is the general form of Dice + CE: any callables ``loss(input, target)`` (softseg's
losses, torch's, a user's own), each with a weight that is a number or a schedule of the step counter
(:mod:`softseg.schedules`). It is how hybrid strategies are written: cross-entropy first and a region loss
later, the L2 form early and the L1 form late, a region weight that ramps up
(:mod:`softseg.losses.recipes` has the ones from the literature).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from softseg.kernels import fused_statistics
from softseg.losses._module import FunctionalLoss
from softseg.losses.compound import _counted_ce_terms
from softseg.losses.region import DiceLoss, TverskyLoss, loss_from_statistics, tversky_loss
from softseg.schedules import _check_counter, value_at

Weight = float | Callable[[int], float]
# The statistics of a region term depend on these options only; terms that agree on them share one pass.
_STATISTICS_OPTIONS = ("activation", "norm", "ignore_index")
_DEFAULT_IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's: no pixel of a valid target holds it


def _region_term_options(term: object) -> dict[str, Any] | None:
    """The options of a softseg Tversky/Dice/Jaccard module whose statistics can be shared, else None."""
    if (
        isinstance(term, TverskyLoss)
        and type(term).forward is FunctionalLoss.forward
        and type(term).loss_function is tversky_loss
        and term.options["reduction"] != "none"
    ):
        return term.options
    return None


def _plain_cross_entropy(term: object) -> bool:
    """torch's CrossEntropyLoss with nothing the fused cross-entropy lacks (class weights, label smoothing)."""
    return (
        type(term) is nn.CrossEntropyLoss
        and term.weight is None
        and term.label_smoothing == 0
        and term.reduction == "mean"
    )


def _accepts_mask(term: object) -> bool:
    """Whether ``term`` takes a ``mask=`` keyword (a ``mask`` parameter or ``**kwargs`` in its signature)."""
    function = term.forward if isinstance(term, nn.Module) else term
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class CompoundLoss(nn.Module):
    r"""Weighted sum of named loss terms, each weight a number or a schedule of the training step.

    .. math::

        L_t = \sum_k w_k(t)\, \ell_k(\text{input}, \text{target})

    with t the step counter (:meth:`step` advances it, or pass ``step=`` to ``forward``). One softmax is
    shared where the terms allow it: softseg's Tversky/Dice/Jaccard modules that agree on activation,
    norm and ignore_index take their statistics from one pass over the logits, and a
    ``torch.nn.CrossEntropyLoss`` (no class weights, no label smoothing, mean) joins that pass when the
    activation is softmax (the fused kernels of :func:`softseg.losses.compound.dice_ce_loss`); same values
    as calling each term. A term whose weight is 0 at the current step is not computed.

    Convention:
        - Terms: a mapping ``{name: loss}`` as the first argument and/or keyword arguments ``name=loss``;
          names are identifiers, each term a callable ``loss(input, target)`` returning a scalar tensor. Its
          activation and target needs are its own. No terms: cross-entropy + Dice (softseg's), weight 1
          each.
        - ``weights``: ``{name: weight}``; a weight is a number >= 0, a :mod:`softseg.schedules` schedule or
          any callable ``f(step) -> float`` (checked at use: finite and >= 0). A term without an entry
          has weight 1; a name that is not a term is an error. They are kept in ``weight_schedules``;
          ``weights`` is the dict of the weights in use at the current step (for logging), and
          :meth:`weights_at` gives them at any step.
        - The counter is an int >= 0, saved in ``state_dict()`` (so a resumed run continues where it
          stopped) and restored by ``load_state_dict``; it counts whatever you call :meth:`step` for:
          optimisation steps or epochs.
        - ``forward(input, target, mask=None, *, step=None)``: ``step`` given evaluates the weights there and
          sets the counter to it. ``mask`` (bool, True = counts) goes to every term, which must then take
          ``mask=`` (softseg's losses do; a cross-entropy term gets it through the fused kernels). Every
          weight 0: a zero loss. Modules among the terms are submodules (they follow ``.to(device)`` and
          are in the state dict).
        - The cross-entropy term, when recognised, always runs in the fused kernels (alone if no region term
          shares its pass): ``F.cross_entropy``'s value, and it takes index targets as (B, \*spatial) or
          (B, 1, \*spatial), and a mask.

    Example:
        >>> import softseg
        >>> loss = softseg.CompoundLoss(
        ...     ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(),
        ...     weights={"ce": softseg.schedules.linear(1.0, 0.25, steps=100),
        ...              "dice": softseg.schedules.linear(0.0, 0.75, steps=100)})
        >>> logits, labels = torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]])
        >>> loss(logits, labels)                            # step 0: CE only, log 2
        tensor(0.6931)
        >>> loss.step(50)                                    # advance the counter (per batch or per epoch)
        50
        >>> loss.weights                                     # the weights in use now
        {'ce': 0.625, 'dice': 0.375}
        >>> loss(logits, labels)                            # 0.625 log 2 + 0.375 * 0.5
        tensor(0.6207)
        >>> loss.state_dict()["_extra_state"]
        {'step': 50}
    """

    def __init__(
        self,
        terms: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
        /,
        *,
        weights: Mapping[str, Weight] | None = None,
        **named_terms: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        super().__init__()
        if terms is not None and not isinstance(terms, Mapping):
            raise TypeError(f"terms must be a mapping {{name: loss}}; got {type(terms).__name__}")
        given = dict(terms or {})
        repeated = sorted(given.keys() & named_terms.keys())
        if repeated:
            raise ValueError(f"term names given twice (in the mapping and as keywords): {repeated}")
        given.update(named_terms)
        if not given:
            given = {"ce": nn.CrossEntropyLoss(), "dice": DiceLoss()}
        for name, term in given.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"term names must be identifiers such as 'ce' or 'dice'; got {name!r}")
            if not callable(term):
                raise TypeError(f"term {name!r} must be callable as loss(input, target); got {type(term).__name__}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(given))
        if unknown:
            raise ValueError(f"weights names {unknown}, which are not terms; the terms are {sorted(given)}")
        for name, weight in weights.items():
            if not callable(weight):
                weights[name] = value_at(f"weights[{name!r}]", weight, 0)
        self.names = tuple(given)
        self.modules_terms = nn.ModuleDict({n: t for n, t in given.items() if isinstance(t, nn.Module)})
        self._function_terms = {n: t for n, t in given.items() if not isinstance(t, nn.Module)}
        self.weight_schedules = {name: weights.get(name, 1.0) for name in self.names}
        self.step_count = 0

    def term(self, name: str) -> Callable[[Tensor, Tensor], Tensor]:
        """The term called ``name`` (``KeyError`` naming the terms otherwise)."""
        if name in self.modules_terms:
            return self.modules_terms[name]
        if name in self._function_terms:
            return self._function_terms[name]
        raise KeyError(f"no term {name!r}; the terms are {list(self.names)}")

    def step(self, count: int = 1) -> int:
        """Advance the step counter by ``count`` (an int >= 0) and return it."""
        self.step_count += _check_counter(count)
        return self.step_count

    def weights_at(self, step: int | None = None) -> dict[str, float]:
        """The weight of every term at ``step`` (None: the current counter), in term order."""
        step = self.step_count if step is None else _check_counter(step)
        return {name: value_at(f"weights[{name!r}]", self.weight_schedules[name], step) for name in self.names}

    @property
    def weights(self) -> dict[str, float]:
        """The weights in use at the current step, ``{name: float}`` (what ``forward`` multiplies by now)."""
        return self.weights_at()

    def get_extra_state(self) -> dict[str, int]:
        return {"step": self.step_count}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Mapping) or "step" not in state:
            raise ValueError(f"CompoundLoss state must be a mapping with a 'step' entry; got {state!r}")
        self.step_count = _check_counter(state["step"])

    def extra_repr(self) -> str:
        return f"weights={self.weight_schedules!r}, step={self.step_count}"

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None, *, step: int | None = None) -> Tensor:
        if step is not None:
            self.step_count = _check_counter(step)
        weights = {name: w for name, w in self.weights_at().items() if w > 0}
        values = self._term_values(list(weights), input, target, mask)
        total = None
        for name, weight in weights.items():
            value = values[name]
            if not isinstance(value, Tensor) or value.ndim != 0:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"term {name!r} must return a scalar tensor; got {shape}")
            total = weight * value if total is None else total + weight * value
        if total is None:  # every weight is 0 at this step
            return torch.zeros((), device=input.device, requires_grad=input.requires_grad)
        return total

    def _term_values(self, names: list[str], input: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Tensor]:
        """Each term's value; the terms that can share a pass over the logits take it together."""
        groups: dict[tuple, list[str]] = {}
        for name in names:
            options = _region_term_options(self.term(name))
            if options is not None:
                groups.setdefault(tuple(options[key] for key in _STATISTICS_OPTIONS), []).append(name)
        cross_entropy = next((n for n in names if _plain_cross_entropy(self.term(n))), None)
        ce_group = None
        if cross_entropy is not None:
            # torch's ignore_index applies to class indices only (probability targets have no label to ignore).
            dense = isinstance(target, Tensor) and target.is_floating_point()
            ce_ignore = None if dense else self.term(cross_entropy).ignore_index
            for key in groups:
                activation, _, ignore_index = key
                same_pixels = ignore_index == ce_ignore or (ignore_index is None and ce_ignore == _DEFAULT_IGNORE_INDEX)
                if activation == "softmax" and same_pixels:
                    ce_group = key
                    break
            else:  # no region term to share with: the fused kernels alone (torch's value, softseg's targets)
                ce_group = ("softmax", 1, ce_ignore)
                groups[ce_group] = []
        values = {}
        for key, members in groups.items():
            with_ce = key == ce_group
            if not with_ce and len(members) < 2:
                continue  # nothing to share: the term runs on its own below
            activation, norm, ignore_index = key
            stats, ce_sums = fused_statistics(
                input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask,
                cross_entropy=with_ce,
            )
            for name in members:
                term = self.term(name)
                options = {k: v for k, v in term.options.items() if k not in _STATISTICS_OPTIONS}
                values[name] = loss_from_statistics(stats, weight=term.weight, **options)
            if with_ce:
                counted = _counted_ce_terms(input, target, activation=activation, ignore_index=ignore_index, mask=mask)
                # 0 (not NaN) when nothing counts, as region_ce_loss.
                values[cross_entropy] = torch.where(counted > 0, ce_sums.sum() / counted.clamp_min(1), 0.0)
        for name in names:
            if name in values:
                continue
            term = self.term(name)
            if mask is None:
                values[name] = term(input, target)
            elif _accepts_mask(term):
                values[name] = term(input, target, mask=mask)
            else:
                raise TypeError(f"term {name!r} takes no mask= argument, but a mask was given; "
                                "use a loss that takes one (softseg's losses do)")
        return values
