r"""Region statistics straight from the logits, in blocks, with a hand-written backward pass.

Same statistics as :func:`softseg.statistics.region_statistics` (DESIGN.md section 2), same gradient:
for x = act(z), y the target and m the counted-pixel weight, summed over pixels i of one (image, class),

    tp = sum m min(x, y)  (norm 1; the product x y for index targets and norm 2)
    fp = sum m x^p - tp,  fn = sum m y^p - tp,

so with upstream gradients G_tp, G_fp, G_fn the gradient with respect to x is

    dL/dx_i = m_i (A + B h_i),   A = G_fp (times 2 x_i for norm 2),   B = G_tp - G_fp - G_fn,

where h = d tp / dx is the label indicator for index targets, y for norm 2, and for norm 1 on dense
targets d min(x, y)/dx = 1 where x < y, 1/2 at ties, 0 where x > y (torch.minimum's convention, so the
reference path and this one agree everywhere). The softmax or sigmoid backward follows.

Why it is faster and leaner: the pixels are visited in blocks of a few MiB, so the probabilities, the
block's one-hot labels and the gradient terms live in cache; only the logits, the labels (or dense
target), the pixel weights and, for softmax, each pixel's log-sum-exp (1.5/C of the logits) are saved,
and backward recomputes the activation, the softmax in one exp pass straight into the gradient's block.
The softmax runs on exp2 (torch's CPU exp is about 4x slower) and reads the strided block in place
(torch's softmax would copy it first). On CPU the blocks are
split into one contiguous run per torch thread, each run on its own single-threaded worker, so the
many small block ops never wait on a cross-core barrier (they would for every op with intra-op threads).
The sigmoid kernels are the exception: a few cheap elementwise ops per block, run inline on larger blocks
(SIGMOID_BLOCK_FRACTION); for index targets they use the closed forms of :class:`_FusedSigmoidIndexStatistics`.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from softseg._checks import (
    ACTIVATIONS,
    check_choice,
    check_labels,
    check_unit_interval,
    check_unit_interval_bounds,
    value_checks_enabled,
)
from softseg.activation import activate
from softseg.kernels.triton_fused import (
    RegionLossOptions,
    TritonRegionLoss,
    TritonRegionStatistics,
    statistics_outputs,
    tail_applies,
    triton_applies,
)
from softseg.statistics import (
    RegionStatistics,
    _selected,
    accumulation_dtype,
    checked_statistics_arguments,
    region_statistics,
)

BLOCK_ELEMENTS = 1 << 19  # (B, C, pixels) elements per block: 2 MiB in float32, stays in the L2/L3 cache
MIN_BLOCK_PIXELS = 256  # at least this many pixels per block, so per-op overhead stays small for large B * C
CUDA_BLOCKS = 8  # blocks per input on a GPU without the Triton kernels (module softseg.kernels.triton_fused)
LOG_FLOOR = 1e-12  # activation="none" cross-entropy: log of a probability floored here, never -inf


def _fused_path_applies(
    input: Tensor, target: Tensor, *, activation: str, kind: str, mask: Tensor | None = None
) -> bool:
    """Whether :func:`fused_statistics` takes the fused path for these (already validated) arguments.

    It does for softmax (C >= 2) and sigmoid on index or dense targets with any mask, except: under
    ``torch.compile`` (the compiler fuses the plain path itself), when the target requires a gradient,
    for a per-class mask on an index target with C > 1, and for empty inputs.
    """
    channels = input.shape[1]
    return (
        activation in ("softmax", "sigmoid")
        and not (activation == "softmax" and channels < 2)
        and not torch.compiler.is_compiling()
        and not torch.jit.is_scripting()
        and not target.requires_grad
        and not (kind == "index" and mask is not None and mask.shape[1] > 1)
        and input.numel() > 0
    )


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
    cross-entropy is the binary one, CE = -sum m (y log x + (1 - y) log(1 - x)).

    Convention:
        - ``input``: logits (B, C, \*spatial), any float dtype; sums and the activation run in float32
          (float64 for float64 input); the gradient has the input's dtype.
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype (C = 1: 0/1
          labels), or class probabilities (B, C, \*spatial) in [0, 1]; ``ignore_index`` and ``mask`` as
          in :func:`softseg.statistics.region_statistics`; empty classes give zero sums. Excluded logits are
          selected out (a NaN or inf there changes nothing, its gradient is 0); with softmax and a per-class
          mask, a pixel leaves the activation only where none of its classes counts.
        - ``activation``: ``"softmax"`` and ``"sigmoid"`` run fused; ``"none"`` and the cases listed in
          :func:`_fused_path_applies` run the reference path (same values and gradients).
          With ``activation="none"`` the cross-entropy uses log(max(x, 1e-12)).
        - Device: on CUDA, with Triton installed, float32/float16/bfloat16 logits and at most 256
          classes take the Triton kernels of :mod:`softseg.kernels.triton_fused` (one pass forward, one
          backward); ``SOFTSEG_TRITON=0`` in the environment turns them off. Elsewhere the torch blocks run.
        - Returns ``(RegionStatistics, ce)``: ``ce`` is None unless ``cross_entropy=True``, then the
          (B, C) sums over counted pixels (not yet averaged). The fused path is differentiable once
          (no double backward).

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
    # Binary labels on the sigmoid blocks and dense targets on any torch blocks: the forward pass reads them
    # anyway and returns their range, so they are checked there instead of in a separate pass over them
    # (W3: about 5% of a step; W4: 4 bytes a pixel and class).
    use_triton = triton_applies(input)
    binary_sigmoid = kind == "index" and activation == "sigmoid" and input.shape[1] == 1 and not cross_entropy
    range_in_forward = value_checks_enabled() and not use_triton and (kind == "dense" or binary_sigmoid)
    logits, labels, dense, weight = _flat_inputs(
        input, target, kind, ignore_index=ignore_index, mask=mask, check=not range_in_forward
    )
    if use_triton:
        tp, fp, fn, target_max, ce = TritonRegionStatistics.apply(
            logits, labels, dense, weight, activation, norm, cross_entropy
        )
    elif kind == "index" and activation == "softmax":
        tp, fp, fn, target_max, ce = _FusedSoftmaxIndexStatistics.apply(logits, labels, weight, norm, cross_entropy)
    elif kind == "index" and not cross_entropy:
        tp, fp, fn, target_max, label_range = _FusedSigmoidIndexStatistics.apply(
            logits, labels, weight, norm, range_in_forward
        )
        if range_in_forward:
            low, high = label_range.tolist()
            if low < 0 or high > 1:  # the full check names the offending label
                _index_labels(target, 1, ignore_index=ignore_index, mask=mask)
        ce = None
    else:
        tp, fp, fn, target_max, ce, target_range = _FusedRegionStatistics.apply(
            logits, dense, labels, weight, activation, norm, cross_entropy, range_in_forward
        )
        if range_in_forward:
            check_unit_interval_bounds("target", *target_range.tolist())
    return RegionStatistics(tp, fp, fn, target_max), (ce if cross_entropy else None)


def fused_region_loss(
    input: Tensor,
    target: Tensor,
    *,
    activation: str,
    norm: int,
    ignore_index: int | None,
    mask: Tensor | None,
    options: RegionLossOptions,
    ce_count: Tensor | None = None,
) -> Tensor | None:
    r"""The whole Tversky-family loss in the Triton kernels (:class:`TritonRegionLoss`), or None where they don't apply.

    .. math::

        L = \lambda_{region}\, \mathrm{aggregate}\big((1 - T)^\gamma\big) + \lambda_{ce}\, \overline{CE}

    Convention:
        - Arguments as in :func:`fused_statistics`; ``options``: the loss's validated options
          (:class:`~softseg.kernels.triton_fused.RegionLossOptions`); ``ce_count``: the cross-entropy's
          number of counted terms when ``options.lambda_ce`` is not 0.
        - Returns the scalar loss (float32) when the Triton kernels take the input (CUDA, Triton, see
          :func:`~softseg.kernels.triton_fused.triton_applies`) and the (B, C) tail fits one program;
          otherwise None, and the caller runs :func:`fused_statistics` and the torch tail (same values).

    Example:
        >>> from softseg.kernels.triton_fused import RegionLossOptions
        >>> options = RegionLossOptions(alpha=0.5, beta=0.5, smooth=0.0, gamma=1.0, log_loss=False,
        ...     levels=(("global", 1.0),), first_class=0, class_weight=None, present=False, threshold=0.01,
        ...     sum_reduction=False)
        >>> logits, labels = torch.zeros(1, 2, 4), torch.tensor([[0, 1, 1, 0]])
        >>> fused_region_loss(logits, labels, activation="softmax", norm=1, ignore_index=None, mask=None,
        ...                   options=options) is None          # CPU tensors: the torch path computes it
        True
    """
    with_ce = options.lambda_ce != 0
    input, kind, mask = _validated(input, target, activation, norm, ignore_index, mask, with_ce)
    if not (
        _fused_path_applies(input, target, activation=activation, kind=kind, mask=mask)
        and triton_applies(input)
        and tail_applies(input.shape[0], input.shape[1])
    ):
        return None
    logits, labels, dense, weight = _flat_inputs(input, target, kind, ignore_index=ignore_index, mask=mask)
    return TritonRegionLoss.apply(logits, labels, dense, weight, activation, norm, options, ce_count)


def _validated(
    input: Tensor, target: Tensor, activation: str, norm: int, ignore_index: int | None, mask, cross_entropy: bool
) -> tuple[Tensor, str, Tensor | None]:
    """Checked arguments of the fused functions: the input, the target kind and the mask with a channel dim."""
    check_choice("activation", activation, ACTIVATIONS)
    if not isinstance(cross_entropy, bool):
        raise TypeError(f"cross_entropy must be a bool; got {type(cross_entropy).__name__}")
    return checked_statistics_arguments(input, target, norm=norm, ignore_index=ignore_index, mask=mask)


def _flat_inputs(
    input: Tensor, target: Tensor, kind: str, *, ignore_index: int | None, mask: Tensor | None, check: bool = True
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """(B, C, N) logits, and the labels (B, N) or the dense target (B, C, N), and the pixel weight.

    ``check=False`` leaves the index labels' range, or the dense target's [0, 1] check, to the caller.
    """
    batch, channels = input.shape[:2]
    pixels = math.prod(input.shape[2:])
    logits = input.reshape(batch, channels, pixels)
    if kind == "index":
        labels, weight = _index_labels(target, channels, ignore_index=ignore_index, mask=mask, check=check)
        return logits, labels, None, weight
    if check:
        check_unit_interval("target", target)
    weight = None if mask is None else mask.reshape(batch, mask.shape[1], pixels)
    return logits, None, target.reshape(batch, channels, pixels), weight


def _index_labels(
    target: Tensor, channels: int, *, ignore_index: int | None, mask: Tensor | None, check: bool = True
) -> tuple[Tensor, Tensor | None]:
    """Flat int64 labels (B, N) with ignored pixels set to 0, and the bool pixel weight (B, 1, N) or None.

    Raises ValueError for a counted label outside [0, max(C, 2)) unless ``check=False``.
    """
    batch = target.shape[0]
    pixels = math.prod(target.shape[1:])
    labels = target.reshape(batch, pixels).long()
    valid = None if ignore_index is None else labels != ignore_index
    if mask is not None:
        pixel_mask = mask.reshape(batch, pixels)  # one channel: _fused_path_applies ruled out the rest
        valid = pixel_mask if valid is None else valid & pixel_mask
    # One aminmax pass (min and max together) over the labels to check; the ignored or masked-out pixels
    # are set to 0, a valid class, so they pass. check_labels builds the error message on a failure only.
    safe = labels if valid is None else labels.masked_fill(~valid, 0)
    if check and safe.numel() > 0 and value_checks_enabled() and not torch.compiler.is_compiling():
        low, high = torch.stack(torch.aminmax(safe)).tolist()  # one device-to-host copy (a sync on GPU)
        if low < 0 or high >= max(channels, 2):
            check_labels(labels, max(channels, 2), valid, ignore_index)
    if valid is None:
        return labels, None
    return safe, valid.unsqueeze(1)


def _block_target(
    dense: Tensor | None, labels: Tensor | None, channels: int, start: int, stop: int, acc: torch.dtype
) -> Tensor:
    """The target of pixels [start, stop) as (B, C, n) values in ``acc``; a block-sized one-hot for labels."""
    if dense is not None:
        return dense[:, :, start:stop].to(acc)
    block_labels = labels[:, None, start:stop]
    if channels == 1:  # binary index target: the checked 0/1 label is the foreground of the single channel
        return block_labels.to(acc)  # (a comparison with 1 and a bool conversion cost 2.7x as much here)
    classes = torch.arange(channels, device=labels.device).view(1, channels, 1)
    return (block_labels == classes).to(acc)


def _kept_logits(block: Tensor, keep: Tensor | None, *, softmax: bool) -> Tensor:
    """The block's logits with the excluded entries selected out (set to 0), or the block itself.

    Selected with ``torch.where``, never multiplied by 0: a NaN or inf logit at an excluded pixel (padding)
    then reaches no max, sum or gradient. Softmax couples the classes of a pixel, so there a pixel leaves
    the activation only where no class counts (``keep`` (B, 1 or C, n) bool); sigmoid: entry by entry.
    """
    if keep is None:
        return block
    if softmax and keep.shape[1] > 1:
        keep = keep.any(1, keepdim=True)
    return torch.where(keep, block, 0)


LOG2_E = 1.0 / math.log(2.0)


def _shifted_exp(logits: Tensor, shift: Tensor, *, tail: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """exp2((logits - shift) log2 e + tail) of one block, shift and tail (B, 1, n) broadcast over the classes.

    That is exp(logits - shift) without ``tail``, and the softmax for a :func:`_log_sum_exp` pair. exp2
    because torch's CPU exp2 kernel runs about 4x faster than its exp (torch 2.13, AVX-512; the fused
    softmax spent most of its time there). The difference is taken first, so large logits lose no
    precision; the result is within 1e-6 relative of exp.
    """
    scaled = torch.sub(logits, shift, out=out)
    if tail is None:
        scaled.mul_(LOG2_E)
    else:
        torch.add(tail, scaled, alpha=LOG2_E, out=scaled)
    return scaled.exp2_()


def _log_sum_exp(shift: Tensor, log_total: Tensor, head: Tensor, tail: Tensor) -> None:
    """Writes lse = shift + log_total into ``head`` (rounded to its dtype) and the rest, times -log2 e, into ``tail``.

    A float32 lse alone would be off by up to half its last place (6e-5 at 1e3), and so would every
    probability recomputed from it; the bfloat16 tail keeps backward's softmax within 1e-6 at any scale,
    for 2 bytes per pixel. ``_shifted_exp(logits, head, tail=tail)`` then gives the softmax.
    """
    torch.add(shift, log_total, out=head)
    tail.copy_(torch.sub(shift, head).add_(log_total).mul_(-LOG2_E))


def _log_sum_exp_buffers(batch: int, pixels: int, acc: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Empty (B, 1, N) head (``acc``) and tail of the pixels' log-sum-exp, for :func:`_log_sum_exp`.

    The tail is bfloat16 on CPU and CUDA, ``acc`` elsewhere (MPS has bfloat16 from macOS 14 only).
    """
    tail_dtype = torch.bfloat16 if device.type in ("cpu", "cuda") else acc
    return (
        torch.empty(batch, 1, pixels, dtype=acc, device=device),
        torch.empty(batch, 1, pixels, dtype=tail_dtype, device=device),
    )


