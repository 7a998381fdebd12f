r"""The Triton kernels behind :mod:`softseg.kernels.triton_fused` (imported only where Triton is installed).

Each program takes one image ``b`` and a tile of ``BLOCK_N`` pixels with every class (``BLOCK_C`` >= C,
a power of two): the softmax over the classes stays in registers, the logits are read once per pass.

- :func:`statistics_forward` writes, per (image, class, program), the partial sums of
  tp, sum m x^p, sum m y^p, max m y and the cross-entropy terms into ``partial`` (5, B, C, programs),
  each program covering ``tiles_per_program`` consecutive tiles; torch sums the programs afterwards,
  in a fixed order, so the result does not depend on scheduling.
- :func:`statistics_backward` recomputes the activation and writes dL/dz for every logit from the
  per-(image, class) coefficients A (prediction mass), B (overlap) and G (cross-entropy), see
  :mod:`softseg.kernels.fused`.

Flags (compile-time): ``SOFTMAX`` (else sigmoid), ``INDEX`` (class-index labels, else dense target),
``BINARY_LABEL`` (C = 1 index target: label 1 is the foreground), ``NORM2``, ``WITH_CE``, ``HAS_WEIGHT``
(pixel weight (B, 1, N) or (B, C, N); ``weight_class_stride`` 0 or N).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tile(
    logits_ptr, labels_ptr, dense_ptr, weight_ptr,
    b, pid_n, channels, pixels, weight_batch_stride, weight_class_stride,
    SOFTMAX: tl.constexpr, INDEX: tl.constexpr, BINARY_LABEL: tl.constexpr, HAS_WEIGHT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Logits z, probabilities p, log p (softmax) or log sigmoid, target y and weight m of one tile."""
    c = tl.arange(0, BLOCK_C)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ok = c < channels
    n_ok = n < pixels
    ok = c_ok[:, None] & n_ok[None, :]
    b64 = b.to(tl.int64)
    offsets = b64 * channels * pixels + c[:, None].to(tl.int64) * pixels + n[None, :]
    z = tl.load(logits_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
    m = tl.where(ok, 1.0, 0.0)
    if HAS_WEIGHT:
        weight_offsets = b64 * weight_batch_stride + c[:, None].to(tl.int64) * weight_class_stride + n[None, :]
        m = m * tl.load(weight_ptr + weight_offsets, mask=ok, other=0).to(tl.float32)
        # Excluded logits are selected out (a NaN or inf there reaches no max, sum or gradient): entry by
        # entry for sigmoid; for softmax, which couples a pixel's classes, where no class of the pixel counts.
        if SOFTMAX:
            z = tl.where((tl.max(m, axis=0) > 0)[None, :], z, 0.0)
        else:
            z = tl.where(m > 0, z, 0.0)
    if SOFTMAX:
        # Padded classes get -inf, so exp gives 0; padded pixels keep z = 0 and are weighted out below.
        shifted = tl.where(c_ok[:, None], z, float("-inf"))
        shifted = shifted - tl.max(shifted, axis=0)[None, :]
        e = tl.exp(shifted)
        total = tl.sum(e, axis=0)
        p = e / total[None, :]
        log_p = tl.where(ok, shifted - tl.log(total)[None, :], 0.0)
    else:
        p = tl.sigmoid(z)
        # log sigmoid(z) = min(z, 0) - log(1 + exp(-|z|)), finite for every z
        log_p = tl.minimum(z, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(z)))
    if INDEX:
        label = tl.load(labels_ptr + b64 * pixels + n, mask=n_ok, other=0)
        if BINARY_LABEL:
            y = tl.where((c[:, None] == 0) & (label[None, :] == 1), 1.0, 0.0)
        else:
            y = tl.where(c[:, None] == label[None, :], 1.0, 0.0)
    else:
        y = tl.load(dense_ptr + offsets, mask=ok, other=0.0).to(tl.float32)
        if HAS_WEIGHT:  # a dense target may hold anything where it does not count
            y = tl.where(m > 0, y, 0.0)
    return z, p, log_p, y, m, c, n, ok, offsets


