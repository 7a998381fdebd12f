r"""Drop-in replacements for ``segmentation_models_pytorch.losses`` (smp 0.6) on the softseg statistics engine.

Change ``from segmentation_models_pytorch.losses import DiceLoss`` to
``from softseg.compat.smp import DiceLoss``: the constructor arguments (same order), defaults, values and
gradients are smp 0.6.0's wherever smp accepts the input (compared with smp itself in float64 over the
options in ``tests/test_compat_smp.py``; smp's own ``tests/test_losses.py`` runs against this module in
``tests/test_compat_smp_peer_tests.py``). Dice, Jaccard and Tversky are smp's soft-label form (since
smp 0.4), which is softseg's norm-1 statistics: per class, with sums over the batch and all pixels
(smp's ``dims=(0, 2)``),

.. math::

    tp_c = \sum \min(x, y),\quad fp_c = |x| - tp_c,\quad fn_c = |y| - tp_c,\qquad
    T_c = \frac{tp_c + s}{\max(tp_c + \alpha\, fp_c + \beta\, fn_c + s,\ \epsilon)}

    \ell_c = [\,|y_c| > 0\,]\,(1 - T_c)\ \text{or}\ [\,|y_c| > 0\,]\,(-\log \max(T_c, \epsilon)),\qquad
    \ell = \frac{\sum_{c \in \text{classes}} w_c\, \ell_c}{\sum_{c \in \text{classes}} w_c}

Dice is alpha = beta = 1/2, Jaccard alpha = beta = 1, ``smooth`` s is added once to tp and to the
denominator, and ``eps`` floors the denominator (it matters whenever a class's mass is below eps/beta).
A class absent from the target (|y_c| = 0) counts as a zero in the mean over all (selected) classes, as in
smp; softseg's own losses drop it instead (``active_classes="present"``). ``class_weights`` w (uniform by
default) weight the per-class losses.

Modes (smp's): ``"binary"`` (one channel, sigmoid; target (B, 1, \*) or (B, \*) in [0, 1]), ``"multiclass"``
(softmax over C; target class indices (B, \*)), ``"multilabel"`` (sigmoid per channel; target (B, C, \*) in
[0, 1]). Improvements over smp, each listed in the README ("Coming from MONAI or smp"):

- multiclass mode accepts soft targets, class probabilities (B, C, \*) of a float dtype (smp one-hot encodes
  the target and so rejects them);
- index targets are never one-hot encoded (gather and scatter_add in the engine);
- bad input raises ValueError/TypeError with a clear message (smp uses ``assert``; shape mismatches raise
  :class:`~softseg.compat._arguments.ShapeMismatchError`, both a ValueError and an AssertionError);
- ``from_logits=False`` checks that the predictions are probabilities in [0, 1];
- an empty batch or an empty set of counted pixels gives 0, not NaN; a NaN or inf logit at an ignored
  pixel reaches neither the value nor the gradient; SoftCrossEntropyLoss works with ``smooth_factor=None``.
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
    check_device,
    check_ignore_index,
    check_labels,
    check_number,
    check_number_sequence,
    check_tensor,
    check_unit_interval,
    check_weight_values,
    not_ignored,
)
from softseg.compat._arguments import (
    ShapeMismatchError,
    check_flag,
    check_index_list,
    class_weights_on,
    exclude,
    mean_or_zero,
    missing_peer_class,
)
from softseg.distributed import check_distributed_options, sync_statistics
from softseg.losses.focal import binary_focal_terms, focal_modulation
from softseg.losses.mcc import true_negatives
from softseg.scores import matthews_correlation, power
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

# Classes of smp.losses outside the soft-label family: importing one says where to get it.
_ELSEWHERE = {
    "LovaszLoss": "the Lovasz extension of the Jaccard index, built on sorted errors of hard labels",
}


def __getattr__(name: str) -> object:
    raise missing_peer_class(__name__, name, _ELSEWHERE, "segmentation_models_pytorch.losses")


# ---- arguments and inputs ---------------------------------------------------------------------------------


def _check_pair(y_pred: object, y_true: object, mode: str) -> tuple[Tensor, Tensor]:
    y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
    check_device("y_true", y_true, y_pred.device, reference="y_pred")
    if not y_pred.is_floating_point():
        raise TypeError(f"y_pred must hold floating-point logits or probabilities; got dtype {y_pred.dtype}")
    if y_true.is_complex():
        raise TypeError(f"y_true must be real; got dtype {y_true.dtype}")
    if y_pred.ndim < 2 or y_true.ndim < 1 or y_true.shape[0] != y_pred.shape[0]:
        raise ShapeMismatchError(
            "y_pred (B, C, *spatial) and y_true must share the batch size; "
            f"got {tuple(y_pred.shape)} and {tuple(y_true.shape)}"
        )
    if mode == BINARY_MODE and y_true.numel() != y_pred.numel():
        raise ShapeMismatchError(
            f"mode='binary' expects y_true with as many elements as y_pred {tuple(y_pred.shape)}, such as "
            f"(B, 1, *spatial) or (B, *spatial); got {tuple(y_true.shape)}"
        )
    if mode == MULTILABEL_MODE and tuple(y_true.shape) != tuple(y_pred.shape):
        raise ShapeMismatchError(
            f"mode='multilabel' expects y_true of y_pred's shape {tuple(y_pred.shape)}; got {tuple(y_true.shape)}"
        )
    return y_pred, y_true


def _is_soft_multiclass(y_pred: Tensor, y_true: Tensor) -> bool:
    return y_true.is_floating_point() and tuple(y_true.shape) == tuple(y_pred.shape)


def _check_no_ignore_index(ignore_index: int | None) -> None:
    """Soft multiclass targets have no label value that could be ignored."""
    if ignore_index is not None:
        raise ValueError("ignore_index applies to class-index targets; got soft targets of y_pred's shape")


def _multiclass_labels(y_pred: Tensor, y_true: Tensor) -> Tensor:
    """Class indices of shape (B, \\*spatial) for multiclass mode (smp reshapes anything with B x N entries)."""
    pixels = y_pred.shape[0] * math.prod(y_pred.shape[2:])
    if y_true.numel() != pixels:
        raise ShapeMismatchError(
            f"mode='multiclass' expects class indices (B, *spatial) or class probabilities of y_pred's shape "
            f"{tuple(y_pred.shape)}; got y_true of shape {tuple(y_true.shape)}"
        )
    if y_true.is_floating_point() or y_true.dtype == torch.bool:
        raise TypeError(
            f"mode='multiclass' expects class indices of an integer dtype or class probabilities of y_pred's "
            f"shape; got y_true of dtype {y_true.dtype} and shape {tuple(y_true.shape)}. Float labels are not "
            "truncated: convert them with .long() if they are indices"
        )
    return y_true.reshape(y_pred.shape[:1] + y_pred.shape[2:])


def _class_weights(class_weights: object, mode: str) -> Tensor | None:
    """smp's class_weights: one non-negative weight per class, not for binary mode (a plain attribute, as in
    smp, so it follows the input's device)."""
    if class_weights is None:
        return None
    if mode == BINARY_MODE:
        raise ValueError("class_weights are not supported with mode='binary' (one channel); got class_weights")
    weights = check_number_sequence("class_weights", class_weights, minimum=0.0)
    if not any(weights):
        raise ValueError(f"class_weights must have one non-negative weight per class, not all 0; got {weights}")
    return torch.tensor(weights, dtype=torch.float64)


