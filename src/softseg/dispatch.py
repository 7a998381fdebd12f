r"""Which path computes the statistics from logits: the one place that chooses, above both paths.

- The **reference path**: :func:`softseg.activation.activate` + :func:`softseg.statistics.region_statistics`
  (and the cross-entropy sums from the same activation): plain torch operations, any case.
- The **fused path** (:mod:`softseg.kernels`): softmax or sigmoid, the sums and the backward straight from
  the logits, never holding the probabilities at the logits' size. Eagerly it is the custom operator
  ``torch.ops.softseg.logit_statistics`` (:mod:`softseg.kernels.ops`): the native kernels on CPU
  (:mod:`softseg.kernels.native`, where a C++ compiler built them), the Triton kernels on CUDA, the torch
  blocks elsewhere. Under ``torch.compile`` it is :data:`COMPILED_PATH`: by default the same operator on CPU and
  CUDA (one opaque node of the graph) and, on other devices, the whole-tensor formula
  (:class:`softseg.kernels.formula.CompiledStatistics`) from which the compiler generates its own kernels;
  either traces without a graph break.

Same values and gradients on every path (tests/test_fused.py, test_compile.py, test_triton.py).
:mod:`softseg.statistics` (below) imports nothing from here or from the kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg._checks import (
    ACTIVATIONS,
    _assert_on_device,
    check_choice,
    check_labels,
    check_unit_interval,
    check_unit_interval_bounds,
    not_ignored,
    value_checks_enabled,
)
from softseg.activation import activate
from softseg.kernels import ops  # noqa: F401  (registers torch.ops.softseg.*)
from softseg.kernels.formula import CompiledStatistics, kept_logits
from softseg.kernels.native import native_applies
from softseg.kernels.triton_fused import RegionLossOptions, TritonRegionLoss, tail_applies, triton_applies
from softseg.statistics import (
    RegionStatistics,
    _selected,
    accumulation_dtype,
    checked_statistics_arguments,
    counted_values,
    region_statistics,
)

LOG_FLOOR = 1e-12  # activation="none" cross-entropy: log of a probability floored here, never -inf

# The fused path under torch.compile: "operator" (the eager kernels, native, Triton or blocks, as one opaque
# node of the graph), "formula" (the compiler generates kernels from softseg.kernels.formula), or None: the
# operator on CPU and CUDA, where the native and Triton kernels beat the generated ones (benchmarks/README.md),
# the formula on other devices, where the blocks would be many small launches.
COMPILED_PATH: str | None = None


def _compiled_path(input: Tensor) -> str:
    if COMPILED_PATH is not None:
        return COMPILED_PATH
    return "operator" if input.device.type in ("cpu", "cuda") else "formula"


def _fused_path_applies(
    input: Tensor, target: Tensor, *, activation: str, kind: str, mask: Tensor | None = None
) -> bool:
    """Whether :func:`fused_statistics` takes the fused path for these (already validated) arguments.

    It does for softmax (C >= 2) and sigmoid on index or dense targets with any mask, eagerly and under
    ``torch.compile``, except: when the target requires a gradient, for a per-class mask on an index target
    with C > 1, and for empty inputs.
    """
    channels = input.shape[1]
    return (
        activation in ("softmax", "sigmoid")
        and not (activation == "softmax" and channels < 2)
        and not torch.jit.is_scripting()
        and not target.requires_grad
        and not (kind == "index" and mask is not None and mask.shape[1] > 1)
        and input.numel() > 0
    )


def logit_statistics(
    input: Tensor,
    target: Tensor,
    *,
    activation: str = "softmax",
    norm: int = 1,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
) -> RegionStatistics:
    r"""The statistics of :func:`~softseg.statistics.region_statistics` for ``activation(input)``, from the logits.

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i - tp,\quad fn = \sum_i m_i y_i - tp,
        \qquad x = \mathrm{activation}(z)

    (products for norm 2). Same values and gradients as ``region_statistics(activate(input, activation),
    target, ...)``, but softmax and sigmoid run fused (:func:`fused_statistics`): the probabilities are
    never held at the logits' size and backward recomputes them from the logits, so it is faster and needs
    less memory. Also the old import path ``softseg.statistics.logit_statistics``.

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype (float32 sums); ``activation``
          ``"softmax"`` (C >= 2), ``"sigmoid"`` or ``"none"`` (probabilities in [0, 1]).
        - ``target``, ``ignore_index``, ``mask``, empty classes: as :func:`~softseg.statistics.region_statistics`;
          excluded pixels are selected out (a NaN or inf there changes nothing; their gradient is 0).
        - Differentiable twice (``create_graph=True``), on every path; ``torch.compile(fullgraph=True)``
          traces it without a break.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])   # (B=1, C=2, N=3)
        >>> labels = torch.tensor([[0, 1, 1]])
        >>> logit_statistics(logits, labels).tp
        tensor([[0.9820, 1.3808]])
        >>> region_statistics(logits.softmax(1), labels).tp             # the reference path
        tensor([[0.9820, 1.3808]])
    """
    stats, _ = fused_statistics(input, target, activation=activation, norm=norm, ignore_index=ignore_index, mask=mask)
    return stats


def fused_statistics(
    input: Tensor,
    target: Tensor,
    *,
    activation: str = "softmax",
    norm: int = 1,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    cross_entropy: bool = False,
) -> tuple[RegionStatistics, Tensor | None]:
    r"""tp, fp, fn of ``activation(input)`` against ``target``, and optionally the cross-entropy sums.

    .. math::

        tp_{bc} = \sum_i m_i \min(x_{bci}, y_{bci}),\quad fp = \sum_i m_i x^p - tp,\quad
        fn = \sum_i m_i y^p - tp,\qquad CE_{bc} = -\sum_i m_i\, y_{bci} \log x_{bci}

    with x = softmax or sigmoid of the logits (norm p = 2: tp = sum m x y). For sigmoid the
    cross-entropy is the binary one, CE = -sum m (y log x + (1 - y) log(1 - x)). Also the old import path
    ``softseg.kernels.fused_statistics``.

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype; sums and the activation run in float32
          (float64 for float64 input); the gradient has the input's dtype.
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype (C = 1: 0/1
          labels), or class probabilities (B, C, \*spatial) in [0, 1]; ``ignore_index`` and ``mask`` as
          in :func:`softseg.statistics.region_statistics`; empty classes give zero sums. Excluded logits are
          selected out (a NaN or inf there changes nothing, its gradient is 0); with softmax and a per-class
          mask, a pixel leaves the activation only where none of its classes counts.
        - ``activation``: ``"softmax"`` and ``"sigmoid"`` run fused; ``"none"``, a target that requires a
          gradient, a per-class mask on an index target and empty inputs run the reference path (same
          values and gradients). With ``activation="none"`` the cross-entropy uses log(max(x, 1e-12)).
        - Device: on CUDA, with Triton installed, float32/float16/bfloat16 logits and at most 256
          classes take the Triton kernels of :mod:`softseg.kernels.triton_fused` (one pass forward, one
          backward); ``SOFTSEG_TRITON=0`` in the environment turns them off. Elsewhere the torch blocks run,
          and under ``torch.compile`` :data:`COMPILED_PATH`.
        - Value checks (labels in range, dense targets in [0, 1]) read a value back to the host: a sync on
          a GPU; off with :class:`softseg.set_value_checks` and under ``torch.compile``.
        - Returns ``(RegionStatistics, ce)``: ``ce`` is None unless ``cross_entropy=True``, then the
          (B, C) sums over counted pixels (not yet averaged). Differentiable twice on every path.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])   # (B=1, C=2, N=3)
        >>> labels = torch.tensor([[0, 1, 1]])
        >>> stats, ce = fused_statistics(logits, labels, cross_entropy=True)
        >>> stats.tp
        tensor([[0.9820, 1.3808]])
        >>> ce.sum() / 3                      # mean over the 3 pixels: F.cross_entropy(logits, labels)
        tensor(0.2794)
    """
    input, kind, mask = _validated(input, target, activation, norm, ignore_index, mask, cross_entropy)
    if not _fused_path_applies(input, target, activation=activation, kind=kind, mask=mask):
        return _reference_statistics(
            input,
            target,
            kind=kind,
            activation=activation,
            norm=norm,
            ignore_index=ignore_index,
            mask=mask,
            cross_entropy=cross_entropy,
        )
    compiling = torch.compiler.is_compiling()
    if compiling and _compiled_path(input) == "formula":
        path = None
    elif triton_applies(input):
        path = "triton"
    elif native_applies(input, target if kind == "index" else None, mask, activation=activation, with_ce=cross_entropy):
        path = "native"
    else:
        path = "blocks"
    # The CPU paths read the labels or the dense target anyway and return their range: the value check takes it
    # from there instead of a separate pass (W4: 4 bytes a pixel and class), eagerly and compiled alike.
    range_in_forward = value_checks_enabled() and path in ("native", "blocks")
    # The native kernels read uint8 and int64 labels as they are: no int64 copy (8 bytes a pixel, also what
    # autograd keeps for the backward) of a uint8 label map.
    logits, labels, dense, weight = _flat_inputs(
        input, target, kind, ignore_index=ignore_index, mask=mask, check=not range_in_forward, int64=path != "native"
    )
    if path is None:
        tp, fp, fn, target_max, ce = CompiledStatistics.apply(
            logits, labels, dense, weight, activation, norm, cross_entropy
        )
        target_max = target_max.detach()
    else:
        tp, fp, fn, target_max, ce, target_range, _, _ = torch.ops.softseg.logit_statistics(
            logits, labels, dense, weight, activation, norm, cross_entropy, range_in_forward, path
        )
        if range_in_forward:
            _check_range(target_range, target, kind, input.shape[1], ignore_index=ignore_index, mask=mask)
    return RegionStatistics(tp, fp, fn, target_max), (ce if cross_entropy else None)


def _check_range(
    target_range: Tensor, target: Tensor, kind: str, channels: int, *, ignore_index: int | None, mask: Tensor | None
) -> None:
    """The value check of the target from the (min, max) the forward pass returned.

    Eagerly one device-to-host copy, and on a failure the full check for its message; under ``torch.compile``
    an assertion on the device (no host read, no graph break).
    """
    low, high = target_range[0], target_range[1]
    classes = max(channels, 2)
    if torch.compiler.is_compiling():
        if kind == "dense":
            _assert_on_device((low >= 0) & (high <= 1), "target must hold values in [0, 1]")
        else:
            _assert_on_device((low >= 0) & (high < classes), f"target holds a class index outside [0, {classes - 1}]")
        return
    low, high = target_range.tolist()
    if kind == "dense":
        check_unit_interval_bounds("target", low, high)
    elif low < 0 or high >= classes:  # the full check names the offending label
        _index_labels(target, channels, ignore_index=ignore_index, mask=mask)


def fused_region_loss(
    input: Tensor,
    target: Tensor,
    *,
    activation: str,
    norm: int,
    ignore_index: int | None,
    mask: Tensor | None,
    options: RegionLossOptions,
    ce_count: Tensor | None,
    differentiable_loss: Callable[[RegionStatistics, Tensor | None], Tensor],
) -> Tensor | None:
    r"""The whole Tversky-family loss in the Triton kernels (:class:`TritonRegionLoss`), or None where they don't apply.

    .. math::

        L = \lambda_{region}\, \mathrm{aggregate}\big((1 - T)^\gamma\big) + \lambda_{ce}\, \overline{CE}

    Convention:
        - Arguments as in :func:`fused_statistics`; ``options``: the loss's validated options
          (:class:`~softseg.kernels.triton_fused.RegionLossOptions`); ``ce_count``: the cross-entropy's
          number of counted terms when ``options.lambda_ce`` is not 0; ``differentiable_loss``: the same
          loss from (statistics, cross-entropy sums) in torch operations, for double backward.
        - Returns the scalar loss (float32) when the Triton kernels take the input (CUDA, Triton, see
          :func:`~softseg.kernels.triton_fused.triton_applies`), eagerly, and the (B, C) tail fits one
          program; otherwise None, and the caller runs :func:`fused_statistics` and the torch tail (same
          values). Under ``torch.compile`` the compiler fuses the tail itself (None).

    Example:
        >>> from softseg.kernels.triton_fused import RegionLossOptions
        >>> options = RegionLossOptions(alpha=0.5, beta=0.5, smooth=0.0, gamma=1.0, log_loss=False,
        ...     levels=(("global", 1.0),), first_class=0, class_weight=None, present=False, threshold=0.01,
        ...     sum_reduction=False)
        >>> logits, labels = torch.zeros(1, 2, 4), torch.tensor([[0, 1, 1, 0]])
        >>> fused_region_loss(logits, labels, activation="softmax", norm=1, ignore_index=None, mask=None,
        ...                   options=options, ce_count=None, differentiable_loss=None) is None   # CPU tensors
        True
    """
    if not triton_applies(input) or torch.compiler.is_compiling():
        return None
    with_ce = options.lambda_ce != 0
    input, kind, mask = _validated(input, target, activation, norm, ignore_index, mask, with_ce)
    if not (
        _fused_path_applies(input, target, activation=activation, kind=kind, mask=mask)
        and tail_applies(input.shape[0], input.shape[1])
    ):
        return None
    logits, labels, dense, weight = _flat_inputs(input, target, kind, ignore_index=ignore_index, mask=mask)
    return TritonRegionLoss.apply(logits, labels, dense, weight, activation, norm, options, ce_count, differentiable_loss)


def _validated(
    input: Tensor, target: Tensor, activation: str, norm: int, ignore_index: int | None, mask, cross_entropy: bool
) -> tuple[Tensor, str, Tensor | None]:
    """Checked arguments of the fused functions: the input, the target kind and the mask with a channel dim."""
    check_choice("activation", activation, ACTIVATIONS)
    if not isinstance(cross_entropy, bool):
        raise TypeError(f"cross_entropy must be a bool; got {type(cross_entropy).__name__}")
    return checked_statistics_arguments(input, target, norm=norm, ignore_index=ignore_index, mask=mask)


def _flat_inputs(
    input: Tensor,
    target: Tensor,
    kind: str,
    *,
    ignore_index: int | None,
    mask: Tensor | None,
    check: bool = True,
    int64: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """(B, C, N) logits, and the labels (B, N) or the dense target (B, C, N), and the pixel weight.

    ``check=False`` leaves the index labels' range, or the dense target's [0, 1] check, to the caller;
    ``int64=False`` keeps the labels' integer dtype.
    """
    batch, channels = input.shape[:2]
    pixels = math.prod(input.shape[2:])
    logits = input.reshape(batch, channels, pixels)
    if kind == "index":
        labels, weight = _index_labels(
            target, channels, ignore_index=ignore_index, mask=mask, check=check, int64=int64
        )
        return logits, labels, None, weight
    if check:
        check_unit_interval("target", counted_values(target, mask))  # excluded entries are never read
    weight = None if mask is None else mask.reshape(batch, mask.shape[1], pixels)
    return logits, None, target.reshape(batch, channels, pixels), weight


def _index_labels(
    target: Tensor,
    channels: int,
    *,
    ignore_index: int | None,
    mask: Tensor | None,
    check: bool = True,
    int64: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Flat labels (B, N) with ignored pixels set to 0, and the bool pixel weight (B, 1, N) or None.

    The labels are int64 (gather and scatter take no other), or of the target's dtype with ``int64=False``.
    Raises ValueError for a counted label outside [0, max(C, 2)) unless ``check=False``.
    """
    batch = target.shape[0]
    pixels = math.prod(target.shape[1:])
    labels = target.reshape(batch, pixels)
    labels = labels.long() if int64 else labels
    valid = None if ignore_index is None else not_ignored(labels, ignore_index)
    if mask is not None:
        pixel_mask = mask.reshape(batch, pixels)  # one channel: _fused_path_applies ruled out the rest
        valid = pixel_mask if valid is None else valid & pixel_mask
    # One aminmax pass (min and max together) over the labels to check; the ignored or masked-out pixels
    # are set to 0, a valid class, so they pass. check_labels builds the error message on a failure only.
    safe = labels if valid is None else labels.masked_fill(~valid, 0)
    if check and torch.compiler.is_compiling():
        check_labels(safe, max(channels, 2), None, ignore_index)  # on the device, in the compiled graph
    elif check and safe.numel() > 0 and value_checks_enabled():
        low, high = torch.stack(torch.aminmax(safe)).tolist()  # one device-to-host copy (a sync on GPU)
        if low < 0 or high >= max(channels, 2):
            check_labels(labels, max(channels, 2), valid, ignore_index)
    if valid is None:
        return labels, None
    return safe, valid.unsqueeze(1)


