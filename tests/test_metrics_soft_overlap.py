"""Soft Dice/Jaccard scores (one minus the losses) and the QUBIQ thresholded Dice."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg import dice_loss, jaccard_loss
from softseg.labels import rater_mean
from softseg.metrics import (
    SoftDiceScore,
    SoftJaccardScore,
    ThresholdedDiceScore,
    soft_dice_score,
    soft_jaccard_score,
    thresholded_dice_score,
)

X = torch.tensor([[[0.2, 0.7, 0.5]]])
Y = torch.tensor([[[0.5, 0.5, 1.0]]])


def test_golden_values():
    # DESIGN.md P6: DML 0.294118, JML 0.454545
    assert soft_dice_score(X, Y).item() == pytest.approx(1 - 0.294118, abs=1e-6)
    assert soft_jaccard_score(X, Y).item() == pytest.approx(1 - 0.454545, abs=1e-6)


def random_pair(seed, soft_target=True):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.randn(3, 3, 4, 4, generator=generator).softmax(1)
    if soft_target:
        target = torch.randn(3, 3, 4, 4, generator=generator).softmax(1)
    else:
        target = torch.randint(0, 3, (3, 4, 4), generator=generator)
    return probs, target


@given(
    st.integers(0, 2**31 - 1),
    st.booleans(),
    st.sampled_from(["global", "image", "class"]),
    st.sampled_from(["all", "present"]),
)
def test_scores_are_one_minus_the_losses(seed, soft_target, aggregation, active_classes):
    probs, target = random_pair(seed, soft_target)
    options = dict(aggregation=aggregation, active_classes=active_classes)
    assert soft_dice_score(probs, target, **options).item() == pytest.approx(
        1 - dice_loss(probs, target, activation="none", **options).item(), abs=1e-6
    )
    assert soft_jaccard_score(probs, target, **options).item() == pytest.approx(
        1 - jaccard_loss(probs, target, activation="none", **options).item(), abs=1e-6
    )


def test_empty_rule_one_matches_the_losses_with_empty_entries():
    probs = torch.zeros(2, 2, 3)
    probs[:, 0] = 1.0
    target = torch.zeros(2, 3, dtype=torch.long)  # class 1 empty in prediction and target
    assert soft_dice_score(probs, target, empty="one", aggregation="image").item() == pytest.approx(
        1 - dice_loss(probs, target, activation="none", aggregation="image").item()
    )
    assert soft_dice_score(probs, target, reduction="none").tolist() == [1.0, 0.0]  # skip: class 1 left out


@given(st.integers(0, 2**31 - 1))
def test_score_is_one_exactly_at_the_soft_target(seed):
    probs, _ = random_pair(seed)
    for aggregation in ("global", "image", "class"):
        assert soft_dice_score(probs, probs, aggregation=aggregation).item() == pytest.approx(1.0, abs=1e-6)
        assert soft_jaccard_score(probs, probs, aggregation=aggregation).item() == pytest.approx(1.0, abs=1e-6)


def test_logits_activation_mask_and_ignore():
    probs, labels = random_pair(4, soft_target=False)
    logits = probs.log()
    assert soft_dice_score(logits, labels, activation="softmax").item() == pytest.approx(
        soft_dice_score(probs, labels).item(), abs=1e-6
    )
    ignored = labels.clone()
    ignored[:, 0] = -1
    keep = ignored != -1
    a = soft_dice_score(probs, ignored, ignore_index=-1, reduction="none")
    b = soft_dice_score(probs, labels, mask=keep, reduction="none")
    assert torch.allclose(a, b)


def test_thresholded_dice_hand_computed():
    target = rater_mean(torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]]), 2)[:, 1:]  # 0, 1/3, 2/3, 1
    probs = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    # t < 1/3: target (0,1,1,1) -> 2*2/(2+3) = 0.8; 1/3 <= t < 2/3: equal -> 1; t >= 2/3: target (0,0,0,1) -> 2/3
    expected = (3 * 0.8 + 3 * 1.0 + 3 * (2 / 3)) / 9
    assert thresholded_dice_score(probs, target).item() == pytest.approx(expected, abs=1e-6)
    assert thresholded_dice_score(target, target).item() == pytest.approx(1.0)


def test_thresholded_dice_empty_levels_score_one_or_are_skipped():
    target = torch.tensor([[[0.0, 0.4, 0.4, 0.0]]])
    probs = torch.tensor([[[0.0, 0.3, 0.0, 0.0]]])
    # t = 0.2: pred (0,1,0,0) vs (0,1,1,0) -> 2/3; t = 0.5: both empty -> 1 (or skipped)
    assert thresholded_dice_score(probs, target, thresholds=(0.2, 0.5)).item() == pytest.approx((2 / 3 + 1) / 2)
    skipped = thresholded_dice_score(probs, target, thresholds=(0.2, 0.5), empty="skip")
    assert skipped.item() == pytest.approx((2 / 3 + 0) / 2)  # nothing active at 0.5 gives 0 there


@given(st.integers(0, 2**31 - 1), st.floats(0.05, 0.95))
def test_single_threshold_is_the_dice_of_the_binarised_maps(seed, t):
    probs, target = random_pair(seed)
    ours = thresholded_dice_score(probs, target, thresholds=(t,), aggregation="global", empty="one", reduction="none")
    x, y = (
        (probs > t).flatten(2).transpose(1, 2).reshape(-1, 3).numpy(),
        (target > t).flatten(2).transpose(1, 2).reshape(-1, 3).numpy(),
    )
    inter, total = (x & y).sum(0), x.sum(0) + y.sum(0)
    reference = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    assert np.allclose(ours.numpy(), reference, atol=1e-6)


@pytest.mark.parametrize("aggregation", ["global", "image", "class"])
def test_metric_classes_equal_functional(aggregation):
    probs, target = random_pair(7)
    for cls, fn in (
        (SoftDiceScore, soft_dice_score),
        (SoftJaccardScore, soft_jaccard_score),
        (ThresholdedDiceScore, thresholded_dice_score),
    ):
        metric = cls(num_classes=3, aggregation=aggregation)
        for b in range(3):
            metric.update(probs[b : b + 1], target[b : b + 1])
        assert metric.compute().item() == pytest.approx(fn(probs, target, aggregation=aggregation).item(), abs=1e-6)


def test_bad_input():
    with pytest.raises(
        ValueError, match="input \\(activation='none' expects probabilities\\) must hold values in \\[0, 1\\]"
    ):
        soft_dice_score(torch.full((1, 2, 3), 2.0), torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="norm must be 1 or 2; got 3"):
        soft_jaccard_score(X, Y, norm=3)
    with pytest.raises(ValueError, match="thresholds must lie in \\[0, 1\\)"):
        thresholded_dice_score(X, Y, thresholds=(0.5, 1.0))
    with pytest.raises(TypeError, match="thresholds must be a non-empty sequence"):
        thresholded_dice_score(X, Y, thresholds=())
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        SoftDiceScore(num_classes=0)
    metric = SoftDiceScore(num_classes=2)
    with pytest.raises(ValueError, match="SoftDiceScore was built for statistics of shape \\(2,\\).*gives \\(1,\\)"):
        metric.update(X, Y)
    with pytest.raises(TypeError, match="target has the shape of class indices"):
        soft_dice_score(X, torch.zeros(1, 3))


def test_single_class_cannot_drop_the_background():
    with pytest.raises(ValueError, match="include_background=False drops class 0, but there is a single class"):
        soft_dice_score(X, Y, include_background=False)


def test_soft_scores_are_differentiable_in_float64():
    # Interior probabilities away from the x = y kink of min(x, y): the scores are smooth there.
    logits = torch.tensor([[[0.3, -1.2, 2.0], [1.1, 0.4, -0.5]]], dtype=torch.float64, requires_grad=True)
    target = torch.tensor([[[0.9, 0.05, 0.35], [0.1, 0.95, 0.65]]], dtype=torch.float64)
    for fn in (soft_dice_score, soft_jaccard_score):
        assert torch.autograd.gradcheck(lambda x: fn(x, target, activation="softmax"), (logits,))


def test_classes_check_options_at_construction():
    with pytest.raises(ValueError, match="activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"):
        SoftJaccardScore(num_classes=2, activation="relu")
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got float"):
        ThresholdedDiceScore(num_classes=2, ignore_index=0.5)
