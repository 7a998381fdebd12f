r"""Generalized Dice loss (Sudre et al., DLMIA 2017) that is correct for soft labels: a function and a module.

Every class gets a weight from the target's mass, w_c = 1 / |y_c|^2 (``"square"``), 1 / |y_c|
(``"simple"``) or 1 (``"uniform"``), and the classes are pooled inside one score:

.. math::

    \mathrm{GDL} = 1 - \frac{2 \sum_c w_c\, tp_c + s}{\sum_c w_c\, (2\, tp_c + fp_c + fn_c) + s}

On the statistics engine with tp = sum min(x, y) (norm 1), so it equals the classic generalized Dice
(MONAI's ``GeneralizedDiceLoss``) on hard labels and is 0 exactly at a soft target, where fp = fn = 0.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from softseg._checks import Reduction, check_choice, explain_unexpected_keywords
from softseg.activation import Activation
from softseg.aggregation import aggregate
from softseg.losses._module import FunctionalLoss, init_options
from softseg.losses.region import _check_options, scored_statistics
from softseg.scores import tversky_index
from softseg.statistics import RegionStatistics, logit_statistics

WEIGHTINGS = ("square", "simple", "uniform")
GENERALIZED_DICE_AGGREGATIONS = ("global", "image")
Weighting = Literal["square", "simple", "uniform"]


def generalized_dice_weights(target_mass: Tensor, weighting: str) -> Tensor:
    r"""Class weights of the generalized Dice from the target's mass per class, row by row.

    .. math::

        w_c = 1 / |y_c|^2\ (\text{square}),\quad 1 / |y_c|\ (\text{simple}),\quad 1\ (\text{uniform})

    A class absent from the target (|y_c| = 0) would get an infinite weight; it takes the largest weight
    of the present classes of the same row instead, as MONAI does, so false positives of an absent class
    cost as much as those of the rarest present class. A mass so small that its weight overflows (1 / |y|^2
    beyond the dtype's range) counts as absent too (MONAI's ``isinf`` rule). A row with no class present has
    all weights 0.

    Convention:
        ``target_mass``: (rows, C), >= 0, no gradient needed (it is detached); ``weighting`` one of
        ``"square"``, ``"simple"``, ``"uniform"`` (unchecked here). Returns (rows, C) of the same dtype.

    Example:
        >>> generalized_dice_weights(torch.tensor([[2.0, 4.0, 0.0]]), "simple")   # absent class: max(1/2, 1/4)
        tensor([[0.5000, 0.2500, 0.5000]])
    """
    mass = target_mass.detach()
    if weighting == "uniform":
        return torch.ones_like(mass)
    weights = torch.reciprocal(mass * mass if weighting == "square" else mass)
    finite = torch.isfinite(weights)
    weights = torch.where(finite, weights, 0)
    largest = weights.amax(1, keepdim=True) if weights.shape[1] else weights
    return torch.where(finite, weights, largest)


def generalized_dice_from_statistics(
    stats: RegionStatistics, weights: Tensor, *, smooth: float = 0.0, smooth_denominator: float | None = None
) -> Tensor:
    r"""The generalized Dice loss of every row of statistics, the classes pooled with ``weights``.

    .. math::

        \ell = 1 - \frac{2 \sum_c w_c\, tp_c + s}{\sum_c w_c\, (2\, tp_c + fp_c + fn_c) + s_d},\qquad s_d = s
        \text{ unless given}

    Convention:
        ``stats`` (rows, C) and ``weights`` (rows, C) (:func:`generalized_dice_weights`); returns (rows, 1).
        ``smooth_denominator`` exists for MONAI's separate ``smooth_nr``/``smooth_dr`` (with s_d != s the
        loss at the target is not 0). Nothing pooled (all weights or statistics 0, s_d = 0): 0, finite
        gradient.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[v, 1.0]]) for v in (1.0, 0.5, 0.5, 1.0)))
        >>> generalized_dice_from_statistics(stats, torch.tensor([[1.0, 0.0]]))    # 1 - 2 / 3
        tensor([[0.3333]])
    """
    pooled = RegionStatistics(*((s * weights).sum(1, keepdim=True) for s in stats[:3]), stats.target_max[:, :1])
    # 2 W tp + s over 2 W tp + W (fp + fn) + s_d is the Dice index of the weighted sums with s / 2, s_d / 2.
    half_denominator = None if smooth_denominator is None else smooth_denominator / 2
    return 1 - tversky_index(pooled, alpha=0.5, beta=0.5, smooth=smooth / 2, smooth_denominator=half_denominator)


@explain_unexpected_keywords()
def generalized_dice_loss(
    input: Tensor,
    target: Tensor,
    *,
    weighting: Weighting = "square",
    activation: Activation = "softmax",
    smooth: float = 0.0,
    norm: Literal[1, 2] = 1,
    include_background: bool = True,
    aggregation: Literal["global", "image"] = "global",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
    distributed: bool = False,
    process_group: torch.distributed.ProcessGroup | None = None,
) -> Tensor:
    r"""Soft-label-correct generalized Dice loss: class weights from the target's mass, classes pooled.

    .. math::

        \ell = 1 - \frac{2 \sum_c w_c\, tp_c + s}{\sum_c w_c\, (2\, tp_c + fp_c + fn_c) + s},\qquad
        w_c = |y_c|^{-2}\ (\text{square}),\ |y_c|^{-1}\ (\text{simple}),\ 1\ (\text{uniform})

    with tp = sum min(x, y), fp = sum x - tp, fn = sum y - tp and |y_c| = tp_c + fn_c = sum y_c (norm 1;
    norm 2: products and sum y^2). On binary targets this is the classic generalized Dice loss of Sudre et
    al. (MONAI's ``GeneralizedDiceLoss``); at a soft target it is 0 (fp = fn = 0), also with ``smooth``.

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype (float32 sums); ``activation``
          ``"softmax"`` (default, C >= 2), ``"sigmoid"`` (multi-label, or binary with C = 1) or ``"none"``
          (probabilities in [0, 1]).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype, never expanded to
          a one-hot; or class probabilities (B, C, \*spatial) in [0, 1].
        - ``aggregation``: ``"global"`` (default; sums over the batch, one score, MONAI's ``batch=True``)
          or ``"image"`` (one score per image, then their mean; MONAI's ``batch=False``). The weights come
          from the same sums.
        - Absent classes: a class with no target mass in the scored sums takes the largest weight of the
          present classes (MONAI's rule; :func:`generalized_dice_weights`). Nothing present and nothing
          predicted: 0, never NaN; an empty batch gives 0.
        - ``include_background=False`` drops class 0 from the score (the softmax still sees it).
        - Ignored pixels: ``ignore_index`` (index targets) and ``mask`` (bool, True = counts) leave every sum.
        - ``reduction``: ``"mean"``, ``"sum"``, or ``"none"``: (1,) for global, (B,) for image.
        - ``distributed=True``: the statistics of every rank are combined first (as :func:`softseg.tversky_loss`),
          so the weights and the score are those of the whole batch.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0, 1.0], [-2.0, 1.0, 0.0, -1.0]]])   # (B=1, C=2, N=4)
        >>> labels = torch.tensor([[0, 1, 1, 0]])
        >>> generalized_dice_loss(logits, labels)
        tensor(0.1891)
        >>> soft = torch.tensor([[[0.7, 0.2, 0.5, 1.0], [0.3, 0.8, 0.5, 0.0]]])
        >>> generalized_dice_loss(soft, soft, activation="none")      # zero at a soft target
        tensor(0.)
    """
    _check_generalized_dice_options(
        weighting=weighting,
        activation=activation,
        smooth=smooth,
        norm=norm,
        include_background=include_background,
        aggregation=aggregation,
        ignore_index=ignore_index,
        reduction=reduction,
        distributed=distributed,
        process_group=process_group,
    )
    stats = logit_statistics(input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask)
    stats = scored_statistics(
        stats, include_background=include_background, aggregation=aggregation, distributed=distributed,
        process_group=process_group,
    )

    def entry_loss(level_stats: RegionStatistics) -> Tensor:
        weights = generalized_dice_weights(level_stats.tp + level_stats.fn, weighting)
        return generalized_dice_from_statistics(level_stats, weights, smooth=smooth)

    loss = aggregate(stats, entry_loss, aggregation=aggregation, reduction=reduction)
    return loss[:, 0] if reduction == "none" and aggregation == "image" else loss


def _check_generalized_dice_options(*, weighting: str, aggregation: object, **options) -> None:
    check_choice("weighting", weighting, WEIGHTINGS)
    if not isinstance(aggregation, str):
        raise TypeError(
            f"aggregation of the generalized Dice must be 'global' or 'image' (the classes are pooled in one "
            f"score, so there is no per-class level to mix); got {aggregation!r}"
        )
    check_choice("aggregation", aggregation, GENERALIZED_DICE_AGGREGATIONS)
    _check_options(
        alpha=0.5, beta=0.5, gamma=1.0, log_loss=False, aggregation=aggregation, active_classes="all",
        presence_threshold=0.01, **options,
    )


class GeneralizedDiceLoss(FunctionalLoss):
    r"""Module form of :func:`generalized_dice_loss`; options fixed at construction, keyword-only.

    .. math::

        \ell = 1 - \frac{2 \sum_c w_c\, tp_c + s}{\sum_c w_c\, (2\, tp_c + fp_c + fn_c) + s}

    Convention:
        As :func:`generalized_dice_loss`. ``forward(input, target, mask=None)``.

    Example:
        >>> loss = GeneralizedDiceLoss(weighting="simple", aggregation="image")
        >>> soft = torch.tensor([[[0.7, 0.2, 0.5, 1.0], [0.3, 0.8, 0.5, 0.0]]])
        >>> loss(soft.log(), soft) < 1e-6
        tensor(True)
    """

    def __init__(
        self,
        *,
        weighting: Weighting = "square",
        activation: Activation = "softmax",
        smooth: float = 0.0,
        norm: Literal[1, 2] = 1,
        include_background: bool = True,
        aggregation: Literal["global", "image"] = "global",
        ignore_index: int | None = None,
        reduction: Reduction = "mean",
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        options = init_options(locals())
        _check_generalized_dice_options(**options)  # fail at construction, not at the first batch
        super().__init__(options, None)

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return generalized_dice_loss(input, target, mask=mask, **self.options)
