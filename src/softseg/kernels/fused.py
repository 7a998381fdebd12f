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
(SIGMOID_BLOCK_FRACTION); for index targets they use the closed forms of :func:`_sigmoid_index_sums`.

:func:`block_statistics` and :func:`block_gradient` are the two halves; the custom operators of
:mod:`softseg.kernels.ops` call them (with their autograd formula), and :mod:`softseg.dispatch` decides when:
on CPU for what the native kernels (:mod:`softseg.kernels.native`, one pass each way) do not take (float64 and
half precision, more than 128 classes, sigmoid with cross-entropy, no C++ compiler), on CUDA without Triton,
and on other devices.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg.kernels.formula import kept_logits
from softseg.statistics import accumulation_dtype

BLOCK_ELEMENTS = 1 << 19  # (B, C, pixels) elements per block: 2 MiB in float32, stays in the L2/L3 cache
MIN_BLOCK_PIXELS = 256  # at least this many pixels per block, so per-op overhead stays small for large B * C
CUDA_BLOCKS = 8  # blocks per input on a GPU without the Triton kernels (module softseg.kernels.triton_fused)


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


def log_sum_exp_buffers(logits: Tensor) -> tuple[Tensor, Tensor]:
    r"""Empty (B, 1, N) head and tail of the pixels' log-sum-exp, for :func:`_log_sum_exp`, for (B, C, N) logits.

    .. math::

        lse = head + tail\,/\,(-\log_2 e)

    Convention:
        The head has the accumulation dtype (float32; float64 for float64 logits); the tail is bfloat16 on
        CPU and CUDA, the accumulation dtype elsewhere (MPS has bfloat16 from macOS 14 only). Works on fake
        tensors too (the custom operator's shapes, :mod:`softseg.kernels.ops`).

    Example:
        >>> [(tuple(t.shape), t.dtype) for t in log_sum_exp_buffers(torch.zeros(2, 3, 5))]
        [((2, 1, 5), torch.float32), ((2, 1, 5), torch.bfloat16)]
    """
    batch, _, pixels = logits.shape
    acc = accumulation_dtype(logits.dtype)
    tail_dtype = torch.bfloat16 if logits.device.type in ("cpu", "cuda") else acc
    return logits.new_empty(batch, 1, pixels, dtype=acc), logits.new_empty(batch, 1, pixels, dtype=tail_dtype)


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


def _dense_sums(logits, dense, labels, weight, activation, norm, with_ce, with_range):
    """Any target on the generic blocks: (tp, fp, fn, target_max, ce, target_range, lse_head, lse_tail).

    With ``with_range`` the range output, (min, max) of a dense target over its counted entries (excluded
    ones are never read), is for the caller's [0, 1] check: the blocks read the target anyway (otherwise empty).
    """
    batch, channels, pixels = logits.shape
    acc = accumulation_dtype(logits.dtype)
    binary = dense is None  # index targets are 0/1: min(x, y) = x y, gradient y
    softmax = activation == "softmax"
    # Softmax: each pixel's log-sum-exp (head and tail, 6 bytes), so backward's softmax is one exp pass.
    lse_head, lse_tail = log_sum_exp_buffers(logits) if softmax else _no_lse(acc, logits)

    def sums(ranges):
        tp, pred_mass, target_mass, target_max, ce = (
            torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(5)
        )
        target_low = torch.full((batch, channels), math.inf, dtype=acc, device=logits.device)
        target_high = torch.full((batch, channels), -math.inf, dtype=acc, device=logits.device)
        for start, stop in ranges:
            keep = None if weight is None else weight[:, :, start:stop]
            block = kept_logits(logits[:, :, start:stop], keep, softmax=softmax)
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
                if with_range:  # the counted entries' range (aminmax with a dim is 25x slower here)
                    for_min = y if keep is None else torch.where(keep, read_y, math.inf)
                    torch.minimum(target_low, for_min.amin(-1), out=target_low)
                    torch.maximum(target_high, counted_max, out=target_high)
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
    target_range = _no_range(acc, logits)
    if with_range and not binary:
        low = torch.stack([part[5] for part in parts]).amin()
        target_range = torch.stack([low, torch.stack([part[6] for part in parts]).amax()])
    return tp, pred_mass - tp, target_mass - tp, target_max, ce, target_range, lse_head, lse_tail


def _dense_gradient(logits, dense, labels, weight, lse_head, lse_tail, grad_tp, grad_fp, grad_fn, grad_ce,
                    activation, norm, with_ce):
    """The backward of :func:`_dense_sums`: dL/dlogits, block by block."""
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
            block = kept_logits(logits[:, :, start:stop], keep, softmax=activation == "softmax")
            out = grad[:, :, start:stop]
            # float32/float64 logits: the probabilities go straight into the gradient's block and become
            # the gradient in place there; half precision: computed in float32, rounded once at the end.
            direct = out.dtype == acc
            if activation == "softmax":
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
    return grad


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