def _block_exponentials(logits: Tensor, acc: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """e = exp(z - shift) of one (B, C, n) block in ``acc``, the shift (max logit) and total sum_c e (B, 1, n).

    The softmax is e / total and the log-sum-exp shift + log(total). Reads the (strided) block in place:
    torch's own softmax would first copy it to a contiguous one.
    """
    shift = logits.amax(1, keepdim=True).to(acc)
    exp = _shifted_exp(logits, shift)
    return exp, shift, exp.sum(1, keepdim=True)


def _block_ranges(
    batch: int, channels: int, pixels: int, *, device: torch.device, fraction: int = 32
) -> list[tuple[int, int]]:
    # At most 1/fraction of the logits per block, so the block temporaries stay small next to small inputs too.
    elements = min(BLOCK_ELEMENTS, batch * channels * pixels // fraction)
    if device.type != "cpu":
        # A GPU has no cache to fit and pays per launch: CUDA_BLOCKS blocks, their temporaries < 1x logits.
        elements = max(elements, batch * channels * pixels // CUDA_BLOCKS)
    step = max(MIN_BLOCK_PIXELS, elements // max(batch * channels, 1))
    return [(start, min(start + step, pixels)) for start in range(0, pixels, step)]


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _forget_pool() -> None:
    # A forked child (DataLoader workers) inherits the pool object but not its threads: start afresh.
    global _POOL, _POOL_SIZE, _POOL_LOCK
    _POOL, _POOL_SIZE, _POOL_LOCK = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _single_threaded_worker() -> None:
    # Each worker runs its ops on one core (torch's thread count is per thread): no barrier between
    # the cores for every small op, which is what makes many small ops slow when the cores are busy.
    torch.set_num_threads(1)


def _worker_pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _POOL_LOCK:
        if _POOL is None or _POOL_SIZE != size:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(size, thread_name_prefix="softseg-blocks", initializer=_single_threaded_worker)
            _POOL_SIZE = size
    return _POOL


# The sigmoid kernels run few, cheap elementwise ops per block: there the worker threads' hand-offs cost
# more than they save (W3, (8, 1, 512, 512) on 2 cores: 4.0 ms inline against 6.3 ms on the workers), so
# the blocks run inline, each op on torch's intra-op threads, and larger (at most 1/8 of the logits: W3
# 3.3 ms against 3.7 ms with 1/16, from fewer ops; the two block temporaries stay at 1/4 of the logits).
SIGMOID_BLOCK_FRACTION = 8


def _run_inline(device: torch.device, ranges: list, body) -> list:
    """``body(ranges)`` in this thread, each block op on torch's intra-op threads."""
    return [body(ranges)]


def _run_blocks(device: torch.device, ranges: list, body) -> list:
    """``body(ranges_part)`` on contiguous parts of ``ranges``, one part per torch thread, in parallel on CPU.

    The parts are fixed by the block layout, so the partial results (and their sum) are deterministic.
    """
    workers = min(torch.get_num_threads(), len(ranges)) if device.type == "cpu" else 1
    if workers <= 1 or threading.current_thread().name.startswith("softseg-blocks"):
        return [body(ranges)]
    bounds = [round(i * len(ranges) / workers) for i in range(workers + 1)]
    pool = _worker_pool(workers)

    def run_part(part):
        with torch.no_grad():  # grad mode is thread-local: the workers only compute values
            return body(part)

    futures = [pool.submit(run_part, ranges[bounds[i] : bounds[i + 1]]) for i in range(workers)]
    return [future.result() for future in futures]


class _FusedRegionStatistics(torch.autograd.Function):
    """tp, fp, fn, target_max and cross-entropy sums, (B, C) each, of act(logits) against the target.

    With ``with_range`` a sixth output, (min, max) of a dense target over all pixels (masked-out ones
    too), is for the caller's [0, 1] check: the blocks read the target anyway (otherwise it is empty).
    """

    @staticmethod
    def forward(ctx, logits, dense, labels, weight, activation, norm, with_ce, with_range):
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)
        binary = dense is None  # index targets are 0/1: min(x, y) = x y, gradient y
        softmax = activation == "softmax"
        # Softmax: each pixel's log-sum-exp (head and tail, 6 bytes), so backward's softmax is one exp pass.
        lse_head, lse_tail = _log_sum_exp_buffers(batch, pixels, acc, logits.device) if softmax else (None, None)

        def sums(ranges):
            tp, pred_mass, target_mass, target_max, ce = (
                torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(5)
            )
            target_low = torch.full((batch, channels), math.inf, dtype=acc, device=logits.device)
            target_high = torch.full((batch, channels), -math.inf, dtype=acc, device=logits.device)
            for start, stop in ranges:
                keep = None if weight is None else weight[:, :, start:stop]
                block = _kept_logits(logits[:, :, start:stop], keep, softmax=softmax)
                read_y = _block_target(dense, labels, channels, start, stop, acc)
                # The target selected too (a dense one may hold anything where it does not count): from here
                # every excluded term is finite, and the products with m below are exact zeros there.
                y = read_y if keep is None or binary else torch.where(keep, read_y, 0)
                m = None if keep is None else keep.to(acc)
                if softmax:
                    p, shift, total = _block_exponentials(block, acc)
                    p.div_(total)
                    log_total = total.log_()
                    _log_sum_exp(shift, log_total, lse_head[:, :, start:stop], lse_tail[:, :, start:stop])
                else:
                    z = block.to(acc)
                    p = z.sigmoid()
                overlap = p * y if (binary or norm == 2) else torch.minimum(p, y)
                p_mass = p if norm == 1 else p.square()
                y_mass = y if (binary or norm == 1) else y.square()
                counted_y = y
                if m is not None:
                    overlap, p_mass, y_mass, counted_y = overlap * m, p_mass * m, y_mass * m, y * m
                tp += overlap.sum(-1)
                pred_mass += p_mass.sum(-1)
                target_mass += y_mass.sum(-1)
                if not binary:  # for labels target_max is "count > 0", set below
                    counted_max = counted_y.amax(-1)
                    torch.maximum(target_max, counted_max, out=target_max)
                    if with_range:  # the whole target's (aminmax with a dim is 25x slower here)
                        torch.minimum(target_low, read_y.amin(-1), out=target_low)
                        torch.maximum(target_high, counted_max if m is None else read_y.amax(-1), out=target_high)
                if with_ce:
                    if softmax:  # -y log x = y (shift - z + log-sum)
                        ce_terms = y * torch.sub(shift, block).add_(log_total)
                    else:  # binary cross-entropy from logits: -(y log x + (1 - y) log(1 - x)) = (1 - y) z - log x
                        ce_terms = (1 - y) * z - F.logsigmoid(z)
                    ce += (ce_terms if m is None else ce_terms * m).sum(-1)
            return tp, pred_mass, target_mass, target_max, ce, target_low, target_high

        run, fraction = (_run_inline, SIGMOID_BLOCK_FRACTION) if activation == "sigmoid" else (_run_blocks, 32)
        ranges = _block_ranges(batch, channels, pixels, device=logits.device, fraction=fraction)
        parts = run(logits.device, ranges, sums)
        tp, pred_mass, target_mass, _, ce = (sum(values) for values in list(zip(*parts))[:5])
        if binary:
            target_max = (target_mass > 0).to(acc)
        else:
            target_max = torch.stack([part[3] for part in parts]).amax(0)
        target_range = tp.new_zeros(0)
        if with_range and not binary:
            low = torch.stack([part[5] for part in parts]).amin()
            target_range = torch.stack([low, torch.stack([part[6] for part in parts]).amax()])
        ctx.save_for_backward(logits, dense, labels, weight, lse_head, lse_tail)
        ctx.options = (activation, norm, with_ce)
        ctx.mark_non_differentiable(target_range)
        outputs = statistics_outputs(ctx, tp, pred_mass, target_mass, target_max, ce, with_ce=with_ce)
        return (*outputs, target_range)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, grad_ce, _grad_target_range):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None, None
        logits, dense, labels, weight, lse_head, lse_tail = ctx.saved_tensors
        activation, norm, with_ce = ctx.options
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)
        binary = dense is None
        coef_a, coef_b = (coef.unsqueeze(-1) for coef in _gradient_coefficients(grad_tp, grad_fp, grad_fn, acc))
        half_b = coef_b / 2
        coef_ce = grad_ce.to(acc).unsqueeze(-1) if with_ce else None
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)

        def fill(ranges):
            for start, stop in ranges:
                keep = None if weight is None else weight[:, :, start:stop]
                block = _kept_logits(logits[:, :, start:stop], keep, softmax=lse_head is not None)
                out = grad[:, :, start:stop]
                # float32/float64 logits: the probabilities go straight into the gradient's block and become
                # the gradient in place there; half precision: computed in float32, rounded once at the end.
                direct = out.dtype == acc
                if lse_head is not None:
                    p = _shifted_exp(
                        block, lse_head[:, :, start:stop], tail=lse_tail[:, :, start:stop], out=out if direct else None
                    )
                else:
                    p = torch.sigmoid(block, out=out) if direct else block.to(acc).sigmoid()
                m = None if keep is None else keep.to(acc)
                y = _block_target(dense, labels, channels, start, stop, acc)
                if keep is not None and not binary:
                    y = torch.where(keep, y, 0)
                # grad_p = dL/dx, a block temporary (in-place ops with (B, C, 1) factors: addcmul is slower).
                if norm == 2:
                    grad_p = torch.mul(p, 2 * coef_a).add_(y * coef_b)
                elif binary:
                    grad_p = (y * coef_b).add_(coef_a)
                else:
                    # d min(x, y)/dx = (1 + sign(y - x)) / 2: 1 below the target, 1/2 at a tie, 0 above,
                    # torch.minimum's convention; so A + B slope = (A + B/2) + (B/2) sign(y - x).
                    grad_p = torch.sub(y, p).sign_().mul_(half_b).add_(coef_a + half_b)
                if m is not None:
                    grad_p.mul_(m)
                # The cross-entropy's gradient, weighted: W = G m y; softmax: x sum_c W_c - W, sigmoid: G m (x - y).
                ce_weighted = None
                if with_ce:
                    ce_weighted = y * coef_ce if m is None else y * (coef_ce * m)
                    if activation == "sigmoid":
                        ce_sigmoid = p * (coef_ce if m is None else coef_ce * m)
                        ce_weighted = ce_sigmoid.sub_(ce_weighted)
                if activation == "softmax":
                    # x (g - sum_c x_c g_c + sum_c W_c) - W, in place in p.
                    grad_p.mul_(p)
                    projection = grad_p.sum(1, keepdim=True)  # sum_c x_c g_c, then less sum_c W_c
                    if ce_weighted is not None:
                        projection.sub_(ce_weighted.sum(1, keepdim=True))
                        grad_p.sub_(ce_weighted)
                    p.mul_(projection.neg_()).add_(grad_p)
                else:
                    torch.ops.aten.sigmoid_backward.grad_input(grad_p, p, grad_input=p)  # g x (1 - x)
                    if ce_weighted is not None:
                        p.add_(ce_weighted)
                if not direct:
                    out.copy_(p)

        run, fraction = (_run_inline, SIGMOID_BLOCK_FRACTION) if activation == "sigmoid" else (_run_blocks, 32)
        run(logits.device, _block_ranges(batch, channels, pixels, device=logits.device, fraction=fraction), fill)
        return grad, None, None, None, None, None, None, None


