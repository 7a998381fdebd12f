r"""Region + cross-entropy compound losses (Dice + CE and its Jaccard, Tversky and focal variants).

One function, :func:`region_ce_loss`, and one module, :class:`RegionCELoss`; :func:`dice_ce_loss` and
:class:`DiceCELoss` fix the region term to Dice. The region term is :func:`softseg.tversky_loss` computed
from the same statistics; with ``ce="cross_entropy"`` both terms come out of one fused pass over the
logits (:func:`softseg.dispatch.fused_statistics`): one softmax, shared, recomputed in backward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from softseg._checks import (
    ActiveClasses,
    check_choice,
    check_input,
    check_mask,
    check_number,
    explain_unexpected_keywords,
    not_ignored,
    target_kind,
)
from softseg.activation import Activation
from softseg.aggregation import Aggregation
from softseg.dispatch import fused_statistics
from softseg.losses._module import FunctionalLoss, init_options
from softseg.losses.region import _check_options, _loss_in_kernels, loss_from_statistics

REGIONS = {"dice": (0.5, 0.5), "jaccard": (1.0, 1.0), "tversky": None}
CROSS_ENTROPIES = ("cross_entropy", "focal")
Region = Literal["dice", "jaccard", "tversky"]
CrossEntropy = Literal["cross_entropy", "focal"]


@explain_unexpected_keywords()
def region_ce_loss(
    input: Tensor,
    target: Tensor,
    *,
    region: Region = "dice",
    alpha: float | None = None,
    beta: float | None = None,
    lambda_region: float = 1.0,
    lambda_ce: float = 1.0,
    ce: CrossEntropy = "cross_entropy",
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
    activation: Activation = "softmax",
    smooth: float = 0.0,
    norm: Literal[1, 2] = 1,
    gamma: float = 1.0,
    log_loss: bool = False,
    weight: Tensor | Sequence[float] | None = None,
    include_background: bool = True,
    aggregation: Aggregation = "global",
    active_classes: ActiveClasses = "all",
    presence_threshold: float = 0.01,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""lambda_region * region loss + lambda_ce * cross-entropy, sharing one activation of the logits.

    .. math::

        L = \lambda_{region}\, \mathrm{mean}_c\,(1 - T_c)^\gamma
            + \lambda_{ce}\, \frac{1}{|\Omega|} \sum_{i \in \Omega} \Big(-\sum_c y_{ic} \log p_{ic}\Big),
        \qquad T_c = \frac{tp_c + s}{tp_c + \alpha fp_c + \beta fn_c + s}

    with tp = sum min(p, y) (soft-label-correct, :func:`softseg.tversky_loss`) and Omega the counted
    pixels. ``region``: ``"dice"`` (alpha = beta = 1/2), ``"jaccard"`` (1, 1) or ``"tversky"``
    (``alpha``, ``beta``, default 1/2 each). ``ce="focal"`` replaces the cross-entropy with
    :func:`softseg.losses.focal.focal_loss` (``focal_gamma``, ``focal_alpha``; computed in its own pass).

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype; ``activation`` ``"softmax"`` (default,
          C >= 2; CE is ``F.cross_entropy``), ``"sigmoid"`` (multi-label or binary with C = 1; CE is
          ``F.binary_cross_entropy_with_logits``, averaged over counted (pixel, class) elements) or
          ``"none"`` (probabilities; CE of log(max(p, 1e-12)), binary when C = 1).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype, or class
          probabilities (B, C, \*spatial) in [0, 1]; soft targets give CE = -sum_c y_c log p_c, as
          ``F.cross_entropy`` with probability targets.
        - Ignored pixels: ``ignore_index`` and ``mask`` (bool, True = counts) leave both terms. The
          softmax cross-entropy is one term per pixel, so its mask must be (B, \*spatial) or (B, 1, \*spatial).
          Nothing counted: the CE term is 0, never NaN.
        - Every option of :func:`softseg.tversky_loss` applies to the region term (``weight``,
          ``include_background``, ``aggregation``, ``active_classes``, ...); the CE term is unweighted
          and is the local mean under ``distributed=True`` (DDP averages its gradient).
        - Returns a scalar (the region term uses ``reduction="mean"``), float32 for float16/bfloat16 input.

    Example:
        >>> import softseg, torch.nn.functional as F
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])   # (B=1, C=2, N=3)
        >>> labels = torch.tensor([[0, 1, 1]])
        >>> region_ce_loss(logits, labels)
        tensor(0.4956)
        >>> softseg.dice_loss(logits, labels) + F.cross_entropy(logits, labels)
        tensor(0.4956)
    """
    alpha, beta, smooth, gamma = _check_compound_options(
        region=region,
        alpha=alpha,
        beta=beta,
        lambda_region=lambda_region,
        lambda_ce=lambda_ce,
        ce=ce,
        focal_gamma=focal_gamma,
        focal_alpha=focal_alpha,
        activation=activation,
        smooth=smooth,
        norm=norm,
        gamma=gamma,
        log_loss=log_loss,
        include_background=include_background,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        ignore_index=ignore_index,
        distributed=distributed,
        process_group=process_group,
    )
    fused_ce = ce == "cross_entropy"
    if fused_ce:
        counted = _counted_ce_terms(input, target, activation=activation, ignore_index=ignore_index, mask=mask)
        # On CUDA, when the Triton kernels apply: region + CE in three kernel launches.
        loss = _loss_in_kernels(
            input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask, alpha=alpha,
            beta=beta, smooth=smooth, gamma=gamma, log_loss=log_loss, weight=weight,
            include_background=include_background, aggregation=aggregation, active_classes=active_classes,
            presence_threshold=presence_threshold, reduction="mean", distributed=distributed,
            lambda_region=lambda_region, lambda_ce=lambda_ce, ce_count=counted,
        )
        if loss is not None:
            return loss
    stats, ce_sums = fused_statistics(
        input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask, cross_entropy=fused_ce
    )
    region_term = loss_from_statistics(
        stats,
        alpha=alpha,
        beta=beta,
        smooth=smooth,
        gamma=gamma,
        log_loss=log_loss,
        weight=weight,
        include_background=include_background,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        reduction="mean",
        distributed=distributed,
        process_group=process_group,
    )
    if fused_ce:
        # 0 (not NaN) when nothing counts; the where() keeps the gradient finite there too.
        ce_term = torch.where(counted > 0, ce_sums.sum() / counted.clamp_min(1), 0.0)
    else:
        from softseg.losses.focal import focal_loss  # the focal module is optional for the plain CE path

        ce_term = focal_loss(
            input,
            target,
            gamma=focal_gamma,
            alpha=focal_alpha,
            activation=activation,
            ignore_index=ignore_index,
            mask=mask,
            reduction="mean",
        ).to(region_term.dtype)
    return lambda_region * region_term + lambda_ce * ce_term


