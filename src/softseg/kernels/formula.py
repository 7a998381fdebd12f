r"""The fused statistics and their gradient as whole-tensor torch expressions, for the compiler and for double backward.

The same sums as the block path (:mod:`softseg.kernels.fused`) and the Triton kernels, written once over the
whole (B, C, N) logits: for x = act(z), y the target (a one-hot of the labels, never materialised by a
compiler) and m the counted-entry weight,

    tp = sum m min(x, y)  (x y for labels and norm 2),  fp = sum m x^p - tp,  fn = sum m y^p - tp,
    CE = sum m y (lse - z)  (softmax),  sum m ((1 - y) z - log sigmoid z)  (sigmoid),

and the gradient dL/dz from the coefficients A = G_fp, B = G_tp - G_fp - G_fn and G_ce (module docstring of
:mod:`softseg.kernels.fused`). Two uses:

- :class:`CompiledStatistics`, an autograd function over :func:`statistics_sums` and :func:`statistics_gradient`
  that ``torch.compile`` traces: inductor turns the forward into one pass for the log-sum-exp and one
  multi-output reduction, and the backward (softmax recomputed from the saved log-sum-exp) into one
  elementwise pass, with no probability tensor of the logits' size in between.
- Double backward (``create_graph=True``) through the fused operators: :func:`statistics_gradient` with the
  log-sum-exp recomputed is differentiable again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg.statistics import accumulation_dtype


def kept_logits(logits: Tensor, keep: Tensor | None, *, softmax: bool) -> Tensor:
    r"""The logits with the excluded entries selected out (set to 0), or the logits themselves.

    .. math::

        z'_{bci} = z_{bci}\ \text{where counted, else}\ 0

    Convention:
        - ``logits`` (B, C, \*n) (a block or the whole tensor); ``keep``: bool (B, 1 or C, \*n), True = counts,
          or None (everything counts: ``logits`` is returned as it is).
        - Selected with ``torch.where``, never multiplied by 0: a NaN or inf logit at an excluded pixel
          (padding) then reaches no max, sum or gradient, and its gradient is exactly 0. Softmax couples the
          classes of a pixel, so there a pixel leaves the activation only where none of its classes counts;
          sigmoid: entry by entry.

    Example:
        >>> z = torch.tensor([[[1.0, float("nan")], [2.0, float("inf")]]])    # (B=1, C=2, N=2)
        >>> kept_logits(z, torch.tensor([[[True, False]]]), softmax=True)
        tensor([[[1., 0.],
                 [2., 0.]]])
    """
    if keep is None:
        return logits
    if softmax and keep.shape[1] > 1:
        keep = keep.any(1, keepdim=True)
    return torch.where(keep, logits, 0)


def _target(logits: Tensor, labels: Tensor | None, dense: Tensor | None, keep: Tensor | None, acc: torch.dtype):
    """(y in acc, bool label indicator or None): the dense target or the labels' one-hot, 0 where not counted."""
    channels = logits.shape[1]
    if dense is not None:
        y = dense.to(acc)
        return (y if keep is None else torch.where(keep, y, 0)), None
    if channels == 1:  # binary labels: 1 is the foreground of the single channel
        hit = (labels == 1).unsqueeze(1)
    else:
        hit = labels.unsqueeze(1) == torch.arange(channels, device=labels.device).view(1, channels, 1)
    if keep is not None:
        hit = hit & keep
    return hit.to(acc), hit


