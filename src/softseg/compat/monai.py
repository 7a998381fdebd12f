r"""Drop-in replacements for ``monai.losses`` (MONAI 1.6) on the softseg statistics engine.

Change ``from monai.losses import DiceLoss`` to ``from softseg.compat.monai import DiceLoss``: the
constructor arguments (same order), defaults, output values, output shapes for every reduction and the
warnings for single-channel input are MONAI 1.6's. With ``soft_label=False`` (MONAI's default) the legacy
product form is reproduced, so an existing training run gives the same numbers:

.. math::

    tp = \langle x, y\rangle,\quad fp = |x| - tp,\quad fn = |y| - tp \qquad (\texttt{soft\_label=False})

    tp = \textstyle\sum \min(x, y),\quad fp = |x| - tp,\quad fn = |y| - tp \qquad (\texttt{soft\_label=True})

    tp = \langle x, y\rangle,\quad fp = \|x\|^2 - tp,\quad fn = \|y\|^2 - tp \qquad (\texttt{squared\_pred=True})

All three come from :func:`softseg.statistics.region_statistics` (norm 1, norm 2, or norm 2's inner
product with norm 1's masses) and every score from :func:`softseg.scores.tversky_index`, with MONAI's
``smooth_nr``/``smooth_dr`` as its numerator and denominator smoothing.

Where MONAI is weak, these classes do better (each is listed in the class docstrings and in the README):

- ``soft_label`` on every compound loss (MONAI's DiceCELoss, DiceFocalLoss, GeneralizedDiceFocalLoss
  cannot pass it);
- integer or bool one-hot targets work with ``soft_label=True`` (MONAI crashes in ``vector_norm``);
- index targets with ``to_onehot_y=True`` are not expanded into a dense one-hot for the Dice, Tversky and
  generalised Dice terms (the focal terms are per (pixel, class), so they are dense anyway);
- bad input raises ValueError/TypeError with a clear message; a shape mismatch raises
  :class:`~softseg.compat._arguments.ShapeMismatchError`, both a ValueError and the AssertionError MONAI
  raises; float class indices are checked to be whole numbers instead of being truncated by ``.long()``;
  bool flags must be bools (``'False'`` is refused), Tversky and focal ``alpha`` must lie in [0, 1], weight
  sequences are checked entry by entry, and a target, mask or weight tensor on another device is named;
- an empty class with ``smooth_dr=0`` and an empty batch give loss 0 instead of NaN;
- a NaN or inf logit at a pixel left out by ``ignore_index`` or a mask is selected out before the activation:
  it reaches neither the value nor the gradient (MONAI multiplies it by 0, which gives NaN);
- MaskedDiceLoss with ``to_onehot_y=True`` leaves masked pixels out of every class (MONAI multiplies the
  labels by the mask, so masked pixels count as background pixels with a zero prediction).

Not supported: TorchScript (``torch.jit.script``). MONAI losses outside the soft-label overlap family
(GeneralizedWassersteinDiceLoss, HausdorffDTLoss, SoftclDiceLoss, SoftDiceclDiceLoss) are not mirrored;
importing one raises an ImportError that says to import it from ``monai.losses``.

Convention (all classes):
    - ``input``: (B, C, \*spatial) logits or probabilities; activation by ``sigmoid``/``softmax``/``other_act``
      as in MONAI (softmax with C = 1 warns and is skipped).
    - ``target``: (B, C, \*spatial) one-hot or soft labels (any real dtype, values in [0, 1]), or with
      ``to_onehot_y=True`` class indices (B, 1, \*spatial) (also (B, \*spatial)) of an integer dtype or a
      float dtype holding whole numbers.
    - ``ignore_index`` (DiceLoss, TverskyLoss, FocalLoss): as MONAI's ``create_ignore_mask``: label value
      for index targets; for one-hot targets a class index (pixels of that class leave every sum) or a
      sentinel outside [0, C) (all-zero pixels leave).
    - Sums and focal terms run in float32, float64 for float64 input (MONAI's focal loss casts to float32).
    - Keyword-only additions (not in MONAI) on every Dice, Tversky and generalised Dice loss, compound ones
      included: ``distributed=True`` combines the statistics of every rank of ``process_group`` (``None``:
      the default group) before scoring, so under DDP the loss is that of the whole global batch: pooled
      sums for ``batch=True``, the mean over all images of all ranks otherwise (``reduction="none"`` then
      has the rows of all ranks). The focal and cross-entropy terms stay local means. Gradient scaling:
      :mod:`softseg.distributed`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

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
    check_weight_values,
    not_ignored,
)
from softseg.compat._arguments import (
    ShapeMismatchError,
    check_flag,
    class_weights_on,
    exclude,
    mean_or_zero,
    missing_peer_class,
)
from softseg.distributed import check_distributed_options, sync_statistics
from softseg.losses.focal import binary_focal_terms, focal_modulation, softmax_focal_terms
from softseg.losses.generalized_dice import generalized_dice_from_statistics, generalized_dice_weights
from softseg.losses.mcc import true_negatives
from softseg.scores import matthews_correlation, tversky_index
from softseg.statistics import RegionStatistics, accumulation_dtype, product_statistics, region_statistics

__all__ = [
    "DiceCELoss",
    "DiceFocalLoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceFocalLoss",
    "GeneralizedDiceLoss",
    "MCCLoss",
    "MaskedDiceLoss",
    "TverskyLoss",
]

W_TYPES = ("square", "simple", "uniform")

# Classes of monai.losses outside the soft-label family: importing one says where to get it.
_ELSEWHERE = {
    "GeneralizedWassersteinDiceLoss": "it scores hard labels through a matrix of distances between classes",
    "HausdorffDTLoss": "it weights errors by distance transforms of hard masks",
    "SoftclDiceLoss": "it compares soft skeletons (centerlines), not overlaps",
    "SoftDiceclDiceLoss": "its clDice term compares soft skeletons (centerlines), not overlaps",
}


def __getattr__(name: str) -> object:
    raise missing_peer_class(__name__, name, _ELSEWHERE, "monai.losses")


# ---- argument handling ------------------------------------------------------------------------------


def _choice(name: str, value: object, choices: Sequence[str]) -> str:
    # MONAI passes its options as str enums (LossReduction, Weight): keep their value.
    value = getattr(value, "value", value)
    check_choice(name, value, choices)
    return str(value)


def _reduction(reduction: object, choices: Sequence[str] = REDUCTIONS) -> str:
    return _choice("reduction", reduction, choices)


def _check_activation(sigmoid: object, softmax: object, other_act: Callable | None) -> tuple[bool, bool]:
    sigmoid, softmax = check_flag("sigmoid", sigmoid), check_flag("softmax", softmax)
    if other_act is not None and not callable(other_act):
        raise TypeError(f"other_act must be None or callable; got {type(other_act).__name__}")
    if int(sigmoid) + int(softmax) + int(other_act is not None) > 1:
        raise ValueError(
            "sigmoid=True, softmax=True and other_act are exclusive; got "
            f"sigmoid={sigmoid}, softmax={softmax}, other_act={other_act!r}"
        )
    return sigmoid, softmax


def _smoothing(smooth_nr: object, smooth_dr: object) -> tuple[float, float]:
    """MONAI's numerator and denominator smoothing: finite real numbers (no sign check, as in MONAI)."""
    return check_number("smooth_nr", smooth_nr), check_number("smooth_dr", smooth_dr)