@triton.jit
def statistics_forward(
    logits_ptr, labels_ptr, dense_ptr, weight_ptr, partial_ptr,
    plane, channels, pixels, programs, tiles_per_program, weight_batch_stride, weight_class_stride,
    SOFTMAX: tl.constexpr, INDEX: tl.constexpr, BINARY_LABEL: tl.constexpr, NORM2: tl.constexpr,
    WITH_CE: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    # Each program walks ``tiles_per_program`` consecutive tiles, summing in registers, and reduces over the
    # pixels once at the end: the cross-thread reductions are the costly part of a tile.
    tp = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    p_mass = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    y_mass = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    y_max = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    ce = tl.zeros([BLOCK_C, BLOCK_N], dtype=tl.float32)
    for step in range(0, tiles_per_program):
        z, p, log_p, y, m, c, n, ok, offsets = _tile(
            logits_ptr, labels_ptr, dense_ptr, weight_ptr, b, pid * tiles_per_program + step, channels, pixels,
            weight_batch_stride, weight_class_stride, SOFTMAX, INDEX, BINARY_LABEL, HAS_WEIGHT, BLOCK_C, BLOCK_N,
        )
        if INDEX or NORM2:
            tp += p * y * m
        else:
            tp += tl.minimum(p, y) * m
        if NORM2:
            p_mass += p * p * m
            y_mass += y * y * m
        else:
            p_mass += p * m
            y_mass += y * m
        y_max = tl.maximum(y_max, y * m)
        if WITH_CE:
            if SOFTMAX:
                ce += -y * log_p * m
            else:  # binary cross-entropy from logits: -(y log x + (1 - y) log(1 - x)) = (1 - y) z - log x
                ce += ((1.0 - y) * z - log_p) * m
    # partial[k, b, c, program], k = tp, prediction mass, target mass, target max, cross-entropy;
    # plane = B C programs, from the caller
    c = tl.arange(0, BLOCK_C)
    c_ok = c < channels
    out = (b.to(tl.int64) * channels + c) * programs + pid
    tl.store(partial_ptr + out, tl.sum(tp, axis=1), mask=c_ok)
    tl.store(partial_ptr + plane + out, tl.sum(p_mass, axis=1), mask=c_ok)
    tl.store(partial_ptr + 2 * plane + out, tl.sum(y_mass, axis=1), mask=c_ok)
    tl.store(partial_ptr + 3 * plane + out, tl.max(y_max, axis=1), mask=c_ok)
    if WITH_CE:
        tl.store(partial_ptr + 4 * plane + out, tl.sum(ce, axis=1), mask=c_ok)
    else:  # zeros, so the caller's one sum over the partials stays finite
        tl.store(partial_ptr + 4 * plane + out, tl.zeros([BLOCK_C], dtype=tl.float32), mask=c_ok)


@triton.jit
def statistics_backward(
    logits_ptr, labels_ptr, dense_ptr, weight_ptr, coef_ptr, grad_ptr,
    plane, channels, pixels, weight_batch_stride, weight_class_stride,
    SOFTMAX: tl.constexpr, INDEX: tl.constexpr, BINARY_LABEL: tl.constexpr, NORM2: tl.constexpr,
    WITH_CE: tl.constexpr, HAS_WEIGHT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1)
    z, p, log_p, y, m, c, n, ok, offsets = _tile(
        logits_ptr, labels_ptr, dense_ptr, weight_ptr, b, pid_n, channels, pixels,
        weight_batch_stride, weight_class_stride, SOFTMAX, INDEX, BINARY_LABEL, HAS_WEIGHT, BLOCK_C, BLOCK_N,
    )
    # coef[k, b, c], k = A (prediction mass), B (overlap), G (cross-entropy)
    c_ok = c < channels
    row = b.to(tl.int64) * channels + c  # plane = B C, from the caller
    coef_a = tl.load(coef_ptr + row, mask=c_ok, other=0.0)[:, None]
    coef_b = tl.load(coef_ptr + plane + row, mask=c_ok, other=0.0)[:, None]
    if INDEX or NORM2:
        slope = y  # d tp / dx: the label indicator, or y for the product x y
    else:
        # d min(x, y)/dx: 1 below the target, 1/2 at a tie, 0 above (torch.minimum's convention)
        slope = tl.where(p < y, 1.0, tl.where(p == y, 0.5, 0.0))
    if NORM2:
        grad_p = 2.0 * coef_a * p + coef_b * slope
    else:
        grad_p = coef_a + coef_b * slope
    grad_p = grad_p * m
    if SOFTMAX:
        grad_z = p * (grad_p - tl.sum(p * grad_p, axis=0)[None, :])
    else:
        grad_z = p * (1.0 - p) * grad_p
    if WITH_CE:
        coef_g = tl.load(coef_ptr + 2 * plane + row, mask=c_ok, other=0.0)[:, None]
        if SOFTMAX:
            # d(-sum_c w_c y_c log x_c)/dz_k = x_k sum_c w_c y_c - w_k y_k, w = G m
            weighted = coef_g * m * y
            grad_z += p * tl.sum(weighted, axis=0)[None, :] - weighted
        else:
            grad_z += coef_g * m * (p - y)
    tl.store(grad_ptr + offsets, grad_z.to(grad_ptr.dtype.element_ty), mask=ok)


@triton.jit
def region_loss_tail(
    sums_ptr, class_weight_ptr, count_ptr, loss_ptr, coef_ptr,
    batch, channels, first, alpha, beta, smooth, gamma, threshold, log_eps, mix, lambda_ce,
    LEVEL: tl.constexpr, PRESENT: tl.constexpr, HAS_WEIGHT: tl.constexpr, LOG_LOSS: tl.constexpr,
    POWER: tl.constexpr, SUM: tl.constexpr, WITH_CE: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One aggregation level of the Tversky-family loss from the summed statistics, in one program.

    ``sums`` (5, B, C): tp, prediction mass, target mass, target max, cross-entropy sums. Adds
    ``mix`` x the level's value to ``loss`` (and, with ``WITH_CE``, lambda_ce x sum(ce) / count) and
    the matching d loss / d (fp, tp - fp - fn, ce) to ``coef`` (3, B, C), so that the statistics'
    backward kernel takes them as they are. ``LEVEL``: 0 global, 1 image, 2 class; classes below
    ``first`` are not scored (include_background=False). Same formulas as softseg.scores and
    softseg.aggregation: T = (tp + s) / (tp + alpha fp + beta fn + s), 1 where the denominator is 0;
    1 - T or -log max(T, eps); to the power gamma (0 where not positive); weighted means over active
    entries, 0 where nothing is averaged.
    """
    b = tl.arange(0, BLOCK_B)[:, None]
    c = tl.arange(0, BLOCK_C)[None, :]
    in_range = (b < batch) & (c < channels)
    scored_class = (c < channels) & (c >= first)
    offsets = b * channels + c
    plane = batch * channels
    tp = tl.load(sums_ptr + offsets, mask=in_range, other=0.0)
    fp = tl.load(sums_ptr + plane + offsets, mask=in_range, other=0.0) - tp
    fn = tl.load(sums_ptr + 2 * plane + offsets, mask=in_range, other=0.0) - tp
    target_max = tl.load(sums_ptr + 3 * plane + offsets, mask=in_range, other=0.0)
    if LEVEL == 0:  # pooled over the batch: one entry per class
        tp = tl.sum(tp, axis=0)[None, :]
        fp = tl.sum(fp, axis=0)[None, :]
        fn = tl.sum(fn, axis=0)[None, :]
        target_max = tl.max(target_max, axis=0)[None, :]
        scored = scored_class
    else:
        scored = scored_class & (b < batch)
    numerator = tp + smooth
    denominator = tp + alpha * fp + beta * fn + smooth
    nonzero = denominator != 0
    safe = tl.where(nonzero, denominator, 1.0)
    index = tl.where(nonzero, numerator / safe, 1.0)
    if LOG_LOSS:
        base = -tl.log(tl.maximum(index, log_eps))
        d_base = tl.where(index >= log_eps, -1.0 / index, 0.0)
    else:
        base = 1.0 - index
        d_base = index * 0.0 - 1.0
    if POWER:
        positive = base > 0
        log_base = tl.log(tl.where(positive, base, 1.0))
        loss = tl.where(positive, tl.exp(gamma * log_base), 0.0)
        d_base = d_base * tl.where(positive, gamma * tl.exp((gamma - 1.0) * log_base), 0.0)
    else:
        loss = base
    active = tl.where(scored, 1.0, 0.0)
    if PRESENT:
        active = tl.where(target_max > threshold, active, 0.0)
    if HAS_WEIGHT:
        class_weight = tl.load(class_weight_ptr + (c - first), mask=scored_class, other=0.0)
    else:
        class_weight = tl.where(scored_class, 1.0, 0.0)
    counts = active * class_weight
    # value = sum(k L) over entries, k the level's averaging coefficients (0 where nothing is averaged)
    if SUM:
        k = counts
    elif LEVEL == 0:
        total = tl.sum(counts)
        k = tl.where(total > 0, counts / tl.where(total > 0, total, 1.0), 0.0)
    elif LEVEL == 1:
        per_image = tl.sum(counts, axis=1)[:, None]
        counted = tl.where((per_image > 0) & (b < batch), 1.0, 0.0)
        images = tl.sum(counted)
        k = tl.where(per_image > 0, counts / tl.where(per_image > 0, per_image, 1.0), 0.0)
        k = k * counted / tl.where(images > 0, images, 1.0)
    else:
        per_class = tl.sum(active, axis=0)[None, :]
        counted = tl.where(per_class > 0, class_weight, 0.0)
        classes = tl.sum(counted)
        k = tl.where(per_class > 0, active / tl.where(per_class > 0, per_class, 1.0), 0.0)
        k = k * counted / tl.where(classes > 0, classes, 1.0)
    k = k * mix
    value = tl.sum(k * loss)
    # d loss / d (tp, fp, fn) through T = N / D: dT/dtp = (D - N) / D^2, dT/dfp = -alpha N / D^2, dT/dfn = -beta N / D^2
    g_index = k * d_base / (safe * safe)
    g_index = tl.where(nonzero, g_index, 0.0)
    g_tp = g_index * (denominator - numerator)
    g_fp = -alpha * g_index * numerator
    g_fn = -beta * g_index * numerator
    coef_a = g_fp + tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)  # a global entry serves every image
    coef_b = g_tp - g_fp - g_fn + tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32)
    tl.store(coef_ptr + offsets, tl.load(coef_ptr + offsets, mask=in_range, other=0.0) + coef_a, mask=in_range)
    tl.store(coef_ptr + plane + offsets, tl.load(coef_ptr + plane + offsets, mask=in_range, other=0.0) + coef_b,
             mask=in_range)
    if WITH_CE:
        ce = tl.load(sums_ptr + 4 * plane + offsets, mask=in_range, other=0.0)
        count = tl.load(count_ptr)
        ce_scale = tl.where(count > 0, lambda_ce / tl.where(count > 0, count, 1.0), 0.0)
        value += ce_scale * tl.sum(ce)
        tl.store(coef_ptr + 2 * plane + offsets, ce_scale + tl.zeros([BLOCK_B, BLOCK_C], dtype=tl.float32),
                 mask=in_range)
    tl.store(loss_ptr, tl.load(loss_ptr) + value)
