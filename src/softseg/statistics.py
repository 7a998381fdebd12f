"""The one statistics engine: probabilities and a target to per-(image, class) tp, fp, fn.

Every loss and metric in softseg is a function of these sums, so they are computed in exactly one place.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from softseg._checks import (
    check_ignore_index,
    check_input,
    check_labels,
    check_mask,
    check_unit_interval,
    not_ignored,
    target_kind,
)


class RegionStatistics(NamedTuple):
    r"""Per-(image, class) sufficient statistics, each of shape (B, C) in float32 or float64.

    ``tp``, ``fp``, ``fn`` are the soft true positives, false positives and false negatives;
    ``target_max`` is the largest target value over the counted pixels of each (image, class)
    (0 where no pixel counts), used to decide which classes are present. For norm 1,
    tp = sum min(x, y), fp = sum x - tp, fn = sum y - tp (see :func:`region_statistics`).

    Convention:
        - Four tensors of shape (B, C) (or (1, C) after :meth:`sum_images`), float32 whatever the input
          dtype, float64 for float64 input; produced by :func:`region_statistics`, which settles the
          activation, index or dense targets and ignored pixels.
        - An empty (image, class) is all zeros.

    Example:
        >>> stats = RegionStatistics(*(torch.tensor([[1.0, 0.0], [2.0, 0.5]]) for _ in range(4)))
        >>> stats.sum_images().tp
        tensor([[3.0000, 0.5000]])
    """

    tp: Tensor
    fp: Tensor
    fn: Tensor
    target_max: Tensor

    def sum_images(self) -> RegionStatistics:
        """Pool the images: sums of tp, fp, fn and max of ``target_max`` over the batch, shape (1, C)."""
        return RegionStatistics(
            self.tp.sum(0, keepdim=True),
            self.fp.sum(0, keepdim=True),
            self.fn.sum(0, keepdim=True),
            # amax over an empty batch is undefined: nothing counted means no class is present.
            self.target_max.amax(0, keepdim=True) if len(self.target_max) else self.tp.new_zeros(1, self.tp.shape[1]),
        )


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype statistics are summed in: float64 stays float64; float16, bfloat16 and float32 use float32.

    Convention:
        - ``dtype``: the input's floating-point dtype. Half-precision sums of a large mask overflow or lose
          whole pixels, so they are never used for accumulation.

    Example:
        >>> accumulation_dtype(torch.float16), accumulation_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def checked_statistics_arguments(
    input: object, target: object, *, norm: object, ignore_index: object, mask: object
) -> tuple[Tensor, str, Tensor | None]:
    """The checks shared by the statistics functions: (input, target kind, mask with a channel dim).

    Convention:
        Raises the ``TypeError``/``ValueError`` of :func:`region_statistics` for a bad ``input``,
        ``target``, ``norm``, ``ignore_index`` (index targets only) or ``mask``.

    Example:
        >>> _, kind, mask = checked_statistics_arguments(torch.rand(1, 2, 3), torch.tensor([[0, 1, 1]]),
        ...                                              norm=1, ignore_index=None, mask=None)
        >>> kind, mask
        ('index', None)
    """
    input = check_input(input)
    if isinstance(norm, bool) or norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2; got {norm!r}")
    kind = target_kind(input, target)
    if ignore_index is not None and kind == "dense":
        raise ValueError("ignore_index applies to index targets only; pass mask= to leave pixels out of a dense target")
    check_ignore_index(ignore_index)
    mask = None if mask is None else check_mask(mask, input)
    return input, kind, mask


def region_statistics(
    probs: Tensor,
    target: Tensor,
    *,
    norm: int = 1,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
) -> RegionStatistics:
    r"""Soft tp, fp, fn of every (image, class), the shared base of all losses and metrics.

    With x the probabilities and y the target of one (image, class), summed over counted pixels i:

    .. math::

        \text{norm } 1:\quad tp = \sum_i \min(x_i, y_i),\quad fp = \sum_i x_i - tp,\quad fn = \sum_i y_i - tp

        \text{norm } 2:\quad tp = \sum_i x_i y_i,\quad fp = \sum_i x_i^2 - tp,\quad fn = \sum_i y_i^2 - tp

    For binary y both reduce to the classic products (tp = <x, y>, fp = <x, 1 - y>, fn = <1 - x, y>).
    The norm-1 form is the one that stays correct for fractional y: fp = fn = 0 exactly when x = y.

    Convention:
        - ``probs``: (B, C, \*spatial) floating point, already activated (values in [0, 1], not checked
          here: the losses check ``activation="none"`` inputs).
        - ``target``: class indices (B, \*spatial) or (B, 1, \*spatial) of an integer dtype, never expanded
          to a dense one-hot (gather and scatter_add); or class probabilities (B, C, \*spatial) of a float
          dtype with values in [0, 1]. With C = 1 an index target is binary: 1 is the foreground of
          channel 0, 0 the background.
        - ``ignore_index`` (index targets only) and ``mask`` (bool, (B, \*spatial), (B, 1, \*spatial) or
          (B, C, \*spatial), True = counts): ignored pixels leave every sum. They are selected out, never
          multiplied by 0, so a NaN or inf there (padding) changes nothing and gets a zero gradient.
        - Sums accumulate in float32 (float64 for float64 inputs) whatever the input dtype.
        - An empty (image, class) has tp = fp = fn = 0 and ``target_max`` 0.

    Example:
        >>> probs = torch.tensor([[[0.2, 0.7, 0.5]]])          # (B=1, C=1, N=3)
        >>> target = torch.tensor([[[0.5, 0.5, 1.0]]])
        >>> stats = region_statistics(probs, target)
        >>> [round(v.item(), 4) for v in (stats.tp, stats.fp, stats.fn)]
        [1.2, 0.2, 0.8]
        >>> labels = torch.tensor([[0, 1, 1]])                  # index target, two classes
        >>> probs2 = torch.tensor([[[0.9, 0.2, 0.4], [0.1, 0.8, 0.6]]])
        >>> region_statistics(probs2, labels).tp
        tensor([[0.9000, 1.4000]])
    """
    probs, kind, mask = checked_statistics_arguments(probs, target, norm=norm, ignore_index=ignore_index, mask=mask)
    if kind == "index":
        return _index_statistics(probs, target, norm=norm, ignore_index=ignore_index, mask=mask)
    check_unit_interval("target", counted_values(target, mask))
    return _dense_statistics(probs, target, norm=norm, mask=mask)


def _dense_statistics(probs: Tensor, target: Tensor, *, norm: int, mask: Tensor | None) -> RegionStatistics:
    acc = accumulation_dtype(probs.dtype)
    dims = tuple(range(2, probs.ndim))
    # Excluded entries are selected out first (0 in both), never multiplied by the mask: a NaN or inf there
    # (padding) reaches no sum, and its gradient is exactly 0.
    probs, target = _selected(probs, mask), _selected(target, mask)
    if norm == 1:
        overlap, pred_mass, target_mass = torch.minimum(probs, target), probs, target
    else:
        overlap, pred_mass, target_mass = probs * target, probs.square(), target.square()
    tp = overlap.sum(dims, dtype=acc)
    fp = pred_mass.sum(dims, dtype=acc) - tp
    fn = target_mass.sum(dims, dtype=acc) - tp
    has_pixels = math.prod(probs.shape[2:]) > 0
    target_max = target.detach().amax(dims).to(acc) if has_pixels else torch.zeros_like(tp)
    return RegionStatistics(tp, fp, fn, target_max)


def _index_statistics(
    probs: Tensor, target: Tensor, *, norm: int, ignore_index: int | None, mask: Tensor | None
) -> RegionStatistics:
    acc = accumulation_dtype(probs.dtype)
    batch, channels = probs.shape[:2]
    pixels = math.prod(probs.shape[2:])  # explicit: reshape(0, -1) is ambiguous for an empty batch
    # int64 for gather/scatter (uint8 label maps are common); lossless, the values are checked below.
    labels = target.reshape(batch, pixels).long()
    flat = probs.reshape(batch, channels, pixels)
    valid = None
    if ignore_index is not None:
        valid = not_ignored(labels, ignore_index)
    if mask is not None:
        # A per-class mask makes the counted pixels differ between classes: reduce it per pixel only
        # when it has one channel; otherwise it is applied per class below.
        pixel_mask = mask.reshape(batch, mask.shape[1], pixels)
        if pixel_mask.shape[1] == 1:
            valid = pixel_mask[:, 0] if valid is None else valid & pixel_mask[:, 0]
            mask = None
        else:
            mask = pixel_mask
    check_labels(labels, max(channels, 2), valid, ignore_index)
    safe_labels = labels if valid is None else labels.masked_fill(~valid, 0)
    # Excluded probabilities are selected out first (0), never multiplied by 0: a NaN or inf there (padding)
    # reaches no sum, and its gradient is exactly 0. From here on only the counts need the pixel weight.
    counted = None if valid is None else valid.unsqueeze(1)
    if mask is not None:  # per-class mask
        counted = mask if counted is None else mask & counted
    flat = _selected(flat, counted)
    mass = flat.square() if norm == 2 else flat
    pred_mass = mass.sum(-1, dtype=acc)

    if channels == 1:
        # Binary: label 1 is the foreground of the single channel (a C = 1 mask is a pixel mask, folded above).
        foreground = labels == 1
        if valid is not None:
            foreground = foreground & valid
        count = foreground.sum(-1, dtype=acc).unsqueeze(1)
        tp = torch.where(foreground, flat[:, 0], 0).sum(-1, dtype=acc).unsqueeze(1)
        return RegionStatistics(tp, pred_mass - tp, count - tp, (count > 0).to(acc))

    if mask is None:
        # Probability of the labelled class at every pixel: the only place hard labels touch the probabilities.
        picked = flat.gather(1, safe_labels.unsqueeze(1)).squeeze(1).to(acc)
        tp = torch.zeros(batch, channels, dtype=acc, device=probs.device).scatter_add_(1, safe_labels, picked)
        ones = torch.ones_like(picked) if valid is None else valid.to(acc)
        count = torch.zeros(batch, channels, dtype=acc, device=probs.device).scatter_add_(1, safe_labels, ones)
    else:
        # Per-class mask: fall back to a one-hot of the labels (bool, not of the logits' dtype).
        hit = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, safe_labels.unsqueeze(1), True) & counted
        tp = torch.where(hit, flat, 0).sum(-1, dtype=acc)
        count = hit.sum(-1, dtype=acc)
    return RegionStatistics(tp, pred_mass - tp, count - tp, (count > 0).to(acc))


def counted_pixels(
    input: Tensor, target: Tensor, *, ignore_index: int | None = None, mask: Tensor | None = None
) -> Tensor:
    r"""How many pixels the statistics of each (image, class) sum over: n = tp + fp + fn + tn.

    .. math::

        n_{bc} = \#\{i : \text{pixel } i \text{ of image } b \text{ counts for class } c\}

    The losses that need true negatives (tn = n - tp - fp - fn = sum min(1 - x, 1 - y) for norm 1) take it
    from here; it reads only the target and the mask, never the logits.

    Convention:
        - ``input`` (B, C, \*spatial) (only its shape is used), ``target``, ``ignore_index`` and ``mask`` as
          :func:`region_statistics` (validated the same way).
        - Returns (B, 1) when every class counts the same pixels, (B, C) with a per-class mask; float32
          (float64 for float64 input).

    Example:
        >>> labels = torch.tensor([[0, 1, 255, 1]])
        >>> counted_pixels(torch.zeros(1, 2, 4), labels, ignore_index=255)
        tensor([[3.]])
    """
    input, kind, mask = checked_statistics_arguments(input, target, norm=1, ignore_index=ignore_index, mask=mask)
    acc = accumulation_dtype(input.dtype)
    batch = input.shape[0]
    pixels = math.prod(input.shape[2:])  # explicit: reshape(0, -1) is ambiguous for an empty batch
    counted = None if mask is None else mask.reshape(batch, mask.shape[1], pixels)
    if kind == "index" and ignore_index is not None:
        valid = not_ignored(target.reshape(batch, 1, pixels), ignore_index)
        counted = valid if counted is None else counted & valid
    if counted is None:
        return torch.full((batch, 1), float(pixels), dtype=acc, device=input.device)
    return counted.sum(-1, dtype=acc)


def counted_values(values: Tensor, mask: Tensor | None) -> Tensor:
    """``values`` with the entries ``mask`` leaves out set to 0, for the value checks: excluded entries are never read.

    Convention:
        ``mask``: bool, broadcastable to ``values`` (with a channel dim), True = counts; None: ``values`` itself.
        0 lies in every range the checks accept ([0, 1] for targets).

    Example:
        >>> counted_values(torch.tensor([[[0.5, float("nan")]]]), torch.tensor([[[True, False]]]))
        tensor([[[0.5000, 0.0000]]])
    """
    return _selected(values, mask)


def _selected(values: Tensor, keep: Tensor | None) -> Tensor:
    """``values`` where ``keep`` (broadcast) is True, else 0; ``values`` itself when ``keep`` is None."""
    return values if keep is None else torch.where(keep, values, 0)


def product_statistics(probs: Tensor, target: Tensor, *, mask: Tensor | None = None) -> RegionStatistics:
    r"""The classic product-form statistics, kept for reproducing legacy losses and as a baseline.

    .. math::

        tp = \sum_i m_i x_i y_i,\quad fp = \sum_i m_i x_i - tp,\quad fn = \sum_i m_i y_i - tp

    This is what MONAI's ``soft_label=False``, nnU-Net and most code use. It equals
    :func:`region_statistics` when y is binary, but on a fractional target it is not minimised at
    x = y (fp and fn stay positive there): use it only to reproduce such a loss, never to train on soft labels.

    Convention:
        - ``probs``: (B, C, \*spatial) floating point, already activated (not checked).
        - ``target``: class probabilities (B, C, \*spatial), float, values in [0, 1]; index targets are an
          error here (on hard labels use :func:`region_statistics`, which gives the same numbers).
        - ``mask`` (bool, (B, \*spatial), (B, 1, \*spatial) or (B, C, \*spatial), True = counts): excluded
          pixels are selected out of every sum (a NaN or inf there changes nothing; their gradient is 0).
          Sums in float32 (float64 for float64 input); an empty (image, class) gives zeros.

    Example:
        >>> half = torch.tensor([[[0.5]]])
        >>> [round(float(s), 2) for s in product_statistics(half, half)[:3]]   # fp, fn > 0 at x = y
        [0.25, 0.25, 0.25]
        >>> probs = torch.tensor([[[0.5, float("nan")]]])                     # a NaN at a masked-out pixel
        >>> product_statistics(probs, torch.tensor([[[1.0, 1.0]]]), mask=torch.tensor([[True, False]])).tp
        tensor([[0.5000]])
    """
    probs = check_input(probs)
    if target_kind(probs, target) != "dense":
        raise TypeError(
            f"product_statistics needs class probabilities of shape {tuple(probs.shape)}; got class indices of "
            f"shape {tuple(target.shape)} (region_statistics gives the same numbers for hard labels)"
        )
    mask = None if mask is None else check_mask(mask, probs)
    check_unit_interval("target", counted_values(target, mask))
    acc = accumulation_dtype(probs.dtype)
    dims = tuple(range(2, probs.ndim))
    probs, target = _selected(probs, mask), _selected(target, mask)  # selected first: see _dense_statistics
    tp = (probs * target).sum(dims, dtype=acc)
    has_pixels = math.prod(probs.shape[2:]) > 0
    target_max = target.detach().amax(dims).to(acc) if has_pixels else torch.zeros_like(tp)
    return RegionStatistics(tp, probs.sum(dims, dtype=acc) - tp, target.sum(dims, dtype=acc) - tp, target_max)


def __getattr__(name: str):
    # logit_statistics moved to softseg.dispatch (the choice between this reference engine and the fused
    # kernels lives above both); its old import path still works, resolved lazily so nothing here imports
    # the kernels.
    if name == "logit_statistics":
        import importlib

        return importlib.import_module("softseg.dispatch").logit_statistics
    raise AttributeError(f"module 'softseg.statistics' has no attribute {name!r}")