def _class_weight(weight: object, name: str = "weight", *, unit: bool = False) -> Tensor | None:
    """MONAI's class weight: None, a number (every class) or one value per class; non-negative and finite
    (``unit``: in [0, 1], for focal ``alpha``). Sequences are checked entry by entry."""
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        if weight.is_complex() or weight.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers; got a tensor of dtype {weight.dtype}")
        if weight.ndim > 1:
            raise ValueError(f"{name} must be a number or 1-D, one value per class; got shape {tuple(weight.shape)}")
        tensor = weight.detach()
        if tensor.device.type != "meta":  # a meta tensor has no values to check (its device is checked at call)
            if tensor.ndim:
                check_number_sequence(name, tensor, minimum=0.0, maximum=1.0 if unit else None)
            else:
                check_number(name, tensor.item(), minimum=0.0, maximum=1.0 if unit else None)
        return tensor.to(torch.float32)
    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        value = check_number(name, weight, minimum=0.0, maximum=1.0 if unit else None)
        return torch.tensor(value, dtype=torch.float32)
    if isinstance(weight, (str, bytes, bool)) or not isinstance(weight, Sequence):
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor; got {type(weight).__name__}")
    values = check_number_sequence(name, weight, minimum=0.0, maximum=1.0 if unit else None)
    return torch.tensor(values, dtype=torch.float32)


def _weight_for(module: nn.Module, weight: Tensor, like: Tensor, name: str) -> Tensor:
    """A class-weight buffer on ``like``'s device and dtype (a tensor the user gave must be there already)."""
    given = getattr(module, "_given_as_tensor", frozenset())
    return class_weights_on(name, weight, like, given_as_tensor=name in given).to(like.dtype)


def _tensor_options(**options: object) -> frozenset[str]:
    """The names of the options given as tensors: their device is the user's choice (checked, not moved)."""
    return frozenset(name for name, value in options.items() if isinstance(value, Tensor))


def _check_weight_length(weight: Tensor, classes: int, include_background: bool, name: str = "weight") -> None:
    check_weight_values(name, weight)  # at every call: the buffer may have been written since construction
    if weight.ndim == 1 and weight.shape[0] != classes:
        note = " (include_background=False: leave out class 0)" if not include_background else ""
        raise ValueError(f"{name} must have one value per class, {classes}{note}; got {weight.shape[0]}")


def _warn_single_channel(option: str) -> None:
    warnings.warn(f"single channel prediction, `{option}` ignored.", stacklevel=4)


def _activate(input: Tensor, *, sigmoid: bool, softmax: bool, other_act: Callable | None) -> Tensor:
    """MONAI's order: sigmoid, then softmax (skipped with a warning for one channel), then other_act."""
    if sigmoid:
        input = torch.sigmoid(input)
    if softmax:
        if input.shape[1] == 1:
            _warn_single_channel("softmax=True")
        else:
            input = torch.softmax(input, 1)
    if other_act is not None:
        input = other_act(input)
    return input


def _check_input(input: object, *, spatial: bool = True) -> Tensor:
    r"""``input``: float (B, C, \*spatial); ``spatial=False`` also takes (B, C) (FocalLoss, as MONAI)."""
    input = check_tensor("input", input)
    if not input.is_floating_point():
        raise TypeError(f"input must hold floating-point logits or probabilities; got dtype {input.dtype}")
    if input.ndim < (3 if spatial else 2):
        expected = "(B, C, *spatial) with at least one spatial dimension" if spatial else "(B, C, *spatial)"
        raise ValueError(f"input must have shape {expected}; got {tuple(input.shape)}")
    return input


# ---- targets ----------------------------------------------------------------------------------------


class _Target(NamedTuple):
    """A target in the form the engine wants: index labels or a dense tensor, plus MONAI's ignore mask."""

    labels: Tensor | None  # (B, 1, *spatial) int64 (to_onehot_y with C > 1), never one-hot encoded
    dense: Tensor | None  # (B, C, *spatial) float, ignored pixels already zeroed
    keep: Tensor | None  # (B, 1, *spatial) float pixel weights, 1 where a pixel counts (ignore_index), or None

    def one_hot(self, channels: int, dtype: torch.dtype) -> Tensor:
        """Dense target for per-(pixel, class) terms (focal, cross entropy with probabilities)."""
        if self.dense is not None:
            return self.dense.to(dtype)
        labels = self.labels if self.keep is None else self.labels * self.keep.long()
        dense = F.one_hot(labels[:, 0], channels).movedim(-1, 1).to(dtype)
        return dense if self.keep is None else dense * self.keep

    @property
    def excluded(self) -> Tensor | None:
        r"""(B, 1, \*spatial) bool, True at the pixels that leave every sum (keep 0), or None."""
        return None if self.keep is None else self.keep == 0


def _index_labels(input: Tensor, target: Tensor) -> Tensor:
    """Class indices (B, 1, *spatial) as int64; float labels must be whole numbers (never truncated)."""
    shape, tshape = tuple(input.shape), tuple(target.shape)
    index_shapes = (shape[:1] + (1,) + shape[2:], shape[:1] + shape[2:])
    if tshape not in index_shapes:
        raise ShapeMismatchError(
            f"to_onehot_y=True expects class indices of shape {index_shapes[0]} or {index_shapes[1]}; "
            f"got target of shape {tshape} for input of shape {shape}"
        )
    if target.is_floating_point():
        whole = torch.isfinite(target) & (target == target.round())
        if not bool(whole.all()):
            bad = target[~whole][0].item()
            raise ValueError(
                f"to_onehot_y=True expects whole-number class indices; target holds {bad}. "
                "MONAI would truncate it with .long(); softseg does not"
            )
    elif target.is_complex():
        raise TypeError(f"target must be real; got dtype {target.dtype}")
    return target.reshape(index_shapes[0]).long()


