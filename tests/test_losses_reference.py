"""Equality with MONAI (a test-only dependency) and with a direct formula, value and gradient.

MONAI's ``batch=True`` pools the sums over the batch (our ``aggregation="global"``); ``batch=False``
scores every (image, class) and averages all of them (our ``"image"`` with every class active).
MONAI's Dice smoothing adds ``smooth`` to 2 tp and to |x| + |y|, ours adds s to tp and to the
Tversky denominator, so MONAI's smooth is 2 s for Dice and s for Tversky.
"""

from __future__ import annotations

import pytest
import torch

from softseg import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss

monai_losses = pytest.importorskip("monai.losses")

SHAPES = [(2, 3, 7), (2, 3, 5, 6), (2, 4, 3, 4, 5)]  # 1, 2 and 3 spatial dims


def _problem(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 2
    labels = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=gen)
    soft = torch.randn(shape, generator=gen, dtype=torch.float64).softmax(1)
    return logits, labels, soft


def _value_and_grad(fn, logits, target):
    x = logits.clone().requires_grad_(True)
    value = fn(x, target)
    value.sum().backward()
    return value.detach(), x.grad


def _assert_same(ours, monai, logits, target, *, monai_target=None):
    value, grad = _value_and_grad(ours, logits, target)
    expected_value, expected_grad = _value_and_grad(monai, logits, target if monai_target is None else monai_target)
    torch.testing.assert_close(value, expected_value.reshape(value.shape))
    torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("include_background", [True, False])
def test_dice_hard_labels_equal_monai(shape, batch, include_background):
    logits, labels, _ = _problem(shape)
    monai = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, batch=batch, include_background=include_background, smooth_nr=0,
        smooth_dr=0, soft_label=False,
    )
    ours = DiceLoss(aggregation="global" if batch else "image", include_background=include_background)
    _assert_same(ours, monai, logits, labels)
    # index targets of shape (B, *spatial) too
    _assert_same(ours, monai, logits, labels[:, 0], monai_target=labels)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (1.0, 1.0)])
def test_tversky_hard_labels_equal_monai(shape, batch, alpha, beta):
    logits, labels, _ = _problem(shape, seed=1)
    monai = monai_losses.TverskyLoss(
        softmax=True, to_onehot_y=True, batch=batch, alpha=alpha, beta=beta, smooth_nr=0, smooth_dr=0,
        soft_label=False,
    )
    ours = TverskyLoss(alpha=alpha, beta=beta, aggregation="global" if batch else "image")
    _assert_same(ours, monai, logits, labels)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("batch", [True, False])
def test_soft_labels_equal_monai_soft_label_mode(shape, batch):
    logits, _, soft = _problem(shape, seed=2)
    aggregation = "global" if batch else "image"
    monai_dice = monai_losses.DiceLoss(softmax=True, batch=batch, smooth_nr=0, smooth_dr=0, soft_label=True)
    _assert_same(DiceLoss(aggregation=aggregation), monai_dice, logits, soft)
    monai_tversky = monai_losses.TverskyLoss(
        softmax=True, batch=batch, alpha=0.3, beta=0.7, smooth_nr=0, smooth_dr=0, soft_label=True
    )
    _assert_same(TverskyLoss(alpha=0.3, beta=0.7, aggregation=aggregation), monai_tversky, logits, soft)
    monai_jaccard = monai_losses.DiceLoss(
        softmax=True, batch=batch, jaccard=True, smooth_nr=0, smooth_dr=0, soft_label=True
    )
    _assert_same(JaccardLoss(aggregation=aggregation), monai_jaccard, logits, soft)


def test_soft_labels_differ_from_monai_default_mode():
    # MONAI's default (soft_label=False) is the product form: different on soft labels, and not 0 at y.
    logits, _, soft = _problem((2, 3, 5, 6), seed=3)
    monai = monai_losses.DiceLoss(softmax=True, batch=True, smooth_nr=0, smooth_dr=0)
    assert abs(monai(logits, soft).item() - dice_loss(logits, soft).item()) > 1e-2
    monai_none = monai_losses.DiceLoss(batch=True, smooth_nr=0, smooth_dr=0)
    assert monai_none(soft, soft).item() > 0.1
    assert dice_loss(soft, soft, activation="none").item() == 0.0


@pytest.mark.parametrize("batch", [True, False])
def test_smoothing_equals_monai(batch):
    logits, labels, soft = _problem((2, 3, 5, 6), seed=4)
    s = 0.7
    aggregation = "global" if batch else "image"
    monai_dice = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=batch, smooth_nr=2 * s, smooth_dr=2 * s)
    _assert_same(DiceLoss(smooth=s, aggregation=aggregation), monai_dice, logits, labels)
    monai_tversky = monai_losses.TverskyLoss(
        softmax=True, batch=batch, alpha=0.3, beta=0.7, smooth_nr=s, smooth_dr=s, soft_label=True
    )
    _assert_same(TverskyLoss(alpha=0.3, beta=0.7, smooth=s, aggregation=aggregation), monai_tversky, logits, soft)


