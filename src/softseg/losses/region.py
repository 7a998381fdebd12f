r"""Tversky, Dice and Jaccard losses that are correct for soft labels: functions and thin modules.

All three are one formula on the statistics engine (DESIGN.md section 2). With x the probabilities and
y the target of one class, tp = sum min(x, y), fp = sum x - tp, fn = sum y - tp (norm 1), and

    T = (tp + s) / (tp + alpha fp + beta fn + s),    loss = (1 - T) ** gamma   or   (-log T) ** gamma.

On hard labels they equal the classic soft losses exactly; on soft labels they are zero exactly at
x = y, where the classic forms are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from softseg._checks import (
    ACTIVATIONS,
    ACTIVE_CLASSES,
    REDUCTIONS,
    ActiveClasses,
    Reduction,
    check_choice,
    check_ignore_index,
    check_number,
    check_weight,
    explain_unexpected_keywords,
)
from softseg.activation import Activation
from softseg.aggregation import Aggregation, aggregate, parse_aggregation
from softseg import dispatch
from softseg.dispatch import logit_statistics
from softseg.distributed import check_distributed_options, sync_statistics
from softseg.kernels.triton_fused import RegionLossOptions
from softseg.losses._module import FunctionalLoss, init_options
from softseg.scores import LOG_EPS, power, tversky_index
from softseg.statistics import RegionStatistics



@explain_unexpected_keywords()
def tversky_loss(
    input: Tensor,
    target: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
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
    reduction: Reduction = "mean",
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""Soft-label-correct Tversky loss.

    .. math::

        T_c = \frac{tp_c + s}{tp_c + \alpha\, fp_c + \beta\, fn_c + s},\qquad
        \ell_c = (1 - T_c)^\gamma \ \text{or}\ (-\log T_c)^\gamma

    with tp = sum min(x, y), fp = sum x - tp, fn = sum y - tp for ``norm=1`` (tp = <x, y>,
    fp = ||x||^2 - tp, fn = ||y||^2 - tp for ``norm=2``). ``alpha`` weighs false positives, ``beta``
    false negatives. On binary targets this is the classic soft Tversky loss; for any target in [0, 1]
    the loss is 0 exactly where the prediction equals the target, also with ``smooth`` > 0.

    Convention:
        - ``input``: logits (B, C, \*spatial), any number of spatial dims, any float dtype. ``activation``
          ``"softmax"`` (default, over C; needs C >= 2), ``"sigmoid"`` (multi-label, or binary with C = 1),
          or ``"none"`` (``input`` holds probabilities in [0, 1]).
        - ``target``: class indices (B, \*spatial) or (B, 1, \*spatial), integer dtype (with C = 1: 0/1
          binary labels), never expanded to a dense one-hot; or class probabilities (B, C, \*spatial),
          float dtype, values in [0, 1].
        - Ignored pixels: ``ignore_index`` (index targets) and ``mask`` (bool, True = counts; (B, \*spatial),
          (B, 1, \*spatial) or (B, C, \*spatial)) remove pixels from every sum.
        - Sums run in float32 (float64 for float64 input); float16 and bfloat16 inputs are fine.
        - Device: on CUDA with Triton the whole loss runs in Triton kernels
          (:class:`softseg.kernels.triton_fused.TritonRegionLoss`; not for ``reduction="none"`` or
          ``distributed=True``, which take the kernels' statistics and the torch tail); same values.
        - ``aggregation``: ``"global"`` (default: sums over batch and pixels, one score per class),
          ``"image"``, ``"class"`` or a mix such as ``{"image": 0.5, "class": 0.5}``; see
          :func:`softseg.aggregation.aggregate`. ``active_classes`` ``"all"`` (default) or ``"present"``
          (target max over the aggregation set > ``presence_threshold``).
        - ``weight``: one non-negative value per scored class (without class 0 when
          ``include_background=False``); the mean is weighted over active classes.
        - Empty classes: nothing in prediction and target gives loss 0 with a finite gradient. Nothing
          active gives 0. ``log_loss`` floors T at 1e-7.
        - ``reduction``: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"``: per-class losses (C,) for
          global aggregation, per-(image, class) losses (B, C) for image and class, weighted, with
          inactive entries 0.
        - ``distributed=True``: under data parallelism the statistics of every rank of ``process_group``
          (``None``: the default group, which must be initialised) are combined before aggregating
          (:func:`softseg.distributed.sync_statistics`), so every rank gets the loss of the concatenated
          batch: global sums and image/class means run over all images of all ranks (uneven and empty
          slices allowed; ``reduction="none"`` gives the rows of all ranks). Rank r's logits receive N
          times their slice of the single-process gradient; DDP's averaging over N ranks makes the
          parameter gradient equal to the single-process one.

    Example:
        >>> x = torch.tensor([[[0.2, 0.7, 0.5]]])      # probabilities (B=1, C=1, N=3)
        >>> y = torch.tensor([[[0.5, 0.5, 1.0]]])      # soft target
        >>> tversky_loss(x, y, alpha=0.3, beta=0.7, activation="none")
        tensor(0.3407)
        >>> tversky_loss(y, y, alpha=0.3, beta=0.7, activation="none")
        tensor(0.)
    """
    alpha, beta, smooth, gamma = _check_options(
        alpha=alpha,
        beta=beta,
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
        reduction=reduction,
        distributed=distributed,
        process_group=process_group,
    )
    # On CUDA, when the Triton kernels apply: the whole loss in three kernel launches.
    loss = _loss_in_kernels(
        input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask, alpha=alpha,
        beta=beta, smooth=smooth, gamma=gamma, log_loss=log_loss, weight=weight,
        include_background=include_background, aggregation=aggregation, active_classes=active_classes,
        presence_threshold=presence_threshold, reduction=reduction, distributed=distributed,
    )
    if loss is not None:
        return loss
    # Fused from the logits (same values and gradients as activate + region_statistics, less time and memory).
    stats = logit_statistics(
        input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask
    )
    return loss_from_statistics(
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
        reduction=reduction,
        distributed=distributed,
        process_group=process_group,
    )