def _dense_target(input: Tensor, target: Tensor, hint: str) -> Tensor:
    if tuple(target.shape) != tuple(input.shape):
        raise ShapeMismatchError(
            f"target of shape {tuple(target.shape)} does not match input of shape {tuple(input.shape)}; "
            f"expected one-hot or soft labels of the input's shape{hint}"
        )
    if target.is_complex():
        raise TypeError(f"target must be real; got dtype {target.dtype}")
    # Integer and bool one-hot targets are exact in float (MONAI's soft_label=True crashes on them).
    return target if target.is_floating_point() else target.to(input.dtype)


def _ignore_keep(target: Tensor, ignore_index: int, channels: int) -> Tensor:
    """MONAI's create_ignore_mask: label != ignore_index (one channel); else the class or a sentinel."""
    if target.shape[1] == 1:
        return not_ignored(target, ignore_index).to(target.dtype)
    if 0 <= ignore_index < channels:
        return 1.0 - target[:, ignore_index : ignore_index + 1]
    return (target.sum(1, keepdim=True) > 0).to(target.dtype)


def _prepare_target(input: Tensor, target: object, *, to_onehot_y: bool, ignore_index: int | None) -> _Target:
    check_tensor("target", target)
    check_device("target", target, input.device)
    check_ignore_index(ignore_index)
    channels = input.shape[1]
    if to_onehot_y and channels == 1:
        _warn_single_channel("to_onehot_y=True")
    if to_onehot_y and channels > 1:
        labels = _index_labels(input, target)
        valid = None if ignore_index is None else not_ignored(labels, ignore_index)
        check_labels(labels, channels, valid, ignore_index)
        return _Target(labels, None, None if valid is None else valid.to(torch.float32))
    hint = "; pass to_onehot_y=True for class indices" if channels > 1 else ""
    dense = _dense_target(input, target, hint)
    if ignore_index is None:
        return _Target(None, dense, None)
    keep = _ignore_keep(dense, ignore_index, channels)
    # The ignored pixels may hold the sentinel itself (255 in a binary mask): select them out before any check.
    return _Target(None, exclude(dense, keep == 0) * keep.to(dense.dtype), keep)


# ---- statistics and scores ------------------------------------------------------------------------------


def _nonnegative(loss: nn.Module, channels: int) -> bool:
    """Whether the module's activation guarantees predictions >= 0 (sigmoid, or softmax over C > 1)."""
    return loss.other_act is None and (loss.sigmoid or (loss.softmax and channels > 1))


def _statistics(
    probs: Tensor,
    target: _Target,
    *,
    soft_label: bool,
    squared_pred: bool,
    ignore_index: int | None,
    nonnegative: bool = False,
) -> RegionStatistics:
    """MONAI's compute_tp_fp_fn through the engine, per (image, class), over all C channels."""
    if soft_label and not squared_pred and not nonnegative and not torch.compiler.is_compiling() and probs.numel():
        # MONAI's L1 form takes |x|; sum min(x, y) equals it for x >= 0 only.
        low = probs.detach().amin().item()
        if not low >= 0:
            raise ValueError(
                f"soft_label=True needs non-negative predictions; found {low:.4g}. "
                "Apply sigmoid=True, softmax=True or an other_act with values in [0, 1]"
            )
    norm = 2 if squared_pred else 1
    if target.labels is not None:
        # Hard labels: the product, min and squared forms of tp all equal the sum of p over labelled pixels.
        return region_statistics(probs, target.labels, norm=norm, ignore_index=ignore_index)
    if target.keep is not None:
        probs = probs * target.keep.to(probs.dtype)
    if soft_label or squared_pred:
        return region_statistics(probs, target.dense, norm=norm)
    # Legacy product form for dense targets: tp = <x, y>, fp = |x| - tp, fn = |y| - tp.
    return product_statistics(probs, target.dense)


def _sync(stats: RegionStatistics, module: nn.Module) -> RegionStatistics:
    """distributed=True: the statistics of every rank, pooled for batch=True, all images otherwise."""
    if not module.distributed:
        return stats
    levels = ("global",) if module.batch else ("image",)
    return sync_statistics(stats, levels=levels, process_group=module.process_group)


def _without_background(include_background: bool, *tensors: Tensor) -> tuple[Tensor, ...]:
    """include_background=False drops channel 0 of each (B, C, ...) tensor; MONAI warns and keeps one channel."""
    if include_background:
        return tensors
    if tensors[0].shape[1] == 1:
        _warn_single_channel("include_background=False")
        return tensors
    return tuple(t[:, 1:] for t in tensors)


def _reduce(loss: Tensor, reduction: str, broadcast_ndim: int | None = None) -> Tensor:
    """MONAI's reductions: mean and sum over every entry; "none" optionally viewed to broadcast with the input."""
    if reduction == "mean":
        return mean_or_zero(loss)  # an empty batch gives 0, not MONAI's NaN
    if reduction == "sum":
        return loss.sum()
    if broadcast_ndim is None:
        return loss
    return loss.reshape(list(loss.shape[:2]) + [1] * broadcast_ndim)


# ---- region losses ----------------------------------------------------------------------------------


class _RegionLoss(nn.Module):
    """What the Dice, Tversky and generalised Dice losses share: MONAI's common arguments and the
    activate -> statistics -> drop background -> sync -> pool pipeline (scores are the subclasses' own)."""

    def __init__(
        self,
        *,
        include_background: bool,
        to_onehot_y: bool,
        sigmoid: bool,
        softmax: bool,
        other_act: Callable | None,
        reduction: str,
        batch: bool,
        soft_label: bool,
        distributed: bool,
        process_group: torch.distributed.ProcessGroup | None,
    ) -> None:
        # Only the checks that come first in every subclass live here, so bad arguments fail in the same
        # order as before; each subclass checks its own arguments and the smoothing after this.
        super().__init__()
        check_distributed_options(distributed, process_group)
        self.distributed, self.process_group = distributed, process_group
        self.include_background = check_flag("include_background", include_background)
        self.to_onehot_y = check_flag("to_onehot_y", to_onehot_y)
        self.sigmoid, self.softmax = _check_activation(sigmoid, softmax, other_act)
        self.reduction = _reduction(reduction)
        self.other_act = other_act
        self.batch = check_flag("batch", batch)
        self.soft_label = check_flag("soft_label", soft_label)

    def _activate(self, input: Tensor) -> Tensor:
        return _activate(input, sigmoid=self.sigmoid, softmax=self.softmax, other_act=self.other_act)

    def _prepare(
        self, input: Tensor, target: Tensor, ignore_index: int | None, excluded: Tensor | None = None
    ) -> tuple[Tensor, _Target]:
        """Probabilities and the target in the engine's form.

        The pixels that leave every sum (``ignore_index``, or ``excluded``: a mask's zeros) are selected out
        of the logits before the activation, so a NaN or inf there reaches neither the value nor the gradient.
        """
        prepared = _prepare_target(input, target, to_onehot_y=self.to_onehot_y, ignore_index=ignore_index)
        if prepared.excluded is not None:
            excluded = prepared.excluded if excluded is None else excluded | prepared.excluded
        return self._activate(exclude(input, excluded)), prepared

    def _region_statistics(
        self, probs: Tensor, target: _Target, *, squared_pred: bool, ignore_index: int | None
    ) -> RegionStatistics:
        """Per-(image, class) statistics after sync and include_background, summed over images for batch=True."""
        stats = _statistics(
            probs,
            target,
            soft_label=self.soft_label,
            squared_pred=squared_pred,
            ignore_index=ignore_index,
            nonnegative=_nonnegative(self, probs.shape[1]),
        )
        stats = _sync(RegionStatistics(*_without_background(self.include_background, *stats)), self)
        return stats.sum_images() if self.batch else stats

    def _unpooled(self, loss: Tensor) -> Tensor:
        """batch=True leaves one pooled row: drop it, as MONAI's output has no image axis then."""
        return loss[0] if self.batch else loss