@pytest.mark.parametrize("soft_label", [False, True])
def test_norm_2_equals_monai_squared_pred(soft_label):
    logits, labels, soft = _problem((2, 3, 5, 6), seed=5)
    monai = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=not soft_label, batch=True, squared_pred=True, smooth_nr=0, smooth_dr=0,
        soft_label=soft_label,
    )
    _assert_same(DiceLoss(norm=2), monai, logits, soft if soft_label else labels)


def test_sigmoid_multi_label_equals_monai():
    logits, _, _ = _problem((2, 3, 5, 6), seed=6)
    gen = torch.Generator().manual_seed(7)
    multi_label = (torch.rand(logits.shape, generator=gen) < 0.4).double()
    soft = torch.rand(logits.shape, generator=gen, dtype=torch.float64)
    for target, soft_label in ((multi_label, False), (soft, True)):
        monai = monai_losses.DiceLoss(sigmoid=True, batch=True, smooth_nr=0, smooth_dr=0, soft_label=soft_label)
        _assert_same(DiceLoss(activation="sigmoid"), monai, logits, target)


def test_binary_single_channel_equals_monai():
    logits, _, _ = _problem((3, 1, 4, 5), seed=8)
    labels = torch.randint(0, 2, (3, 1, 4, 5), generator=torch.Generator().manual_seed(9))
    monai = monai_losses.DiceLoss(sigmoid=True, batch=False, smooth_nr=0, smooth_dr=0)
    ours = DiceLoss(activation="sigmoid", aggregation="image")
    _assert_same(ours, monai, logits, labels, monai_target=labels.double())


def test_class_weights_with_sum_reduction_equal_monai():
    # MONAI multiplies each class loss by its weight and sums; our reduction="sum" is sum of w a L.
    logits, labels, _ = _problem((2, 3, 5, 6), seed=10)
    weight = [0.2, 1.0, 3.0]
    monai = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, batch=True, smooth_nr=0, smooth_dr=0, weight=weight, reduction="sum"
    )
    _assert_same(DiceLoss(weight=weight, reduction="sum"), monai, logits, labels)


def test_reduction_none_equals_monai():
    logits, labels, _ = _problem((2, 3, 5, 6), seed=11)
    monai = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, batch=False, smooth_nr=0, smooth_dr=0, reduction="none"
    )
    ours = dice_loss(logits, labels, aggregation="image", reduction="none")
    assert ours.shape == (2, 3)
    torch.testing.assert_close(ours, monai(logits, labels).reshape(2, 3))


def test_ignore_index_equals_monai():
    logits, labels, _ = _problem((2, 3, 5, 6), seed=12)
    labels = torch.where(torch.rand(labels.shape, generator=torch.Generator().manual_seed(13)) < 0.3, 255, labels)
    monai = monai_losses.DiceLoss(
        softmax=True, to_onehot_y=True, batch=True, smooth_nr=0, smooth_dr=0, ignore_index=255
    )
    _assert_same(DiceLoss(ignore_index=255), monai, logits, labels)


# ---------------------------------------------------------------- direct formula


def _direct_dice(probs, one_hot, *, per_image):
    """1 - 2 sum(x y) / (sum x + sum y) per class (pooled over the batch) or per (image, class), then mean."""
    losses = []
    images = range(probs.shape[0]) if per_image else [slice(None)]
    for b in images:
        for c in range(probs.shape[1]):
            x, y = probs[b, c], one_hot[b, c]
            losses.append(1 - 2 * (x * y).sum() / (x.sum() + y.sum()))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_image", [False, True])
def test_hard_labels_equal_direct_formula(shape, per_image):
    logits, labels, _ = _problem(shape, seed=14)
    one_hot = torch.nn.functional.one_hot(labels[:, 0], shape[1]).movedim(-1, 1).double()
    aggregation = "image" if per_image else "global"
    _assert_same(
        lambda x, y: dice_loss(x, y, aggregation=aggregation),
        lambda x, y: _direct_dice(x.softmax(1), one_hot, per_image=per_image),
        logits,
        labels,
    )
    # Jaccard of the same: 1 - sum(x y) / (sum x + sum y - sum(x y)), via the IoU-Dice identity on each class
    dice = dice_loss(logits, labels, aggregation=aggregation, reduction="none")
    jaccard = jaccard_loss(logits, labels, aggregation=aggregation, reduction="none")
    torch.testing.assert_close(jaccard, 2 * dice / (1 + dice))


def test_tversky_direct_formula_on_soft_labels():
    logits, _, soft = _problem((2, 3, 4, 4), seed=15)
    probs = logits.softmax(1)
    tp = torch.minimum(probs, soft).sum((0, 2, 3))
    fp = (probs - soft).clamp_min(0).sum((0, 2, 3))
    fn = (soft - probs).clamp_min(0).sum((0, 2, 3))
    expected = (1 - tp / (tp + 0.3 * fp + 0.7 * fn)).mean()
    torch.testing.assert_close(tversky_loss(logits, soft, alpha=0.3, beta=0.7), expected)
