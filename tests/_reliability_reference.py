"""Independent references for the reliability table (tests/test_reliability.py).

Plain float64 torch written from the definitions in DESIGN.md and the docstrings: no softseg code runs
here. Excluded pixels are never read: every reference first gathers the kept pixels into a (K, C) matrix,
so a NaN or inf at an excluded pixel cannot reach it, and its gradient there is exactly zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

F64 = torch.float64


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(shape, seed: int = 0, scale: float = 2.0, dtype=torch.float32) -> Tensor:
    return (scale * torch.randn(*shape, generator=generator(seed), dtype=F64)).to(dtype)


def labels(shape, classes: int, seed: int = 1) -> Tensor:
    return torch.randint(0, classes, tuple(shape), generator=generator(seed))


def soft_target(shape, seed: int = 2) -> Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=F64).softmax(1).float()


def pixels(values: Tensor, keep: Tensor | None = None) -> Tensor:
    """(B, C, *spatial) -> (K, C): the kept pixels only (all pixels when keep is None)."""
    moved = values.movedim(1, -1)
    if keep is None:
        return moved.reshape(-1, values.shape[1])
    return moved[keep.expand(moved.shape[:-1])]


def one_hot(labels: Tensor, classes: int) -> Tensor:
    """(B, *spatial) indices (any values at pixels that will not be kept) -> (B, C, *spatial) float64."""
    safe = labels.clamp(0, classes - 1)
    return F.one_hot(safe.long(), classes).movedim(-1, 1).to(F64)


def activate(values: Tensor, activation: str) -> Tensor:
    values = values.to(F64)
    if activation == "softmax":
        return values.softmax(-1)
    if activation == "sigmoid":
        return values.sigmoid()
    return values


def tversky_per_class(p: Tensor, y: Tensor, alpha: float, beta: float, norm: int = 1) -> Tensor:
    """T_c of (K, C) probabilities and targets: (tp) / (tp + a fp + b fn), 1 where the denominator is 0."""
    if norm == 1:
        tp = torch.minimum(p, y).sum(0)
        fp, fn = p.sum(0) - tp, y.sum(0) - tp
    else:
        tp = (p * y).sum(0)
        fp, fn = p.square().sum(0) - tp, y.square().sum(0) - tp
    denominator = tp + alpha * fp + beta * fn
    return torch.where(denominator > 0, tp / torch.where(denominator > 0, denominator, 1), 1.0)


def region_loss(p: Tensor, y: Tensor, alpha: float = 0.5, beta: float = 0.5) -> Tensor:
    """Global mean over classes of 1 - T_c (every class active)."""
    return (1 - tversky_per_class(p, y, alpha, beta)).mean()


def cross_entropy(log_p: Tensor, y: Tensor) -> Tensor:
    """Mean over the K pixels of -sum_c y_c log p_c (0 for K = 0)."""
    if len(log_p) == 0:
        return log_p.sum() * 0
    return -(y * log_p).sum(1).mean()


def focal(log_p: Tensor, y: Tensor, gamma: float = 2.0) -> Tensor:
    """Softmax focal loss (1 - e^-D)^gamma D with D = KL(y || p), mean over pixels (0 for K = 0).

    On a one-hot y, D = -log p_t: the classic -(1 - p_t)^gamma log p_t.
    """
    if len(log_p) == 0:
        return log_p.sum() * 0
    divergence = (torch.xlogy(y, y) - y * log_p).sum(1)
    return ((1 - torch.exp(-divergence)) ** gamma * divergence).mean()


def loss_reference(
    kind: str,
    leaf: Tensor,
    target: Tensor,
    keep: Tensor | None = None,
    *,
    view=None,
    activation: str = "softmax",
    alpha: float = 0.5,
    beta: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Value and gradient (with respect to ``leaf``) of a loss on the kept pixels only, in float64.

    The loss sees ``view(leaf)`` (a slice, an expansion...; identity by default). ``kind``: "dice",
    "jaccard", "tversky" (``alpha``, ``beta``), "dice_ce", "jaccard_ce" (region + cross-entropy), "focal"
    (gamma 2). ``target``: indices (B, *spatial) or dense (B, C, *spatial); ``keep``: bool (B, *spatial).
    """
    leaf64 = leaf.detach().to(F64).requires_grad_(True)
    input = leaf64 if view is None else view(leaf64)
    classes = input.shape[1]
    if target.is_floating_point():
        dense = target.to(F64)
    elif classes == 1:
        dense = (target == 1).unsqueeze(1).to(F64)
    else:
        dense = one_hot(target, classes)
    x, y = pixels(input, keep), pixels(dense, keep)
    p = activate(x, activation)
    if kind in ("dice", "jaccard", "tversky"):
        a, b = {"dice": (0.5, 0.5), "jaccard": (1.0, 1.0), "tversky": (alpha, beta)}[kind]
        value = region_loss(p, y, a, b)
    elif kind in ("dice_ce", "jaccard_ce"):
        a = 0.5 if kind == "dice_ce" else 1.0
        value = region_loss(p, y, a, a) + cross_entropy(x.log_softmax(-1), y)
    elif kind == "focal":
        value = focal(x.log_softmax(-1), y)
    else:
        raise ValueError(kind)
    value.backward()
    return value.detach(), leaf64.grad


