r"""The fused statistics as PyTorch custom operators: ``torch.ops.softseg.logit_statistics`` and its backward.

Two operators (:mod:`torch.library`), each with a fake implementation (shapes and dtypes only, for
``torch.compile``'s tracing and dynamic shapes) and one autograd formula:

- ``softseg::logit_statistics(logits, labels, dense, weight, activation, norm, with_ce, with_range, path)``
  returns (tp, fp, fn, target_max, ce, target_range, saved_a, saved_b): the (B, C) sums, the range of the
  target for the caller's value check (2 values, or none), and what the softmax's backward needs per pixel
  (the blocks: the log-sum-exp as a float32 head and bfloat16 tail; the native kernels: the max and
  1 / sum of exponentials; empty for sigmoid and for the Triton kernels);
- ``softseg::logit_statistics_backward(...)`` returns dL/dlogits from the gradients of (tp, fp, fn, ce).

``path`` picks the implementation: ``"native"`` (:mod:`softseg.kernels.native`, CPU), ``"triton"``
(:mod:`softseg.kernels.triton_fused`, CUDA) or ``"blocks"`` (:mod:`softseg.kernels.fused`, anywhere); the
caller (:mod:`softseg.dispatch`) decides once, so forward and backward always take the same path. Under ``torch.compile`` the operators are single nodes of the graph: the compiler
keeps the fused kernels instead of tracing through them, with no graph break.

Double backward (``create_graph=True``): the autograd formula then returns the gradient of
:func:`softseg.kernels.formula.statistics_gradient`, the same numbers in torch operations, which autograd
differentiates again (the operators' own backward is a kernel, differentiable once).
"""

from typing import Optional

import torch
from torch import Tensor

from softseg.kernels.formula import statistics_gradient
from softseg.kernels.fused import block_gradient, block_statistics, log_sum_exp_buffers
from softseg.kernels.native import native_gradient, native_statistics
from softseg.kernels.triton_fused import triton_gradient, triton_statistics
from softseg.statistics import accumulation_dtype

# (No `from __future__ import annotations` here: torch.library reads the schema from the annotations.)