def _loss_in_kernels(
    input: Tensor,
    target: Tensor,
    *,
    activation: str,
    norm: int,
    ignore_index: int | None,
    mask: Tensor | None,
    alpha: float,
    beta: float,
    smooth: float,
    gamma: float,
    log_loss: bool,
    weight: Tensor | Sequence[float] | None,
    include_background: bool,
    aggregation: Aggregation,
    active_classes: str,
    presence_threshold: float,
    reduction: str,
    distributed: bool,
    lambda_region: float = 1.0,
    lambda_ce: float = 0.0,
    ce_count: Tensor | None = None,
) -> Tensor | None:
    """The whole loss from :func:`softseg.dispatch.fused_region_loss`, or None where only the torch tail applies.

    None where the Triton kernels don't take the input (off CUDA, so no check runs twice there), for
    ``reduction="none"``, ``distributed=True`` (the statistics are summed over ranks between the two
    halves) and a single channel without background. The options are validated by the caller.
    """
    if not dispatch.triton_applies(input) or torch.compiler.is_compiling() or reduction == "none" or distributed:
        return None
    if not include_background and input.shape[1] < 2:  # the torch tail raises the error for it
        return None
    first_class = 0 if include_background else 1
    class_weight = check_weight(
        weight, input.shape[1] - first_class, include_background=include_background, device=input.device
    )
    if class_weight is not None:
        class_weight = class_weight.to(device=input.device, dtype=torch.float32).contiguous()
    options = RegionLossOptions(
        alpha=alpha, beta=beta, smooth=smooth, gamma=gamma, log_loss=log_loss,
        levels=tuple(parse_aggregation(aggregation).items()), first_class=first_class,
        class_weight=class_weight, present=active_classes == "present", threshold=presence_threshold,
        sum_reduction=reduction == "sum", lambda_region=lambda_region, lambda_ce=lambda_ce,
    )
    ce_count = None if ce_count is None else ce_count.to(torch.float32).reshape(())

    def differentiable_loss(stats: RegionStatistics, ce_sums: Tensor | None) -> Tensor:
        # The same loss in torch operations, for double backward through the kernels (create_graph=True).
        region = loss_from_statistics(
            stats, alpha=alpha, beta=beta, smooth=smooth, gamma=gamma, log_loss=log_loss, weight=class_weight,
            include_background=include_background, aggregation=aggregation, active_classes=active_classes,
            presence_threshold=presence_threshold, reduction=reduction,
        )
        if ce_sums is None:
            return lambda_region * region
        return lambda_region * region + lambda_ce * torch.where(ce_count > 0, ce_sums.sum() / ce_count.clamp_min(1), 0)

    return dispatch.fused_region_loss(
        input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask, options=options,
        ce_count=ce_count, differentiable_loss=differentiable_loss,
    )