def _softmax_index_sums(logits, labels, weight, norm, with_ce):
    """The softmax + index-target case of :func:`_dense_sums`, with gather and scatter_add.

    The label indicator stays implicit: tp gathers the probability of each pixel's label, and in
    backward the overlap term B h is added at the label only (scatter_add), so no block one-hot is built.
    Forward never normalises the block: with e = exp(z - max) and s = sum_c e_c, the sums take the
    pixel factor m / s (m / s^2 for norm 2) through one matrix-vector product.
    """
    batch, channels, pixels = logits.shape
    acc = accumulation_dtype(logits.dtype)
    lse_head, lse_tail = log_sum_exp_buffers(logits)  # for backward's softmax

    def sums(ranges):
        tp, pred_mass, ce = (torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(3))
        for start, stop in ranges:
            block = kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=True)
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
    target_max = (count > 0).to(acc)
    return tp, pred_mass - tp, count - tp, target_max, ce, _no_range(acc, logits), lse_head, lse_tail


def _softmax_index_gradient(logits, labels, weight, lse_head, lse_tail, grad_tp, grad_fp, grad_fn, grad_ce, norm,
                            with_ce):
    """The backward of :func:`_softmax_index_sums`: dL/dlogits, block by block."""
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
                kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=True),
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
    return grad


def _sigmoid_index_sums(logits, labels, weight, norm, with_range):
    """The sigmoid + index-target case of :func:`_dense_sums` (no cross-entropy), in closed form.

    C = 1: the 0/1 labels are the target itself (y = label as a float, no comparison); with
    ``with_range`` their range (min, max) is the extra output, taken from the converted blocks (the
    caller checks it: no separate pass over the labels), otherwise it is empty.
    C > 1: the label indicator stays implicit, as in :func:`_softmax_index_sums` (gather and
    scatter_add), and the range output is empty. With x = sigmoid(z), dL/dz = m x (1 - x) (A' + B h),
    A' = A (norm 1) or 2 A x (norm 2).
    """
    batch, channels, pixels = logits.shape
    acc = accumulation_dtype(logits.dtype)

    def sums(ranges):
        tp, pred_mass, target_mass = (torch.zeros(batch, channels, dtype=acc, device=logits.device) for _ in range(3))
        label_ranges = []
        for start, stop in ranges:
            p = kept_logits(logits[:, :, start:stop].to(acc), _part(weight, start, stop), softmax=False).sigmoid()
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
        label_range = _no_range(acc, logits)
    lse_head, lse_tail = _no_lse(acc, logits)
    return tp, pred_mass - tp, target_mass - tp, target_max, tp.new_zeros(tp.shape), label_range, lse_head, lse_tail


def _sigmoid_index_gradient(logits, labels, weight, grad_tp, grad_fp, grad_fn, norm):
    """The backward of :func:`_sigmoid_index_sums`: dL/dlogits, block by block."""
    batch, channels, pixels = logits.shape
    acc = accumulation_dtype(logits.dtype)
    coef_a, coef_b = (coef.unsqueeze(-1) for coef in _gradient_coefficients(grad_tp, grad_fp, grad_fn, acc))
    coef_2a = 2 * coef_a
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)

    def fill(ranges):
        for start, stop in ranges:
            out = grad[:, :, start:stop]
            z = kept_logits(logits[:, :, start:stop], _part(weight, start, stop), softmax=False)
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
    return grad


def _no_lse(acc: torch.dtype, logits: Tensor) -> tuple[Tensor, Tensor]:
    """The empty log-sum-exp pair of the paths that save none (sigmoid)."""
    return logits.new_zeros(0, dtype=acc), logits.new_zeros(0, dtype=acc)


def _no_range(acc: torch.dtype, logits: Tensor) -> Tensor:
    return logits.new_zeros(0, dtype=acc)


def block_path(labels: Tensor | None, activation: str, with_ce: bool) -> str:
    """Which block implementation takes these inputs: ``"softmax_index"``, ``"sigmoid_index"`` or ``"dense"``.

    Convention:
        ``labels``: the flat labels or None (a dense target). Index targets with sigmoid and the
        cross-entropy take the generic dense blocks (their one-hot per block); everything dense does.

    Example:
        >>> block_path(torch.zeros(1, 4, dtype=torch.long), "sigmoid", False), block_path(None, "softmax", True)
        ('sigmoid_index', 'dense')
    """
    if labels is None:
        return "dense"
    if activation == "softmax":
        return "softmax_index"
    return "dense" if with_ce else "sigmoid_index"