def _part(weight: Tensor | None, start: int, stop: int) -> Tensor | None:
    """Pixels [start, stop) of the (B, 1 or C, N) pixel weight, or None."""
    return None if weight is None else weight[:, :, start:stop]


def _gradient_coefficients(grad_tp: Tensor, grad_fp: Tensor, grad_fn: Tensor, acc: torch.dtype) -> tuple[Tensor, Tensor]:
    """A = G_fp and B = G_tp - G_fp - G_fn, (B, C) each in ``acc``: dL/dx = m (A + B h) (module docstring)."""
    return grad_fp.to(acc), (grad_tp - grad_fp - grad_fn).to(acc)


def _label_counts(labels: Tensor, weight: Tensor | None, channels: int, acc: torch.dtype) -> Tensor:
    """(B, C) counted pixels of each class: one bincount per image on CPU (a per-block scatter costs more).

    Called on the single-threaded block workers: torch's multi-threaded CPU bincount is many times slower.
    """
    batch = labels.shape[0]
    if labels.device.type != "cpu":
        ones = torch.ones(labels.shape, dtype=acc, device=labels.device) if weight is None else weight[:, 0].to(acc)
        return torch.zeros(batch, channels, dtype=acc, device=labels.device).scatter_add_(1, labels, ones)
    counts = [
        torch.bincount(labels[b], weights=None if weight is None else weight[b, 0].to(acc), minlength=channels)
        for b in range(batch)
    ]
    return torch.stack(counts).to(acc) if counts else torch.zeros(0, channels, dtype=acc)