def _check_weight_count(weights: Tensor, channels: int) -> None:
    check_weight_values("class_weights", weights)  # at every call: the tensor may have been written since
    if weights.shape[0] != channels:
        raise ValueError(f"class_weights must have one weight per channel of y_pred, {channels}; got {weights.shape[0]}")


def _weighted_class_mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    """Mean over dim 0 (classes), or sum(w l) / sum(w) with class weights (on the host, summing to > 0)."""
    if weights is None:
        return losses.mean(0)
    total = float(weights.sum())
    weights = weights.to(device=losses.device, dtype=losses.dtype).reshape((-1,) + (1,) * (losses.ndim - 1))
    return (losses * weights).sum(0) / total


# ---- region losses ----------------------------------------------------------------------------------------


class DiceLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.DiceLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \frac{\sum_c w_c\,[\,|y_c| > 0\,] \left(1 - \frac{tp_c + s}{\max(tp_c + \tfrac12 fp_c
               + \tfrac12 fn_c + s,\ \epsilon)}\right)}{\sum_c w_c},\qquad tp_c = \sum \min(x, y)

    sums over the batch and all pixels (one score per class); ``log_loss`` uses -log max(T, eps); the sums
    over c run over ``classes`` (all channels by default).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None)``; see :mod:`softseg.compat.smp`.
        - ``y_pred``: (B, C, \*spatial) logits (``from_logits=True``: softmax over C in multiclass mode,
          sigmoid otherwise) or probabilities in [0, 1] (checked). ``y_true``: see the modes; multiclass
          also takes soft targets (B, C, \*spatial) of a float dtype (an improvement over smp).
        - ``ignore_index``: pixels (binary, multiclass) or elements (multilabel) with that target value leave
          every sum; their logits are selected out, so a NaN there changes nothing. ``classes``: the channels
          averaged (ints; negative ones count from the end, as in smp; not in binary mode).
          ``class_weights``: one non-negative weight per channel (not in binary mode); it follows the
          input's device, as in smp.
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
        class_weights: Sequence[float] | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        check_distributed_options(distributed, process_group)
        self.distributed, self.process_group = distributed, process_group
        self.mode = mode
        self.class_weights = _class_weights(class_weights, mode)
        if classes is not None:
            if mode == BINARY_MODE:
                raise ValueError(
                    "classes selects channels, which mode='binary' does not have; got classes with mode='binary'"
                )
            classes = check_index_list("classes", classes)
            if not classes:
                raise ValueError("classes must select at least one class; got an empty sequence")
        self.classes = classes
        self.log_loss = check_flag("log_loss", log_loss)
        self.from_logits = check_flag("from_logits", from_logits)
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
        batch = y_true.shape[0]
        if self.mode == MULTICLASS_MODE:
            # Explicit sizes, not -1: a rank's slice may be empty (B = 0) under distributed=True.
            flat = y_pred.reshape(batch, y_pred.shape[1], math.prod(y_pred.shape[2:]))
            if _is_soft_multiclass(y_pred, y_true):
                _check_no_ignore_index(self.ignore_index)
                return region_statistics(self._probabilities(flat), y_true.reshape(flat.shape))
            labels = _multiclass_labels(y_pred, y_true).reshape(batch, flat.shape[2])
            ignored = None if self.ignore_index is None else (~not_ignored(labels, self.ignore_index)).unsqueeze(1)
            probs = self._probabilities(exclude(flat, ignored))
            return region_statistics(probs, labels, ignore_index=self.ignore_index)
        channels = 1 if self.mode == BINARY_MODE else y_pred.shape[1]
        flat = y_pred.reshape(batch, channels, math.prod(y_pred.shape[1:]) // channels)
        target = y_true.reshape(flat.shape)
        kept = None if self.ignore_index is None else not_ignored(target, self.ignore_index)
        ignored = None if kept is None else ~kept
        probs = self._probabilities(exclude(flat, ignored))
        # The ignore label itself is no target value: selected out before the engine's [0, 1] check.
        target = exclude(target.to(probs.dtype), ignored)
        return region_statistics(probs, target, mask=kept)

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        stats = self.statistics(y_pred, y_true)
        if self.distributed:
            # smp pools over the batch: the sums of every rank's slice (softseg.distributed).
            stats = sync_statistics(stats, levels=("global",), process_group=self.process_group)
        tp, fp, fn, target_max = (s[0] for s in stats.sum_images())  # smp's dims=(0, 2): one entry per class
        denominator = (tp + self.alpha * fp + self.beta * fn + self.smooth).clamp_min(self.eps)
        # eps = 0 and an empty class: 0 / 0 in smp (NaN); the class is absent and counts 0 here.
        score = (tp + self.smooth) / torch.where(denominator > 0, denominator, 1)
        # A class absent from the target scores 1, so its loss is exactly 0 with a zero gradient.
        score = torch.where(target_max > 0, score, 1)
        per_class = -torch.log(score.clamp_min(self.eps)) if self.log_loss else 1 - score
        weights = self.class_weights
        if weights is not None:
            _check_weight_count(weights, per_class.shape[0])
        if self.classes is not None:
            channels = per_class.shape[0]
            if not all(-channels <= c < channels for c in self.classes):
                raise ValueError(f"classes must index the {channels} channels of y_pred; got {self.classes}")
            index = torch.tensor(self.classes, device=per_class.device)
            per_class = per_class[index]
            weights = None if weights is None else weights[index.cpu()]
            if weights is not None and not bool(weights.sum() > 0):
                raise ValueError(
                    f"class_weights of the selected classes {self.classes} are all 0; got {self.class_weights.tolist()}"
                )
        return power(_weighted_class_mean(per_class, weights), self.gamma)


class JaccardLoss(DiceLoss):
    r"""Drop-in for ``segmentation_models_pytorch.losses.JaccardLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \frac{\sum_c w_c\,[\,|y_c| > 0\,]\left(1 - \frac{tp_c + s}{\max(tp_c + fp_c + fn_c + s,\
               \epsilon)}\right)}{\sum_c w_c},\qquad tp_c + fp_c + fn_c = \sum \max(x, y)

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, ignore_index=None, eps=1e-7, class_weights=None)``, plus the keyword-only
          ``distributed``/``process_group`` of :class:`DiceLoss`.
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
        ignore_index: int | None = None,
        eps: float = 1e-7,
        class_weights: Sequence[float] | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights,
            distributed=distributed, process_group=process_group,
        )
        self.alpha, self.beta = 1.0, 1.0


class TverskyLoss(DiceLoss):
    r"""Drop-in for ``segmentation_models_pytorch.losses.TverskyLoss`` (smp 0.6), on the softseg engine.

    .. math::

        \ell = \Big(\frac{\sum_c w_c\,[\,|y_c| > 0\,]\big(1 - T_c\big)}{\sum_c w_c}\Big)^\gamma,\qquad
        T_c = \frac{tp_c + s}{\max(tp_c + \alpha\, fp_c + \beta\, fn_c + s,\ \epsilon)}

    ``gamma`` is applied to the mean over classes, as in smp (softseg's own ``gamma`` is per class).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, classes=None, log_loss=False, from_logits=True,
          smooth=0.0, ignore_index=None, eps=1e-7, alpha=0.5, beta=0.5, gamma=1.0, class_weights=None)``,
          plus the keyword-only ``distributed``/``process_group`` of :class:`DiceLoss`.
        - ``alpha``, ``beta`` >= 0; ``gamma`` > 0 (a loss of 0 gets a zero gradient for gamma < 1).
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
        class_weights: Sequence[float] | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            mode, classes, log_loss, from_logits, smooth, ignore_index, eps, class_weights,
            distributed=distributed, process_group=process_group,
        )
        self.alpha = check_number("alpha", alpha, minimum=0.0)
        self.beta = check_number("beta", beta, minimum=0.0)
        self.gamma = check_number("gamma", gamma, minimum=0.0, strict=True)


