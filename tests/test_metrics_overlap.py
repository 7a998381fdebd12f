"""Dice and IoU of hard predictions: hand-computed confusions, scikit-learn, MONAI, empty cases, tails."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from monai.metrics import compute_dice
from sklearn.metrics import f1_score, jaccard_score

from softseg.metrics import DiceScore, IoUScore, confusion_statistics, dice_score, iou_score, soft_dice_score

PREDS = torch.tensor([[0, 1, 1, 0, 2, 2], [1, 1, 0, 0, 0, 0]])
TARGET = torch.tensor([[0, 1, 0, 0, 2, 1], [1, 1, 0, 0, 0, 0]])


def random_maps(seed, num_classes, shape=(3, 4, 5)):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, num_classes, shape, generator=generator),
        torch.randint(0, num_classes, shape, generator=generator),
    )


def test_confusion_statistics_hand_computed():
    stats = confusion_statistics(PREDS, TARGET, num_classes=3)
    assert torch.equal(stats.tp, torch.tensor([[2.0, 1.0, 1.0], [4.0, 2.0, 0.0]], dtype=torch.float64))
    assert torch.equal(stats.fp, torch.tensor([[0.0, 1.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(stats.fn, torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.equal(stats.target_max, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64))


def test_dice_and_iou_hand_computed_levels():
    # global: class 0 tp 6 fp 0 fn 1; class 1 tp 3 fp 1 fn 1; class 2 tp 1 fp 1 fn 0
    assert torch.allclose(
        dice_score(PREDS, TARGET, num_classes=3, reduction="none"),
        torch.tensor([12 / 13, 6 / 8, 2 / 3], dtype=torch.float64),
    )
    assert dice_score(PREDS, TARGET, num_classes=3).item() == pytest.approx((12 / 13 + 0.75 + 2 / 3) / 3)
    assert iou_score(PREDS, TARGET, num_classes=3).item() == pytest.approx((6 / 7 + 3 / 5 + 1 / 2) / 3)
    # image: image 1 (4/5, 1/2, 2/3), image 2 (1, 1, empty class 2 skipped)
    image = (4 / 5 + 1 / 2 + 2 / 3) / 3 / 2 + 1 / 2
    assert dice_score(PREDS, TARGET, num_classes=3, aggregation="image").item() == pytest.approx(image)
    # class: class 0 (4/5 + 1)/2, class 1 (1/2 + 1)/2, class 2 only image 1: 2/3
    per_class = ((4 / 5 + 1) / 2 + (1 / 2 + 1) / 2 + 2 / 3) / 3
    assert dice_score(PREDS, TARGET, num_classes=3, aggregation="class").item() == pytest.approx(per_class)
    mixed = dice_score(PREDS, TARGET, num_classes=3, aggregation={"image": 0.5, "class": 0.5})
    assert mixed.item() == pytest.approx((image + per_class) / 2)


def test_empty_cases_as_documented():
    empty_pred = torch.zeros(1, 4, dtype=torch.long)
    empty_target = torch.zeros(1, 4, dtype=torch.long)
    false_positive = torch.tensor([[0, 0, 0, 1]])
    # Empty target and empty prediction: class 1 is not counted (skip), or scores 1.
    assert dice_score(empty_pred, empty_target, num_classes=2).item() == 1.0
    assert dice_score(empty_pred, empty_target, num_classes=2, reduction="none").tolist() == [1.0, 0.0]
    assert dice_score(empty_pred, empty_target, num_classes=2, empty="one", reduction="none").tolist() == [1.0, 1.0]
    # Empty target with a false positive: 0, counted; left out under the present-class rule.
    assert dice_score(false_positive, empty_target, num_classes=2, reduction="none").tolist() == pytest.approx(
        [6 / 7, 0.0]
    )
    assert dice_score(false_positive, empty_target, num_classes=2).item() == pytest.approx(3 / 7)
    assert dice_score(false_positive, empty_target, num_classes=2, active_classes="present").item() == pytest.approx(
        6 / 7
    )
    assert iou_score(false_positive, empty_target, num_classes=2, aggregation="image").item() == pytest.approx(3 / 8)
    # Nothing counted at all: 0, never NaN.
    assert dice_score(empty_pred, torch.full((1, 4), 7), num_classes=2, ignore_index=7).item() == 0.0


def monai_dice(preds, target, num_classes, ignore_empty):
    one_hot = lambda x: F.one_hot(x, num_classes).movedim(-1, 1).float()  # noqa: E731
    return compute_dice(one_hot(preds), one_hot(target), ignore_empty=ignore_empty)


@given(st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_image_level_matches_monai(num_classes, seed):
    preds, target = random_maps(seed, num_classes)
    target[0] = 0  # an image with one class only: empty classes in target (and maybe prediction)
    preds[1] = torch.where(preds[1] == num_classes - 1, 0, preds[1])
    # MONAI ignore_empty=True: NaN for empty targets, then the mean over the rest = our present-class rule.
    monai = monai_dice(preds, target, num_classes, ignore_empty=True).nanmean(1).mean()
    ours = dice_score(preds, target, num_classes=num_classes, aggregation="image", active_classes="present")
    assert ours.item() == pytest.approx(monai.item(), abs=1e-6)
    # MONAI ignore_empty=False: empty prediction and target score 1 = our empty="one".
    monai = monai_dice(preds, target, num_classes, ignore_empty=False).mean()
    ours = dice_score(preds, target, num_classes=num_classes, aggregation="image", empty="one")
    assert ours.item() == pytest.approx(monai.item(), abs=1e-6)


@given(st.integers(2, 5), st.integers(0, 2**31 - 1))
def test_global_matches_scikit_learn(num_classes, seed):
    preds, target = random_maps(seed, num_classes)
    y_true, y_pred = target.flatten().numpy(), preds.flatten().numpy()
    used = sorted(set(y_true) | set(y_pred))  # empty="skip": classes in prediction or target
    f1 = f1_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0)
    iou = jaccard_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0)
    assert np.allclose(dice_score(preds, target, num_classes=num_classes, reduction="none").numpy(), f1)
    assert np.allclose(iou_score(preds, target, num_classes=num_classes, reduction="none").numpy(), iou)
    assert dice_score(preds, target, num_classes=num_classes).item() == pytest.approx(f1[used].mean())
    assert iou_score(preds, target, num_classes=num_classes).item() == pytest.approx(iou[used].mean())


@given(st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_image_and_class_levels_match_scikit_learn(num_classes, seed):
    preds, target = random_maps(seed, num_classes)
    scores, used = [], []
    for b in range(len(preds)):
        y_true, y_pred = target[b].flatten().numpy(), preds[b].flatten().numpy()
        scores.append(jaccard_score(y_true, y_pred, labels=list(range(num_classes)), average=None, zero_division=0))
        used.append(np.isin(np.arange(num_classes), np.union1d(y_true, y_pred)))
    scores, used = np.array(scores), np.array(used)
    image = np.mean([s[u].mean() for s, u in zip(scores, used)])
    per_class = np.mean([scores[used[:, c], c].mean() for c in range(num_classes) if used[:, c].any()])
    assert iou_score(preds, target, num_classes=num_classes, aggregation="image").item() == pytest.approx(image)
    assert iou_score(preds, target, num_classes=num_classes, aggregation="class").item() == pytest.approx(per_class)


def test_worst_q_tails():
    # Per-image IoU: image 1 perfect, image 2 half, image 3 zero-ish.
    target = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]])
    preds = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1]])
    per_image = [1.0, (2 / 3 + 1 / 2) / 2, 0.0]
    kwargs = dict(num_classes=2, aggregation="image")
    assert iou_score(preds, target, **kwargs, worst_q=100).item() == pytest.approx(np.mean(per_image))
    assert iou_score(preds, target, **kwargs).item() == pytest.approx(np.mean(per_image))
    assert iou_score(preds, target, **kwargs, worst_q=33).item() == pytest.approx(0.0)
    assert iou_score(preds, target, **kwargs, worst_q=50).item() == pytest.approx((per_image[1] + per_image[2]) / 2)
    # class level: class 0 scores (1, 2/3, 0), class 1 (1, 1/2, 0); worst 50% = 2 of 3 per class
    value = iou_score(preds, target, num_classes=2, aggregation="class", worst_q=50).item()
    assert value == pytest.approx(((2 / 3 + 0) / 2 + (1 / 2 + 0) / 2) / 2)


def test_worst_q_thirty_four_percent_takes_two_images():
    target = torch.tensor([[0, 1], [0, 1], [0, 1]])
    preds = torch.tensor([[0, 1], [0, 0], [1, 0]])
    # per image IoU: 1, (1/2 + 0)/2 = 1/4, 0; ceil(0.34 * 3) = 2 -> mean(0, 1/4)
    assert iou_score(preds, target, num_classes=2, aggregation="image", worst_q=34).item() == pytest.approx(1 / 8)


@given(st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_worst_q_100_equals_the_mean(num_classes, seed):
    preds, target = random_maps(seed, num_classes)
    for aggregation in ("image", "class"):
        plain = dice_score(preds, target, num_classes=num_classes, aggregation=aggregation)
        tail = dice_score(preds, target, num_classes=num_classes, aggregation=aggregation, worst_q=100)
        assert tail.item() == pytest.approx(plain.item())
        assert (
            dice_score(preds, target, num_classes=num_classes, aggregation=aggregation, worst_q=1).item()
            <= plain.item() + 1e-12
        )


def test_ignore_index_equals_dropping_the_pixels():
    preds, target = random_maps(3, 3, shape=(1, 20))
    target[0, :5] = 255
    kept = slice(5, None)
    full = dice_score(preds, target, num_classes=3, ignore_index=255, reduction="none")
    assert torch.equal(full, dice_score(preds[:, kept], target[:, kept], num_classes=3, reduction="none"))


def test_hard_dice_equals_soft_dice_of_the_one_hot():
    preds, target = random_maps(5, 4)
    one_hot = F.one_hot(preds, 4).movedim(-1, 1).float()
    for aggregation in ("global", "image", "class"):
        hard = dice_score(preds, target, num_classes=4, aggregation=aggregation)
        soft = soft_dice_score(one_hot, target, aggregation=aggregation)
        assert hard.item() == pytest.approx(soft.item(), abs=1e-6)


def test_include_background_and_weight():
    without = dice_score(PREDS, TARGET, num_classes=3, include_background=False, reduction="none")
    assert torch.allclose(without, torch.tensor([6 / 8, 2 / 3], dtype=torch.float64))
    weighted = dice_score(PREDS, TARGET, num_classes=3, weight=[1.0, 0.0, 3.0])
    assert weighted.item() == pytest.approx((12 / 13 + 3 * 2 / 3) / 4)


@pytest.mark.parametrize(
    "aggregation, worst_q", [("global", None), ("image", None), ("class", None), ("image", 30), ("class", 50)]
)
def test_metric_class_equals_functional_over_all_batches(aggregation, worst_q):
    preds, target = random_maps(11, 3, shape=(6, 4, 4))
    for cls, fn in ((DiceScore, dice_score), (IoUScore, iou_score)):
        metric = cls(num_classes=3, aggregation=aggregation, worst_q=worst_q, ignore_index=255)
        target_ignored = target.clone()
        target_ignored[0, 0] = 255
        for chunk in range(3):
            metric.update(preds[2 * chunk : 2 * chunk + 2], target_ignored[2 * chunk : 2 * chunk + 2])
        expected = fn(preds, target_ignored, num_classes=3, aggregation=aggregation, worst_q=worst_q, ignore_index=255)
        assert metric.compute().item() == pytest.approx(expected.item())
        metric.reset()
        with pytest.warns(UserWarning, match="called before the ``update`` method"):
            assert metric.compute().item() == 0.0  # nothing seen: 0, not NaN


@pytest.mark.parametrize(
    "preds, target, kwargs, error, match",
    [
        (
            torch.rand(1, 2, 3),
            torch.zeros(1, 3, dtype=torch.long),
            {},
            TypeError,
            "preds must hold class indices of an integer dtype; got dtype torch.float32.*argmax",
        ),
        (
            torch.zeros(1, 3, dtype=torch.long),
            torch.zeros(1, 4, dtype=torch.long),
            {},
            ValueError,
            "preds and target must have the same shape",
        ),
        (
            torch.tensor([[0, 5]]),
            torch.zeros(1, 2, dtype=torch.long),
            {},
            ValueError,
            "preds holds class index 5; expected indices in \\[0, 1\\]",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.tensor([[0, 2]]),
            {},
            ValueError,
            "target holds class index 2; expected indices in \\[0, 1\\]",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(worst_q=10),
            ValueError,
            "worst_q needs per-image scores",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(aggregation="image", worst_q=0),
            ValueError,
            "worst_q must be > 0.0; got 0.0",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(aggregation="image", worst_q=150),
            ValueError,
            "worst_q is a percentage in \\(0, 100\\]; got 150",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(empty="nan"),
            ValueError,
            "empty must be one of 'skip', 'one'; got 'nan'",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(aggregation="batch"),
            ValueError,
            "aggregation must be one of 'global', 'image', 'class'; got 'batch'",
        ),
        (
            torch.zeros(1, 2, dtype=torch.long),
            torch.zeros(1, 2, dtype=torch.long),
            dict(weight=[1.0]),
            ValueError,
            "weight must have one value per scored class, 2",
        ),
    ],
)
def test_bad_input(preds, target, kwargs, error, match):
    with pytest.raises(error, match=match):
        dice_score(preds, target, num_classes=2, **kwargs)


def test_bad_num_classes_and_class_shapes():
    with pytest.raises(ValueError, match="num_classes must be >= 2 \\(binary: 2"):
        iou_score(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), num_classes=1)
    with pytest.raises(ValueError, match="worst_q needs per-image scores"):
        DiceScore(num_classes=2, worst_q=5)
    metric = DiceScore(num_classes=2)
    with pytest.raises(ValueError, match="target holds class index 2"):
        metric.update(torch.zeros(1, 2, dtype=torch.long), torch.tensor([[0, 2]]))


def test_more_bad_input():
    index = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="preds must have shape \\(B, \\*spatial\\).*got shape \\(2,\\)"):
        dice_score(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), num_classes=2)
    with pytest.raises(TypeError, match="target must hold class indices of an integer dtype; got dtype torch.bool"):
        dice_score(index, torch.zeros(1, 2, dtype=torch.bool), num_classes=2)
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got str"):
        confusion_statistics(index, index, num_classes=2, ignore_index="255")
    with pytest.raises(TypeError, match="num_classes must be an int; got float"):
        IoUScore(num_classes=2.0)
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got float"):
        IoUScore(num_classes=2, ignore_index=1.0)
    with pytest.raises(ValueError, match="worst_q averages the worst images, so reduction must be 'mean'; got 'none'"):
        dice_score(index, index, num_classes=2, aggregation="image", worst_q=10, reduction="none")
    with pytest.raises(TypeError, match="include_background must be a bool; got int"):
        dice_score(index, index, num_classes=2, include_background=0)
    with pytest.raises(ValueError, match="reduction='none' needs a single aggregation level"):
        dice_score(index, index, num_classes=2, aggregation={"image": 1, "class": 1}, reduction="none")