class _FusedSoftmaxIndexStatistics(torch.autograd.Function):
    """The softmax + index-target case of :class:`_FusedRegionStatistics`, with gather and scatter_add.

    The label indicator stays implicit: tp gathers the probability of each pixel's label, and in
    backward the overlap term B h is added at the label only (scatter_add), so no block one-hot is built.
    Forward never normalises the block: with e = exp(z - max) and s = sum_c e_c, the sums take the
    pixel factor m / s (m / s^2 for norm 2) through one matrix-vector product.
    """

    @staticmethod
    def forward(ctx, logits, labels, weight, norm, with_ce):
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)
        lse_head, lse_tail = _log_sum_exp_buffers(batch, pixels, acc, logits.device)  # for backward's softmax

        def sums(ranges):
            tp, pred_mass, ce = (torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(3))
            for start, stop in ranges:
                block = _kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=True)
                block_labels = labels[:, start:stop]
                index = block_labels.unsqueeze(1)
                exp, shift, total = _block_exponentials(block, acc)
                inverse = total.reciprocal()
                scale = inverse if weight is None else inverse * weight[:, :, start:stop]
                tp.scatter_add_(1, block_labels, exp.gather(1, index).mul_(scale).squeeze(1))
                mass, mass_scale = (exp, scale) if norm == 1 else (exp.square_(), scale * inverse)
                pred_mass += torch.bmm(mass, mass_scale.transpose(1, 2)).squeeze(-1)
                log_total = total.log_()
                _log_sum_exp(shift, log_total, lse_head[:, :, start:stop], lse_tail[:, :, start:stop])
                if with_ce:  # -log x_label = shift - z_label + log-sum
                    nll = torch.sub(shift, block.gather(1, index)).add_(log_total)
                    if weight is not None:
                        nll = nll * weight[:, :, start:stop]
                    ce.scatter_add_(1, block_labels, nll.squeeze(1))
            # The class counts need only the labels: one bincount per image over this part's pixels.
            part = slice(ranges[0][0], ranges[-1][1])
            count = _label_counts(labels[:, part], None if weight is None else weight[:, :, part], channels, acc)
            return tp, pred_mass, ce, count

        parts = _run_blocks(logits.device, _block_ranges(batch, channels, pixels, device=logits.device), sums)
        tp, pred_mass, ce, count = (sum(values) for values in zip(*parts))
        ctx.save_for_backward(logits, labels, weight, lse_head, lse_tail)
        ctx.options = (norm, with_ce)
        target_max = (count > 0).to(acc)
        return statistics_outputs(ctx, tp, pred_mass, count, target_max, ce, with_ce=with_ce)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, grad_ce):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        logits, labels, weight, lse_head, lse_tail = ctx.saved_tensors
        norm, with_ce = ctx.options
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)
        coef_a, coef_b = _gradient_coefficients(grad_tp, grad_fp, grad_fn, acc)
        coef_ce = grad_ce.to(acc) if with_ce else None
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)

        def fill(ranges):
            for start, stop in ranges:
                out = grad[:, :, start:stop]
                # float32/float64 logits: the probabilities go straight into the gradient's block and are
                # turned into the gradient in place there; half precision: computed in float32, rounded once.
                direct = out.dtype == acc
                p = _shifted_exp(
                    _kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=True),
                    lse_head[:, :, start:stop],
                    tail=lse_tail[:, :, start:stop],
                    out=out if direct else None,
                )
                block_labels = labels[:, start:stop]
                index = block_labels.unsqueeze(1)
                # With h the label indicator, dL/dz_k = m [x_k (A'_k - t) + h_k u], where u = B_l x_l - G_l
                # (G: cross-entropy gradient), A' = A (norm 1) or 2 A x (norm 2), t = sum_c x_c A'_c + u.
                label_term = coef_b.gather(1, block_labels).unsqueeze(1) * p.gather(1, index)
                if coef_ce is not None:
                    label_term = label_term - coef_ce.gather(1, block_labels).unsqueeze(1)
                if norm == 1:
                    total = torch.bmm(coef_a.unsqueeze(1), p) + label_term
                    factor = coef_a.unsqueeze(-1) - total
                else:
                    factor = p * (2 * coef_a).unsqueeze(-1)
                    total = (factor * p).sum(1, keepdim=True) + label_term
                    factor.sub_(total)
                p.mul_(factor).scatter_add_(1, index, label_term)
                if weight is not None:
                    p.mul_(weight[:, :, start:stop])
                if not direct:
                    out.copy_(p)

        _run_blocks(logits.device, _block_ranges(batch, channels, pixels, device=logits.device), fill)
        return grad, None, None, None, None