class DiceLoss(_RegionLoss):
    r"""Drop-in for ``monai.losses.DiceLoss`` (MONAI 1.6) on the softseg engine.

    .. math::

        \ell_{bc} = 1 - \frac{2\,tp + s_{nr}}{2\,tp + fp + fn + s_{dr}}\ \ \text{(Dice)},\qquad
        \ell_{bc} = 1 - \frac{2\,tp + s_{nr}}{2\,(tp + fp + fn) + s_{dr}}\ \ \text{(jaccard=True)}

    with tp, fp, fn per (image, class), pooled over the batch when ``batch=True``, in the product form
    (``soft_label=False``, MONAI's default), the soft-label-correct min form (``soft_label=True``) or the
    squared form (``squared_pred=True``); see :mod:`softseg.compat.monai`. ``weight`` multiplies the
    per-class losses (ignored with one class, as in MONAI).

    Convention:
        - Arguments, order and defaults: MONAI 1.6's. ``reduction``: ``"mean"`` and ``"sum"`` over all
          (image, class) entries; ``"none"``: (B, C, 1, ..., 1) (with ``batch=True``: (C, 1, ..., 1)).
        - ``input``/``target``/``ignore_index``: see :mod:`softseg.compat.monai`. Index targets with
          ``to_onehot_y=True`` are not one-hot encoded.
        - Differences from MONAI: integer/bool one-hot targets work with ``soft_label=True``; ValueError
          instead of AssertionError for a target of the wrong shape; whole-number check of float labels;
          an empty class with ``smooth_dr=0`` gives 0, not NaN; ``soft_label=True`` rejects negative
          predictions (MONAI's L1 norms take |x| there, where sum min(x, y) differs).

    Example:
        >>> probs = torch.tensor([[[0.2, 0.7, 0.5]]])           # (B=1, C=1, N=3), probabilities
        >>> target = torch.tensor([[[0.5, 0.5, 1.0]]])          # soft labels
        >>> DiceLoss(smooth_nr=0, smooth_dr=0)(probs, target)    # legacy product form: 1 - 2*0.95/3.4
        tensor(0.4412)
        >>> DiceLoss(smooth_nr=0, smooth_dr=0, soft_label=True)(probs, target)   # min form: 1 - 2*1.2/3.4
        tensor(0.2941)
    """

    class_weight: Tensor | None

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | Tensor | None = None,
        soft_label: bool = False,
        ignore_index: int | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            batch=batch,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        self.squared_pred = check_flag("squared_pred", squared_pred)
        self.jaccard = check_flag("jaccard", jaccard)
        self.smooth_nr, self.smooth_dr = _smoothing(smooth_nr, smooth_dr)
        self.ignore_index = check_ignore_index(ignore_index)
        self.register_buffer("class_weight", _class_weight(weight))
        self._given_as_tensor = _tensor_options(weight=weight)

    def _entry_losses(self, probs: Tensor, target: _Target, ignore_index: int | None) -> Tensor:
        """Per-(image, class) losses, (B, C) or (C,) with batch=True, before weights and reduction."""
        stats = self._region_statistics(probs, target, squared_pred=self.squared_pred, ignore_index=ignore_index)
        tversky = 1.0 if self.jaccard else 0.5
        # MONAI's (2 tp + s_nr) / (2 (tp + a fp + a fn) + s_dr) is the Tversky index with s_nr/2 and s_dr/2.
        index = tversky_index(
            stats, alpha=tversky, beta=tversky, smooth=self.smooth_nr / 2, smooth_denominator=self.smooth_dr / 2
        )
        return self._unpooled(1 - index)

    def _weighted(self, loss: Tensor) -> Tensor:
        if self.class_weight is None or loss.shape[-1] == 1:
            return loss
        _check_weight_length(self.class_weight, loss.shape[-1], self.include_background)
        return loss * _weight_for(self, self.class_weight, loss, "weight")

    def _reduced(self, probs: Tensor, target: _Target, ignore_index: int | None, spatial_dims: int) -> Tensor:
        """The weighted per-(image, class) losses, reduced; "none" is viewed to broadcast with the input."""
        loss = self._weighted(self._entry_losses(probs, target, ignore_index))
        return _reduce(loss, self.reduction, spatial_dims)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_input(input)
        probs, prepared = self._prepare(input, target, self.ignore_index)
        return self._reduced(probs, prepared, self.ignore_index, input.ndim - 2)


