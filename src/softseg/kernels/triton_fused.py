r"""The fused statistics on CUDA through Triton: one read of the logits forward, one read and one write backward.

:func:`softseg.kernels.fused_statistics` hands CUDA inputs here when :func:`triton_applies` says so; the
values and gradients are those of the torch block path of :mod:`softseg.kernels.fused` (same formulas, the
same tie convention for min(x, y)), to float32 rounding. Without Triton, with ``SOFTSEG_TRITON=0`` in the
environment, for float64 logits or for more than :data:`MAX_CHANNELS` classes, the torch block path runs.

Why a kernel: on a GPU the block path is many small launches and each block's temporaries go through
device memory; here one program holds a tile of (all classes) x (``BLOCK_N`` pixels) in registers, so the
softmax, the overlap terms and the gradient never leave the chip. Forward writes per-program partial sums
that torch adds up in a fixed order (deterministic, no atomics); backward recomputes the activation.
"""

from __future__ import annotations

import functools
import os

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

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
    """Whether the (B, C, N) ``logits`` take the Triton kernels: CUDA, float32/16/bf16, C <= MAX_CHANNELS."""
    batch, channels = logits.shape[:2]
    return (
        logits.is_cuda
        and logits.dtype in _DTYPES
        and channels <= MAX_CHANNELS
        and batch <= _MAX_GRID_Y
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


def statistics_outputs(ctx, tp, pred_mass, target_mass, target_max, ce, *, with_ce: bool) -> tuple[Tensor, ...]:
    """The outputs of a fused forward, (tp, fp, fn, target_max, ce); marks what has no gradient."""
    ctx.mark_non_differentiable(target_max)
    if not with_ce:
        ctx.mark_non_differentiable(ce)
    return tp, pred_mass - tp, target_mass - tp, target_max, ce


class TritonRegionStatistics(torch.autograd.Function):
    r"""tp, fp, fn, target_max and cross-entropy sums, (B, C) each, computed by the Triton kernels.

    The same outputs and gradient as the torch block path (:mod:`softseg.kernels.fused`):

    .. math::

        tp = \sum_i m_i \min(x_i, y_i)\ (x y\ \text{for labels or norm 2}),\quad
        fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp

    Convention:
        - ``logits`` (B, C, N) float32/float16/bfloat16 on a device Triton runs on (CUDA; the CPU only
          under ``TRITON_INTERPRET=1``, for tests); sums in float32; the gradient has the logits' dtype.
        - Exactly one of ``labels`` (B, N) int64 with ignored pixels already set to a valid class and
          counted in ``weight``, and ``dense`` (B, C, N) probabilities. ``weight``: None or bool
          (B, 1, N) / (B, C, N), True = counted.
        - ``activation`` ``"softmax"`` or ``"sigmoid"``; ``norm`` 1 or 2; ``with_ce`` also returns the
          cross-entropy sums (binary for sigmoid), else zeros. Differentiable once.

    Example:
        >>> TritonRegionStatistics.__name__      # used through softseg.kernels.fused_statistics on CUDA
        'TritonRegionStatistics'
    """

    @staticmethod
    def forward(ctx, logits, labels, dense, weight, activation, norm, with_ce):
        kernels = _kernels()
        logits = logits.contiguous()
        dense = None if dense is None else dense.contiguous()
        weight = None if weight is None else weight.contiguous().view(torch.uint8)
        batch, channels, pixels = logits.shape
        pointers, weight_strides, flags, tiles = _launch_options(logits, labels, dense, weight, activation, norm, with_ce)
        programs, per_program = _forward_split(tiles, batch)
        partial = torch.empty(5, batch, channels, programs, dtype=torch.float32, device=logits.device)
        kernels.statistics_forward[(programs, batch)](
            *pointers, partial, batch * channels * programs, channels, pixels, programs, per_program,
            *weight_strides, **flags,
        )
        tp, pred_mass, target_mass, _, ce = partial.sum(-1)  # a fixed order: no atomics, deterministic
        if labels is not None:
            target_max = (target_mass > 0).to(torch.float32)
        else:
            target_max = partial[3].amax(-1)
        ctx.save_for_backward(logits, labels, dense, weight)
        ctx.options = (activation, norm, with_ce)
        return statistics_outputs(ctx, tp, pred_mass, target_mass, target_max, ce, with_ce=with_ce)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, grad_ce):
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None
        logits, labels, dense, weight = ctx.saved_tensors
        activation, norm, with_ce = ctx.options
        batch, channels, pixels = logits.shape
        # dL/dx = m (A' + B h) with A' = A or 2 A x, plus the cross-entropy term G (softseg.kernels.fused)
        coef = torch.stack([grad_fp, grad_tp - grad_fp - grad_fn, grad_ce]).to(torch.float32).contiguous()
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        pointers, weight_strides, flags, tiles = _launch_options(logits, labels, dense, weight, activation, norm, with_ce)
        _kernels().statistics_backward[(tiles, batch)](
            *pointers, coef, grad, batch * channels, channels, pixels, *weight_strides, **flags
        )
        return grad, None, None, None, None, None, None