def block_statistics(
    logits: Tensor,
    labels: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    *,
    activation: str,
    norm: int,
    with_ce: bool,
    with_range: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The forward half on the torch blocks: (tp, fp, fn, target_max, ce, target_range, lse_head, lse_tail).

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp,
        \quad CE = -\sum_i m_i\, y_i \log x_i

    Convention:
        - ``logits`` (B, C, N) any float dtype (sums in float32, float64 for float64 logits); exactly one of
          ``labels`` (B, N) int64 (ignored pixels set to a valid class, left out by ``weight``) and ``dense``
          (B, C, N); ``weight``: bool (B, 1 or C, N) or None. Excluded entries are selected out.
        - ``activation`` ``"softmax"`` or ``"sigmoid"``; ``norm`` 1 or 2; ``with_ce``: cross-entropy sums
          (binary for sigmoid), else zeros; ``with_range``: ``target_range`` is (min, max) of a dense target's
          counted entries or of the labels (ignored ones hold 0), for the caller's value check; else empty.
        - The sums are (B, C); the log-sum-exp pair is (B, 1, N) for softmax (:func:`log_sum_exp_buffers`),
          empty otherwise; all are new tensors (none aliases an input).

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])
        >>> block_statistics(logits, torch.tensor([[0, 1, 1]]), None, None, activation="softmax", norm=1,
        ...                  with_ce=False, with_range=False)[0]
        tensor([[0.9820, 1.3808]])
    """
    path = block_path(labels, activation, with_ce)
    if path == "softmax_index":
        outputs = _softmax_index_sums(logits, labels, weight, norm, with_ce)
    elif path == "sigmoid_index":
        outputs = _sigmoid_index_sums(logits, labels, weight, norm, with_range and logits.shape[1] == 1)
    else:
        outputs = _dense_sums(logits, dense, labels, weight, activation, norm, with_ce, with_range and labels is None)
    if with_range and labels is not None and outputs[5].numel() == 0:  # labels the blocks did not range over
        low, high = torch.aminmax(labels) if labels.numel() else (torch.tensor(math.inf), torch.tensor(-math.inf))
        outputs = (*outputs[:5], torch.stack([low, high]).to(outputs[0].dtype), *outputs[6:])
    return outputs


def block_gradient(
    logits: Tensor,
    labels: Tensor | None,
    dense: Tensor | None,
    weight: Tensor | None,
    lse_head: Tensor,
    lse_tail: Tensor,
    grad_tp: Tensor,
    grad_fp: Tensor,
    grad_fn: Tensor,
    grad_ce: Tensor,
    *,
    activation: str,
    norm: int,
    with_ce: bool,
) -> Tensor:
    r"""The backward half on the torch blocks: dL/dlogits from the gradients of (tp, fp, fn, ce).

    .. math::

        \frac{\partial L}{\partial x_i} = m_i (A' + B h_i),\quad A = G_{fp},\ B = G_{tp} - G_{fp} - G_{fn}

    then the softmax or sigmoid backward and the cross-entropy's term (module docstring).

    Convention:
        Arguments as :func:`block_statistics`, with its log-sum-exp pair; ``grad_*`` (B, C) each (``grad_ce``
        is read only with ``with_ce``). Returns a contiguous tensor of the logits' shape and dtype; excluded
        pixels get exactly 0.

    Example:
        >>> logits, labels = torch.zeros(1, 2, 2), torch.tensor([[0, 1]])
        >>> sums = block_statistics(logits, labels, None, None, activation="softmax", norm=1, with_ce=False,
        ...                         with_range=False)
        >>> ones, zeros = torch.ones(1, 2), torch.zeros(1, 2)
        >>> block_gradient(logits, labels, None, None, sums[6], sums[7], ones, zeros, zeros, zeros,
        ...                activation="softmax", norm=1, with_ce=False)                 # d(sum tp)/dz
        tensor([[[ 0.2500, -0.2500],
                 [-0.2500,  0.2500]]])
    """
    path = block_path(labels, activation, with_ce)
    if path == "softmax_index":
        return _softmax_index_gradient(
            logits, labels, weight, lse_head, lse_tail, grad_tp, grad_fp, grad_fn, grad_ce, norm, with_ce
        )
    if path == "sigmoid_index":
        return _sigmoid_index_gradient(logits, labels, weight, grad_tp, grad_fp, grad_fn, norm)
    return _dense_gradient(
        logits, dense, labels, weight, lse_head, lse_tail, grad_tp, grad_fp, grad_fn, grad_ce, activation, norm, with_ce
    )