class MaskedDiceLoss(DiceLoss):
    r"""Drop-in for ``monai.losses.MaskedDiceLoss``: :class:`DiceLoss` on ``input * mask`` and ``target * mask``.

    .. math::

        \ell_{bc} = 1 - \frac{2\,tp(m x, m y) + s_{nr}}{2\,tp + fp + fn + s_{dr}}

    ``mask`` (B, 1, \*spatial) or (1, 1, \*spatial), bool or float weights, multiplies prediction and target
    after the activation, so masked-out pixels leave every sum.

    Convention:
        - As :class:`DiceLoss` (no ``ignore_index``). ``forward(input, target, mask=None)``; no mask warns
          "No mask value specified for the MaskedLoss." as MONAI does.
        - Difference from MONAI: with ``to_onehot_y=True`` the masked pixels leave every class; MONAI
          multiplies the class indices by the mask, which turns masked pixels into background labels
          (counted as false negatives of class 0). A fractional mask with index targets raises ValueError.

    Example:
        >>> probs = torch.tensor([[[0.2, 0.7, 0.5]]])
        >>> target = torch.tensor([[[0.0, 1.0, 1.0]]])
        >>> mask = torch.tensor([[[True, True, False]]])
        >>> MaskedDiceLoss(smooth_nr=0, smooth_dr=0)(probs, target, mask)     # 1 - 2*0.7/1.9
        tensor(0.2632)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Sequence[float] | float | int | Tensor | None = None,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        input = _check_input(input)
        if mask is None:
            warnings.warn("No mask value specified for the MaskedLoss.", stacklevel=2)
            probs, prepared = self._prepare(input, target, None)
        else:
            weights = self._check_mask(mask, input)
            # Masked-out pixels are selected out of the logits (a NaN there stays out of value and gradient).
            probs, prepared = self._prepare(input, target, None, excluded=weights == 0)
            probs = probs * weights
            if prepared.labels is not None:
                binary = (weights == 0) | (weights == 1)
                if not bool(binary.all()):
                    raise ValueError(
                        "mask holds fractional weights, which class-index targets (to_onehot_y=True) cannot carry; "
                        "pass a bool or 0/1 mask, or one-hot targets"
                    )
                prepared = _Target(prepared.labels, None, weights.expand_as(prepared.labels).to(torch.float32))
            else:
                dense = exclude(prepared.dense, weights == 0)
                prepared = _Target(None, dense * weights.to(dense.dtype), None)
        ignore_index = None
        if prepared.keep is not None:
            # Masked pixels carry an out-of-range label and leave every sum through the engine's ignore_index.
            ignore_index = -1
            prepared = _Target(prepared.labels.masked_fill(prepared.keep == 0, -1), None, None)
        return self._reduced(probs, prepared, ignore_index, input.ndim - 2)

    @staticmethod
    def _check_mask(mask: object, input: Tensor) -> Tensor:
        if not isinstance(mask, Tensor):
            raise TypeError(f"mask must be a torch.Tensor; got {type(mask).__name__}")
        check_device("mask", mask, input.device)
        if mask.is_complex():
            raise TypeError(f"mask must be real; got dtype {mask.dtype}")
        if input.dim() != mask.dim():
            warnings.warn(f"Dim of input ({input.shape}) is different from mask ({mask.shape}).", stacklevel=3)
        if mask.ndim < 2 or mask.shape[0] not in (1, input.shape[0]):
            raise ShapeMismatchError(
                f"mask must have batch size 1 or {input.shape[0]}, as input; got shape {tuple(mask.shape)}"
            )
        if mask.shape[1] != 1:
            raise ShapeMismatchError(f"mask must have one channel, shape (B, 1, *spatial); got shape {tuple(mask.shape)}")
        if input.shape[2:] != mask.shape[2:]:
            warnings.warn(f"Spatial size of input ({input.shape}) is different from mask ({mask.shape}).", stacklevel=3)
        return mask.to(input.dtype)


class TverskyLoss(_RegionLoss):
    r"""Drop-in for ``monai.losses.TverskyLoss`` (MONAI 1.6) on the softseg engine.

    .. math::

        \ell_{bc} = 1 - \frac{tp + s_{nr}}{tp + \alpha\, fp + \beta\, fn + s_{dr}}

    with tp, fp, fn per (image, class) (pooled over the batch with ``batch=True``), in the product form
    (``soft_label=False``: MONAI's fp = <x, 1 - y>, fn = <1 - x, y>, which equal |x| - tp and |y| - tp) or
    the min form (``soft_label=True``).

    Convention:
        - Arguments, order and defaults: MONAI 1.6's. ``reduction="none"`` returns (B, C) (or (C,) with
          ``batch=True``), as MONAI's TverskyLoss does (no broadcast view).
        - As :class:`DiceLoss` otherwise, with the same differences from MONAI.

    Example:
        >>> probs = torch.tensor([[[0.2, 0.7, 0.5]]])
        >>> target = torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> TverskyLoss(alpha=0.3, beta=0.7, smooth_nr=0, smooth_dr=0, soft_label=True)(probs, target)
        tensor(0.3407)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        alpha: float = 0.5,
        beta: float = 0.5,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        ignore_index: int | None = None,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            batch=batch,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        # MONAI takes any number; outside [0, 1] the loss turns negative or unbounded.
        self.alpha = check_number("alpha", alpha, minimum=0.0, maximum=1.0)
        self.beta = check_number("beta", beta, minimum=0.0, maximum=1.0)
        self.smooth_nr, self.smooth_dr = _smoothing(smooth_nr, smooth_dr)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_input(input)
        probs, prepared = self._prepare(input, target, self.ignore_index)
        stats = self._region_statistics(probs, prepared, squared_pred=False, ignore_index=self.ignore_index)
        loss = 1 - tversky_index(
            stats, alpha=self.alpha, beta=self.beta, smooth=self.smooth_nr, smooth_denominator=self.smooth_dr
        )
        return _reduce(self._unpooled(loss), self.reduction)