def loss_from_statistics(
    stats: RegionStatistics,
    *,
    alpha: float,
    beta: float,
    smooth: float,
    gamma: float,
    log_loss: bool,
    weight: Tensor | Sequence[float] | None,
    include_background: bool,
    aggregation: Aggregation,
    active_classes: str,
    presence_threshold: float,
    reduction: str,
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""The second half of :func:`tversky_loss`: statistics (B, C) to the aggregated loss.

    .. math::

        \ell = \mathrm{aggregate}_{b, c}\Big(\big(1 - \tfrac{tp + s}{tp + \alpha fp + \beta fn + s}\big)^\gamma\Big)

    Shared with the compound losses (:mod:`softseg.losses.compound`), which compute the statistics
    together with the cross-entropy.

    Convention:
        ``stats`` from :func:`softseg.statistics.logit_statistics` or ``region_statistics``, (B, C) each;
        the options as in :func:`tversky_loss`, already validated by the caller (``weight`` is checked
        here, against the scored classes).

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v]]) for v in (1.2, 0.2, 0.8, 1.0)))
        >>> loss_from_statistics(stats, alpha=1.0, beta=1.0, smooth=0.0, gamma=1.0, log_loss=False,
        ...     weight=None, include_background=True, aggregation="global", active_classes="all",
        ...     presence_threshold=0.01, reduction="mean")
        tensor(0.4545)
    """
    stats = scored_statistics(
        stats, include_background=include_background, aggregation=aggregation, distributed=distributed,
        process_group=process_group,
    )
    weight = check_weight(weight, stats.tp.shape[1], include_background=include_background, device=stats.tp.device)

    def entry_loss(entry_stats: RegionStatistics) -> Tensor:
        index = tversky_index(entry_stats, alpha=alpha, beta=beta, smooth=smooth)
        loss = -torch.log(index.clamp_min(LOG_EPS)) if log_loss else 1 - index
        return power(loss, gamma)

    return aggregate(
        stats,
        entry_loss,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        weight=weight,
        reduction=reduction,
    )


def scored_statistics(
    stats: RegionStatistics,
    *,
    include_background: bool,
    aggregation: Aggregation,
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> RegionStatistics:
    """The statistics a loss scores: class 0 dropped unless ``include_background``, then summed over ranks.

    Shared by every loss on the statistics engine (:func:`loss_from_statistics`, the generalized Dice and
    MCC losses).

    Convention:
        ``stats`` (B, C) each; returns (B, C) or (B, C - 1) rows, or with ``distributed=True`` what
        :func:`softseg.distributed.sync_statistics` returns for the levels of ``aggregation`` (pooled (1, C)
        for ``"global"``, the rows of every rank otherwise). A single channel with
        ``include_background=False`` is a ``ValueError``.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[1.0, 2.0]]) for _ in range(4)))
        >>> scored_statistics(stats, include_background=False, aggregation="global").tp
        tensor([[2.]])
    """
    if not include_background:
        if stats.tp.shape[1] < 2:
            raise ValueError(
                "include_background=False drops class 0, but input has a single channel; "
                "keep include_background=True for binary segmentation"
            )
        stats = RegionStatistics(*(s[:, 1:] for s in stats))
    if distributed:
        stats = sync_statistics(stats, levels=parse_aggregation(aggregation), process_group=process_group)
    return stats


_FIXED_BY_DICE = "dice_loss fixes alpha = beta = 1/2 (tversky_loss sets them)"
_FIXED_BY_JACCARD = "jaccard_loss fixes alpha = beta = 1 (tversky_loss sets them)"


@explain_unexpected_keywords({"alpha": _FIXED_BY_DICE, "beta": _FIXED_BY_DICE})
def dice_loss(
    input: Tensor,
    target: Tensor,
    *,
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
    reduction: Reduction = "mean",
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""Soft-label-correct Dice loss (Dice semimetric loss): :func:`tversky_loss` with alpha = beta = 1/2.

    .. math::

        \ell_c = 1 - \frac{2\,tp_c + 2s}{2\,tp_c + fp_c + fn_c + 2s}
               = 1 - \frac{2\,tp_c + 2s}{\|x_c\|_1 + \|y_c\|_1 + 2s}
               = \frac{\|x - y\|_1}{\|x\|_1 + \|y\|_1}\quad (s = 0,\ \text{norm } 1)

    ``smooth`` s enters the Tversky form (tp + s) / (tp + fp/2 + fn/2 + s), so the textbook Dice
    (2 tp + e) / (|x| + |y| + e) has e = 2 s: ``smooth=s`` here is MONAI's
    ``DiceLoss(smooth_nr=2 * s, smooth_dr=2 * s)`` (MONAI's default 1e-5 is ``smooth=5e-6``) and smp's
    ``DiceLoss(smooth=2 * s)`` (smp's ``eps`` floors the denominator instead; softseg needs no floor: an
    empty class gives 0). The loss at a soft target stays 0 for every s.

    Convention:
        As :func:`tversky_loss`: logits (B, C, \*spatial), any number of spatial dims; class-index targets
        (B, \*spatial) or (B, 1, \*spatial), or class probabilities (B, C, \*spatial) in [0, 1];
        ``activation`` softmax (default, over C), sigmoid or none; ignored pixels through
        ``ignore_index``/``mask`` leave every sum; float32 sums; an empty class gives 0 with a finite
        gradient; ``aggregation``, ``active_classes``, ``weight``, ``reduction``, ``distributed`` as
        there. Every option is keyword-only; ``alpha`` and ``beta`` are fixed.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0], [-2.0, 1.0]]])   # (B=1, C=2, N=2)
        >>> labels = torch.tensor([[0, 1]])
        >>> dice_loss(logits, labels)
        tensor(0.0688)
        >>> soft = torch.tensor([[[0.5, 0.0], [0.5, 1.0]]])
        >>> dice_loss(soft, soft, activation="none")            # zero exactly at the soft target
        tensor(0.)
        >>> x, y = torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> dice_loss(x, y, activation="none", smooth=0.5)       # 1 - (2.4 + 1) / (1.4 + 2.0 + 1)
        tensor(0.2273)
    """
    return tversky_loss(alpha=0.5, beta=0.5, **locals())  # locals(): every argument above, unchanged