# ------------------------------------------------------------------------------------------ reference path


def _reference_statistics(
    input: Tensor,
    target: Tensor,
    *,
    kind: str,
    activation: str,
    norm: int,
    ignore_index: int | None,
    mask: Tensor | None,
    cross_entropy: bool,
) -> tuple[RegionStatistics, Tensor | None]:
    """activate() + region_statistics(), and the cross-entropy sums from the same activation.

    Excluded logits are selected out before the activation (:func:`~softseg.kernels.formula.kept_logits`),
    so a NaN or inf there reaches neither the softmax's backward nor the value checks of ``activation="none"``.
    """
    keep = _counted_entries(input, target, kind, ignore_index, mask)
    input = kept_logits(input, keep, softmax=activation == "softmax")
    log_probs = None
    if cross_entropy and activation == "softmax" and input.shape[1] >= 2:
        # One softmax for both terms: the probabilities are the exponential of the log-probabilities.
        log_probs = input.log_softmax(1)
        probs = log_probs.exp()
    else:
        probs = activate(input, activation)  # validates (softmax needs C >= 2, "none" needs [0, 1])
    stats = region_statistics(probs, target, norm=norm, ignore_index=ignore_index, mask=mask)
    if not cross_entropy:
        return stats, None
    ce = _reference_cross_entropy(
        input, probs, log_probs, target, kind=kind, activation=activation, ignore_index=ignore_index, mask=mask
    )
    return stats, ce