class GeneralizedDiceLoss(_RegionLoss):
    r"""Drop-in for ``monai.losses.GeneralizedDiceLoss`` (Sudre et al. 2017, MONAI 1.6) on the softseg engine.

    .. math::

        \ell = 1 - \frac{2 \sum_c w_c\, tp_c + s_{nr}}{\sum_c w_c\, (2\,tp_c + fp_c + fn_c) + s_{dr}},\qquad
        w_c = 1 / |y_c|^2\ (\text{square}),\ 1 / |y_c|\ (\text{simple}),\ 1\ (\text{uniform})

    per image (or pooled over the batch with ``batch=True``); a class with an empty target gets the largest
    weight of the other classes (MONAI's rule). tp, fp, fn in the product (``soft_label=False``) or min form;
    the weights and the score are :func:`softseg.generalized_dice_loss`'s
    (:func:`~softseg.losses.generalized_dice.generalized_dice_weights`,
    :func:`~softseg.losses.generalized_dice.generalized_dice_from_statistics`).

    Convention:
        - Arguments, order and defaults: MONAI 1.6's. ``reduction="none"``: (B, 1, 1, ..., 1) (with
          ``batch=True``: (1, 1, ..., 1)).
        - As :class:`DiceLoss` otherwise (no ``weight``, no ``ignore_index``), with the same differences
          from MONAI; the class weights are computed from the target only (no gradient).

    Example:
        >>> probs = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]])     # (B=1, C=2, N=2)
        >>> target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> GeneralizedDiceLoss(smooth_nr=0, smooth_dr=0)(probs, target)   # 1 - 2*1.7/4
        tensor(0.1500)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            batch=batch,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        self.w_type = _choice("w_type", w_type, W_TYPES)
        self.smooth_nr, self.smooth_dr = _smoothing(smooth_nr, smooth_dr)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_input(input)
        probs, prepared = self._prepare(input, target, None)
        stats = self._region_statistics(probs, prepared, squared_pred=False, ignore_index=None)
        # MONAI computes the weights in float32 from the target's volumes.
        weights = generalized_dice_weights((stats.tp + stats.fn).float(), self.w_type).to(stats.tp)
        loss = generalized_dice_from_statistics(
            stats, weights, smooth=self.smooth_nr, smooth_denominator=self.smooth_dr
        )
        return _reduce(self._unpooled(loss), self.reduction, input.ndim - 2)


class MCCLoss(_RegionLoss):
    r"""Drop-in for ``monai.losses.MCCLoss`` (Abhishek and Hamarneh 2021, MONAI 1.6) on :mod:`softseg.losses.mcc`.

    .. math::

        \ell_{bc} = 1 - \frac{tp\, tn - fp\, fn + s_{nr}}{\sqrt{(tp + fp)(tp + fn)(tn + fp)(tn + fn) + s_{dr}}},
        \qquad tn = n - tp - fp - fn

    per (image, class), pooled over the batch with ``batch=True``; 0 where fp = fn = 0 (MONAI's rule for a
    perfect prediction). tp, fp, fn in MONAI's product form (``soft_label=False``, its only form:
    tn = sum (1 - x)(1 - y)) or softseg's min/max form (``soft_label=True``, tn = sum min(1 - x, 1 - y)),
    which is 0 at a soft target; both are MONAI's values on hard labels.

    Convention:
        - Arguments, order and defaults: MONAI 1.6's, then ``soft_label`` (not in MONAI) and the keyword-only
          ``distributed``, ``process_group``. ``reduction="none"``: (B, C) (with ``batch=True``: (C,)).
        - As :class:`DiceLoss` otherwise (no ``weight``, no ``ignore_index``; index targets with
          ``to_onehot_y=True`` are not one-hot encoded), with its differences from MONAI.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2, 0.0]]])       # (B=1, C=1, N=4)
        >>> target = torch.tensor([[[1.0, 0.5, 0.0, 0.0]]])
        >>> MCCLoss(smooth_dr=0)(probs, target)                  # products: tn = 0 + 0.2 + 0.8 + 1 = 2
        tensor(0.4124)
        >>> MCCLoss(smooth_dr=0, soft_label=True)(probs, target) # min/max: tn = 0 + 0.4 + 0.8 + 1 = 2.2
        tensor(0.2035)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        reduction: str = "mean",
        smooth_nr: float = 0.0,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            reduction=reduction,
            batch=batch,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        self.smooth_nr, self.smooth_dr = _smoothing(smooth_nr, smooth_dr)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_input(input)
        probs, prepared = self._prepare(input, target, None)
        stats = self._region_statistics(probs, prepared, squared_pred=False, ignore_index=None)
        # Every pixel counts (MONAI's MCC has no ignore_index): n per image, summed like the statistics.
        rows = torch.full((input.shape[0], stats.tp.shape[1]), float(math.prod(input.shape[2:])), device=input.device,
                          dtype=stats.tp.dtype)
        counts = _sync(RegionStatistics(rows, *(torch.zeros_like(rows),) * 3), self)
        counts = counts.sum_images().tp if self.batch else counts.tp
        score = matthews_correlation(
            stats.tp, stats.fp, stats.fn, true_negatives(stats, counts),
            smooth_numerator=self.smooth_nr, smooth_denominator=self.smooth_dr,
        )
        return _reduce(self._unpooled(1 - score), self.reduction)


# ---- focal and compound losses ----------------------------------------------------------------------------


def _focal_terms(
    input: Tensor,
    target: Tensor,
    *,
    use_softmax: bool,
    gamma: float,
    alpha: float | Tensor | None,
    include_background: bool,
) -> Tensor:
    """MONAI's per-(pixel, class) focal terms on the channels left after include_background."""
    if use_softmax:
        if not include_background and alpha is not None and not isinstance(alpha, Tensor):
            warnings.warn("`include_background=False`, scalar `alpha` ignored when using softmax.", stacklevel=4)
            alpha = None
        # MONAI takes the softmax over the channels that are left, also without the background.
        terms = softmax_focal_terms(input.log_softmax(1), target, gamma)
        if alpha is None:
            return terms
        channels = target.shape[1]
        if isinstance(alpha, Tensor):
            _check_weight_length(alpha, channels, include_background, "alpha")
            factor = alpha.to(terms)
        else:
            factor = torch.tensor([1 - alpha] + [alpha] * (channels - 1)).to(terms)
        return terms * factor.reshape((1, channels) + (1,) * (terms.ndim - 2))
    cross_entropy, one_minus_pt = binary_focal_terms(input, target, modulation="logit")
    terms = cross_entropy * focal_modulation(one_minus_pt, gamma)
    if alpha is None:
        return terms
    if isinstance(alpha, Tensor):
        _check_weight_length(alpha, target.shape[1], include_background, "alpha")
        per_class = alpha.to(terms).reshape((1, -1) + (1,) * (terms.ndim - 2))
        # MONAI: alpha_c on positives (y == 1 exactly), 1 elsewhere.
        return terms * torch.where(target == 1, per_class, torch.ones_like(per_class))
    return terms * (alpha * target + (1 - alpha) * (1 - target))


