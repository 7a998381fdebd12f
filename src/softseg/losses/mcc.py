r"""Matthews correlation coefficient (MCC) loss that is correct for soft labels: a function and a module.

The MCC loss (Abhishek and Hamarneh, ISBI 2021) also scores the true negatives. Its peers (smp's and
MONAI's ``MCCLoss``) use products, tn = sum (1 - x)(1 - y), which on a fractional target leave fp, fn > 0
at x = y, so the loss is not 0 there and not minimised there. softseg uses the min/max form of all four
counts (DESIGN.md section 7):

.. math::

    tp = \sum \min(x, y),\quad fp = \sum x - tp,\quad fn = \sum y - tp,\quad
    tn = \sum \min(1 - x, 1 - y) = n - tp - fp - fn

which are the classic products when y is binary, and give fp = fn = 0, hence MCC = 1, exactly at x = y.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from softseg._checks import ActiveClasses, Reduction, check_weight, explain_unexpected_keywords
from softseg.activation import Activation
from softseg.aggregation import Aggregation, aggregate
from softseg.losses._module import FunctionalLoss, init_options
from softseg.losses.region import _check_options, scored_statistics
from softseg.scores import matthews_correlation
from softseg.statistics import RegionStatistics, counted_pixels, logit_statistics


def true_negatives(stats: RegionStatistics, counts: Tensor) -> Tensor:
    r"""The true negatives of every entry: tn = n - tp - fp - fn, from the statistics and the pixel counts.

    .. math::

        tn = n - \sum \max(x, y) = \sum \min(1 - x, 1 - y)\ \text{(min/max statistics)},\qquad
        tn = \sum (1 - x)(1 - y)\ \text{(product statistics)}

    Convention:
        ``stats`` (rows, C) from the engine (:func:`softseg.statistics.region_statistics`, or
        :func:`softseg.statistics.product_statistics` for the peers' legacy form); ``counts`` n, the counted
        pixels (:func:`softseg.statistics.counted_pixels`), broadcastable to them. Clamped at 0 against
        rounding.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v]]) for v in (3.0, 1.0, 1.0, 1.0)))
        >>> true_negatives(stats, torch.tensor([[10.0]]))
        tensor([[5.]])
    """
    return (counts - stats.tp - stats.fp - stats.fn).clamp_min(0)


def mcc_from_statistics(stats: RegionStatistics, counts: Tensor) -> Tensor:
    r"""1 - MCC of every entry, from the region statistics and the number of counted pixels.

    .. math::

        \ell = 1 - \frac{tp\, tn - fp\, fn}{\sqrt{(tp + fp)(tp + fn)(tn + fp)(tn + fn)}},\qquad
        tn = n - tp - fp - fn

    Convention:
        ``stats`` (rows, C) and ``counts`` n broadcastable to it; the counts are divided out first (MCC is
        scale-free), so the product cannot overflow in float32. In [0, 2]; 0 where fp = fn = 0.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v]]) for v in (3.0, 1.0, 1.0, 1.0)))
        >>> mcc_from_statistics(stats, torch.tensor([[10.0]]))     # tn = 5: 1 - 14 / 24
        tensor([[0.4167]])
    """
    scale = torch.where(counts > 0, counts, 1)
    counts4 = (stats.tp, stats.fp, stats.fn, true_negatives(stats, counts))
    return 1 - matthews_correlation(*(count / scale for count in counts4))


@explain_unexpected_keywords()
def mcc_loss(
    input: Tensor,
    target: Tensor,
    *,
    activation: Activation = "softmax",
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
    r"""Soft-label-correct Matthews correlation coefficient loss, per class and aggregated like the Dice loss.

    .. math::

        \ell_c = 1 - \frac{tp_c\, tn_c - fp_c\, fn_c}{\sqrt{(tp_c + fp_c)(tp_c + fn_c)(tn_c + fp_c)(tn_c + fn_c)}}

    with tp = sum min(x, y), fp = sum x - tp, fn = sum y - tp and tn = sum min(1 - x, 1 - y) over the
    counted pixels. On binary targets these are the products of smp's and MONAI's ``MCCLoss`` (equal values);
    at a soft target fp = fn = 0 and the loss is 0, its minimum. Values lie in [0, 2].

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype (float32 sums); ``activation``
          ``"softmax"`` (default, C >= 2), ``"sigmoid"`` (multi-label, or binary with C = 1: smp's and
          MONAI's binary MCC) or ``"none"`` (probabilities in [0, 1]).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype, never expanded
          to a one-hot; or class probabilities (B, C, \*spatial) in [0, 1].
        - ``aggregation``, ``active_classes``, ``weight``, ``include_background``, ``reduction`` and
          ``distributed``: as :func:`softseg.tversky_loss` (global sums by default; ``"image"`` is MONAI's
          ``batch=False`` with ``reduction="none"`` giving its (B, C) scores).
        - Ignored pixels: ``ignore_index`` and ``mask`` (bool, True = counts) leave all four counts (tn
          counts only kept pixels).
        - Entries with fp = fn = 0 (an empty class predicted empty, or a perfect prediction) give 0. An
          entry whose MCC is undefined otherwise gives 1 (MCC 0, as smp and MONAI) with a zero gradient:
          a class absent from the target but predicted, however little (as the Dice loss of such a class),
          and a class covering every counted pixel of the target but not predicted everywhere (a softmax
          never is). Per image, a class that fills an image therefore scores 1: prefer global
          aggregation (the default), where that needs a whole batch of it. An empty batch gives 0.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0, 1.0], [-2.0, 1.0, 0.0, -1.0]]])   # (B=1, C=2, N=4)
        >>> mcc_loss(logits, torch.tensor([[0, 1, 1, 0]]))
        tensor(0.3593)
        >>> soft = torch.tensor([[[0.7, 0.2, 0.5, 1.0], [0.3, 0.8, 0.5, 0.0]]])
        >>> mcc_loss(soft, soft, activation="none")                 # zero at a soft target
        tensor(0.)
    """
    _check_mcc_options(
        activation=activation,
        include_background=include_background,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        ignore_index=ignore_index,
        reduction=reduction,
        distributed=distributed,
        process_group=process_group,
    )
    stats = logit_statistics(input, target, activation=activation, norm=1, ignore_index=ignore_index, mask=mask)
    counts = counted_pixels(input, target, ignore_index=ignore_index, mask=mask).expand_as(stats.tp)
    scored = dict(
        include_background=include_background, aggregation=aggregation, distributed=distributed,
        process_group=process_group,
    )
    stats = scored_statistics(stats, **scored)
    # The counts travel as statistics of their own: the same background drop and the same rank sync.
    counts = scored_statistics(RegionStatistics(counts, *(torch.zeros_like(counts),) * 3), **scored).tp
    weight = check_weight(weight, stats.tp.shape[1], include_background=include_background, device=stats.tp.device)

    def entry_loss(level_stats: RegionStatistics) -> Tensor:
        # aggregate() pools the statistics over the images for the global level: pool the counts alike.
        pooled = level_stats.tp.shape[0] != counts.shape[0]
        return mcc_from_statistics(level_stats, counts.sum(0, keepdim=True) if pooled else counts)

    return aggregate(
        stats,
        entry_loss,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        weight=weight,
        reduction=reduction,
    )


def _check_mcc_options(**options) -> None:
    _check_options(alpha=0.5, beta=0.5, smooth=0.0, norm=1, gamma=1.0, log_loss=False, **options)


class MCCLoss(FunctionalLoss):
    r"""Module form of :func:`mcc_loss`; options fixed at construction, keyword-only.

    .. math::

        \ell_c = 1 - \frac{tp_c\, tn_c - fp_c\, fn_c}{\sqrt{(tp_c + fp_c)(tp_c + fn_c)(tn_c + fp_c)(tn_c + fn_c)}}

    Convention:
        As :func:`mcc_loss`. ``forward(input, target, mask=None)``; ``weight`` is a buffer that follows
        ``.to(device)``.

    Example:
        >>> loss = MCCLoss(activation="sigmoid")
        >>> target = torch.tensor([[[0.0, 0.5, 1.0]]])                # (B=1, C=1, N=3), soft
        >>> loss(torch.tensor([[[-30.0, 0.0, 30.0]]]), target) < 1e-6
        tensor(True)
    """

    loss_function = staticmethod(mcc_loss)

    def __init__(
        self,
        *,
        activation: Activation = "softmax",
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
        options = init_options(locals())
        del options["weight"]  # a buffer of the module, not an option
        _check_mcc_options(**options)  # fail at construction, not at the first batch
        super().__init__(options, weight, include_background=include_background)