@explain_unexpected_keywords({"alpha": _FIXED_BY_JACCARD, "beta": _FIXED_BY_JACCARD})
def jaccard_loss(
    input: Tensor,
    target: Tensor,
    *,
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
    reduction: Reduction = "mean",
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""Soft-label-correct Jaccard (IoU) loss (Jaccard metric loss): :func:`tversky_loss` with alpha = beta = 1.

    .. math::

        \ell_c = 1 - \frac{tp_c + s}{tp_c + fp_c + fn_c + s}
               = 1 - \frac{\sum_i \min(x_i, y_i)}{\sum_i \max(x_i, y_i)}\quad (s = 0,\ \text{norm } 1)

    A metric on [0, 1]^n (symmetric, triangle inequality); equals 2 D / (1 + D) with D the Dice loss.
    ``smooth`` s is the textbook (I + s) / (U + s): smp's ``JaccardLoss(smooth=s)``, MONAI's
    ``DiceLoss(jaccard=True, smooth_nr=2 * s, smooth_dr=2 * s)``.

    Convention:
        As :func:`tversky_loss` (logits (B, C, \*spatial); index or probability targets; softmax by
        default; ``ignore_index``/``mask``; float32 sums; empty classes give 0; keyword-only options;
        ``alpha`` and ``beta`` fixed).

    Example:
        >>> x = torch.tensor([[[0.2, 0.7, 0.5]]])
        >>> y = torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> jaccard_loss(x, y, activation="none")
        tensor(0.4545)
        >>> jaccard_loss(x, y, activation="none", log_loss=True)
        tensor(0.6061)
    """
    return tversky_loss(alpha=1.0, beta=1.0, **locals())  # locals(): every argument above, unchanged


def _check_options(
    *,
    alpha: float,
    beta: float,
    activation: str,
    smooth: float,
    norm: int,
    gamma: float,
    log_loss: bool,
    include_background: bool,
    aggregation: Aggregation,
    active_classes: str,
    presence_threshold: float,
    ignore_index: int | None,
    reduction: str,
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> tuple[float, float, float, float]:
    """Validate every option that does not depend on the data; returns alpha, beta, smooth, gamma as floats."""
    alpha = check_number("alpha", alpha, minimum=0.0)
    beta = check_number("beta", beta, minimum=0.0)
    if alpha + beta <= 0:
        raise ValueError(f"alpha and beta must not both be 0 (the index would be 1 everywhere); got {alpha}, {beta}")
    smooth = check_number("smooth", smooth, minimum=0.0)
    gamma = check_number("gamma", gamma, minimum=0.0, strict=True)
    check_choice("activation", activation, ACTIVATIONS)
    if norm not in (1, 2) or isinstance(norm, bool):
        raise ValueError(f"norm must be 1 or 2; got {norm!r}")
    for name, flag in (("log_loss", log_loss), ("include_background", include_background)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool; got {type(flag).__name__}")
    parts = parse_aggregation(aggregation)
    check_choice("active_classes", active_classes, ACTIVE_CLASSES)
    check_number("presence_threshold", presence_threshold, minimum=0.0)
    check_choice("reduction", reduction, REDUCTIONS)
    if reduction == "none" and len(parts) > 1:
        raise ValueError(f"reduction='none' needs a single aggregation level; got the mix {parts}")
    check_ignore_index(ignore_index)
    check_distributed_options(distributed, process_group)
    return alpha, beta, smooth, gamma


class TverskyLoss(FunctionalLoss):
    r"""Module form of :func:`tversky_loss`; options are fixed at construction, keyword-only.

    .. math::

        \ell_c = \left(1 - \frac{tp_c + s}{tp_c + \alpha\, fp_c + \beta\, fn_c + s}\right)^\gamma

    Convention:
        As :func:`tversky_loss`. ``forward(input, target, mask=None)``. ``weight`` is stored as a buffer,
        so it follows ``.to(device)`` and is saved in the state dict.

    Example:
        >>> loss = TverskyLoss(alpha=0.3, beta=0.7, activation="none")
        >>> loss(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        tensor(0.3407)
    """

    loss_function = staticmethod(tversky_loss)

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        beta: float = 0.5,
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
        reduction: Reduction = "mean",
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        options = dict(
            alpha=alpha,
            beta=beta,
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
            reduction=reduction,
            distributed=distributed,
            process_group=process_group,
        )
        _check_options(**options)  # fail at construction, not at the first batch
        super().__init__(options, weight, include_background=include_background)


class DiceLoss(TverskyLoss):
    r"""Module form of :func:`dice_loss` (Tversky with alpha = beta = 1/2).

    .. math::

        \ell_c = 1 - \frac{2\,tp_c + 2s}{\|x_c\|_1 + \|y_c\|_1 + 2s}
               = \frac{\|x_c - y_c\|_1}{\|x_c\|_1 + \|y_c\|_1}\quad (s = 0,\ \text{norm } 1)

    ``smooth`` s enters the Tversky form, so the textbook (2 tp + e) / (|x| + |y| + e) has e = 2 s:
    ``DiceLoss(smooth=s)`` is MONAI's ``DiceLoss(smooth_nr=2 * s, smooth_dr=2 * s)`` and smp's
    ``DiceLoss(smooth=2 * s)`` (see :func:`dice_loss`).

    Convention:
        As :func:`dice_loss`: options keyword-only, fixed at construction (``alpha``, ``beta`` fixed);
        ``forward(input, target, mask=None)``. ``weight`` is a buffer: it follows ``.to(device)`` and is
        saved in the state dict.

    Example:
        >>> loss = DiceLoss(aggregation="image", active_classes="present")
        >>> logits = torch.zeros(2, 3, 4, 4)
        >>> labels = torch.zeros(2, 4, 4, dtype=torch.long)
        >>> loss(logits, labels)
        tensor(0.5000)
    """

    fixed_options = dict.fromkeys(("alpha", "beta"), "DiceLoss fixes alpha = beta = 1/2 (TverskyLoss sets them)")

    def __init__(
        self,
        *,
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
        reduction: Reduction = "mean",
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(alpha=0.5, beta=0.5, **init_options(locals()))


class JaccardLoss(TverskyLoss):
    r"""Module form of :func:`jaccard_loss` (Tversky with alpha = beta = 1).

    .. math::

        \ell_c = 1 - \frac{\sum_i \min(x_i, y_i)}{\sum_i \max(x_i, y_i)}\quad (s = 0,\ \text{norm } 1)

    Convention:
        As :func:`jaccard_loss`: options keyword-only, fixed at construction (``alpha``, ``beta`` fixed);
        ``forward(input, target, mask=None)``; ``weight`` a buffer.

    Example:
        >>> loss = JaccardLoss(activation="none")
        >>> loss(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        tensor(0.4545)
    """

    fixed_options = dict.fromkeys(("alpha", "beta"), "JaccardLoss fixes alpha = beta = 1 (TverskyLoss sets them)")

    def __init__(
        self,
        *,
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
        reduction: Reduction = "mean",
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(alpha=1.0, beta=1.0, **init_options(locals()))