class FocalLoss(nn.Module):
    r"""Drop-in for ``monai.losses.FocalLoss`` (MONAI 1.6), on softseg's focal terms.

    .. math::

        \text{sigmoid:}\ \ \ell_{ic} = \alpha_t\, \sigma(x (1 - 2y))^\gamma\, \mathrm{BCE}(x, y),\qquad
        \text{softmax:}\ \ \ell_{ic} = -\alpha_c\, y_c (1 - p_c)^\gamma \log p_c

    per (pixel, class), times ``weight``; sigma(x (1 - 2y)) is MONAI's 1 - p_t (equal to
    softseg's p (1 - y) + (1 - p) y on 0/1 targets; :func:`softseg.losses.focal.binary_focal_terms`).
    Scalar ``alpha``: y alpha + (1 - y)(1 - alpha) (sigmoid) or 1 - alpha for class 0 and alpha for the others
    (softmax); a sequence: per class (sigmoid: on positives only).

    Convention:
        - Arguments, order and defaults: MONAI 1.6's; ``input`` holds logits. With
          ``include_background=False`` the softmax runs over the remaining channels (as in MONAI).
        - ``reduction``: ``"mean"`` over all (pixel, class) terms (with ``ignore_index``: the sum divided by
          the number of counted pixels, not terms, as MONAI does); ``"sum"``: per-(image, class) spatial
          means, summed; ``"none"``: (B, C, \*spatial).
        - Index targets (``to_onehot_y=True``) are one-hot encoded: the focal terms are per (pixel, class).
        - Differences from MONAI: ValueError for a target of the wrong shape; whole-number check of float
          class indices; ``gamma`` < 1 gives a finite gradient where p_t = 1; float64 input is computed in
          float64 (MONAI casts to float32).

    Example:
        >>> FocalLoss(gamma=2.0)(torch.zeros(1, 1, 2), torch.tensor([[[0.0, 1.0]]]))    # 0.25 * log 2
        tensor(0.1733)
    """

    class_weight: Tensor | None

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        gamma: float = 2.0,
        alpha: float | Sequence[float] | None = None,
        weight: Sequence[float] | float | int | Tensor | None = None,
        reduction: str = "mean",
        use_softmax: bool = False,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.include_background = check_flag("include_background", include_background)
        self.to_onehot_y = check_flag("to_onehot_y", to_onehot_y)
        self.gamma = check_number("gamma", gamma, minimum=0.0)
        # MONAI takes any alpha; outside [0, 1] the focal terms turn negative.
        if alpha is None or isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
            self.alpha = None if alpha is None else check_number("alpha", alpha, minimum=0.0, maximum=1.0)
        else:
            # Not a buffer (as in MONAI), so the module's .to() cannot move it: it follows the input.
            self.alpha = _class_weight(alpha, "alpha", unit=True)
        self.reduction = _reduction(reduction)
        self.use_softmax = check_flag("use_softmax", use_softmax)
        self.ignore_index = check_ignore_index(ignore_index)
        self.register_buffer("class_weight", _class_weight(weight))
        self._given_as_tensor = _tensor_options(weight=weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_input(input, spatial=False)
        prepared = _prepare_target(input, target, to_onehot_y=self.to_onehot_y, ignore_index=self.ignore_index)
        return self._reduce(self.terms(input, prepared), prepared.keep)

    def terms(self, input: Tensor, prepared: _Target) -> Tensor:
        r"""Per-(pixel, class) focal terms, (B, C', \*spatial), ignored pixels 0, class weights applied."""
        channels = input.shape[1]
        acc = accumulation_dtype(input.dtype)
        dense = prepared.one_hot(channels, acc)
        logits = input.to(acc)
        if prepared.keep is not None:
            # MONAI scales the logits by the ignore mask; ignored pixels are selected out first.
            logits = exclude(logits, prepared.excluded) * prepared.keep.to(acc)
        logits, dense = _without_background(self.include_background, logits, dense)
        alpha = self.alpha.to(logits.device) if isinstance(self.alpha, Tensor) else self.alpha
        terms = _focal_terms(
            logits,
            dense,
            use_softmax=self.use_softmax,
            gamma=self.gamma,
            alpha=alpha,
            include_background=self.include_background,
        )
        if prepared.keep is not None:
            terms = terms * prepared.keep
        if self.class_weight is not None:
            weight = _weight_for(self, self.class_weight, terms, "weight")
            if weight.ndim == 1:
                if terms.shape[1] == 1:
                    raise ValueError("weight with one value per class needs more than one channel; input has one")
                _check_weight_length(weight, terms.shape[1], self.include_background)
                weight = weight.reshape((1, -1) + (1,) * (terms.ndim - 2))
            terms = terms * weight
        return terms

    def _reduce(self, terms: Tensor, keep: Tensor | None) -> Tensor:
        spatial = list(range(2, terms.ndim))
        if self.reduction == "none":
            return terms
        tiny = torch.finfo(torch.float32).eps
        if self.reduction == "sum":
            if keep is None:
                # Images without pixels add 0 (MONAI: NaN). No spatial dims: torch's mean over dims [] is
                # the mean of everything, as in MONAI.
                empty = math.prod(terms.shape[2:]) == 0
                return (terms.sum(spatial) if empty else terms.mean(spatial)).sum()
            return (terms.sum(spatial) / keep.sum(spatial).clamp(min=tiny)).sum()
        if keep is None:
            return mean_or_zero(terms)
        return terms.sum() / keep.sum().clamp(min=tiny)


def _check_lambda(name: str, value: float) -> float:
    return check_number(name, value, minimum=0.0)


def _check_compound(input: object, target: object) -> Tensor:
    """The compound losses' own check, before either term runs: input as every loss, target's layout loosely."""
    input = _check_input(input)
    check_tensor("target", target)
    check_device("target", target, input.device)
    if input.dim() != target.dim():
        raise ShapeMismatchError(
            f"target must have as many dimensions as input, (B, C, *spatial) or (B, 1, *spatial) for class "
            f"indices; got input {tuple(input.shape)} and target {tuple(target.shape)}"
        )
    if target.shape[1] not in (1, input.shape[1]):
        raise ShapeMismatchError(
            f"target must have 1 channel (class indices) or as many as input ({input.shape[1]}); "
            f"got input {tuple(input.shape)} and target {tuple(target.shape)}"
        )
    return input


class DiceCELoss(nn.Module):
    r"""Drop-in for ``monai.losses.DiceCELoss`` (MONAI 1.6): lambda_dice Dice + lambda_ce cross entropy.

    .. math::

        \ell = \lambda_{dice}\, \ell_{Dice} + \lambda_{ce}\, \mathrm{CE}(x, y)

    The Dice term is :class:`DiceLoss` (``weight`` without class 0 when ``include_background=False``); the
    cross entropy runs on the logits over all channels: ``F.cross_entropy`` (class indices, or one-hot/soft
    targets as probabilities; ``weight``, ``label_smoothing``) or, with one channel,
    ``F.binary_cross_entropy_with_logits`` with ``pos_weight=weight``.

    Convention:
        - Arguments, order and defaults: MONAI 1.6's, plus ``soft_label`` (last; MONAI's DiceCELoss cannot
          pass it to its Dice term). ``reduction``: ``"mean"`` or ``"sum"`` only, as in MONAI.
        - ``target``: (B, C, \*spatial) or class indices (B, 1, \*spatial) (float indices must be whole
          numbers: no truncation). Class indices are never one-hot encoded.
        - Differences from MONAI: ``soft_label``; ValueError instead of AssertionError; no truncation.

    Example:
        >>> logits = torch.zeros(1, 2, 2)
        >>> labels = torch.tensor([[[0, 1]]])
        >>> DiceCELoss(to_onehot_y=True, softmax=True, smooth_nr=0, smooth_dr=0)(logits, labels)  # 0.5 + log 2
        tensor(1.1931)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        weight: Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        label_smoothing: float = 0.0,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        reduction = _reduction(reduction, ("mean", "sum"))
        if weight is not None and not isinstance(weight, Tensor):
            raise TypeError(
                f"weight must be a tensor or None, as torch.nn.CrossEntropyLoss takes; got {type(weight).__name__}"
            )
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight[1:] if weight is not None and not include_background else weight,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        # torch's modules hold the weight under MONAI's state-dict names (cross_entropy.weight,
        # binary_cross_entropy.pos_weight), so checkpoints load both ways.
        self.cross_entropy = nn.CrossEntropyLoss(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
        self.binary_cross_entropy = nn.BCEWithLogitsLoss(pos_weight=weight, reduction=reduction)
        self.reduction = reduction
        self._given_as_tensor = _tensor_options(weight=weight)
        self.label_smoothing = check_number("label_smoothing", label_smoothing, minimum=0.0)
        if self.label_smoothing > 1:
            raise ValueError(f"label_smoothing must lie in [0, 1]; got {label_smoothing}")
        self.lambda_dice = _check_lambda("lambda_dice", lambda_dice)
        self.lambda_ce = _check_lambda("lambda_ce", lambda_ce)

    def ce(self, input: Tensor, target: Tensor) -> Tensor:
        """The cross-entropy term: class indices gathered, one-hot or soft targets as probabilities; BCE for C = 1.

        Without any pixel (an empty batch) it is 0, where torch's mean of nothing is NaN."""
        reduction = self.reduction if math.prod(input.shape[:1] + input.shape[2:]) else "sum"
        if input.shape[1] == 1:
            pos_weight = self.binary_cross_entropy.pos_weight
            pos_weight = None if pos_weight is None else _weight_for(self, pos_weight, input, "weight")
            dense = _dense_target(input, target, "")
            return F.binary_cross_entropy_with_logits(
                input, dense.to(input.dtype), pos_weight=pos_weight, reduction=reduction
            )
        # Converted here, so a float64 weight works with float32 logits (torch's module would refuse).
        weight = self.cross_entropy.weight
        weight = None if weight is None else _weight_for(self, weight, input, "weight")
        if target.shape[1] == 1:
            labels = _index_labels(input, target)[:, 0]
            return F.cross_entropy(input, labels, weight=weight, reduction=reduction, label_smoothing=self.label_smoothing)
        dense = _dense_target(input, target, "").to(input.dtype)
        return F.cross_entropy(input, dense, weight=weight, reduction=reduction, label_smoothing=self.label_smoothing)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_compound(input, target)
        dice = self.dice(input, target)
        return self.lambda_dice * dice + self.lambda_ce * self.ce(input, target)


class DiceFocalLoss(nn.Module):
    r"""Drop-in for ``monai.losses.DiceFocalLoss`` (MONAI 1.6): lambda_dice Dice + lambda_focal focal.

    .. math::

        \ell = \lambda_{dice}\, \ell_{Dice} + \lambda_{focal}\, \ell_{focal}

    :class:`DiceLoss` (activation, ``squared_pred``, ``jaccard``, smoothing, ``batch``, ``weight``) plus
    :class:`FocalLoss` on the logits with MONAI's choice: always the sigmoid focal loss, with ``gamma``,
    ``alpha`` and ``weight``.

    Convention:
        - Arguments, order and defaults: MONAI 1.6's, plus ``soft_label`` (last) for the Dice term.
          ``reduction="none"`` adds the Dice (B, C, 1, ...) and focal (B, C, \*spatial) terms by broadcasting.
        - Class indices (``to_onehot_y=True``) stay indices for the Dice term; the focal terms one-hot them.
        - Differences from MONAI: ``soft_label``; ValueError instead of AssertionError; no truncation.

    Example:
        >>> logits = torch.zeros(1, 1, 2)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> DiceFocalLoss(sigmoid=True, smooth_nr=0, smooth_dr=0)(logits, target)   # 0.5 + 0.25 log 2
        tensor(0.6733)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        squared_pred: bool = False,
        jaccard: bool = False,
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | Tensor | None = None,
        lambda_dice: float = 1.0,
        lambda_focal: float = 1.0,
        alpha: float | None = None,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.dice = DiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            squared_pred=squared_pred,
            jaccard=jaccard,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            weight=weight,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        self.focal = FocalLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            gamma=gamma,
            alpha=alpha,
            weight=weight,
            reduction=reduction,
        )
        self.lambda_dice = _check_lambda("lambda_dice", lambda_dice)
        self.lambda_focal = _check_lambda("lambda_focal", lambda_focal)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_compound(input, target)
        if not (self.focal.to_onehot_y and input.shape[1] == 1):
            return self._combined(input, target)
        # MONAI warns once here (its two terms never see to_onehot_y): silence the terms' own copies.
        _warn_single_channel("to_onehot_y=True")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"single channel prediction, `to_onehot_y=True` ignored")
            return self._combined(input, target)

    def _combined(self, input: Tensor, target: Tensor) -> Tensor:
        return self.lambda_dice * self.dice(input, target) + self.lambda_focal * self.focal(input, target)


class GeneralizedDiceFocalLoss(nn.Module):
    r"""Drop-in for ``monai.losses.GeneralizedDiceFocalLoss`` (MONAI 1.6): generalised Dice + sigmoid focal.

    .. math::

        \ell = \lambda_{gdl}\, \ell_{GDL} + \lambda_{focal}\, \ell_{focal}

    :class:`GeneralizedDiceLoss` plus :class:`FocalLoss` (sigmoid, ``gamma``, ``weight``; no ``alpha``, as in
    MONAI).

    Convention:
        - Arguments, order and defaults: MONAI 1.6's, plus ``soft_label`` (last) for the generalised Dice term.
        - As :class:`DiceFocalLoss` otherwise.

    Example:
        >>> logits = torch.zeros(1, 1, 2)
        >>> target = torch.tensor([[[0.0, 1.0]]])
        >>> GeneralizedDiceFocalLoss(sigmoid=True, smooth_nr=0, smooth_dr=0)(logits, target)  # 0.5 + 0.25 log 2
        tensor(0.6733)
    """

    def __init__(
        self,
        include_background: bool = True,
        to_onehot_y: bool = False,
        sigmoid: bool = False,
        softmax: bool = False,
        other_act: Callable | None = None,
        w_type: str = "square",
        reduction: str = "mean",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        gamma: float = 2.0,
        weight: Sequence[float] | float | int | Tensor | None = None,
        lambda_gdl: float = 1.0,
        lambda_focal: float = 1.0,
        soft_label: bool = False,
        *,
        distributed: bool = False,
        process_group: torch.distributed.ProcessGroup | None = None,
    ) -> None:
        super().__init__()
        self.generalized_dice = GeneralizedDiceLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            sigmoid=sigmoid,
            softmax=softmax,
            other_act=other_act,
            w_type=w_type,
            reduction=reduction,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            soft_label=soft_label,
            distributed=distributed,
            process_group=process_group,
        )
        self.focal = FocalLoss(
            include_background=include_background,
            to_onehot_y=to_onehot_y,
            gamma=gamma,
            weight=weight,
            reduction=reduction,
        )
        self.lambda_gdl = _check_lambda("lambda_gdl", lambda_gdl)
        self.lambda_focal = _check_lambda("lambda_focal", lambda_focal)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        input = _check_compound(input, target)
        gdl = self.generalized_dice(input, target)
        return self.lambda_gdl * gdl + self.lambda_focal * self.focal(input, target)