def _counted_entries(
    input: Tensor, target: Tensor, kind: str, ignore_index: int | None, mask: Tensor | None
) -> Tensor | None:
    r"""Bool (B, 1 or C, \*spatial): True where a pixel (or pixel and class) counts; None when all count."""
    keep = mask
    if kind == "index" and ignore_index is not None:
        labels = target.reshape(input.shape[:1] + (1,) + input.shape[2:])
        kept = not_ignored(labels, ignore_index)
        keep = kept if keep is None else keep & kept
    return keep


def _reference_cross_entropy(
    input: Tensor,
    probs: Tensor,
    log_probs: Tensor | None,
    target: Tensor,
    *,
    kind: str,
    activation: str,
    ignore_index: int | None,
    mask: Tensor | None,
) -> Tensor:
    """(B, C) sums of the per-pixel cross-entropy terms over counted pixels, without a dense one-hot."""
    acc = accumulation_dtype(input.dtype)
    batch, channels = input.shape[:2]
    pixels = math.prod(input.shape[2:])
    binary = activation == "sigmoid" or channels == 1
    if activation == "softmax":
        log_pos = log_probs
    elif activation == "sigmoid":
        log_pos = F.logsigmoid(input)
    else:
        log_pos = probs.clamp_min(LOG_FLOOR).log()
    # Binary terms: -(y log x + (1 - y) log(1 - x)) = -log(1 - x) - y (log x - log(1 - x)).
    log_neg = None
    if binary:
        log_neg = log_pos - input if activation == "sigmoid" else (1 - probs).clamp_min(LOG_FLOOR).log()
    if kind == "dense":
        y = target.to(acc)
        terms = -(y * log_pos) if log_neg is None else -(log_neg + y * (log_pos - log_neg))
        if mask is not None:
            terms = torch.where(mask, terms, 0)
        return terms.reshape(batch, channels, pixels).sum(-1, dtype=acc)

    labels = target.reshape(batch, pixels).long()
    valid = None if ignore_index is None else not_ignored(labels, ignore_index)
    if mask is not None:
        pixel_mask = mask.reshape(batch, mask.shape[1], pixels)
        if pixel_mask.shape[1] == 1:
            valid = pixel_mask[:, 0] if valid is None else valid & pixel_mask[:, 0]
            mask = None
    safe = labels if valid is None else labels.masked_fill(~valid, 0)
    pixel_keep = None if valid is None else valid.unsqueeze(1)
    flat_pos = log_pos.reshape(batch, channels, pixels)
    if channels == 1:
        foreground = (safe == 1).to(acc).unsqueeze(1)
        flat_neg = log_neg.reshape(batch, 1, pixels)
        terms = -(flat_neg + foreground * (flat_pos - flat_neg))
        return _selected(terms, pixel_keep).sum(-1, dtype=acc)
    if mask is not None:
        # Per-class mask on an index target: the one-hot of the labels (bool) selects each class's pixels.
        hit = torch.zeros_like(flat_pos, dtype=torch.bool).scatter_(1, safe.unsqueeze(1), True)
        counted = mask.reshape(batch, channels, pixels)
        if valid is not None:
            counted = counted & valid.unsqueeze(1)
        if log_neg is None:
            return -torch.where(hit & counted, flat_pos, 0).sum(-1, dtype=acc)
        flat_neg = log_neg.reshape(batch, channels, pixels)
        return -torch.where(counted, flat_neg + hit * (flat_pos - flat_neg), 0).sum(-1, dtype=acc)
    picked = flat_pos.gather(1, safe.unsqueeze(1)).squeeze(1).to(acc)
    if log_neg is not None:
        picked = picked - log_neg.reshape(batch, channels, pixels).gather(1, safe.unsqueeze(1)).squeeze(1).to(acc)
    picked = _selected(picked, valid)
    ce = torch.zeros(batch, channels, dtype=acc, device=input.device).scatter_add(1, safe, -picked)
    if log_neg is not None:
        flat_neg = _selected(log_neg.reshape(batch, channels, pixels), pixel_keep)
        ce = ce - flat_neg.sum(-1, dtype=acc)
    return ce
