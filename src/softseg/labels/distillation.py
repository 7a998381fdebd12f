r"""Soft targets from a teacher network: temperature-scaled probabilities, optionally mixed with labels."""

from __future__ import annotations

import torch
from torch import Tensor

from softseg._checks import (
    _skip_value_checks,
    check_choice,
    check_device,
    check_ignore_index,
    check_input,
    check_number,
)
from softseg.labels._common import check_index_map, one_hot


def distillation_target(
    teacher_logits: Tensor,
    *,
    temperature: float = 1.0,
    labels: Tensor | None = None,
    label_weight: float = 0.0,
    ignore_index: int | None = None,
    activation: str = "softmax",
) -> Tensor:
    r"""Teacher probabilities at temperature T, mixed with the hard label with weight lambda.

    .. math::

        y(i) = (1 - \lambda)\,\mathrm{softmax}(z(i) / T) + \lambda\,\mathrm{one\_hot}(\ell_i)

    Convention:
        - ``teacher_logits``: (B, C, \*spatial) float logits; ``activation="softmax"`` (over C, C >= 2) or
          ``"sigmoid"`` (independent classes, or binary with C = 1: then the label one-hot of a 0/1 label
          is the label itself).
        - NaN logits (and +inf under softmax, whose probability is undefined) are a ``ValueError``; -inf
          gives probability 0 (skipped with :func:`softseg.set_value_checks` off).
        - ``temperature`` > 0: T > 1 softens, T < 1 sharpens.
        - ``labels``: optional class indices (B, \*spatial), integer dtype; needed when ``label_weight`` > 0.
          ``label_weight`` in [0, 1].
        - Ignored pixels (``labels == ignore_index``) keep the pure teacher probabilities (there is no
          label to mix in).
        - Returns float32 (or float64 for float64 logits), detached: a target carries no gradient.

    Example:
        >>> logits = torch.tensor([[[2.0], [0.0]]])              # (B=1, C=2, N=1)
        >>> distillation_target(logits, temperature=2.0)[0, :, 0]
        tensor([0.7311, 0.2689])
        >>> distillation_target(logits, temperature=2.0, labels=torch.tensor([[1]]), label_weight=0.5)[0, :, 0]
        tensor([0.3655, 0.6345])
    """
    try:
        teacher_logits = check_input(teacher_logits).detach()
    except (TypeError, ValueError) as error:  # name the argument, not "input"
        raise type(error)(str(error).replace("input", "teacher_logits", 1)) from None
    temperature = check_number("temperature", temperature, minimum=0.0, strict=True)
    label_weight = check_number("label_weight", label_weight, minimum=0.0)
    if label_weight > 1:
        raise ValueError(f"label_weight must lie in [0, 1]; got {label_weight}")
    check_choice("activation", activation, ("softmax", "sigmoid"))
    ignore_index = check_ignore_index(ignore_index)
    channels = teacher_logits.shape[1]
    dtype = torch.float64 if teacher_logits.dtype == torch.float64 else torch.float32
    scaled = teacher_logits.to(dtype) / temperature
    if activation == "softmax":
        if channels < 2:
            raise ValueError(
                f"activation='softmax' needs at least 2 channels; teacher_logits has shape {tuple(teacher_logits.shape)}. "
                "Use activation='sigmoid' for a binary teacher with one channel"
            )
        probs = scaled.softmax(1)
    else:
        probs = scaled.sigmoid()
    if not _skip_value_checks():
        # NaN logits (and +inf under softmax) give NaN probabilities: a target no loss can use.
        undefined = int(probs.isnan().sum())
        if undefined:
            raise ValueError(
                f"teacher_logits must be numbers (-inf is allowed; +inf only with activation='sigmoid'); "
                f"the {activation} is NaN at {undefined} of {probs.numel()} entries"
            )
    if labels is None:
        if label_weight > 0:
            raise ValueError(f"label_weight={label_weight} mixes in the hard label, but labels is None")
        return probs
    expected = (teacher_logits.shape[0], *teacher_logits.shape[2:])
    if isinstance(labels, Tensor):  # before any value is read from labels
        check_device("labels", labels, teacher_logits.device, reference="teacher_logits")
    labels, valid = check_index_map("labels", labels, max(channels, 2), ignore_index=ignore_index)
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels must have shape {expected} to match teacher_logits {tuple(teacher_logits.shape)}; got {tuple(labels.shape)}"
        )
    hard = (
        (labels == 1).unsqueeze(1).to(dtype) if channels == 1 else one_hot(labels, channels, valid=valid, dtype=dtype)
    )
    mixed = (1 - label_weight) * probs + label_weight * hard
    return mixed if valid is None else torch.where(valid.unsqueeze(1), mixed, probs)
