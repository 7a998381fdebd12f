r"""Focal loss (Lin et al., ICCV 2017) that stays correct on soft targets: a function and a thin module.

The classic focal loss of a hard label t is -(1 - p_t)^gamma log p_t. Its textbook extension to class
probabilities y, -sum_c y_c (1 - p_c)^gamma log p_c (MONAI's, and softseg's first version), is **not**
minimised at p = y: the factor (1 - p_c)^gamma pays the network to move away from a fractional target
(``softseg audit``: 0.36 at the target, 0.31 one gradient step away with gamma = 2). softseg writes the
focal loss as a function of one number, the divergence D of the prediction from the target:

.. math::

    D = \mathrm{KL}(y \,\|\, p) = \sum_c y_c \log\frac{y_c}{p_c},\qquad p_t = e^{-D},\qquad
    \ell = (1 - p_t)^\gamma\, D

(per pixel over the classes for softmax; per (pixel, class) with the binary KL for sigmoid).

- Hard labels: D = -log p_t, so the loss is the classic focal loss exactly (for sigmoid, the formula of
  ``torchvision.ops.sigmoid_focal_loss``).
- Soft labels: f(D) = (1 - e^{-D})^gamma D increases with D >= 0, and D = 0 only at p = y, so the loss is
  minimised at the target, where it is 0, for every gamma >= 0.
- Why the KL divergence and not the cross-entropy (smp's p_t = exp(-BCE) is also minimised at the target):
  at a soft target the cross-entropy factor stays (1 - e^{-H(y)})^gamma > 0, so ambiguous pixels count as
  hard examples however well they are predicted, and the loss there is not 0. The KL factor is 0 exactly
  where the prediction is as good as the target allows, which is what focusing means, and
  f'(D) ~ (1 + gamma) D^gamma keeps the gradient finite near the target for every gamma > 0 (a KL factor
  times the cross-entropy would have f' ~ D^(gamma - 1), infinite at the target for gamma < 1).
- gamma = 0: D itself, the cross-entropy minus the target's entropy (the cross-entropy's gradient; equal
  to it on hard labels).

:func:`binary_focal_terms`, :func:`focal_modulation` and :func:`softmax_focal_terms` keep the classic
per-class forms for the compatibility layers, which reproduce MONAI and smp.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg._checks import (
    REDUCTIONS,
    Reduction,
    check_choice,
    check_ignore_index,
    check_input,
    check_labels,
    check_mask,
    check_number,
    check_unit_interval,
    check_weight,
    explain_unexpected_keywords,
    not_ignored,
    target_kind,
)
from softseg.losses._module import FunctionalLoss, init_options
from softseg.scores import power
from softseg.statistics import accumulation_dtype

FOCAL_ACTIVATIONS = ("softmax", "sigmoid")
FocalActivation = Literal["softmax", "sigmoid"]
# How 1 - p_t is written for a soft binary target y; all three equal p (y = 0) and 1 - p (y = 1).
Modulation = Literal["probability", "logit", "cross_entropy"]


def binary_focal_terms(
    logits: Tensor, target: Tensor, *, modulation: Modulation = "probability"
) -> tuple[Tensor, Tensor]:
    r"""Elementwise binary cross entropy and 1 - p_t of logits against targets in [0, 1] (the peers' classic form).

    .. math:: \mathrm{BCE}(x, y) = -y \log p - (1 - y) \log(1 - p),\qquad p = \sigma(x)

    The single home of the sigmoid focal formula; the compatibility layers pick the form of 1 - p_t that
    their reference uses for fractional targets (they agree on 0/1 targets):

    - ``"probability"``: p (1 - y) + (1 - p) y, as ``torchvision.ops.sigmoid_focal_loss``;
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
    r"""Per-(pixel, class) softmax focal terms of log-probabilities and class probabilities y (MONAI's form).

    .. math:: t_c = -y_c\, (1 - p_c)^\gamma \log p_c

    Kept for :mod:`softseg.compat.monai`; on a fractional target its sum is not minimised at p = y
    (:func:`focal_loss` is).

    Convention:
        ``log_probs`` (from ``log_softmax``) and ``target`` broadcastable, float; no reduction over classes.

    Example:
        >>> softmax_focal_terms(torch.tensor([0.5, 0.5]).log(), torch.tensor([1.0, 0.0]), 2.0)
        tensor([0.1733, 0.0000])
    """
    return -target * focal_modulation(-torch.expm1(log_probs), gamma) * log_probs


def target_divergence(log_probs: Tensor, target: Tensor, *, dim: int = 1) -> Tensor:
    r"""Per-pixel divergence of a softmax prediction from a target distribution (the KL divergence).

    .. math::

        D = \sum_c y_c \log\frac{y_c}{s\, p_c},\qquad s = \sum_c y_c

    For a target that sums to 1 this is KL(y || p); in general it is the cross-entropy -sum_c y_c log p_c
    minus its minimum over p (reached at p = y / s), so it is >= 0, and 0 exactly there. On a one-hot
    target it is -log p_t; an all-zero target vector gives 0.

    Convention:
        ``log_probs`` (from ``log_softmax`` over ``dim``) and ``target`` (values >= 0) of one shape;
        reduces ``dim`` (kept, size 1); clamped at 0 against rounding; 0 log 0 = 0.

    Example:
        >>> p = torch.tensor([[0.5, 0.5]])                                  # (pixels, classes), dim=1
        >>> target_divergence(p.log(), torch.tensor([[0.5, 0.5]]))          # at the target
        tensor([[0.]])
        >>> target_divergence(p.log(), torch.tensor([[1.0, 0.0]]))          # one-hot: -log 0.5
        tensor([[0.6931]])
    """
    mass = target.sum(dim, keepdim=True)
    divergence = (torch.xlogy(target, target) - target * log_probs).sum(dim, keepdim=True) - torch.xlogy(mass, mass)
    return divergence.clamp_min(0)


def binary_target_divergence(logits: Tensor, target: Tensor) -> Tensor:
    r"""Elementwise binary KL divergence of sigmoid(logits) from targets in [0, 1].

    .. math::

        D = y \log\frac{y}{p} + (1 - y) \log\frac{1 - y}{1 - p} = \mathrm{BCE}(x, y) - H(y),\qquad p = \sigma(x)

    Convention:
        ``logits`` and ``target`` of one shape (any), float; elementwise, clamped at 0 against rounding;
        on 0/1 targets it is the binary cross-entropy.

    Example:
        >>> binary_target_divergence(torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.0]))
        tensor([0.0000, 0.6931])
    """
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (cross_entropy + torch.xlogy(target, target) + torch.xlogy(1 - target, 1 - target)).clamp_min(0)


def focal_of_divergence(divergence: Tensor, gamma: float) -> Tensor:
    r"""The focal loss as a function of the divergence D from the target: (1 - e^{-D})^gamma D.

    .. math::

        f(D) = (1 - p_t)^\gamma\, D,\qquad p_t = e^{-D}

    Increasing in D >= 0 and 0 at D = 0, so a loss minimised at the target stays minimised there. With
    D = -log p_t (a hard label) it is the classic -(1 - p_t)^gamma log p_t.

    Convention:
        Elementwise on a tensor of divergences >= 0 (any shape, any float dtype); ``gamma`` >= 0 (not
        checked); gamma = 0 returns D.

    Example:
        >>> focal_of_divergence(torch.tensor([0.0, 0.6931]), 2.0)           # p_t = 1, 1/2
        tensor([0.0000, 0.1733])
    """
    return focal_modulation(-torch.expm1(-divergence), gamma) * divergence


@explain_unexpected_keywords()
def focal_loss(
    input: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: float | None = None,
    activation: FocalActivation = "softmax",
    weight: Tensor | Sequence[float] | None = None,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Focal loss of logits against class indices or class probabilities, minimised at the target.

    .. math::

        \ell = \omega\, (1 - e^{-D})^\gamma\, D,\qquad
        D = \begin{cases} \sum_c y_c \log(y_c / p_c) & \text{softmax, per pixel} \\
        y \log(y / p) + (1 - y) \log((1 - y) / (1 - p)) & \text{sigmoid, per (pixel, class)} \end{cases}

    with the weight omega = sum_c w_c y_c (softmax: the target's expected class weight, w_t on a hard
    label) or w_c alpha_t, alpha_t = alpha y + (1 - alpha)(1 - y) (sigmoid). On hard labels D = -log p_t
    and this is the classic focal loss -(1 - p_t)^gamma log p_t exactly (sigmoid: the formula of
    ``torchvision.ops.sigmoid_focal_loss``); on soft labels it is 0 at p = y and larger everywhere else
    (see the module docstring for why the KL divergence). gamma = 0 gives D: the cross-entropy minus the
    target's entropy (the cross-entropy itself on hard labels).

    Convention:
        - ``input``: logits (B, C, \*spatial), any number of spatial dims, any float dtype; the terms are
          computed and summed in float32 (float64 for float64 input) and returned in that dtype.
          ``activation="softmax"`` (default, log-softmax over C, needs C >= 2) or ``"sigmoid"`` (multi-label,
          or binary with C = 1).
        - ``target``: class indices (B, \*spatial) or (B, 1, \*spatial) of an integer dtype (with C = 1: 0/1
          binary labels), or class probabilities (B, C, \*spatial) of a float dtype with values in [0, 1]
          (softmax: a distribution over C at every pixel; a vector summing to s != 1 is scored against
          its cross-entropy minimiser y / s). Softmax with indices gathers log p_t: no one-hot is built.
          Sigmoid has a term for every (pixel, class), so index labels are compared with each channel.
        - ``alpha`` (sigmoid only): weight of positives in [0, 1], 1 - alpha for negatives; None: no balancing.
          With softmax use ``weight``.
        - ``weight``: one non-negative value per class (a constant factor per pixel or element, so the
          minimiser stays at the target).
        - Ignored pixels: ``ignore_index`` (index targets) and ``mask`` (bool, True = counts; (B, \*spatial)
          or (B, 1, \*spatial); (B, C, \*spatial) for sigmoid only) contribute nothing and are not counted;
          their logits are selected out first, so a NaN or inf there reaches neither value nor gradient
          (their gradient is exactly 0).
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
        >>> focal_loss(logits, torch.tensor([[[0.5], [0.5]]]))      # a soft target met exactly: 0
        tensor(0.)
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
    class_shape = (1, channels) + (1,) * (input.ndim - 2)
    class_weight = None if weight is None else weight.to(device=input.device, dtype=acc).reshape(class_shape)

    counted = mask  # None or (B, 1 | C, *spatial), True = counts
    if kind == "index":
        # (B, 1, *spatial) int64: gather takes int64 indices (uint8 label maps are common)
        labels = target.reshape(input.shape[:1] + input.shape[2:]).unsqueeze(1).long()
        checked = None if ignore_index is None else not_ignored(labels, ignore_index)
        if mask is not None and mask.shape[1] == 1:
            checked = mask if checked is None else checked & mask
        check_labels(labels, max(channels, 2), checked, ignore_index)
        if checked is not None:
            # Uncounted pixels may hold any label (ignore_index = 255): park them on class 0.
            labels = labels.masked_fill(~checked, 0)
            counted = checked if counted is None else counted & checked
    else:
        check_unit_interval("target", target)
        dense = target.to(acc)
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
    # Select the uncounted logits out (not multiply by 0): a NaN or inf there (padding, out-of-view
    # regions) must reach neither the value nor the gradient, which where() leaves exactly 0.
    logits = input.to(acc) if counted is None else torch.where(counted, input.to(acc), 0)

    if activation == "softmax":
        log_probs = logits.log_softmax(1)
        if kind == "index":
            # Only the labelled class has y_c = 1: D = -log p_t, gathered instead of building a one-hot.
            terms = focal_of_divergence(-log_probs.gather(1, labels), gamma)
            if class_weight is not None:
                terms = terms * class_weight.reshape(-1)[labels]
        else:
            terms = focal_of_divergence(target_divergence(log_probs, dense), gamma)
            if class_weight is not None:
                terms = terms * (dense * class_weight).sum(1, keepdim=True)
    else:
        if kind == "index":
            classes = torch.arange(channels, device=input.device).reshape(class_shape)
            dense = (labels == (classes + 1 if channels == 1 else classes)).to(acc)
        terms = focal_of_divergence(binary_target_divergence(logits, dense), gamma)
        if alpha is not None:
            terms = terms * (alpha * dense + (1 - alpha) * (1 - dense))
        if class_weight is not None:
            terms = terms * class_weight

    if counted is not None:
        terms = torch.where(counted, terms, 0)
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

        \ell = \omega\, (1 - e^{-D})^\gamma\, D,\qquad D = \mathrm{KL}(y \,\|\, p)
        \ \text{(softmax: over classes; sigmoid: binary, per class)}

    The classic focal loss on hard labels, 0 at a soft target and minimised there.

    Convention:
        As :func:`focal_loss`. ``forward(input, target, mask=None)``. ``weight`` is a buffer, so it follows
        ``.to(device)`` and is saved in the state dict.

    Example:
        >>> loss = FocalLoss(gamma=2.0)
        >>> loss(torch.zeros(1, 2, 1), torch.tensor([[1]]))                  # hard label: 0.25 * log 2
        tensor(0.1733)
        >>> loss(torch.zeros(1, 2, 1), torch.tensor([[[0.5], [0.5]]]))       # the soft target itself: 0
        tensor(0.)
    """

    loss_function = staticmethod(focal_loss)

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: float | None = None,
        activation: FocalActivation = "softmax",
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        options = init_options(locals())
        del options["weight"]  # a buffer of the module, not an option
        _check_focal_options(gamma=gamma, alpha=alpha, activation=activation, reduction=reduction)
        check_ignore_index(ignore_index)
        super().__init__(options, weight)
