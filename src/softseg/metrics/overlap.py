r"""Dice and IoU of hard (class-index) predictions: functional forms and torchmetrics classes.

Hard predictions go through a confusion matrix (a bincount of (image, target, prediction) triples),
never a dense one-hot; the counts come out as a :class:`softseg.RegionStatistics`, the scores from
:func:`softseg.scores.tversky_index`, the averaging from :func:`softseg.aggregation.aggregate`.

Empty cases (an (image, class) with tp + fp + fn = 0, i.e. absent from prediction and target):

- ``empty="skip"`` (default): not counted: it leaves the image's (image aggregation), the class's (class
  aggregation) or, if empty in the whole batch, the global mean. Like torchmetrics' ``dice_score``
  (NaN, then left out) and MONAI's ``ignore_empty=True`` when the prediction is empty too.
- ``empty="one"``: counted as a perfect 1, like MONAI's ``compute_dice(ignore_empty=False)``.
- A false positive on an empty target (fp > 0, tp = fn = 0) scores 0 and counts, unless
  ``active_classes="present"``: then only classes present in the target count (MONAI's
  ``ignore_empty=True`` exactly: an empty target is left out even under false positives).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from softseg._checks import check_device, check_ignore_index, check_labels, check_tensor, not_ignored
from softseg.aggregation import Aggregation
from softseg.metrics._region import TverskyScoreMetric, check_score_options, keep_classes, score_statistics
from softseg.statistics import RegionStatistics


def _check_num_classes(num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int; got {type(num_classes).__name__}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (binary: 2, background and foreground); got {num_classes}")
    return num_classes


def _check_index(name: str, value: object) -> Tensor:
    value = check_tensor(name, value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        hint = ""
        if value.is_floating_point():
            hint = (
                " Float values are not truncated; for probabilities (B, C, *spatial) pass probs.argmax(1), "
                "or use soft_dice_score / soft_jaccard_score"
            )
        raise TypeError(f"{name} must hold class indices of an integer dtype; got dtype {value.dtype}.{hint}")
    if value.ndim < 2:
        raise ValueError(
            f"{name} must have shape (B, *spatial) with at least one spatial dimension; got shape {tuple(value.shape)}"
        )
    return value


def confusion_statistics(
    preds: Tensor, target: Tensor, *, num_classes: int, ignore_index: int | None = None
) -> RegionStatistics:
    r"""Per-(image, class) pixel counts of hard predictions: tp, fp, fn and target presence, float64.

    With the confusion matrix M_b[t, p] (pixels of image b labelled t and predicted p):
    tp_c = M[c, c], fp_c = sum_t M[t, c] - tp_c, fn_c = sum_p M[c, p] - tp_c; ``target_max`` is 1 where
    the target holds class c, else 0. These equal :func:`softseg.region_statistics` of the one-hot
    prediction, without building it.

    Convention:
        - ``preds``, ``target``: class indices (B, \*spatial) of integer dtypes, the same shape, values in
          [0, ``num_classes``) on counted pixels.
        - ``ignore_index``: target pixels with this label leave every count (whatever the prediction).
        - Returns float64 statistics of shape (B, C) (exact counts up to 2^53).

    Example:
        >>> preds = torch.tensor([[0, 1, 1, 0]])
        >>> target = torch.tensor([[0, 1, 0, 0]])
        >>> stats = confusion_statistics(preds, target, num_classes=2)
        >>> stats.tp, stats.fp, stats.fn
        (tensor([[2., 1.]], dtype=torch.float64), tensor([[0., 1.]], dtype=torch.float64), tensor([[1., 0.]], dtype=torch.float64))
    """
    num_classes = _check_num_classes(num_classes)
    preds = _check_index("preds", preds)
    target = _check_index("target", target)
    check_device("target", target, preds.device, reference="preds")
    if preds.shape != target.shape:
        raise ValueError(
            f"preds and target must have the same shape (B, *spatial); got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    check_ignore_index(ignore_index)
    batch, pixels = preds.shape[0], math.prod(preds.shape[1:])  # explicit: reshape(0, -1) is ambiguous
    flat_preds, flat_target = preds.reshape(batch, pixels).long(), target.reshape(batch, pixels).long()
    valid = None if ignore_index is None else not_ignored(flat_target, ignore_index)
    check_labels(flat_target, num_classes, valid, ignore_index)
    try:
        check_labels(flat_preds, num_classes, valid, None)
    except ValueError as error:
        raise ValueError(str(error).replace("target holds", "preds holds", 1)) from None
    image = torch.arange(batch, device=preds.device).unsqueeze(1).expand_as(flat_target)
    index = (image * num_classes + flat_target) * num_classes + flat_preds
    if valid is not None:
        index = index[valid]
    confusion = torch.bincount(index.reshape(-1), minlength=batch * num_classes * num_classes)
    confusion = confusion.reshape(batch, num_classes, num_classes).to(torch.float64)
    tp = confusion.diagonal(dim1=1, dim2=2)
    target_count, pred_count = confusion.sum(2), confusion.sum(1)
    return RegionStatistics(tp, pred_count - tp, target_count - tp, (target_count > 0).to(torch.float64))


def _hard_score(
    preds: Tensor,
    target: Tensor,
    *,
    alpha: float,
    num_classes: int,
    aggregation: Aggregation,
    ignore_index: int | None,
    include_background: bool,
    active_classes: str,
    presence_threshold: float,
    empty: str,
    weight: Tensor | Sequence[float] | None,
    reduction: str,
    worst_q: float | None,
) -> Tensor:
    check_score_options(
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        reduction=reduction,
        worst_q=worst_q,
        include_background=include_background,
    )
    stats = confusion_statistics(preds, target, num_classes=num_classes, ignore_index=ignore_index)
    stats, weight = keep_classes(stats, include_background, weight)
    return score_statistics(
        stats,
        alpha=alpha,
        beta=alpha,
        aggregation=aggregation,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        weight=weight,
        reduction=reduction,
        worst_q=worst_q,
    )


def dice_score(
    preds: Tensor,
    target: Tensor,
    *,
    num_classes: int,
    aggregation: Aggregation = "global",
    ignore_index: int | None = None,
    include_background: bool = True,
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "skip",
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
    worst_q: float | None = None,
) -> Tensor:
    r"""Dice score of hard predictions: D_c = 2 tp_c / (2 tp_c + fp_c + fn_c), averaged over active classes.

    Convention:
        - ``preds``, ``target``: class indices (B, \*spatial), integer dtypes, same shape (binary:
          ``num_classes=2``). For probabilities pass ``probs.argmax(1)``, or use :func:`soft_dice_score`.
        - ``ignore_index``: target pixels with this label count nowhere.
        - ``aggregation``: ``"global"`` (counts pooled over the batch, one score per class, mean over
          classes: mDice^D), ``"image"`` (per image over its active classes, then over images), ``"class"``
          (per class over the images where it is active, then over classes), or a mix
          ``{"image": 0.5, "class": 0.5}``.
        - Active entries: ``active_classes="all"`` with ``empty="skip"`` (default) counts an (image, class)
          when prediction or target holds it; ``empty="one"`` counts every entry, empty ones as 1;
          ``active_classes="present"`` counts only classes the target holds (pixels > 0). A false positive
          on an empty target scores 0. Nothing active gives 0 (never NaN). See the module notes for how
          this maps to torchmetrics and MONAI.
        - ``worst_q`` (percent, image or class aggregation): mean over the worst ceil(q% n) images instead
          of all (per class for ``"class"``), the tail metrics of Wang et al. (NeurIPS 2023).
        - ``reduction``: ``"mean"`` (scalar), ``"sum"``, or ``"none"`` ((C,) global, (B, C) otherwise;
          inactive entries 0). ``weight``: per-class weights of the mean. Returns float64.

    Example:
        >>> preds = torch.tensor([[0, 1, 1, 0]])
        >>> target = torch.tensor([[0, 1, 0, 0]])
        >>> dice_score(preds, target, num_classes=2)          # (4/5 + 2/3) / 2
        tensor(0.7333, dtype=torch.float64)
        >>> dice_score(preds, target, num_classes=2, reduction="none")
        tensor([0.8000, 0.6667], dtype=torch.float64)
    """
    return _hard_score(
        preds,
        target,
        alpha=0.5,
        num_classes=num_classes,
        aggregation=aggregation,
        ignore_index=ignore_index,
        include_background=include_background,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        weight=weight,
        reduction=reduction,
        worst_q=worst_q,
    )


def iou_score(
    preds: Tensor,
    target: Tensor,
    *,
    num_classes: int,
    aggregation: Aggregation = "global",
    ignore_index: int | None = None,
    include_background: bool = True,
    active_classes: str = "all",
    presence_threshold: float = 0.01,
    empty: str = "skip",
    weight: Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
    worst_q: float | None = None,
) -> Tensor:
    r"""IoU (Jaccard) of hard predictions: J_c = tp_c / (tp_c + fp_c + fn_c), averaged over active classes.

    ``aggregation="global"`` is mIoU^D, ``"image"`` mIoU^I, ``"class"`` mIoU^C (Wang et al., NeurIPS 2023);
    ``worst_q`` gives their worst-q% tails.

    Convention:
        As :func:`dice_score`: class-index ``preds`` and ``target`` (B, \*spatial); ``ignore_index``; active
        entries by ``active_classes`` and ``empty``; nothing active gives 0; float64 result.

    Example:
        >>> preds = torch.tensor([[0, 1, 1, 0]])
        >>> target = torch.tensor([[0, 1, 0, 0]])
        >>> iou_score(preds, target, num_classes=2)           # (2/3 + 1/2) / 2
        tensor(0.5833, dtype=torch.float64)
    """
    return _hard_score(
        preds,
        target,
        alpha=1.0,
        num_classes=num_classes,
        aggregation=aggregation,
        ignore_index=ignore_index,
        include_background=include_background,
        active_classes=active_classes,
        presence_threshold=presence_threshold,
        empty=empty,
        weight=weight,
        reduction=reduction,
        worst_q=worst_q,
    )


class _HardScoreMetric(TverskyScoreMetric):
    def __init__(
        self,
        *,
        num_classes: int,
        aggregation: Aggregation = "global",
        ignore_index: int | None = None,
        include_background: bool = True,
        active_classes: str = "all",
        presence_threshold: float = 0.01,
        empty: str = "skip",
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
        worst_q: float | None = None,
        **kwargs,
    ) -> None:
        num_classes = _check_num_classes(num_classes)
        check_score_options(
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
            worst_q=worst_q,
            include_background=include_background,
        )
        check_ignore_index(ignore_index)
        super().__init__(state_shape=(num_classes,), aggregation=aggregation, **kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self._keep_classes(include_background, weight)
        self.options = dict(
            aggregation=aggregation,
            active_classes=active_classes,
            presence_threshold=presence_threshold,
            empty=empty,
            reduction=reduction,
            worst_q=worst_q,
        )

    def _statistics(self, preds: Tensor, target: Tensor) -> RegionStatistics:
        return confusion_statistics(preds, target, num_classes=self.num_classes, ignore_index=self.ignore_index)


class DiceScore(_HardScoreMetric):
    r"""Accumulating :func:`dice_score` of hard predictions: D_c = 2 tp_c / (2 tp_c + fp_c + fn_c).

    ``update(preds, target)`` with class indices (B, \*spatial); ``compute()`` gives the score over all
    updates (and all processes under torch.distributed).

    Convention:
        As :func:`dice_score`. States: global aggregation keeps float64 sums of tp, fp, fn per class
        (constant memory); image and class aggregation and ``worst_q`` keep 4 numbers per (image, class),
        growing with the number of images. Both are exact under multi-process sync.

    Example:
        >>> metric = DiceScore(num_classes=2)
        >>> metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
        >>> metric.update(torch.tensor([[1, 0]]), torch.tensor([[0, 0]]))
        >>> metric.compute()                                   # class 0: 2*2/(4+0+1), class 1: 2/(2+1)
        tensor(0.7333, dtype=torch.float64)
    """

    _alpha = 0.5


class IoUScore(_HardScoreMetric):
    r"""Accumulating :func:`iou_score` of hard predictions: J_c = tp_c / (tp_c + fp_c + fn_c).

    Convention:
        As :func:`iou_score` and :class:`DiceScore` (states, sync, empty cases).

    Example:
        >>> metric = IoUScore(num_classes=2, aggregation="image")
        >>> metric.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]))
        >>> metric.compute()                                   # image 1: (1 + 1)/2, image 2: (0 + 1/2)/2
        tensor(0.6250, dtype=torch.float64)
    """

    _alpha = 1.0