def statistics_sums(
    logits: Tensor,
    labels: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    *,
    activation: str,
    norm: int,
    with_ce: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    r"""(tp, fp, fn, target_max, ce, lse) of ``activation(logits)`` against the target, each (B, C); lse (B, 1, N).

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp

    Convention:
        - ``logits`` (B, C, N) any float dtype (sums in float32, float64 for float64); exactly one of
          ``labels`` (B, N) int64 (ignored pixels set to a valid class and left out by ``weight``) and
          ``dense`` (B, C, N) in [0, 1]; ``weight``: bool (B, 1 or C, N), True = counts, or None.
        - ``activation`` ``"softmax"`` or ``"sigmoid"``; ``norm`` 1 or 2; ``with_ce``: the cross-entropy sums
          (binary for sigmoid), else zeros. ``lse``: each pixel's log-sum-exp (softmax; None for sigmoid).
        - Excluded entries are selected out (:func:`kept_logits`); an empty (image, class) gives zeros.

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])
        >>> statistics_sums(logits, torch.tensor([[0, 1, 1]]), None, None, activation="softmax", norm=1,
        ...                 with_ce=False)[0]
        tensor([[0.9820, 1.3808]])
    """
    acc = accumulation_dtype(logits.dtype)
    softmax = activation == "softmax"
    z = kept_logits(logits.to(acc), weight, softmax=softmax)
    y, hit = _target(logits, labels, dense, weight, acc)
    lse = None
    if softmax:
        lse = z.logsumexp(1, keepdim=True)
        p = (z - lse).exp()
    else:
        p = z.sigmoid()
    keep = weight
    overlap = p * y if (hit is not None or norm == 2) else torch.minimum(p, y)
    p_mass = p if norm == 1 else p.square()
    y_mass = y if (hit is not None or norm == 1) else y.square()
    if keep is not None:
        overlap, p_mass, y_mass, y = (torch.where(keep, t, 0) for t in (overlap, p_mass, y_mass, y))
    tp = overlap.sum(-1)
    fp = p_mass.sum(-1) - tp
    target_mass = y_mass.sum(-1)
    fn = target_mass - tp
    target_max = (target_mass > 0).to(acc) if hit is not None else y.amax(-1)
    if with_ce:
        terms = y * (lse - z) if softmax else (1 - y) * z - F.logsigmoid(z)
        ce = (terms if keep is None else torch.where(keep, terms, 0)).sum(-1)
    else:
        ce = torch.zeros_like(tp)
    return tp, fp, fn, target_max, ce, lse


def statistics_gradient(
    logits: Tensor,
    labels: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    lse: Tensor | None,
    grad_tp: Tensor,
    grad_fp: Tensor,
    grad_fn: Tensor,
    grad_ce: Tensor | None,
    *,
    activation: str,
    norm: int,
) -> Tensor:
    r"""dL/dlogits from the upstream gradients of (tp, fp, fn, ce): the backward of :func:`statistics_sums`.

    .. math::

        \frac{\partial L}{\partial x} = m (A' + B h),\quad A = G_{fp},\ B = G_{tp} - G_{fp} - G_{fn},

    A' = A (norm 1) or 2 A x (norm 2), h = d tp/dx (the label indicator, y for norm 2, the slope of
    min(x, y): 1 below, 1/2 at a tie, 0 above); then the softmax or sigmoid backward, plus the
    cross-entropy's x sum_c W_c - W (softmax, W = G m y) or G m (x - y) (sigmoid).

    Convention:
        - Arguments as :func:`statistics_sums`; ``lse`` its log-sum-exp, or None to recompute it from the
          logits (differentiably: then the result can be differentiated again, for double backward);
          ``grad_*`` (B, C) each; ``grad_ce`` None without a cross-entropy term.
        - Returns a tensor of the logits' shape and dtype; excluded pixels get exactly 0.

    Example:
        >>> logits, labels = torch.zeros(1, 2, 2), torch.tensor([[0, 1]])
        >>> ones = torch.ones(1, 2)
        >>> statistics_gradient(logits, labels, None, None, None, ones, 0 * ones, 0 * ones, None,
        ...                     activation="softmax", norm=1)                  # d(sum tp)/dz
        tensor([[[ 0.2500, -0.2500],
                 [-0.2500,  0.2500]]])
    """
    acc = accumulation_dtype(logits.dtype)
    softmax = activation == "softmax"
    z = kept_logits(logits.to(acc), weight, softmax=softmax)
    y, hit = _target(logits, labels, dense, weight, acc)
    if softmax:
        p = (z - (z.logsumexp(1, keepdim=True) if lse is None else lse)).exp()
    else:
        p = z.sigmoid()
    coef_a = grad_fp.to(acc).unsqueeze(-1)
    coef_b = (grad_tp - grad_fp - grad_fn).to(acc).unsqueeze(-1)
    if hit is not None or norm == 2:
        slope = y
    else:  # d min(x, y)/dx, torch.minimum's convention (1/2 at a tie)
        slope = (1 + torch.sign(y - p)) / 2
    grad_p = coef_b * slope + (coef_a if norm == 1 else 2 * coef_a * p)
    if weight is not None:
        grad_p = torch.where(weight, grad_p, 0)
    if softmax:
        grad_z = p * (grad_p - (p * grad_p).sum(1, keepdim=True))
    else:
        grad_z = p * (1 - p) * grad_p
    if grad_ce is not None:
        coef_ce = grad_ce.to(acc).unsqueeze(-1)
        if softmax:
            weighted = coef_ce * y  # y is 0 where not counted
            grad_z = grad_z + p * weighted.sum(1, keepdim=True) - weighted
        else:
            terms = coef_ce * (p - y)
            grad_z = grad_z + (terms if weight is None else torch.where(weight, terms, 0))
    return grad_z.to(logits.dtype)


class CompiledStatistics(torch.autograd.Function):
    r"""tp, fp, fn, target_max and ce (B, C) through :func:`statistics_sums`, backward :func:`statistics_gradient`.

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp

    The path ``torch.compile`` takes (:mod:`softseg.dispatch`): the compiler traces both halves into its
    graph and generates the kernels; only the logits, the target, the weight and, for softmax, each
    pixel's log-sum-exp are saved. Differentiable twice (the backward is made of torch operations).

    Convention:
        Arguments and outputs as :func:`statistics_sums` (without ``lse``); the gradients of ``target_max``,
        and of ``ce`` without ``with_ce``, are ignored (detach ``target_max``).

    Example:
        >>> logits = torch.zeros(1, 2, 3, requires_grad=True)
        >>> tp, fp, fn, target_max, ce = CompiledStatistics.apply(logits, torch.tensor([[0, 1, 1]]), None, None,
        ...                                                        "softmax", 1, False)
        >>> tp
        tensor([[0.5000, 1.0000]], grad_fn=<CompiledStatisticsBackward>)
    """

    @staticmethod
    def forward(ctx, logits, labels, dense, weight, activation, norm, with_ce):
        tp, fp, fn, target_max, ce, lse = statistics_sums(
            logits, labels, dense, weight, activation=activation, norm=norm, with_ce=with_ce
        )
        ctx.save_for_backward(logits, labels, dense, weight, lse)
        ctx.options = (activation, norm, with_ce)
        # (target_max carries no gradient; not marked: mark_non_differentiable makes dynamo instantiate the
        # Function, which torch deprecates. The caller detaches it, and backward ignores its gradient.)
        return tp, fp, fn, target_max, ce

    @staticmethod
    def backward(ctx, grad_tp, grad_fp, grad_fn, _grad_target_max, grad_ce):
        logits, labels, dense, weight, lse = ctx.saved_tensors
        activation, norm, with_ce = ctx.options
        if torch.is_grad_enabled():  # create_graph=True: recompute the log-sum-exp so the result differentiates
            lse = None
        grad = statistics_gradient(
            logits, labels, dense, weight, lse, grad_tp, grad_fp, grad_fn, grad_ce if with_ce else None,
            activation=activation, norm=norm,
        )
        return grad, None, None, None, None, None, None