@torch.library.custom_op("softseg::logit_statistics", mutates_args=())
def logit_statistics_op(
    logits: Tensor,
    labels: Optional[Tensor],
    dense: Optional[Tensor],
    weight: Optional[Tensor],
    activation: str,
    norm: int,
    with_ce: bool,
    with_range: bool,
    path: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""tp, fp, fn, target_max, ce (B, C each), target_range, saved_a, saved_b of ``activation(logits)``.

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp,
        \quad CE = -\sum_i m_i\, y_i \log x_i

    Convention:
        - ``logits`` (B, C, N); exactly one of ``labels`` (B, N) int64 (ignored pixels set to a valid
          class) and ``dense`` (B, C, N); ``weight`` bool (B, 1 or C, N) or None; as
          :func:`softseg.kernels.fused.block_statistics`, whose outputs these are (``path="blocks"``); the
          same from :func:`softseg.kernels.native.native_statistics` (``"native"``) or the Triton kernels
          (``"triton"``, CUDA; no range, nothing saved: those come back empty).
        - Differentiable in ``logits`` (once through the kernels, again through the torch formula).

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])
        >>> torch.ops.softseg.logit_statistics(logits, torch.tensor([[0, 1, 1]]), None, None, "softmax", 1,
        ...                                    False, False, "blocks")[0]
        tensor([[0.9820, 1.3808]])
    """
    _check_path(logits, labels, dense, activation, with_ce, with_range, path)
    if path == "triton":
        tp, fp, fn, target_max, ce = triton_statistics(
            logits, labels, dense, weight, activation=activation, norm=norm, with_ce=with_ce
        )
        return tp, fp, fn, target_max, ce, *(tp.new_zeros(0) for _ in range(3))
    implementation = native_statistics if path == "native" else block_statistics
    return implementation(
        logits, labels, dense, weight, activation=activation, norm=norm, with_ce=with_ce, with_range=with_range
    )


@logit_statistics_op.register_fake
def _logit_statistics_fake(logits, labels, dense, weight, activation, norm, with_ce, with_range, path):
    _check_path(logits, labels, dense, activation, with_ce, with_range, path)
    acc = accumulation_dtype(logits.dtype)
    batch, channels, pixels = logits.shape
    sums = tuple(logits.new_empty(batch, channels, dtype=acc) for _ in range(5))
    target_range = logits.new_empty(2 if with_range else 0, dtype=acc)
    if activation != "softmax" or path == "triton":
        saved = (logits.new_empty(0, dtype=acc), logits.new_empty(0, dtype=acc))
    elif path == "native":  # each pixel's max and 1 / sum of exponentials
        saved = (logits.new_empty(batch, 1, pixels), logits.new_empty(batch, 1, pixels))
    else:
        saved = log_sum_exp_buffers(logits)
    return (*sums, target_range, *saved)


PATHS = ("blocks", "native", "triton")


def _check_path(logits, labels, dense, activation, with_ce, with_range, path) -> None:
    if path not in PATHS:
        raise ValueError(f"path must be one of {', '.join(map(repr, PATHS))}; got {path!r}")
    # The target's range comes off the CPU passes that read the target anyway; the Triton kernels return none.
    if with_range and path == "triton":
        raise ValueError("with_range needs a CPU path (blocks or native); the caller checks Triton's targets itself")


@torch.library.custom_op("softseg::logit_statistics_backward", mutates_args=())
def logit_statistics_backward_op(
    logits: Tensor,
    labels: Optional[Tensor],
    dense: Optional[Tensor],
    weight: Optional[Tensor],
    saved_a: Tensor,
    saved_b: Tensor,
    grad_tp: Tensor,
    grad_fp: Tensor,
    grad_fn: Tensor,
    grad_ce: Tensor,
    activation: str,
    norm: int,
    with_ce: bool,
    path: str,
) -> Tensor:
    r"""dL/dlogits from the gradients of (tp, fp, fn, ce): the backward kernel of ``softseg::logit_statistics``.

    .. math::

        \frac{\partial L}{\partial x_i} = m_i (A' + B h_i),\quad A = G_{fp},\ B = G_{tp} - G_{fp} - G_{fn}

    then the softmax or sigmoid backward and the cross-entropy's term.

    Convention:
        Inputs as ``softseg::logit_statistics`` with its two saved tensors and the (B, C) gradients; returns a
        contiguous tensor of the logits' shape and dtype (:func:`softseg.kernels.fused.block_gradient`,
        :func:`softseg.kernels.native.native_gradient` or :func:`softseg.kernels.triton_fused.triton_gradient`).

    Example:
        >>> logits, labels, ones, zeros = torch.zeros(1, 2, 2), torch.tensor([[0, 1]]), torch.ones(1, 2), torch.zeros(1, 2)
        >>> outputs = torch.ops.softseg.logit_statistics(logits, labels, None, None, "softmax", 1, False, False,
        ...                                              "blocks")
        >>> torch.ops.softseg.logit_statistics_backward(logits, labels, None, None, outputs[6], outputs[7], ones,
        ...                                             zeros, zeros, zeros, "softmax", 1, False, "blocks")
        tensor([[[ 0.2500, -0.2500],
                 [-0.2500,  0.2500]]])
    """
    if path == "triton":
        return triton_gradient(
            logits, labels, dense, weight, grad_tp, grad_fp, grad_fn, grad_ce,
            activation=activation, norm=norm, with_ce=with_ce,
        )
    implementation = native_gradient if path == "native" else block_gradient
    return implementation(
        logits, labels, dense, weight, saved_a, saved_b, grad_tp, grad_fp, grad_fn, grad_ce,
        activation=activation, norm=norm, with_ce=with_ce,
    )


@logit_statistics_backward_op.register_fake
def _logit_statistics_backward_fake(logits, *args):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    logits, labels, dense, weight, activation, norm, with_ce, _with_range, path = inputs
    ctx.save_for_backward(logits, labels, dense, weight, output[6], output[7])
    ctx.options = (activation, norm, with_ce, path)
    ctx.mark_non_differentiable(*output[3:4], *output[5:])
    # No zero gradients for the outputs nobody differentiates (the log-sum-exp pair is (B, 1, N)): None instead.
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, grad_ce, *_grad_rest):
    logits, labels, dense, weight, saved_a, saved_b = ctx.saved_tensors
    activation, norm, with_ce, path = ctx.options
    batch, channels, _ = logits.shape
    acc = accumulation_dtype(logits.dtype)
    grad_tp, grad_fp, grad_fn, grad_ce = (
        logits.new_zeros(batch, channels, dtype=acc) if grad is None else grad
        for grad in (grad_tp, grad_fp, grad_fn, grad_ce)
    )
    if torch.is_grad_enabled():  # create_graph=True: torch operations, differentiable again
        grad = statistics_gradient(
            logits, labels, dense, weight, None, grad_tp, grad_fp, grad_fn, grad_ce if with_ce else None,
            activation=activation, norm=norm,
        )
    else:
        grad = logit_statistics_backward_op(
            logits, labels, dense, weight, saved_a, saved_b, grad_tp, grad_fp, grad_fn, grad_ce,
            activation, norm, with_ce, path,
        )
    return grad, None, None, None, None, None, None, None, None


logit_statistics_op.register_autograd(_backward, setup_context=_setup_context)