_FIXED_BY_DICE_CE = "dice_ce_loss fixes the region term to Dice (region_ce_loss sets region, alpha, beta)"


@explain_unexpected_keywords(dict.fromkeys(("region", "alpha", "beta"), _FIXED_BY_DICE_CE))
def dice_ce_loss(
    input: Tensor,
    target: Tensor,
    *,
    lambda_region: float = 1.0,
    lambda_ce: float = 1.0,
    ce: CrossEntropy = "cross_entropy",
    focal_gamma: float = 2.0,
    focal_alpha: float | None = None,
    activation: Activation = "softmax",
    smooth: float = 0.0,
    norm: Literal[1, 2] = 1,
    gamma: float = 1.0,
    log_loss: bool = False,
    weight: Tensor | Sequence[float] | None = None,
    include_background: bool = True,
    aggregation: Aggregation = "global",
    active_classes: ActiveClasses = "all",
    presence_threshold: float = 0.01,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""Dice + cross-entropy: :func:`region_ce_loss` with ``region="dice"``, one shared softmax.

    .. math::

        L = \lambda_{region} \frac{\|p - y\|_1}{\|p\|_1 + \|y\|_1}\Big|_{\text{mean over classes}}
            + \lambda_{ce}\, \mathrm{CE}(p, y)

    ``smooth`` s enters the Dice term as in :func:`softseg.dice_loss` (textbook e = 2 s; MONAI's
    ``DiceCELoss(smooth_nr=2 * s, smooth_dr=2 * s)``).

    Convention:
        As :func:`region_ce_loss` (logits (B, C, \*spatial), index or probability targets, softmax by
        default, ``ignore_index``/``mask`` leave both terms, scalar result); every option keyword-only;
        ``region``, ``alpha`` and ``beta`` are fixed.

    Example:
        >>> logits = torch.zeros(1, 2, 4)                    # p = 1/2 everywhere: Dice 1/2, CE log 2
        >>> labels = torch.tensor([[0, 0, 1, 1]])
        >>> dice_ce_loss(logits, labels)
        tensor(1.1931)
    """
    return region_ce_loss(region="dice", **locals())  # locals(): every argument above, unchanged


class RegionCELoss(FunctionalLoss):
    r"""Module form of :func:`region_ce_loss`; options fixed at construction, keyword-only.

    .. math::

        L = \lambda_{region}\, \ell_{region} + \lambda_{ce}\, \mathrm{CE}

    Convention:
        As :func:`region_ce_loss`. ``forward(input, target, mask=None)``; ``weight`` (region term's class
        weights) is a buffer that follows ``.to(device)``.

    Example:
        >>> loss = RegionCELoss(region="jaccard", lambda_ce=0.5)
        >>> loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))      # Jaccard 2/3 + log(2) / 2
        tensor(1.0132)
    """

    loss_function = staticmethod(region_ce_loss)

    def __init__(
        self,
        *,
        region: Region = "dice",
        alpha: float | None = None,
        beta: float | None = None,
        lambda_region: float = 1.0,
        lambda_ce: float = 1.0,
        ce: CrossEntropy = "cross_entropy",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        activation: Activation = "softmax",
        smooth: float = 0.0,
        norm: Literal[1, 2] = 1,
        gamma: float = 1.0,
        log_loss: bool = False,
        weight: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        aggregation: Aggregation = "global",
        active_classes: ActiveClasses = "all",
        presence_threshold: float = 0.01,
        ignore_index: int | None = None,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        options = dict(
            region=region,
            alpha=alpha,
            beta=beta,
            lambda_region=lambda_region,
            lambda_ce=lambda_ce,
            ce=ce,
            focal_gamma=focal_gamma,
            focal_alpha=focal_alpha,
            activation=activation,
            smooth=smooth,
            norm=norm,
            gamma=gamma,
            log_loss=log_loss,
            include_background=include_background,
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            ignore_index=ignore_index,
            distributed=distributed,
            process_group=process_group,
        )
        _check_compound_options(**options)  # fail at construction, not at the first batch
        super().__init__(options, weight, include_background=include_background)


class DiceCELoss(RegionCELoss):
    r"""Module form of :func:`dice_ce_loss` (Dice + cross-entropy, one shared softmax).

    .. math::

        L = \lambda_{region}\, \ell_{Dice} + \lambda_{ce}\, \mathrm{CE}

    Convention:
        As :func:`dice_ce_loss`: options keyword-only, fixed at construction (``region``, ``alpha``,
        ``beta`` fixed); ``forward(input, target, mask=None)``; ``weight`` (the Dice term's class weights)
        is a buffer.

    Example:
        >>> loss = DiceCELoss(ignore_index=255)
        >>> loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 255]]))   # Dice 0.5143 + CE log 2
        tensor(1.2074)
    """

    fixed_options = dict.fromkeys(
        ("region", "alpha", "beta"), "DiceCELoss fixes the region term to Dice (RegionCELoss sets it)"
    )

    def __init__(
        self,
        *,
        lambda_region: float = 1.0,
        lambda_ce: float = 1.0,
        ce: CrossEntropy = "cross_entropy",
        focal_gamma: float = 2.0,
        focal_alpha: float | None = None,
        activation: Activation = "softmax",
        smooth: float = 0.0,
        norm: Literal[1, 2] = 1,
        gamma: float = 1.0,
        log_loss: bool = False,
        weight: Tensor | Sequence[float] | None = None,
        include_background: bool = True,
        aggregation: Aggregation = "global",
        active_classes: ActiveClasses = "all",
        presence_threshold: float = 0.01,
        ignore_index: int | None = None,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(region="dice", **init_options(locals()))


def _region_weights(region: object, alpha: float | None, beta: float | None) -> tuple[float, float]:
    check_choice("region", region, tuple(REGIONS))
    fixed = REGIONS[region]
    if fixed is None:
        return (0.5 if alpha is None else alpha), (0.5 if beta is None else beta)
    given = [name for name, value in (("alpha", alpha), ("beta", beta)) if value is not None]
    if given:
        raise TypeError(f"region={region!r} fixes alpha and beta; got {', '.join(given)} (use region='tversky')")
    return fixed


def _check_compound_options(
    *,
    region: str,
    alpha: float | None,
    beta: float | None,
    lambda_region: float,
    lambda_ce: float,
    ce: str,
    focal_gamma: float,
    focal_alpha: float | None,
    **region_options,
) -> tuple[float, float, float, float]:
    """Validate every data-independent option; returns alpha, beta, smooth, gamma of the region term."""
    alpha, beta = _region_weights(region, alpha, beta)
    check_number("lambda_region", lambda_region, minimum=0.0)
    check_number("lambda_ce", lambda_ce, minimum=0.0)
    check_choice("ce", ce, CROSS_ENTROPIES)
    check_number("focal_gamma", focal_gamma, minimum=0.0)
    if focal_alpha is not None and not 0 <= check_number("focal_alpha", focal_alpha) <= 1:
        raise ValueError(f"focal_alpha must be None or in [0, 1]; got {focal_alpha}")
    return _check_options(alpha=alpha, beta=beta, reduction="mean", **region_options)


def _counted_ce_terms(
    input: Tensor, target: Tensor, *, activation: str, ignore_index: int | None, mask: Tensor | None
) -> Tensor:
    """How many terms the cross-entropy mean divides by: counted pixels (softmax) or (pixel, class) elements."""
    input = check_input(input)
    kind = target_kind(input, target)
    batch, channels = input.shape[:2]
    pixels = math.prod(input.shape[2:])
    per_class = activation == "sigmoid" or channels == 1
    if mask is not None:
        mask = check_mask(mask, input)
        if mask.shape[1] > 1 and not per_class:
            raise ValueError(
                "the softmax cross-entropy is one term per pixel, so mask must be (B, *spatial) or (B, 1, *spatial); "
                f"got shape {tuple(mask.shape)}"
            )
    counted = None if mask is None else mask.reshape(batch, mask.shape[1], pixels)
    if kind == "index" and ignore_index is not None:
        valid = not_ignored(target.reshape(batch, 1, pixels), ignore_index)
        counted = valid if counted is None else counted & valid
    if counted is None:  # a fill on the device, not a copy from the host (CUDA graphs capture it)
        return torch.full((), batch * pixels * (channels if per_class else 1), dtype=torch.float32, device=input.device)
    total = counted.sum(dtype=torch.float32)
    return total * channels if (per_class and counted.shape[1] == 1) else total
