"""DESIGN.md properties P1 to P6 on random inputs: 1, 2 and 3 spatial dims, every aggregation, masks.

P1 compares with an independent float64 reference written from the definitions (loops over images
and classes), so the aggregation rules are checked too. P3 to P5 are per-entry properties and use
``reduction="none"``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg import dice_loss, jaccard_loss, tversky_loss

LEVELS = ["global", "image", "class"]
AGGREGATIONS = [*LEVELS, {"global": 0.2, "image": 0.5, "class": 0.3}]


# ---------------------------------------------------------------- reference, from the definitions


def _entry_statistics(x, y, keep, form):
    x, y = x[keep], y[keep]
    if form == "product":  # the classic soft form: tp = <x,y>, fp = <x,1-y>, fn = <1-x,y>
        return float((x * y).sum()), float((x * (1 - y)).sum()), float(((1 - x) * y).sum())
    tp = float(torch.minimum(x, y).sum())
    return tp, float(x.sum()) - tp, float(y.sum()) - tp


def _entry_loss(stats, alpha, beta, smooth=0.0, gamma=1.0, log_loss=False):
    tp, fp, fn = stats
    denominator = tp + alpha * fp + beta * fn + smooth
    index = 1.0 if denominator == 0 else (tp + smooth) / denominator
    loss = -math.log(max(index, 1e-7)) if log_loss else 1 - index
    return max(loss, 0.0) ** gamma


def reference_loss(
    x, y, keep, *, alpha, beta, form, aggregation, active_classes="all", threshold=0.01, weight=None, **entry
):
    """Loss with mean reduction, computed entry by entry in float64 from the definitions.

    ``entry``: smooth, gamma, log_loss of the entry loss; ``weight``: class weights (weighted means).
    """
    batch, channels = x.shape[:2]
    w = [1.0] * channels if weight is None else list(weight)
    x, y = x.double().reshape(batch, channels, -1), y.double().reshape(batch, channels, -1)
    keep = keep.expand(batch, channels, *keep.shape[2:]).reshape(batch, channels, -1)
    levels = {aggregation: 1.0} if isinstance(aggregation, str) else aggregation
    total = 0.0
    for level, mix in levels.items():
        if level == "global":
            losses, active = [], []
            for c in range(channels):
                kept = keep[:, c]
                losses.append(_entry_loss(_entry_statistics(x[:, c], y[:, c], kept, form), alpha, beta, **entry))
                target_max = float(y[:, c][kept].max()) if kept.any() else 0.0
                active.append(active_classes == "all" or target_max > threshold)
            norm = sum(w[c] for c in range(channels) if active[c])
            value = sum(w[c] * losses[c] for c in range(channels) if active[c]) / norm if norm > 0 else 0.0
        else:
            loss = [[0.0] * channels for _ in range(batch)]
            active = [[False] * channels for _ in range(batch)]
            for b in range(batch):
                for c in range(channels):
                    kept = keep[b, c]
                    loss[b][c] = _entry_loss(_entry_statistics(x[b, c], y[b, c], kept, form), alpha, beta, **entry)
                    target_max = float(y[b, c][kept].max()) if kept.any() else 0.0
                    active[b][c] = active_classes == "all" or target_max > threshold
            if level == "image":  # weighted mean over the image's active classes, then mean over images
                means = []
                for b in range(batch):
                    norm = sum(w[c] for c in range(channels) if active[b][c])
                    if norm > 0:
                        means.append(sum(w[c] * loss[b][c] for c in range(channels) if active[b][c]) / norm)
                value = sum(means) / len(means) if means else 0.0
            else:  # mean over the images where the class is active, then weighted mean over classes
                means, weights = [], []
                for c in range(channels):
                    images = [b for b in range(batch) if active[b][c]]
                    if images:
                        means.append(sum(loss[b][c] for b in images) / len(images))
                        weights.append(w[c])
                norm = sum(weights)
                value = sum(k * m for k, m in zip(weights, means)) / norm if norm > 0 else 0.0
        total += mix * value
    return total


# ---------------------------------------------------------------- random problems


@st.composite
def problems(draw, *, hard=False, channels=None):
    """Shapes with 1 to 3 spatial dims, a seed, values quantised sometimes (ties, exact 0 and 1)."""
    ndim = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    batch = draw(st.integers(1, 3))
    channels = channels or draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31 - 1))
    quantise = draw(st.booleans())
    ignored = draw(st.sampled_from(["none", "pixel", "pixel_channel", "class"]))
    return {"shape": (batch, channels, *spatial), "seed": seed, "quantise": quantise, "ignored": ignored}


def _tensors(problem, count):
    gen = torch.Generator().manual_seed(problem["seed"])
    out = [torch.rand(problem["shape"], generator=gen, dtype=torch.float64) for _ in range(count)]
    if problem["quantise"]:
        out = [(t * 2).round() / 2 for t in out]  # 0, 0.5, 1: ties and exact hard values
    batch, channels, *spatial = problem["shape"]
    mask_shape = {
        "none": None,
        "pixel": (batch, *spatial),
        "pixel_channel": (batch, 1, *spatial),
        "class": (batch, channels, *spatial),
    }[problem["ignored"]]
    mask = None if mask_shape is None else torch.rand(mask_shape, generator=gen) < 0.7
    return out, mask


def _keep(mask, shape):
    if mask is None:
        return torch.ones(shape[0], 1, *shape[2:], dtype=torch.bool)
    return mask.unsqueeze(1) if mask.ndim == len(shape) - 1 else mask


# ---------------------------------------------------------------- P1: hard labels


@given(problems(), st.sampled_from(AGGREGATIONS), st.sampled_from(["all", "present"]), st.booleans())
def test_p1_hard_target_equals_classic_soft_losses(problem, aggregation, active_classes, hard_prediction):
    (x, y), mask = _tensors(problem, 2)
    if hard_prediction:
        x = x.round()  # P1 also holds when the prediction is the binary one
    else:
        y = y.round()
    keep = _keep(mask, problem["shape"])
    for alpha, beta, loss in ((0.5, 0.5, dice_loss), (1.0, 1.0, jaccard_loss), (0.3, 0.7, None)):
        options = dict(activation="none", aggregation=aggregation, active_classes=active_classes, mask=mask)
        if loss is None:
            actual = tversky_loss(x, y, alpha=alpha, beta=beta, **options)
        else:
            actual = loss(x, y, **options)
        classic = reference_loss(
            x, y, keep, alpha=alpha, beta=beta, form="product", aggregation=aggregation, active_classes=active_classes
        )
        assert actual.item() == pytest.approx(classic, abs=1e-10)


@given(problems(hard=True, channels=3), st.sampled_from(AGGREGATIONS), st.sampled_from(["all", "present"]))
def test_p1_index_labels_with_ignore_index_equal_classic_losses(problem, aggregation, active_classes):
    (logits,), _ = _tensors(problem, 1)
    gen = torch.Generator().manual_seed(problem["seed"] + 1)
    batch, channels, *spatial = problem["shape"]
    labels = torch.randint(0, channels, (batch, *spatial), generator=gen)
    labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.25, -1, labels)
    probs = (logits * 4).softmax(1)
    one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), channels).movedim(-1, 1).double()
    keep = (labels >= 0).unsqueeze(1)
    actual = dice_loss(
        logits * 4, labels, ignore_index=-1, aggregation=aggregation, active_classes=active_classes
    )
    classic = reference_loss(
        probs, one_hot, keep, alpha=0.5, beta=0.5, form="product", aggregation=aggregation,
        active_classes=active_classes,
    )
    assert actual.item() == pytest.approx(classic, abs=1e-10)


@given(
    problems(),
    st.sampled_from(AGGREGATIONS),
    st.sampled_from(["all", "present"]),
    st.sampled_from([0.0, 0.5]),
    st.sampled_from([1.0, 0.5, 2.0]),
    st.booleans(),
    st.booleans(),
)
def test_soft_target_matches_min_form_reference(
    problem, aggregation, active_classes, smooth, gamma, log_loss, weighted
):
    # On soft targets the loss follows the min form, with the aggregation rules of aggregation.aggregate.
    (x, y), mask = _tensors(problem, 2)
    channels = problem["shape"][1]
    weight = [0.0, 0.5, 2.0, 1.0][:channels] if weighted else None
    entry = dict(smooth=smooth, gamma=gamma, log_loss=log_loss)
    actual = tversky_loss(
        x, y, alpha=0.3, beta=0.7, activation="none", aggregation=aggregation, active_classes=active_classes,
        mask=mask, weight=weight, **entry,
    )
    expected = reference_loss(
        x, y, _keep(mask, problem["shape"]), alpha=0.3, beta=0.7, form="min", aggregation=aggregation,
        active_classes=active_classes, weight=weight, **entry,
    )
    assert actual.item() == pytest.approx(expected, abs=1e-10)


# ---------------------------------------------------------------- P2: reflexivity and no descent


@given(
    problems(),
    st.sampled_from(AGGREGATIONS),
    st.sampled_from([0.0, 1e-5, 1.0]),
    st.sampled_from([1, 2]),
    st.sampled_from([dict(), dict(gamma=2.0), dict(gamma=0.5), dict(log_loss=True)]),
)
def test_p2_loss_at_the_target_is_zero(problem, aggregation, smooth, norm, variant):
    (y,), mask = _tensors(problem, 1)
    for alpha, beta in ((0.5, 0.5), (1.0, 1.0), (0.3, 0.7)):
        loss = tversky_loss(
            y, y, alpha=alpha, beta=beta, activation="none", smooth=smooth, norm=norm, aggregation=aggregation,
            mask=mask, **variant,
        )
        assert loss.item() == 0.0


@given(problems(), st.sampled_from(LEVELS), st.sampled_from([0.0, 1.0]))
def test_p2_loss_is_positive_exactly_where_prediction_differs(problem, level, smooth):
    (x, y), mask = _tensors(problem, 2)
    keep = _keep(mask, problem["shape"]).expand(problem["shape"])
    differs = (torch.where(keep, x, 0) != torch.where(keep, y, 0)).flatten(2).any(-1)  # (B, C)
    if level == "global":
        differs = differs.any(0)
    for loss in (dice_loss, jaccard_loss):
        entries = loss(x, y, activation="none", smooth=smooth, aggregation=level, mask=mask, reduction="none")
        assert torch.equal(entries > 0, differs)


@given(problems(channels=2), st.sampled_from(LEVELS), st.sampled_from([0.0, 1.0]))
def test_p2_gradient_step_from_the_target_does_not_lower_the_loss(problem, level, smooth):
    (y,), _ = _tensors(problem, 1)
    y = y.clamp(0.05, 0.95)  # strictly soft, so the classic loss is not at its minimum either

    def classic_dice(x):  # product form: 1 - 2<x,y> / (|x| + |y|), pooled like ``level``
        dims = (0, *range(2, x.ndim)) if level == "global" else tuple(range(2, x.ndim))
        return (1 - 2 * (x * y).sum(dims) / (x.sum(dims) + y.sum(dims))).mean()

    def softseg_dice(x):
        return dice_loss(x, y, activation="none", smooth=smooth, aggregation=level)

    results = {}
    for name, loss_fn in (("softseg", softseg_dice), ("classic", classic_dice)):
        x = y.clone().requires_grad_(True)
        start = loss_fn(x)
        start.backward()
        stepped = (y - 0.05 * x.grad).clamp(0, 1)
        results[name] = (start.item(), loss_fn(stepped).item(), bool((stepped != y).any()))
    start, after, moved = results["softseg"]
    assert start == 0.0
    assert after >= start
    assert after > 0 or not moved  # y is the strict minimiser: any move costs
    classic_start, classic_after, _ = results["classic"]
    assert classic_start > 0
    assert classic_after < classic_start  # the test can fail: the classic form descends away from y


# ---------------------------------------------------------------- P3, P4: metric and semimetric


@given(problems(), st.sampled_from(LEVELS))
def test_p3_jaccard_is_a_metric(problem, level):
    (x, y, z), mask = _tensors(problem, 3)

    def d(a, b):
        return jaccard_loss(a, b, activation="none", aggregation=level, mask=mask, reduction="none")

    torch.testing.assert_close(d(x, y), d(y, x))
    assert bool((d(x, z) <= d(x, y) + d(y, z) + 1e-12).all())
    assert bool((d(x, x) == 0).all())


@given(problems(), st.sampled_from(LEVELS), st.floats(0.05, 0.95))
def test_p4_dice_and_symmetric_tversky_are_semimetrics(problem, level, a):
    (x, y, z), mask = _tensors(problem, 3)
    for alpha, constant in ((0.5, 1.5), (a, (1 + a) / (2 * a))):

        def d(p, q, alpha=alpha):
            return tversky_loss(
                p, q, alpha=alpha, beta=alpha, activation="none", aggregation=level, mask=mask, reduction="none"
            )

        torch.testing.assert_close(d(x, y), d(y, x))
        assert bool((d(x, z) <= constant * (d(x, y) + d(y, z)) + 1e-12).all())


@pytest.mark.parametrize("alpha", [0.5, 0.25, 0.8])
def test_p4_constant_is_attained_and_triangle_inequality_fails(alpha):
    x, y, z = (torch.tensor([[[a, b]]], dtype=torch.float64) for a, b in ((1, 0), (1, 1), (0, 1)))

    def d(p, q):
        return tversky_loss(p, q, alpha=alpha, beta=alpha, activation="none").item()

    # d(x, z) = 1, d(x, y) = d(y, z) = alpha / (1 + alpha)
    assert d(x, z) == pytest.approx(1.0)
    assert d(x, y) == pytest.approx(alpha / (1 + alpha))
    assert d(x, z) / (d(x, y) + d(y, z)) == pytest.approx((1 + alpha) / (2 * alpha))
    assert d(x, z) > d(x, y) + d(y, z)  # not a metric
    # Jaccard meets the triangle inequality there with equality: 1 = 1/2 + 1/2
    assert jaccard_loss(x, z, activation="none").item() == pytest.approx(
        jaccard_loss(x, y, activation="none").item() + jaccard_loss(y, z, activation="none").item()
    )


# ---------------------------------------------------------------- P5: the IoU-Dice identity


@given(problems(), st.sampled_from(LEVELS), st.sampled_from([1, 2]))
def test_p5_jaccard_equals_2_dice_over_1_plus_dice(problem, level, norm):
    (x, y), mask = _tensors(problem, 2)
    options = dict(activation="none", aggregation=level, mask=mask, norm=norm, reduction="none")
    dice, jaccard = dice_loss(x, y, **options), jaccard_loss(x, y, **options)
    torch.testing.assert_close(jaccard, 2 * dice / (1 + dice))


# ---------------------------------------------------------------- P6: golden values


def test_p6_golden_values():
    x = torch.tensor([[[0.2, 0.7, 0.5]]])
    y = torch.tensor([[[0.5, 0.5, 1.0]]])
    keep = torch.ones(1, 1, 3, dtype=torch.bool)
    classic = dict(form="product", aggregation="global")
    assert reference_loss(x, y, keep, alpha=0.5, beta=0.5, **classic) == pytest.approx(0.441176, abs=1e-6)
    assert reference_loss(x, y, keep, alpha=1.0, beta=1.0, **classic) == pytest.approx(0.612245, abs=1e-6)
    golden = {
        "DML": (dice_loss(x, y, activation="none"), 0.294118),
        "JML": (jaccard_loss(x, y, activation="none"), 0.454545),
        "Tversky(0.3, 0.7)": (tversky_loss(x, y, alpha=0.3, beta=0.7, activation="none"), 0.340659),
        "-log T(1, 1)": (jaccard_loss(x, y, activation="none", log_loss=True), 0.606136),
        "JML gamma 2": (jaccard_loss(x, y, activation="none", gamma=2.0), 0.206612),
    }
    for name, (actual, expected) in golden.items():
        assert actual.item() == pytest.approx(expected, abs=1e-6), name
    # closed forms: DML = |x - y| / (|x| + |y|) = 0.5 / 1.7, JML = sum min / sum max = 1 - 1.2 / 2.2
    assert golden["DML"][0].item() == pytest.approx(0.5 / 1.7, abs=1e-7)
    assert golden["JML"][0].item() == pytest.approx(1 - 1.2 / 2.2, abs=1e-7)
    assert golden["-log T(1, 1)"][0].item() == pytest.approx(-math.log(1.2 / 2.2), abs=1e-6)