class _FusedSigmoidIndexStatistics(torch.autograd.Function):
    """The sigmoid + index-target case of :class:`_FusedRegionStatistics` (no cross-entropy), in closed form.

    C = 1: the 0/1 labels are the target itself (y = label as a float, no comparison); with
    ``with_range`` their range (min, max) is the extra output, taken from the converted blocks (the
    caller checks it: no separate pass over the labels), otherwise it is empty.
    C > 1: the label indicator stays implicit, as in :class:`_FusedSoftmaxIndexStatistics` (gather and
    scatter_add), and the range output is empty. With x = sigmoid(z), dL/dz = m x (1 - x) (A' + B h),
    A' = A (norm 1) or 2 A x (norm 2).
    """

    @staticmethod
    def forward(ctx, logits, labels, weight, norm, with_range):
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)

        def sums(ranges):
            tp, pred_mass, target_mass = (torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(3))
            label_ranges = []
            for start, stop in ranges:
                p = _kept_logits(logits[:, :, start:stop].to(acc), _part(weight, start, stop), softmax=False).sigmoid()
                mass = None if norm == 1 else p.square()
                if weight is not None:  # in place: p and mass are this block's own temporaries
                    m = weight[:, :, start:stop]
                    p.mul_(m)
                    mass = None if mass is None else mass.mul_(m)
                pred_mass += (p if mass is None else mass).sum(-1)
                if channels == 1:  # labels are 0/1 (checked), 0 where not counted: y is the label itself
                    y = labels[:, None, start:stop].to(acc)
                    if with_range:
                        label_ranges.append(torch.stack(torch.aminmax(y)))
                    target_mass += y.sum(-1)
                    tp += y.mul_(p).sum(-1)
                else:
                    block_labels = labels[:, start:stop]
                    tp.scatter_add_(1, block_labels, p.gather(1, block_labels.unsqueeze(1)).squeeze(1))
            if channels > 1:
                part = slice(ranges[0][0], ranges[-1][1])
                target_mass = _label_counts(
                    labels[:, part], None if weight is None else weight[:, :, part], channels, acc
                )
            return tp, pred_mass, target_mass, label_ranges

        ranges = _block_ranges(batch, channels, pixels, device=logits.device, fraction=SIGMOID_BLOCK_FRACTION)
        [(tp, pred_mass, target_mass, label_ranges)] = _run_inline(logits.device, ranges, sums)
        target_max = (target_mass > 0).to(acc)
        if label_ranges:  # (min, max) over the blocks
            bounds = torch.stack(label_ranges)
            label_range = torch.stack([bounds[:, 0].amin(), bounds[:, 1].amax()])
        else:
            label_range = tp.new_zeros(0)
        ctx.save_for_backward(logits, labels, weight)
        ctx.norm = norm
        ctx.mark_non_differentiable(target_max, label_range)
        return tp, pred_mass - tp, target_mass - tp, target_max, label_range

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, _grad_label_range):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        logits, labels, weight = ctx.saved_tensors
        norm = ctx.norm
        batch, channels, pixels = logits.shape
        acc = accumulation_dtype(logits.dtype)
        coef_a, coef_b = (coef.unsqueeze(-1) for coef in _gradient_coefficients(grad_tp, grad_fp, grad_fn, acc))
        coef_2a = 2 * coef_a
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)

        def fill(ranges):
            for start, stop in ranges:
                out = grad[:, :, start:stop]
                z = _kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=False)
                # The probabilities go straight into the gradient's block (float32/float64 logits), and the
                # sigmoid backward then overwrites them in place: no probability temporary.
                direct = out.dtype == acc
                p = torch.sigmoid(z, out=out) if direct else z.to(acc).sigmoid()
                target = out if direct else p
                if channels == 1:
                    y = labels[:, None, start:stop].to(acc)
                    grad_p = y.mul_(coef_b).add_(coef_a) if norm == 1 else y.mul_(coef_b).addcmul_(p, coef_2a)
                    torch.ops.aten.sigmoid_backward.grad_input(grad_p, p, grad_input=target)
                else:
                    index = labels[:, None, start:stop]
                    label_p = p.gather(1, index)
                    grad_p = coef_a.expand_as(p) if norm == 1 else p * coef_2a
                    torch.ops.aten.sigmoid_backward.grad_input(grad_p, p, grad_input=target)
                    label_term = coef_b.squeeze(-1).gather(1, labels[:, start:stop]).unsqueeze(1)
                    target.scatter_add_(1, index, label_term * label_p * (1 - label_p))
                if weight is not None:
                    target.mul_(weight[:, :, start:stop])
                if not direct:
                    out.copy_(target)

        ranges = _block_ranges(batch, channels, pixels, device=logits.device, fraction=SIGMOID_BLOCK_FRACTION)
        _run_inline(logits.device, ranges, fill)
        return grad, None, None, None, None


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

    Excluded logits are selected out before the activation (:func:`_kept_logits`), so a NaN or inf there
    reaches neither the softmax's backward nor the value checks of ``activation="none"``.
    """
    input = _kept_logits(input, _counted_entries(input, target, kind, ignore_index, mask), softmax=activation == "softmax")
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
        keep = labels != ignore_index if keep is None else keep & (labels != ignore_index)
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
    valid = None if ignore_index is None else labels != ignore_index
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
