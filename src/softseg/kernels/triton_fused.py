r"""The fused statistics on CUDA through Triton: one read of the logits forward, one read and one write backward.

:func:`softseg.dispatch.fused_statistics` hands CUDA inputs here (the custom operator's ``"triton"`` path,
:mod:`softseg.kernels.ops`) when :func:`triton_applies` says so; the
values and gradients are those of the torch block path of :mod:`softseg.kernels.fused` (same formulas, the
same tie convention for min(x, y)), to float32 rounding. Without Triton, with ``SOFTSEG_TRITON=0`` in the
environment, for float64 logits or for more than :data:`MAX_CHANNELS` classes, the torch block path runs.

Why a kernel: on a GPU the block path is many small launches and each block's temporaries go through
device memory; here one program holds a tile of (all classes) x (``BLOCK_N`` pixels) in registers, so the
softmax, the overlap terms and the gradient never leave the chip. Forward writes per-program partial sums
that torch adds up in a fixed order (deterministic, no atomics); backward recomputes the activation.

:class:`TritonRegionLoss` goes one step further for the losses (:func:`softseg.dispatch.fused_region_loss`, eagerly):
a one-program kernel turns the (B, C) sums into the aggregated loss and the backward's coefficients, so a
loss step issues a dozen host operations instead of ~50 (on a GPU at common sizes the host, not the
kernels, bounds the step).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
from torch import Tensor

from softseg.scores import LOG_EPS

MAX_CHANNELS = 256  # classes held in one program's registers; more take the torch block path
TILE_ELEMENTS = 4096  # classes x pixels per program (BLOCK_C * BLOCK_N)
NUM_WARPS = 4
TILES_PER_PROGRAM = 1  # forward: tiles summed in registers by one program before its one reduction (tune_triton.py)
MIN_PROGRAMS = 1024  # ... but at least this many programs (about 8 per multiprocessor), for the small inputs
ENVIRONMENT_SWITCH = "SOFTSEG_TRITON"  # "0" turns the Triton path off
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAX_GRID_Y = 65535  # CUDA's limit on the second grid dimension (one program row per image)


@functools.cache
def _kernels():
    """The kernel module, or None when Triton does not import."""
    try:
        from softseg.kernels import _triton_kernels
    except ImportError:
        return None
    return _triton_kernels


def triton_available() -> bool:
    r"""Whether the Triton kernels can run here: Triton imports and ``SOFTSEG_TRITON`` is not ``"0"``.

    Convention:
        Reads the environment on every call (so ``SOFTSEG_TRITON=0`` can be set at run time); the import
        is tried once.

    Example:
        >>> import os
        >>> os.environ["SOFTSEG_TRITON"] = "0"
        >>> triton_available()
        False
        >>> del os.environ["SOFTSEG_TRITON"]
    """
    return os.environ.get(ENVIRONMENT_SWITCH, "1") != "0" and _kernels() is not None


def triton_applies(logits: Tensor) -> bool:
    """Whether the (B, C, N) ``logits`` take the Triton kernels: CUDA, float32/16/bf16, C <= MAX_CHANNELS.

    Convention:
        ``logits``: anything (it is asked before validation: a non-tensor gives False); B at most 65535
        (CUDA's second grid dimension); and :func:`triton_available`.

    Example:
        >>> triton_applies(torch.zeros(2, 3, 8)), triton_applies([1.0])      # CPU tensor, not a tensor
        (False, False)
    """
    return (
        isinstance(logits, Tensor)  # called before validation too: anything else is for the checks to reject
        and logits.is_cuda
        and logits.dtype in _DTYPES
        and logits.ndim >= 2
        and logits.shape[1] <= MAX_CHANNELS
        and logits.shape[0] <= _MAX_GRID_Y
        and triton_available()
    )


def _tile_shape(channels: int, pixels: int) -> tuple[int, int]:
    block_c = max(2, 1 << (channels - 1).bit_length())
    block_n = max(16, TILE_ELEMENTS // block_c)
    block_n = min(block_n, max(16, 1 << (pixels - 1).bit_length()))
    return block_c, block_n


def _launch_options(logits, labels, dense, weight, activation, norm, with_ce):
    """Pointers (unused ones point at the logits, never read), strides and the compile-time flags."""
    batch, channels, pixels = logits.shape
    block_c, block_n = _tile_shape(channels, pixels)
    if weight is None:
        weight_strides = (0, 0)
    else:
        weight_strides = (weight.shape[1] * pixels, pixels if weight.shape[1] > 1 else 0)
    pointers = (
        logits,
        logits if labels is None else labels,
        logits if dense is None else dense,
        logits if weight is None else weight,
    )
    flags = dict(
        SOFTMAX=activation == "softmax",
        INDEX=labels is not None,
        BINARY_LABEL=labels is not None and channels == 1,
        NORM2=norm == 2,
        WITH_CE=with_ce,
        HAS_WEIGHT=weight is not None,
        BLOCK_C=block_c,
        BLOCK_N=block_n,
        num_warps=NUM_WARPS,
    )
    return pointers, weight_strides, flags, -(-pixels // block_n)


def _forward_split(tiles: int, batch: int) -> tuple[int, int]:
    """(programs per image, tiles per program) of the forward kernel."""
    per_program = max(1, min(TILES_PER_PROGRAM, tiles * batch // MIN_PROGRAMS))
    return -(-tiles // per_program), per_program


def _kernel_inputs(logits: Tensor, dense: Tensor | None, weight: Tensor | None):
    """The contiguous logits and dense target and the uint8 weight, as the kernels read them."""
    dense = None if dense is None else dense.contiguous()
    return logits.contiguous(), dense, None if weight is None else weight.contiguous().view(torch.uint8)


def _forward_sums(logits, labels, dense, weight, activation, norm, with_ce):
    """Run the forward kernel: the (5, B, C) sums tp, prediction mass, target mass, target max, cross-entropy
    (zeros without it)."""
    logits, dense, weight = _kernel_inputs(logits, dense, weight)
    batch, channels, pixels = logits.shape
    pointers, weight_strides, flags, tiles = _launch_options(logits, labels, dense, weight, activation, norm, with_ce)
    programs, per_program = _forward_split(tiles, batch)
    partial = torch.empty(5, batch, channels, programs, dtype=torch.float32, device=logits.device)
    _kernels().statistics_forward[(programs, batch)](
        *pointers, partial, batch * channels * programs, channels, pixels, programs, per_program,
        *weight_strides, **flags,
    )
    sums = partial.sum(-1)  # a fixed order: no atomics, deterministic
    if labels is not None:
        sums[3] = sums[2] > 0  # target max of 0/1 labels: present or not
    else:
        sums[3] = partial[3].amax(-1)
    return sums


def _logits_gradient(logits, dense, weight, labels, activation, norm, with_ce, coef) -> Tensor:
    """Run the backward kernel: dL/dlogits from coef (3, B, C) = dL/d(fp, tp - fp - fn, ce)."""
    batch, channels, pixels = logits.shape
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    pointers, weight_strides, flags, tiles = _launch_options(logits, labels, dense, weight, activation, norm, with_ce)
    _kernels().statistics_backward[(tiles, batch)](
        *pointers, coef.contiguous(), grad, batch * channels, channels, pixels, *weight_strides, **flags
    )
    return grad


def triton_statistics(
    logits: Tensor, labels: Tensor | None, dense: Tensor | None, weight: Tensor | None, *, activation: str, norm: int,
    with_ce: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""tp, fp, fn, target_max and cross-entropy sums, (B, C) each, computed by the Triton forward kernel.

    The same outputs as the torch block path (:func:`softseg.kernels.fused.block_statistics`):

    .. math::

        tp = \sum_i m_i \min(x_i, y_i)\ (x y\ \text{for labels or norm 2}),\quad
        fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp

    Convention:
        - ``logits`` (B, C, N) float32/float16/bfloat16 on a device Triton runs on (CUDA; the CPU only
          under ``TRITON_INTERPRET=1``, for tests); sums in float32.
        - Exactly one of ``labels`` (B, N) int64 with ignored pixels already set to a valid class and
          left out by ``weight``, and ``dense`` (B, C, N) probabilities. ``weight``: None or bool
          (B, 1, N) / (B, C, N), True = counted; excluded entries are selected out.
        - ``activation`` ``"softmax"`` or ``"sigmoid"``; ``norm`` 1 or 2; ``with_ce`` also returns the
          cross-entropy sums (binary for sigmoid), else zeros. :func:`triton_gradient` is the backward.

    Example:
        >>> triton_statistics.__name__      # used through softseg's custom operators on CUDA
        'triton_statistics'
    """
    tp, pred_mass, target_mass, target_max, ce = _forward_sums(logits, labels, dense, weight, activation, norm, with_ce)
    # Rows of one (5, B, C) tensor: an operator's outputs must not alias each other, so three are copied.
    return tp.clone(), pred_mass - tp, target_mass - tp, target_max.clone(), ce.clone()


def triton_gradient(
    logits: Tensor, labels: Tensor | None, dense: Tensor | None, weight: Tensor | None, grad_tp: Tensor,
    grad_fp: Tensor, grad_fn: Tensor, grad_ce: Tensor, *, activation: str, norm: int, with_ce: bool,
) -> Tensor:
    r"""dL/dlogits from the gradients of (tp, fp, fn, ce), by the Triton backward kernel.

    .. math::

        \frac{\partial L}{\partial x} = m (A' + B h),\quad A = G_{fp},\ B = G_{tp} - G_{fp} - G_{fn}

    then the softmax or sigmoid backward and the cross-entropy's term (:mod:`softseg.kernels.fused`).

    Convention:
        Arguments as :func:`triton_statistics`; ``grad_*`` (B, C) each. Returns a contiguous tensor of the
        logits' shape and dtype (float32 arithmetic); excluded pixels get exactly 0.

    Example:
        >>> triton_gradient.__name__
        'triton_gradient'
    """
    coef = torch.stack([grad_fp, grad_tp - grad_fp - grad_fn, grad_ce]).to(torch.float32)
    return _logits_gradient(*_kernel_inputs(logits, dense, weight), labels, activation, norm, with_ce, coef)


MAX_TAIL_ENTRIES = 1 << 14  # (images x classes) the one-program loss tail handles; more take the torch tail


@dataclass(frozen=True)
class RegionLossOptions:
    r"""The validated options of a Tversky-family loss (and of its cross-entropy term), for :class:`TritonRegionLoss`.

    .. math::

        L = \lambda_{region} \sum_{level} mix_{level}\, \mathrm{aggregate}_{level}\big((1 - T)^\gamma\big)
            + \lambda_{ce}\, \frac{\sum CE}{n_{counted}}

    Convention:
        ``levels``: ((level, mix), ...) from :func:`softseg.aggregation.parse_aggregation`; ``first_class``
        1 drops class 0 (include_background=False); ``class_weight``: float32 tensor of the scored
        classes on the logits' device, or None; ``present``: active classes "present" with
        ``threshold``; ``sum_reduction``: reduction "sum" instead of "mean". ``lambda_ce`` 0 means no
        cross-entropy term.

    Example:
        >>> RegionLossOptions(alpha=0.5, beta=0.5, smooth=0.0, gamma=1.0, log_loss=False, levels=(("global", 1.0),),
        ...                   first_class=0, class_weight=None, present=False, threshold=0.01,
        ...                   sum_reduction=False).lambda_region
        1.0
    """

    alpha: float
    beta: float
    smooth: float
    gamma: float
    log_loss: bool
    levels: tuple
    first_class: int
    class_weight: Tensor | None
    present: bool
    threshold: float
    sum_reduction: bool
    lambda_region: float = 1.0
    lambda_ce: float = 0.0


_LEVELS = {"global": 0, "image": 1, "class": 2}


def tail_applies(batch: int, channels: int) -> bool:
    """Whether the one-program loss tail takes (batch x channels) statistics.

    Convention:
        Both sides are padded to powers of two (at least 2); their product must be at most
        :data:`MAX_TAIL_ENTRIES` (16384), else the losses use the kernels' statistics and the torch tail.

    Example:
        >>> tail_applies(16, 21), tail_applies(512, 150)
        (True, False)
    """
    return _block(batch) * _block(channels) <= MAX_TAIL_ENTRIES


def _block(size: int) -> int:
    return max(2, 1 << (max(size, 1) - 1).bit_length())


class TritonRegionLoss(torch.autograd.Function):
    r"""A whole Tversky-family loss (and optional cross-entropy mean) from the logits, in three kernel launches.

    Statistics kernel, then :func:`~softseg.kernels._triton_kernels.region_loss_tail` (one program per
    aggregation level) turns the (B, C) sums into the loss and, at the same time, into the coefficients
    dL/d(fp, tp - fp - fn, ce) that the backward kernel needs; backward scales them by the upstream
    gradient and launches the backward kernel. So a step issues a handful of host operations instead of
    the ~50 small tensor ops of statistics -> aggregation and their autograd nodes (what bounds a loss
    step on a GPU at common sizes, benchmarks/README.md).

    .. math::

        L = \lambda_{region}\, \mathrm{aggregate}\Big(\big(1 - \tfrac{tp + s}{tp + \alpha fp + \beta fn + s}\big)^\gamma\Big)
            + \lambda_{ce}\, \overline{CE}

    Convention:
        - ``logits``, ``labels``, ``dense``, ``weight``, ``activation``, ``norm`` as in
          :func:`triton_statistics`; ``options``: :class:`RegionLossOptions`; ``ce_count``: 0-d
          float32 tensor, the cross-entropy's number of counted terms (None without a CE term).
        - ``differentiable_loss``: the same loss as a function of (RegionStatistics, cross-entropy sums or None)
          in torch operations, from the losses' layer; used only for double backward (``create_graph=True``),
          where it runs on the differentiable statistics of :func:`softseg.kernels.formula.statistics_sums`.
        - Returns the float32 scalar loss; values and gradients equal the torch path (statistics ->
          :func:`softseg.losses.region.loss_from_statistics`) to float32 rounding.

    Example:
        >>> TritonRegionLoss.__name__            # used by the losses on CUDA when Triton applies
        'TritonRegionLoss'
    """

    @staticmethod
    def forward(ctx, logits, labels, dense, weight, activation, norm, options, ce_count, differentiable_loss):
        kernels = _kernels()
        with_ce = options.lambda_ce != 0
        ctx.save_for_backward(logits, labels, dense, weight)
        sums = _forward_sums(logits, labels, dense, weight, activation, norm, with_ce)
        ctx.options = (activation, norm, with_ce, differentiable_loss)
        batch, channels = sums.shape[1:]
        loss = torch.zeros(1, dtype=torch.float32, device=logits.device)
        coef = torch.zeros(3, batch, channels, dtype=torch.float32, device=logits.device)
        class_weight = options.class_weight
        for position, (level, mix) in enumerate(options.levels):
            kernels.region_loss_tail[(1,)](
                sums, sums if class_weight is None else class_weight, sums if ce_count is None else ce_count,
                loss, coef, batch, channels, options.first_class, options.alpha, options.beta, options.smooth,
                options.gamma, options.threshold, LOG_EPS, mix * options.lambda_region, options.lambda_ce,
                LEVEL=_LEVELS[level], PRESENT=options.present, HAS_WEIGHT=class_weight is not None,
                LOG_LOSS=options.log_loss, POWER=options.gamma != 1, SUM=options.sum_reduction,
                WITH_CE=with_ce and position == 0, BLOCK_B=_block(batch), BLOCK_C=_block(channels),
            )
        ctx.coef = coef
        return loss[0]

    @staticmethod
    def backward(ctx, grad_loss):
        if not ctx.needs_input_grad[0]:
            return (None,) * 9
        activation, norm, with_ce, differentiable_loss = ctx.options
        logits, labels, dense, weight = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: the same loss in torch operations, differentiable again
            from softseg.kernels.formula import statistics_sums
            from softseg.statistics import RegionStatistics

            tp, fp, fn, target_max, ce, _ = statistics_sums(
                logits, labels, dense, weight, activation=activation, norm=norm, with_ce=with_ce
            )
            loss = differentiable_loss(RegionStatistics(tp, fp, fn, target_max.detach()), ce if with_ce else None)
            (grad,) = torch.autograd.grad(loss, logits, grad_loss, create_graph=True)
            return grad, *(None,) * 8
        coef = ctx.coef * grad_loss.to(torch.float32)
        grad = _logits_gradient(*_kernel_inputs(logits, dense, weight), labels, activation, norm, with_ce, coef)
        return grad, *(None,) * 8