# ---------------------------------------------------------------- metrics


def soft_dice_score(p: Tensor, y: Tensor, alpha: float = 0.5) -> Tensor:
    """Global soft Dice (alpha 0.5) or Jaccard (1) score over (K, C), classes empty in both left out."""
    p, y = p.to(F64), y.to(F64)
    tp = torch.minimum(p, y).sum(0)
    fp, fn = p.sum(0) - tp, y.sum(0) - tp
    used = tp + fp + fn > 0
    if not used.any():
        return torch.zeros((), dtype=F64)
    return (tp / (tp + alpha * (fp + fn)))[used].mean()


def hard_score(preds: Tensor, target: Tensor, classes: int, alpha: float = 0.5) -> Tensor:
    """Global hard Dice (alpha 0.5) or IoU (1) of flat index tensors; classes in neither left out."""
    scores = []
    for c in range(classes):
        tp = float(((preds == c) & (target == c)).sum())
        fp = float(((preds == c) & (target != c)).sum())
        fn = float(((preds != c) & (target == c)).sum())
        if tp + fp + fn > 0:
            scores.append(tp / (tp + alpha * (fp + fn)))
    return torch.tensor(sum(scores) / len(scores) if scores else 0.0, dtype=F64)


def brier(p: Tensor, y: Tensor) -> Tensor:
    """Mean over pixels of sum_c (p_c - y_c)^2, (K, C); 0 for K = 0."""
    if len(p) == 0:
        return torch.zeros((), dtype=F64)
    return (p.to(F64) - y.to(F64)).square().sum(1).mean()


def nll(p: Tensor, y: Tensor, eps: float = 1e-7) -> Tensor:
    if len(p) == 0:
        return torch.zeros((), dtype=F64)
    return -(y.to(F64) * p.to(F64).clamp_min(eps).log()).sum(1).mean()


def top_label_ece(p: Tensor, y: Tensor, n_bins: int = 15, maximum: bool = False) -> Tensor:
    """Top-label ECE (or MCE) of (K, C) probabilities against (K, C) targets, equal-width bins, last closed."""
    if len(p) == 0:
        return torch.zeros((), dtype=F64)
    p, y = p.to(F64), y.to(F64)
    confidence, predicted = p.max(1)
    accuracy = y.gather(1, predicted.unsqueeze(1)).squeeze(1)
    total, worst = 0.0, 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = (confidence >= low) & ((confidence < high) if b < n_bins - 1 else (confidence <= high))
        if inside.any():
            gap = abs(float(accuracy[inside].mean() - confidence[inside].mean()))
            total += gap * float(inside.sum()) / len(p)
            worst = max(worst, gap)
    return torch.tensor(worst if maximum else total, dtype=F64)


# ---------------------------------------------------------------- labels


def rater_mean(masks: Tensor, classes: int) -> Tensor:
    batch, raters = masks.shape[:2]
    out = torch.zeros(batch, classes, *masks.shape[2:], dtype=F64)
    for r in range(raters):
        out += one_hot(masks[:, r], classes)
    return (out / raters).float()


def block_mean(values: Tensor, factor: int) -> Tensor:
    """Mean over non-overlapping blocks of side ``factor`` in every spatial dimension of (B, C, *spatial)."""
    out = values.to(F64)
    for dim in range(2, values.ndim):
        out = out.unflatten(dim, (out.shape[dim] // factor, factor)).mean(dim + 1)
    return out


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
