r"""Focal loss (Lin et al., ICCV 2017) for index and soft targets: a function and a thin module.

The focal loss down-weights well-classified pixels by the modulating factor (1 - p_t) ** gamma.

- ``activation="softmax"`` (mutually exclusive classes), per pixel, generalised to class probabilities y:

  .. math:: \ell = -\sum_c w_c\, y_c\, (1 - p_c)^\gamma \log p_c

  With an index target only the labelled class c = t contributes, which is the classic -(1 - p_t)^gamma log p_t.
- ``activation="sigmoid"`` (independent classes), per (pixel, class), the formula of
  ``torchvision.ops.sigmoid_focal_loss``:

  .. math:: \ell = w_c\, \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x, y),\quad
            p_t = p\,y + (1 - p)(1 - y),\quad \alpha_t = \alpha\, y + (1 - \alpha)(1 - y)

With gamma = 0 (and no alpha or weight) both are the plain cross entropy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg._checks import (
    REDUCTIONS,
    check_choice,
    check_ignore_index,
    check_input,
    check_labels,
    check_mask,
    check_number,
    check_unit_interval,
    check_weight,
    target_kind,
)
from softseg.losses._module import FunctionalLoss
from softseg.scores import power
from softseg.statistics import accumulation_dtype

FOCAL_ACTIVATIONS = ("softmax", "sigmoid")
# How 1 - p_t is written for a soft binary target y; all three equal p (y = 0) and 1 - p (y = 1).
Modulation = Literal["probability", "logit", "cross_entropy"]


def binary_focal_terms(
    logits: Tensor, target: Tensor, *, modulation: Modulation = "probability"
) -> tuple[Tensor, Tensor]:
    r"""Elementwise binary cross entropy and 1 - p_t of logits against targets in [0, 1].

    .. math:: \mathrm{BCE}(x, y) = -y \log p - (1 - y) \log(1 - p),\qquad p = \sigma(x)

    The single home of the sigmoid focal formula; the compatibility layers pick the form of 1 - p_t that
    their reference uses for fractional targets (they agree on 0/1 targets):

    - ``"probability"``: p (1 - y) + (1 - p) y, as ``torchvision.ops.sigmoid_focal_loss`` (softseg's own);
    - ``"logit"``: sigmoid(x (1 - 2y)), as MONAI's ``sigmoid_focal_loss``;
    - ``"cross_entropy"``: 1 - exp(-BCE), as segmentation_models_pytorch's ``focal_loss_with_logits``.

    Convention:
        ``logits`` and ``target`` of one shape (any), float; no reduction, no validation (callers check).

    Example:
        >>> ce, one_minus_pt = binary_focal_terms(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.5]))
        >>> ce, one_minus_pt
        (tensor([0.6931, 1.1269]), tensor([0.5000, 0.5000]))
        >>> binary_focal_terms(torch.tensor([2.0]), torch.tensor([0.5]), modulation="logit")[1]
        tensor([0.5000])
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if modulation == "probability":
        prob = torch.sigmoid(logits)
        one_minus_pt = prob * (1 - target) + (1 - prob) * target
    elif modulation == "logit":
        one_minus_pt = torch.sigmoid(logits * (1 - 2 * target))
    else:
        one_minus_pt = -torch.expm1(-cross_entropy)
    return cross_entropy, one_minus_pt


def focal_modulation(one_minus_pt: Tensor, gamma: float) -> Tensor:
    """(1 - p_t) ** gamma; exactly 1 for gamma = 0, and 0 with a zero gradient where 1 - p_t <= 0.

    Convention:
        Elementwise on a tensor of any shape; ``gamma`` >= 0 (not checked).

    Example:
        >>> focal_modulation(torch.tensor([0.0, 0.5]), 2.0)
        tensor([0.0000, 0.2500])
    """
    if gamma == 0:
        return torch.ones_like(one_minus_pt)
    return power(one_minus_pt, gamma)


def softmax_focal_terms(log_probs: Tensor, target: Tensor, gamma: float) -> Tensor:
    r"""Per-(pixel, class) softmax focal terms of log-probabilities and class probabilities y.

    .. math:: t_c = -y_c\, (1 - p_c)^\gamma \log p_c

    Convention:
        ``log_probs`` (from ``log_softmax``) and ``target`` broadcastable, float; no reduction over classes.

    Example:
        >>> softmax_focal_terms(torch.tensor([0.5, 0.5]).log(), torch.tensor([1.0, 0.0]), 2.0)
        tensor([0.1733, 0.0000])
    """
    return -target * focal_modulation(-torch.expm1(log_probs), gamma) * log_probs


def focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    activation: str = "softmax",
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Focal loss of logits against class indices or class probabilities.

    .. math::

        \text{softmax:}\quad \ell_i = -\sum_c w_c\, y_{ic}\, (1 - p_{ic})^\gamma \log p_{ic}

        \text{sigmoid:}\quad \ell_{ic} = w_c\, \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x_{ic}, y_{ic}),\quad
        p_t = p\,y + (1 - p)(1 - y),\ \alpha_t = \alpha\,y + (1 - \alpha)(1 - y)

    gamma = 0 gives the cross entropy (softmax) or the binary cross entropy (sigmoid); the sigmoid form
    equals ``torchvision.ops.sigmoid_focal_loss`` term by term.

    Convention:
        - ``input``: logits (B, C, \*spatial), any number of spatial dims, any float dtype; the terms are
          computed and summed in float32 (float64 for float64 input) and returned in that dtype.
          ``activation="softmax"`` (default, log-softmax over C, needs C >= 2) or ``"sigmoid"`` (multi-label,
          or binary with C = 1).
        - ``target``: class indices (B, \*spatial) or (B, 1, \*spatial) of an integer dtype (with C = 1: 0/1
          binary labels), or class probabilities (B, C, \*spatial) of a float dtype with values in [0, 1].
          Softmax with indices gathers log p_t: no one-hot is built. Sigmoid has a term for every (pixel,
          class), so index labels are compared with each channel.
        - ``alpha`` (sigmoid only): weight of positives in [0, 1], 1 - alpha for negatives; None: no balancing.
          With softmax use ``weight``.
        - ``weight``: one non-negative value per class, multiplying that class's terms.
        - Ignored pixels: ``ignore_index`` (index targets) and ``mask`` (bool, True = counts; (B, \*spatial)
          or (B, 1, \*spatial); (B, C, \*spatial) for sigmoid only) contribute nothing and are not counted.
        - ``reduction``: ``"mean"`` (sum over counted pixels, or (pixel, class) elements for sigmoid, divided
          by their number; 0 when nothing counts, never NaN), ``"sum"``, or ``"none"``: per-pixel losses
          (B, \*spatial) for softmax, per-element losses (B, C, \*spatial) for sigmoid, ignored entries 0.
          The mean divides by the count, not by the sum of class weights (unlike ``F.cross_entropy`` with
          ``weight`` and index targets), so an index target and its one-hot give the same value.

    Example:
        >>> logits = torch.zeros(1, 2, 1)                          # p = (0.5, 0.5) at one pixel
        >>> focal_loss(logits, torch.tensor([[0]]))                 # 0.5**2 * log 2
        tensor(0.1733)
        >>> focal_loss(logits, torch.tensor([[0]]), gamma=0.0)      # the cross entropy, log 2
        tensor(0.6931)
        >>> focal_loss(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), activation="sigmoid", alpha=0.25)
        tensor(0.0433)
    """
    input = check_input(input)
    gamma, alpha = _check_focal_options(gamma=gamma, alpha=alpha, activation=activation, reduction=reduction)
    check_ignore_index(ignore_index)
    kind = target_kind(input, target)
    if ignore_index is not None and kind == "dense":
        raise ValueError("ignore_index applies to index targets only; pass mask= to leave pixels out of a dense target")
    channels = input.shape[1]
    weight = check_weight(weight, channels, include_background=True, device=input.device)
    mask = None if mask is None else check_mask(mask, input)
    acc = accumulation_dtype(input.dtype)
    logits = input.to(acc)
    class_shape = (1, channels) + (1,) * (input.ndim - 2)
    class_weight = None if weight is None else weight.to(device=input.device, dtype=acc).reshape(class_shape)

    counted = mask  # None or (B, 1 | C, *spatial), True = counts
    if kind == "index":
        labels = target.reshape(input.shape[:1] + input.shape[2:]).unsqueeze(1)  # (B, 1, *spatial)
        checked = None if ignore_index is None else labels != ignore_index
        if mask is not None and mask.shape[1] == 1:
            checked = mask if checked is None else checked & mask
        check_labels(labels, max(channels, 2), checked, ignore_index)
        if checked is not None:
            # Uncounted pixels may hold any label (ignore_index = 255): park them on class 0.
            labels = labels.masked_fill(~checked, 0)
        if checked is not None:
            counted = checked if counted is None else counted & checked
    else:
        check_unit_interval("target", target)

    if activation == "softmax":
        if channels < 2:
            raise ValueError(
                f"activation='softmax' needs at least 2 channels; input has shape {tuple(input.shape)}. "
                "Use activation='sigmoid' for binary segmentation with one channel"
            )
        if counted is not None and counted.shape[1] != 1:
            raise ValueError(
                f"the softmax focal loss is one term per pixel, so mask must be (B, *spatial) or (B, 1, *spatial); "
                f"got shape {tuple(mask.shape)}"
            )
        log_probs = logits.log_softmax(1)
        if kind == "index":
            # Only the labelled class has y_c = 1: gather its log-probability instead of building a one-hot.
            log_pt = log_probs.gather(1, labels)
            terms = softmax_focal_terms(log_pt, torch.ones_like(log_pt), gamma)
            if class_weight is not None:
                terms = terms * class_weight.reshape(-1)[labels]
        else:
            terms = softmax_focal_terms(log_probs, target.to(acc), gamma)
            if class_weight is not None:
                terms = terms * class_weight
            terms = terms.sum(1, keepdim=True)
    else:
        if kind == "index":
            classes = torch.arange(channels, device=input.device).reshape(class_shape)
            dense = (labels == (classes + 1 if channels == 1 else classes)).to(acc)
        else:
            dense = target.to(acc)
        cross_entropy, one_minus_pt = binary_focal_terms(logits, dense)
        terms = cross_entropy * focal_modulation(one_minus_pt, gamma)
        if alpha is not None:
            terms = terms * (alpha * dense + (1 - alpha) * (1 - dense))
        if class_weight is not None:
            terms = terms * class_weight

    if counted is not None:
        terms = terms * counted
    if reduction == "none":
        return terms.squeeze(1) if activation == "softmax" else terms
    if reduction == "sum":
        return terms.sum()
    if counted is None:
        return terms.sum() / max(terms.numel(), 1)  # an empty batch gives 0, not 0/0
    count = counted.expand_as(terms).sum()
    return torch.where(count > 0, terms.sum() / count.clamp_min(1), 0)


def _check_focal_options(
    *, gamma: float, alpha: float | None, activation: str, reduction: str
) -> tuple[float, float | None]:
    gamma = check_number("gamma", gamma, minimum=0.0)
    check_choice("activation", activation, FOCAL_ACTIVATIONS)
    check_choice("reduction", reduction, REDUCTIONS)
    if alpha is not None:
        if activation == "softmax":
            raise ValueError(
                f"alpha balances positives and negatives of activation='sigmoid'; got alpha={alpha!r} with "
                "activation='softmax'. Pass per-class weights as weight= instead"
            )
        alpha = check_number("alpha", alpha, minimum=0.0)
        if alpha > 1:
            raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    return gamma, alpha


class FocalLoss(FunctionalLoss):
    r"""Module form of :func:`focal_loss`; options are fixed at construction, keyword-only.

    .. math::

        \ell = -\sum_c w_c\, y_c\, (1 - p_c)^\gamma \log p_c \ \ \text{(softmax)},\qquad
        \ell_c = w_c\, \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x_c, y_c)\ \ \text{(sigmoid)}

    Convention:
        As :func:`focal_loss`. ``forward(input, target, mask=None)``. ``weight`` is a buffer, so it follows
        ``.to(device)`` and is saved in the state dict.

    Example:
        >>> loss = FocalLoss(gamma=2.0)
        >>> loss(torch.zeros(1, 2, 1), torch.tensor([[[0.5], [0.5]]]))    # soft target: 0.25 * log 2
        tensor(0.1733)
    """

    loss_function = staticmethod(focal_loss)

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = None,
        activation: str = "softmax",
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        _check_focal_options(gamma=gamma, alpha=alpha, activation=activation, reduction=reduction)
        check_ignore_index(ignore_index)
        options = dict(gamma=gamma, alpha=alpha, activation=activation, ignore_index=ignore_index, reduction=reduction)
        super().__init__(options, weight)
