r"""Drop-in replacements for ``segmentation_models_pytorch.losses`` (smp 0.6) on the softseg statistics engine.

Change ``from segmentation_models_pytorch.losses import DiceLoss`` to
``from softseg.compat.smp import DiceLoss``: the constructor arguments (same order), defaults and values are
smp 0.6's. Dice, Jaccard and Tversky are smp's soft-label form (since smp 0.4), which is softseg's norm-1
statistics: per class, with sums over the batch and all pixels (smp's ``dims=(0, 2)``),

.. math::

    tp_c = \sum \min(x, y),\quad fp_c = |x| - tp_c,\quad fn_c = |y| - tp_c,\qquad
    T_c = \frac{tp_c + s}{tp_c + \alpha\, fp_c + \beta\, fn_c + s}

    \ell = \operatorname{mean}_{c \in \text{classes}} [\,|y_c| > 0\,]\, \ell_c,\qquad
    \ell_c = 1 - T_c \ \text{or}\ -\log \max(T_c, \epsilon)

Dice is alpha = beta = 1/2, Jaccard alpha = beta = 1 (smp 0.4+ computes both through ``soft_tversky_score``,
so ``smooth`` is added once to tp and to the denominator). A class absent from the target (|y_c| = 0) counts
as a zero in the mean over all (selected) classes, as in smp; softseg's own losses drop it instead
(``active_classes="present"``).

Modes (smp's): ``"binary"`` (one channel, sigmoid; target (B, 1, \*) or (B, \*) in [0, 1]), ``"multiclass"``
(softmax over C; target class indices (B, \*)), ``"multilabel"`` (sigmoid per channel; target (B, C, \*) in
[0, 1]). Improvements over smp, each documented in the class docstrings:

- multiclass mode accepts soft targets, class probabilities (B, C, \*) of a float dtype (smp one-hot encodes
  the target and so rejects them);
- index targets are never one-hot encoded (gather and scatter_add in the engine);
- bad input raises ValueError/TypeError with a clear message (smp uses ``assert``);
- ``from_logits=False`` checks that the predictions are probabilities in [0, 1];
- an empty set of counted pixels gives 0, not NaN; SoftCrossEntropyLoss works with ``smooth_factor=None``.

Assumptions (smp could not be installed beside torch 2.13 here): smp's ``eps`` clamps the denominator
of T from below; that only matters for an empty class, which is masked out of the loss anyway, so softseg's
scores (T = 1 for an empty class) give the same losses. The focal terms use smp's 1 - p_t = 1 - exp(-BCE).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softseg._checks import (
    REDUCTIONS,
    check_choice,
    check_ignore_index,
    check_labels,
    check_number,
    check_tensor,
    check_unit_interval,
)
from softseg.aggregation import aggregate
from softseg.distributed import check_distributed_options, sync_statistics
from softseg.losses.focal import binary_focal_terms, focal_modulation
from softseg.losses.mcc import true_negatives
from softseg.scores import matthews_correlation, tversky_index
from softseg.statistics import RegionStatistics, accumulation_dtype, product_statistics, region_statistics

__all__ = [
    "BINARY_MODE",
    "MULTICLASS_MODE",
    "MULTILABEL_MODE",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "MCCLoss",
    "SoftBCEWithLogitsLoss",
    "SoftCrossEntropyLoss",
    "TverskyLoss",
]

BINARY_MODE = "binary"
MULTICLASS_MODE = "multiclass"
MULTILABEL_MODE = "multilabel"
MODES = (BINARY_MODE, MULTICLASS_MODE, MULTILABEL_MODE)



def _check_fraction(name: str, value: object) -> float:
    value = check_number(name, value, minimum=0.0)
    if value > 1:
        raise ValueError(f"{name} must lie in [0, 1]; got {value}")
    return value


def _check_no_ignore_index(ignore_index: int | None) -> None:
    """Soft multiclass targets have no label value that could be ignored."""
    if ignore_index is not None:
        raise ValueError("ignore_index applies to class-index targets; got soft targets of y_pred's shape")


def _check_pair(y_pred: object, y_true: object, mode: str) -> tuple[Tensor, Tensor]:
    y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
    if not y_pred.is_floating_point():
        raise TypeError(f"y_pred must hold floating-point logits or probabilities; got dtype {y_pred.dtype}")
    if y_pred.ndim < 2 or y_true.ndim < 1 or y_true.shape[0] != y_pred.shape[0]:
        raise ValueError(
            "y_pred (B, C, *spatial) and y_true must share the batch size; "
            f"got {tuple(y_pred.shape)} and {tuple(y_true.shape)}"
        )
    if mode == BINARY_MODE and y_true.numel() != y_pred.numel():
        raise ValueError(
            f"mode='binary' expects y_true with as many elements as y_pred {tuple(y_pred.shape)}, such as "
            f"(B, 1, *spatial) or (B, *spatial); got {tuple(y_true.shape)}"
        )
    if mode == MULTILABEL_MODE and tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError(
            f"mode='multilabel' expects y_true of y_pred's shape {tuple(y_pred.shape)}; got {tuple(y_true.shape)}"
        )
    return y_pred, y_true


def _is_soft_multiclass(y_pred: Tensor, y_true: Tensor) -> bool:
    return y_true.is_floating_point() and tuple(y_true.shape) == tuple(y_pred.shape)


def _as_float_target(y_true: Tensor, like: Tensor) -> Tensor:
    if y_true.is_complex():
        raise TypeError(f"y_true must be real; got dtype {y_true.dtype}")
    return y_true.to(like.dtype)


class DiceLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.DiceLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \operatorname{mean}_{c} [\,|y_c| > 0\,]
               \left(1 - \frac{tp_c + s}{tp_c + \tfrac12 fp_c + \tfrac12 fn_c + s}\right),\qquad tp_c = \sum \min(x, y)

    sums over the batch and all pixels (one score per class); ``log_loss`` uses -log max(T, eps).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, ignore_index=None, eps=1e-7)``; see :mod:`softseg.compat.smp` for the modes.
        - ``y_pred``: (B, C, \*spatial) logits (``from_logits=True``: softmax over C in multiclass mode,
          sigmoid otherwise) or probabilities in [0, 1] (checked). ``y_true``: see the modes; multiclass
          also takes soft targets (B, C, \*spatial) of a float dtype (an improvement over smp).
        - ``ignore_index``: pixels (binary, multiclass) or elements (multilabel) with that target value leave
          every sum. ``classes``: the channels averaged (not in binary mode).
        - Classes absent from the target count as 0 in the mean, as in smp. Sums run in float32 (float64
          for float64 input). Errors: ValueError/TypeError instead of smp's assertions.
        - Keyword-only additions (not in smp): ``distributed=True`` sums the statistics over every rank of
          ``process_group`` (``None``: the default group), so under DDP the loss is the one of the whole
          global batch; see :mod:`softseg.distributed` for the gradient scaling.

    Example:
        >>> probs = torch.tensor([[[0.2, 0.7, 0.5]]])          # binary mode, probabilities
        >>> target = torch.tensor([[[0.5, 0.5, 1.0]]])         # soft target: 1 - 1.2 / 1.7
        >>> DiceLoss("binary", from_logits=False)(probs, target)
        tensor(0.2941)
        >>> DiceLoss("binary", from_logits=False)(target, target)     # zero at the target
        tensor(0.)
    """

    def __init__(
        self,
        mode: str,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: int | None = None,
        eps: float = 1e-7,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        check_distributed_options(distributed, process_group)
        self.distributed, self.process_group = distributed, process_group
        self.mode = mode
        if classes is not None:
            if mode == BINARY_MODE:
                raise ValueError(
                    "classes selects channels, which mode='binary' does not have; got classes with mode='binary'"
                )
            classes = [int(c) for c in classes]
        self.classes = classes
        self.log_loss = bool(log_loss)
        self.from_logits = bool(from_logits)
        self.smooth = check_number("smooth", smooth, minimum=0.0)
        self.ignore_index = check_ignore_index(ignore_index)
        self.eps = check_number("eps", eps, minimum=0.0)
        self.alpha, self.beta, self.gamma = 0.5, 0.5, 1.0

    def _probabilities(self, y_pred: Tensor) -> Tensor:
        if self.from_logits:
            return y_pred.softmax(1) if self.mode == MULTICLASS_MODE else y_pred.sigmoid()
        check_unit_interval("y_pred (from_logits=False expects probabilities)", y_pred)
        return y_pred

    def statistics(self, y_pred: Tensor, y_true: Tensor) -> RegionStatistics:
        """Per-(image, class) statistics of the probabilities, (B, C), with smp's handling of each mode."""
        y_pred, y_true = _check_pair(y_pred, y_true, self.mode)
        probs = self._probabilities(y_pred)
        batch = y_true.shape[0]
        if self.mode == MULTICLASS_MODE:
            # Explicit sizes, not -1: a rank's slice may be empty (B = 0) under distributed=True.
            probs = probs.reshape(batch, probs.shape[1], math.prod(probs.shape[2:]))
            if _is_soft_multiclass(y_pred, y_true):
                _check_no_ignore_index(self.ignore_index)
                return region_statistics(probs, y_true.reshape(probs.shape))
            if y_true.numel() != probs.shape[0] * probs.shape[2]:
                raise ValueError(
                    f"mode='multiclass' expects class indices (B, *spatial) or class probabilities of y_pred's shape "
                    f"{tuple(y_pred.shape)}; got y_true of shape {tuple(y_true.shape)}"
                )
            return region_statistics(probs, y_true.reshape(batch, probs.shape[2]), ignore_index=self.ignore_index)
        channels = 1 if self.mode == BINARY_MODE else probs.shape[1]
        probs = probs.reshape(batch, channels, math.prod(probs.shape[1:]) // channels)
        target = _as_float_target(y_true.reshape(probs.shape), probs)
        mask = None
        if self.ignore_index is not None:
            mask = y_true.reshape(probs.shape) != self.ignore_index
            target = target.masked_fill(~mask, 0)
        return region_statistics(probs, target, mask=mask)

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        stats = self.statistics(y_pred, y_true)
        if self.distributed:
            # smp pools over the batch: the sums of every rank's slice (softseg.distributed).
            stats = sync_statistics(stats, levels=("global",), process_group=self.process_group)

        def entry_loss(entry: RegionStatistics) -> Tensor:
            score = tversky_index(entry, alpha=self.alpha, beta=self.beta, smooth=self.smooth)
            return -torch.log(score.clamp_min(self.eps)) if self.log_loss else 1 - score

        # Global sums (smp's dims=(0, 2)); a class absent from the target is a zero in the mean.
        per_class = aggregate(stats, entry_loss, active_classes="present", presence_threshold=0.0, reduction="none")
        if self.classes is not None:
            if min(self.classes, default=0) < 0 or max(self.classes, default=0) >= per_class.shape[0]:
                raise ValueError(f"classes must index the {per_class.shape[0]} channels of y_pred; got {self.classes}")
            per_class = per_class[self.classes]
        return per_class.mean() ** self.gamma if self.gamma != 1 else per_class.mean()


class JaccardLoss(DiceLoss):
    r"""Drop-in for ``segmentation_models_pytorch.losses.JaccardLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \operatorname{mean}_{c} [\,|y_c| > 0\,]\left(1 - \frac{tp_c + s}{tp_c + fp_c + fn_c + s}\right)
             = \operatorname{mean}_{c} [\,|y_c| > 0\,]\left(1 - \frac{\sum \min(x, y) + s}{\sum \max(x, y) + s}\right)

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, eps=1e-7)``, plus ``ignore_index`` (last; smp's JaccardLoss has none), plus the
          keyword-only ``distributed``/``process_group`` of :class:`DiceLoss`.
        - As :class:`DiceLoss` otherwise.

    Example:
        >>> loss = JaccardLoss("binary", from_logits=False)
        >>> loss(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        tensor(0.4545)
    """

    def __init__(
        self,
        mode: str,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        eps: float = 1e-7,
        ignore_index: int | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            mode, classes, log_loss, from_logits, smooth, ignore_index, eps,
            distributed=distributed, process_group=process_group,
        )
        self.alpha, self.beta = 1.0, 1.0


class TverskyLoss(DiceLoss):
    r"""Drop-in for ``segmentation_models_pytorch.losses.TverskyLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \Big(\operatorname{mean}_{c} [\,|y_c| > 0\,]\big(1 - T_c\big)\Big)^\gamma,\qquad
        T_c = \frac{tp_c + s}{tp_c + \alpha\, fp_c + \beta\, fn_c + s}

    ``gamma`` is applied to the mean over classes, as in smp (softseg's own ``gamma`` is per class).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, ignore_index=None, eps=1e-7, alpha=0.5, beta=0.5, gamma=1.0)``, plus the
          keyword-only ``distributed``/``process_group`` of :class:`DiceLoss`.
        - As :class:`DiceLoss` otherwise.

    Example:
        >>> loss = TverskyLoss("binary", from_logits=False, alpha=0.3, beta=0.7)
        >>> loss(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
        tensor(0.3407)
    """

    def __init__(
        self,
        mode: str,
        classes: Sequence[int] | None = None,
        log_loss: bool = False,
        from_logits: bool = True,
        smooth: float = 0.0,
        ignore_index: int | None = None,
        eps: float = 1e-7,
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            mode, classes, log_loss, from_logits, smooth, ignore_index, eps,
            distributed=distributed, process_group=process_group,
        )
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        self.beta = check_number("beta", beta, minimum=0.0)
        self.gamma = check_number("gamma", gamma, minimum=0.0, strict=True)


FOCAL_REDUCTIONS = ("mean", "sum", "none", "batchwise_mean")


class FocalLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.FocalLoss`` (smp 0.6), on softseg's focal terms.

    .. math::

        \ell_i = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x_i, y_i),\qquad p_t = e^{-\mathrm{BCE}(x_i, y_i)},\quad
        \alpha_t = \alpha\, y + (1 - \alpha)(1 - y)

    a binary (sigmoid) focal term per element. Binary and multilabel modes reduce over all counted
    elements; multiclass mode is one-vs-rest: the reduced loss of every class (target [y = c]) summed over
    classes. ``reduced_threshold`` r: (1 - p_t)^gamma becomes ((1 - p_t)/r)^gamma, and 1 where p_t < r;
    ``normalized``: divided by the sum of the focal factors (per class in multiclass mode).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, alpha=None, gamma=2.0, ignore_index=None,
          reduction="mean", normalized=False, reduced_threshold=None)``; ``y_pred`` holds logits.
        - ``reduction``: ``"mean"``, ``"sum"``, ``"batchwise_mean"`` (sum over the first dimension) or
          ``"none"`` (the elements, flattened in binary/multilabel mode and with ``ignore_index``; (B, \*)
          summed over classes in multiclass mode), as smp.
        - Multiclass mode also takes soft targets (B, C, \*) (target y_c per class; an improvement).
        - Nothing counted gives 0 with ``"mean"`` (smp: NaN). Terms run in float32 (float64 for float64).

    Example:
        >>> FocalLoss("binary")(torch.zeros(1, 1, 2), torch.tensor([[[0.0, 1.0]]]))     # 0.25 * log 2
        tensor(0.1733)
    """

    def __init__(
        self,
        mode: str,
        alpha: float | None = None,
        gamma: float = 2.0,
        ignore_index: int | None = None,
        reduction: str = "mean",
        normalized: bool = False,
        reduced_threshold: float | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        self.mode = mode
        self.alpha = None if alpha is None else _check_fraction("alpha", alpha)
        self.gamma = check_number("gamma", gamma, minimum=0.0)
        self.ignore_index = check_ignore_index(ignore_index)
        check_choice("reduction", reduction, FOCAL_REDUCTIONS)
        self.reduction = reduction
        self.normalized = bool(normalized)
        if reduced_threshold is not None:
            reduced_threshold = check_number("reduced_threshold", reduced_threshold, minimum=0.0, strict=True)
        self.reduced_threshold = reduced_threshold

    def _terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise focal losses and focal factors (smp's focal_term)."""
        cross_entropy, one_minus_pt = binary_focal_terms(logits, target, modulation="cross_entropy")
        if self.reduced_threshold is None:
            factor = focal_modulation(one_minus_pt, self.gamma)
        else:
            reduced = focal_modulation(one_minus_pt / self.reduced_threshold, self.gamma)
            factor = torch.where(1 - one_minus_pt < self.reduced_threshold, torch.ones_like(reduced), reduced)
        loss = factor * cross_entropy
        if self.alpha is not None:
            loss = loss * (self.alpha * target + (1 - self.alpha) * (1 - target))
        return loss, factor

    def _reduce(self, loss: Tensor, count: Tensor | int) -> Tensor:
        if self.reduction == "mean":
            count = torch.as_tensor(count, device=loss.device)
            return torch.where(count > 0, loss.sum() / count.clamp_min(1), 0)
        if self.reduction == "sum":
            return loss.sum()
        if self.reduction == "batchwise_mean":
            return loss.sum(0)
        return loss

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = _check_pair(y_pred, y_true, self.mode)
        acc = accumulation_dtype(y_pred.dtype)
        logits = y_pred.to(acc)
        if self.mode != MULTICLASS_MODE:
            logits, target = logits.reshape(-1), y_true.reshape(-1)
            if self.ignore_index is not None:
                kept = target != self.ignore_index
                logits, target = logits[kept], target[kept]
            target = _as_float_target(target, logits)
            check_unit_interval("y_true", target)
            loss, factor = self._terms(logits, target)
            if self.normalized:
                loss = loss / factor.sum().clamp_min(1e-6)
            return self._reduce(loss, loss.numel())

        channels = y_pred.shape[1]
        if _is_soft_multiclass(y_pred, y_true):
            _check_no_ignore_index(self.ignore_index)
            check_unit_interval("y_true", y_true)
            dense, kept = y_true.to(acc), None
        else:
            labels = y_true.reshape(y_pred.shape[:1] + y_pred.shape[2:])
            if labels.is_floating_point():
                raise TypeError(
                    f"mode='multiclass' expects class indices of an integer dtype or class probabilities of y_pred's "
                    f"shape; got y_true of dtype {y_true.dtype} and shape {tuple(y_true.shape)}"
                )
            kept = None if self.ignore_index is None else labels != self.ignore_index
            check_labels(labels, channels, kept, self.ignore_index)
            classes = torch.arange(channels, device=y_pred.device).reshape((1, channels) + (1,) * (y_pred.ndim - 2))
            dense = (labels.unsqueeze(1) == classes).to(acc)
        loss, factor = self._terms(logits, dense)
        pixels = loss.numel() // channels
        if kept is not None:
            loss, factor = loss * kept.unsqueeze(1), factor * kept.unsqueeze(1)
            pixels = kept.sum()
        if self.normalized:
            per_class = factor.transpose(0, 1).reshape(channels, -1).sum(1).clamp_min(1e-6)
            loss = loss / per_class.reshape((1, channels) + (1,) * (loss.ndim - 2))
        if self.reduction in ("mean", "sum"):
            # Every class averages over the same counted pixels: the sum over classes of the means.
            return self._reduce(loss, pixels)
        per_pixel = loss.sum(1)
        return self._reduce(per_pixel if kept is None else per_pixel[kept], pixels)


class SoftBCEWithLogitsLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss`` (smp 0.6).

    .. math::

        \ell_i = w_i\,\mathrm{BCE}_{pos\_weight}(x_i, \tilde y_i),\qquad \tilde y = (1 - y)\, f + y\,(1 - f)

    with f the ``smooth_factor`` (none by default); elements whose target equals ``ignore_index`` give 0.

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(weight=None, ignore_index=-100, reduction="mean",
          smooth_factor=None, pos_weight=None)``; ``weight`` and ``pos_weight`` are buffers broadcast as in
          ``F.binary_cross_entropy_with_logits``.
        - ``y_pred`` logits and ``y_true`` targets in [0, 1] of the same shape (any dtype).
        - ``reduction="mean"`` divides by all elements, the ignored ones included (smp's rule); ``"sum"``;
          ``"none"``: elementwise. Ignored elements give exactly 0 and no gradient.

    Example:
        >>> SoftBCEWithLogitsLoss(smooth_factor=0.1)(torch.zeros(1, 1, 2), torch.tensor([[[0.0, 1.0]]]))
        tensor(0.6931)
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int | None = -100,
        reduction: str = "mean",
        smooth_factor: float | None = None,
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self.smooth_factor = None if smooth_factor is None else _check_fraction("smooth_factor", smooth_factor)
        for name, value in (("weight", weight), ("pos_weight", pos_weight)):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a tensor or None; got {type(value).__name__}")
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
        if tuple(y_pred.shape) != tuple(y_true.shape):
            raise ValueError(f"y_true must have y_pred's shape {tuple(y_pred.shape)}; got {tuple(y_true.shape)}")
        kept = None if self.ignore_index is None else y_true != self.ignore_index
        target = _as_float_target(y_true, y_pred)
        if kept is not None:
            target = target.masked_fill(~kept, 0)  # the ignore label itself is no target value
        check_unit_interval("y_true", target)
        if self.smooth_factor is not None:
            target = (1 - target) * self.smooth_factor + target * (1 - self.smooth_factor)
        loss = F.binary_cross_entropy_with_logits(
            y_pred, target, self.weight, pos_weight=self.pos_weight, reduction="none"
        )
        if kept is not None:
            loss = loss * kept
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss


class SoftCrossEntropyLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.SoftCrossEntropyLoss`` (smp 0.6).

    .. math::

        \ell_i = -(1 - \epsilon) \sum_c y_{ic} \log p_{ic} - \frac{\epsilon}{C} \sum_c \log p_{ic}

    with p the softmax over ``dim`` and epsilon the ``smooth_factor``; for class indices y is their one-hot
    (only gathered, never built).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(reduction="mean", smooth_factor=None, ignore_index=-100,
          dim=1)``.
        - ``y_true``: class indices (B, \*spatial) or (B, 1, \*spatial), integer dtype; or (an improvement)
          class probabilities of y_pred's shape, float dtype (``ignore_index`` is not used then).
        - ``reduction="mean"`` divides by all pixels, the ignored ones included (smp's rule); ``"none"``
          gives (B, \*spatial), or (B, 1, \*spatial) when ``ignore_index`` is set (smp's shapes).
        - ``smooth_factor=None`` means 0 (smp fails on it).

    Example:
        >>> logits = torch.zeros(1, 2, 3)
        >>> SoftCrossEntropyLoss(smooth_factor=0.1)(logits, torch.tensor([[0, 1, 1]]))     # log 2
        tensor(0.6931)
    """

    def __init__(
        self, reduction: str = "mean", smooth_factor: float | None = None, ignore_index: int | None = -100, dim: int = 1
    ) -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction
        self.smooth_factor = 0.0 if smooth_factor is None else check_number("smooth_factor", smooth_factor, minimum=0.0)
        if self.smooth_factor > 1:
            raise ValueError(f"smooth_factor must lie in [0, 1]; got {smooth_factor}")
        self.ignore_index = check_ignore_index(ignore_index)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int; got {type(dim).__name__}")
        self.dim = dim

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
        if not y_pred.is_floating_point():
            raise TypeError(f"y_pred must hold floating-point logits; got dtype {y_pred.dtype}")
        dim = self.dim % y_pred.ndim
        log_probs = F.log_softmax(y_pred, dim=dim)
        smooth = -log_probs.sum(dim=dim, keepdim=True)
        if _is_soft_multiclass(y_pred, y_true):
            check_unit_interval("y_true", y_true)
            nll = -(y_true * log_probs).sum(dim=dim, keepdim=True)
            nll, smooth = nll.squeeze(dim), smooth.squeeze(dim)
        else:
            if y_true.is_floating_point() or y_true.is_complex() or y_true.dtype == torch.bool:
                raise TypeError(
                    f"y_true must hold class indices of an integer dtype, or class probabilities of y_pred's shape "
                    f"{tuple(y_pred.shape)}; got dtype {y_true.dtype} and shape {tuple(y_true.shape)}"
                )
            labels = y_true.unsqueeze(dim) if y_true.ndim == y_pred.ndim - 1 else y_true
            expected = y_pred.shape[:dim] + (1,) + y_pred.shape[dim + 1 :]
            if tuple(labels.shape) != tuple(expected):
                raise ValueError(
                    f"y_true must have shape {tuple(expected)} or without dim {dim}; got {tuple(y_true.shape)}"
                )
            labels = labels.long()
            ignored = None if self.ignore_index is None else labels == self.ignore_index
            check_labels(labels, y_pred.shape[dim], None if ignored is None else ~ignored, self.ignore_index)
            if ignored is not None:
                labels = labels.masked_fill(ignored, 0)
            nll = -log_probs.gather(dim, labels)
            if ignored is None:
                nll, smooth = nll.squeeze(dim), smooth.squeeze(dim)
            else:
                nll, smooth = nll.masked_fill(ignored, 0.0), smooth.masked_fill(ignored, 0.0)
        if self.reduction == "mean":
            nll, smooth = nll.mean(), smooth.mean()
        elif self.reduction == "sum":
            nll, smooth = nll.sum(), smooth.sum()
        return (1 - self.smooth_factor) * nll + self.smooth_factor / y_pred.shape[dim] * smooth


class MCCLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.MCCLoss`` (smp 0.6), on :mod:`softseg.losses.mcc`.

    .. math::

        \ell = 1 - \frac{tp'\, tn' - fp'\, fn'}{\sqrt{(tp' + fp')(tp' + fn')(tn' + fp')(tn' + fn')}},\qquad
        tp' = tp + \epsilon,\ \dots,\quad tn = n - tp - fp - fn

    over the whole batch (smp's binary MCC: one score). tp, fp, fn in smp's product form
    (``soft_label=False``, its only form: tn = sum (1 - x)(1 - y)) or softseg's min/max form
    (``soft_label=True``, tn = sum min(1 - x, 1 - y)), which is 0 at a soft target up to ``eps``; equal on
    hard labels.

    Convention:
        - Arguments: smp 0.6's ``(eps=1e-5)``, then ``soft_label`` (not in smp) and the keyword-only
          ``distributed``, ``process_group`` (statistics summed over the process group, as the other losses).
        - ``y_pred``: probabilities in [0, 1] (checked; smp applies no activation), (B, \*spatial) or
          (B, 1, \*spatial); ``y_true``: targets in [0, 1] with as many elements.
        - Differences from smp: ``ValueError`` for values outside [0, 1] or mismatched sizes; with ``eps=0``
          a perfect prediction gives 0 instead of NaN; an empty batch gives 0.

    Example:
        >>> y_pred = torch.tensor([[0.9, 0.6, 0.2, 0.0]])
        >>> y_true = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
        >>> MCCLoss(eps=0.0)(y_pred, y_true)                    # products: tn = 2
        tensor(0.4124)
        >>> MCCLoss(eps=0.0, soft_label=True)(y_pred, y_true)   # min/max: tn = 2.2
        tensor(0.2035)
    """

    def __init__(
        self,
        eps: float = 1e-5,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.eps = check_number("eps", eps, minimum=0.0)
        if not isinstance(soft_label, bool):
            raise TypeError(f"soft_label must be a bool; got {type(soft_label).__name__}")
        self.soft_label = soft_label
        check_distributed_options(distributed, process_group)
        self.distributed, self.process_group = distributed, process_group

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = _check_pair(y_pred, y_true, BINARY_MODE)
        check_unit_interval("y_pred", y_pred)
        check_unit_interval("y_true", y_true)
        batch, pixels = y_pred.shape[0], math.prod(y_pred.shape[1:])  # explicit: reshape(0, 1, -1) is ambiguous
        probs = y_pred.reshape(batch, 1, pixels)
        target = _as_float_target(y_true, probs).reshape(batch, 1, pixels)
        statistics = region_statistics if self.soft_label else product_statistics
        rows = statistics(probs, target)
        counts = torch.full_like(rows.tp, float(probs.shape[2]))
        pooled = (rows, RegionStatistics(counts, *(torch.zeros_like(counts),) * 3))
        if self.distributed:
            pooled = tuple(sync_statistics(p, levels=("global",), process_group=self.process_group) for p in pooled)
        else:
            pooled = tuple(p.sum_images() for p in pooled)
        stats, counts = pooled[0], pooled[1].tp
        tn = true_negatives(stats, counts)
        score = matthews_correlation(*(count + self.eps for count in (stats.tp, stats.fp, stats.fn, tn)))
        return torch.where(counts > 0, 1 - score, 0).reshape(())  # an empty batch: 0, as softseg's losses