# ---- focal loss ------------------------------------------------------------------------------------------

FOCAL_REDUCTIONS = ("mean", "sum", "none", "batchwise_mean")


class FocalLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.FocalLoss`` (smp 0.6), on softseg's focal terms.

    .. math::

        \ell_i = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{BCE}(x_i, y_i),\qquad p_t = e^{-\mathrm{BCE}(x_i, y_i)},\quad
        \alpha_t = \alpha\, y + (1 - \alpha)(1 - y)

    a binary (sigmoid) focal term per element. Binary mode reduces over all counted elements. Multiclass
    (one-vs-rest, target [y = c]) and multilabel modes reduce each class over its elements, then average
    the classes (weighted by ``class_weights``): smp 0.6's rule. ``reduced_threshold`` r: (1 - p_t)^gamma
    becomes ((1 - p_t)/r)^gamma, and 1 where p_t < r; ``normalized``: divided by the sum of the focal
    factors (of the class, in multiclass and multilabel modes).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(mode, alpha=None, gamma=2.0, ignore_index=None,
          from_logits=True, eps=1e-7, reduction="mean", normalized=False, reduced_threshold=None,
          class_weights=None)``.
        - ``y_pred``: logits, or with ``from_logits=False`` probabilities in [0, 1] (checked), clamped to
          [eps, 1 - eps] and turned into logits as smp does: log(p / (1 - p)), or log p in multiclass mode.
        - ``reduction``: ``"mean"``, ``"sum"``, ``"batchwise_mean"`` (sum over the first dimension) or
          ``"none"``, as smp 0.6: in binary mode over the flattened (kept) elements, so ``"none"`` gives
          them all and ``"batchwise_mean"`` their sum; in multiclass and multilabel modes per class, then
          the mean of everything that is left (a scalar for every reduction). With ``class_weights`` the
          classes are weighted along the class dimension for every reduction (smp broadcasts them against
          the last dimension for ``"none"``/``"batchwise_mean"``, which fails or mixes up the weights).
        - ``ignore_index``: elements (binary), pixels (multiclass) or elements per class (multilabel, where
          smp fails) with that target value leave the loss; selected out, so a NaN logit there changes
          nothing. Multiclass mode also takes soft targets (B, C, \*) (target y_c per class; an improvement).
        - Nothing counted (an empty batch, every pixel ignored) gives 0 with ``"mean"`` (smp: NaN). Terms
          run in float32 (float64 for float64 input).

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
        from_logits: bool = True,
        eps: float = 1e-7,
        reduction: str = "mean",
        normalized: bool = False,
        reduced_threshold: float | None = None,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_choice("mode", mode, MODES)
        self.mode = mode
        self.alpha = None if alpha is None else check_number("alpha", alpha, minimum=0.0, maximum=1.0)
        self.gamma = check_number("gamma", gamma, minimum=0.0)
        self.ignore_index = check_ignore_index(ignore_index)
        self.from_logits = check_flag("from_logits", from_logits)
        self.eps = check_number("eps", eps, minimum=0.0)
        if not self.from_logits and not 0 < self.eps < 0.5:
            raise ValueError(f"eps must lie in (0, 0.5) with from_logits=False (probabilities are clamped to [eps, 1 - eps]); got {eps}")
        check_choice("reduction", reduction, FOCAL_REDUCTIONS)
        self.reduction = reduction
        self.normalized = check_flag("normalized", normalized)
        if reduced_threshold is not None:
            reduced_threshold = check_number("reduced_threshold", reduced_threshold, minimum=0.0, strict=True)
        self.reduced_threshold = reduced_threshold
        self.class_weights = _class_weights(class_weights, mode)

    def _logits(self, y_pred: Tensor) -> Tensor:
        """smp's logits from probabilities (from_logits=False): clamped, then log-odds (log p in multiclass)."""
        if self.from_logits:
            return y_pred
        check_unit_interval("y_pred (from_logits=False expects probabilities)", y_pred)
        probs = y_pred.clamp(self.eps, 1 - self.eps)
        return probs.log() if self.mode == MULTICLASS_MODE else torch.logit(probs)

    def _terms(self, logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """Elementwise focal losses and focal factors (smp's focal_loss_with_logits before its reduction)."""
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

    def _reduce(self, loss: Tensor, factor: Tensor, counted: Tensor | None = None) -> Tensor:
        """One class's (or binary mode's) reduction; ``counted`` marks the kept entries when they are not
        selected out (multilabel ignore_index), ``factor`` is already 0 elsewhere."""
        if self.normalized:
            loss = loss / factor.sum().clamp_min(1e-6)
        if self.reduction == "mean":
            if counted is None:
                return mean_or_zero(loss)
            count = counted.sum()
            return loss.sum() / torch.where(count > 0, count, 1)
        if self.reduction == "sum":
            return loss.sum()
        if self.reduction == "batchwise_mean":
            return loss.sum(0)
        return loss

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = _check_pair(y_pred, y_true, self.mode)
        acc = accumulation_dtype(y_pred.dtype)
        if self.mode == BINARY_MODE:
            logits, target = y_pred.reshape(-1), y_true.reshape(-1)
            if self.ignore_index is not None:
                kept = not_ignored(target, self.ignore_index)
                logits, target = logits[kept], target[kept]
            target = target.to(acc)
            check_unit_interval("y_true", target)
            return self._reduce(*self._terms(self._logits(logits).to(acc), target))

        channels = y_pred.shape[1]
        if self.class_weights is not None:
            _check_weight_count(self.class_weights, channels)
        counted = None
        per_class = y_pred.movedim(1, 0)  # (C, B, *spatial): smp's loop over y_pred[:, c]
        if self.mode == MULTICLASS_MODE and _is_soft_multiclass(y_pred, y_true):
            _check_no_ignore_index(self.ignore_index)
            target = y_true.movedim(1, 0).to(acc)
            check_unit_interval("y_true", target)
        elif self.mode == MULTICLASS_MODE:
            labels = _multiclass_labels(y_pred, y_true)
            kept = None if self.ignore_index is None else not_ignored(labels, self.ignore_index)
            check_labels(labels, channels, kept, self.ignore_index)
            if kept is not None:
                per_class, labels = per_class[:, kept], labels[kept]  # (C, K): smp selects the kept pixels
            classes = torch.arange(channels, device=labels.device).reshape((channels,) + (1,) * labels.ndim)
            target = (labels.unsqueeze(0) == classes).to(acc)
        else:
            target = y_true.movedim(1, 0)
            if self.ignore_index is not None:
                # smp fails here (a (B, C, ...) mask indexing (B, ...) tensors); elements leave their class.
                ignored = ~not_ignored(target, self.ignore_index)
                counted = (~ignored).flatten(1).sum(1, dtype=acc)
                per_class, target = exclude(per_class, ignored), exclude(target, ignored)
            target = target.to(acc)
            check_unit_interval("y_true", target)
        loss, factor = self._terms(self._logits(per_class).to(acc), target)
        if counted is not None:
            loss, factor = exclude(loss, ignored), exclude(factor, ignored)
        losses = torch.stack([
            self._reduce(loss[c], factor[c], None if counted is None else counted[c]) for c in range(channels)
        ])
        # smp 0.6 averages whatever each class's reduction left: a scalar for "none" and "batchwise_mean" too.
        return mean_or_zero(_weighted_class_mean(losses, self.class_weights))


# ---- cross entropies ---------------------------------------------------------------------------------------


class SoftBCEWithLogitsLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.SoftBCEWithLogitsLoss`` (smp 0.6).

    .. math::

        \ell_i = w_i\,\mathrm{BCE}_{pos\_weight}(x_i, \tilde y_i),\qquad \tilde y = (1 - y)\, f + y\,(1 - f)

    with f the ``smooth_factor`` (none by default); elements whose target equals ``ignore_index`` give 0.

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(weight=None, ignore_index=-100, reduction="mean",
          smooth_factor=None, pos_weight=None)``; ``weight`` and ``pos_weight`` are buffers broadcast as in
          ``F.binary_cross_entropy_with_logits`` and must be on the input's device (move the module).
        - ``y_pred`` logits and ``y_true`` targets in [0, 1] of the same shape (any real dtype).
        - ``reduction="mean"`` divides by all elements, the ignored ones included (smp's rule), and gives 0
          for an empty input (smp: NaN); ``"sum"``; ``"none"``: elementwise. Ignored elements give exactly 0
          and a zero gradient, whatever their logit (NaN included).

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
        self.smooth_factor = (
            None if smooth_factor is None else check_number("smooth_factor", smooth_factor, minimum=0.0, maximum=1.0)
        )
        for name, value in (("weight", weight), ("pos_weight", pos_weight)):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"{name} must be a tensor or None; got {type(value).__name__}")
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
        check_device("y_true", y_true, y_pred.device, reference="y_pred")
        for name in ("weight", "pos_weight"):
            if getattr(self, name) is not None:
                check_device(name, getattr(self, name), y_pred.device, reference="y_pred")
        if not y_pred.is_floating_point():
            raise TypeError(f"y_pred must hold floating-point logits; got dtype {y_pred.dtype}")
        if tuple(y_pred.shape) != tuple(y_true.shape):
            raise ShapeMismatchError(f"y_true must have y_pred's shape {tuple(y_pred.shape)}; got {tuple(y_true.shape)}")
        if y_true.is_complex():
            raise TypeError(f"y_true must be real; got dtype {y_true.dtype}")
        ignored = None if self.ignore_index is None else ~not_ignored(y_true, self.ignore_index)
        # The ignore label itself is no target value, and an ignored logit may be anything: both selected out.
        target = exclude(y_true.to(y_pred.dtype), ignored)
        check_unit_interval("y_true", target)
        if self.smooth_factor is not None:
            target = (1 - target) * self.smooth_factor + target * (1 - self.smooth_factor)
        loss = F.binary_cross_entropy_with_logits(
            exclude(y_pred, ignored), target, self.weight, pos_weight=self.pos_weight, reduction="none"
        )
        loss = exclude(loss, ignored)
        if self.reduction == "mean":
            return mean_or_zero(loss)
        return loss.sum() if self.reduction == "sum" else loss


class SoftCrossEntropyLoss(nn.Module):
    r"""Drop-in for ``segmentation_models_pytorch.losses.SoftCrossEntropyLoss`` (smp 0.6).

    .. math::

        \ell_i = -(1 - \epsilon) \sum_c y_{ic} \log p_{ic} - \frac{\epsilon}{C} \sum_c \log p_{ic}

    with p the softmax over ``dim`` and epsilon the ``smooth_factor``; for class indices y is their one-hot
    (only gathered, never built).

    Convention:
        - Arguments, order and defaults: smp 0.6's ``(reduction="mean", smooth_factor=None, ignore_index=-100,
          dim=1)``; ``dim`` must be a dimension of ``y_pred`` (negative ones count from the end).
        - ``y_true``: class indices (B, \*spatial) or (B, 1, \*spatial), integer dtype; or (an improvement)
          class probabilities of y_pred's shape, float dtype (``ignore_index`` is not used then).
        - ``reduction="mean"`` divides by all pixels, the ignored ones included (smp's rule), and gives 0
          for an empty batch (smp: NaN); ``"none"`` gives (B, \*spatial), or (B, 1, \*spatial) when
          ``ignore_index`` is set (smp's shapes). Ignored pixels give 0 and a zero gradient, whatever their
          logits (NaN included).
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
        self.smooth_factor = (
            0.0 if smooth_factor is None else check_number("smooth_factor", smooth_factor, minimum=0.0, maximum=1.0)
        )
        self.ignore_index = check_ignore_index(ignore_index)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int; got {type(dim).__name__}")
        self.dim = dim

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = check_tensor("y_pred", y_pred), check_tensor("y_true", y_true)
        check_device("y_true", y_true, y_pred.device, reference="y_pred")
        if not y_pred.is_floating_point():
            raise TypeError(f"y_pred must hold floating-point logits; got dtype {y_pred.dtype}")
        if not -y_pred.ndim <= self.dim < y_pred.ndim:
            raise ValueError(
                f"dim={self.dim} is not a dimension of y_pred of shape {tuple(y_pred.shape)}; expected a "
                f"dimension in [{-y_pred.ndim}, {y_pred.ndim - 1}]"
            )
        dim = self.dim % y_pred.ndim
        if _is_soft_multiclass(y_pred, y_true):
            check_unit_interval("y_true", y_true)
            log_probs = F.log_softmax(y_pred, dim=dim)
            nll = -(y_true * log_probs).sum(dim=dim)
            smooth = -log_probs.sum(dim=dim)
        else:
            if y_true.is_floating_point() or y_true.is_complex() or y_true.dtype == torch.bool:
                raise TypeError(
                    f"y_true must hold class indices of an integer dtype, or class probabilities of y_pred's shape "
                    f"{tuple(y_pred.shape)}; got dtype {y_true.dtype} and shape {tuple(y_true.shape)}"
                )
            labels = y_true.unsqueeze(dim) if y_true.ndim == y_pred.ndim - 1 else y_true
            expected = y_pred.shape[:dim] + (1,) + y_pred.shape[dim + 1 :]
            if tuple(labels.shape) != tuple(expected):
                raise ShapeMismatchError(
                    f"y_true must have shape {tuple(expected)} or without dim {dim}; got {tuple(y_true.shape)}"
                )
            labels = labels.long()
            ignored = None if self.ignore_index is None else ~not_ignored(labels, self.ignore_index)
            check_labels(labels, y_pred.shape[dim], None if ignored is None else ~ignored, self.ignore_index)
            # Ignored pixels are selected out of the logits: a NaN there stays out of value and gradient.
            log_probs = F.log_softmax(exclude(y_pred, ignored), dim=dim)
            nll = -log_probs.gather(dim, exclude(labels, ignored))
            smooth = -log_probs.sum(dim=dim, keepdim=True)
            if ignored is None:
                nll, smooth = nll.squeeze(dim), smooth.squeeze(dim)
            else:
                nll, smooth = exclude(nll, ignored), exclude(smooth, ignored)
        if self.reduction == "mean":
            nll, smooth = mean_or_zero(nll), mean_or_zero(smooth)
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
        self.soft_label = check_flag("soft_label", soft_label)
        check_distributed_options(distributed, process_group)
        self.distributed, self.process_group = distributed, process_group

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y_pred, y_true = _check_pair(y_pred, y_true, BINARY_MODE)
        check_unit_interval("y_pred", y_pred)
        check_unit_interval("y_true", y_true)
        batch, pixels = y_pred.shape[0], math.prod(y_pred.shape[1:])  # explicit: reshape(0, 1, -1) is ambiguous
        probs = y_pred.reshape(batch, 1, pixels)
        target = y_true.to(probs.dtype).reshape(batch, 1, pixels)
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
