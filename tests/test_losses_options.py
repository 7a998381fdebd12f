"""Every option of the losses on small cases computed by hand, and function == module.

The hand case (activation="none", B = 2, C = 3, two pixels) has per-(image, class) Dice losses
|x - y| / (|x| + |y|):

    image 0: class 0 x=(1, 0)     y=(1, 0) -> 0      class 1 x=(0, .5) y=(0, 1) -> 1/3
             class 2 x=(0, .5)    y=(0, 0) -> 1 (absent in the target)
    image 1: class 0 x=(.5, .5)   y=(1, 0) -> 1/2    class 1 x=(0, 0)  y=(0, 0) -> 0 (empty)
             class 2 x=(.5, .5)   y=(0, 1) -> 1/2

and pooled over the batch (global): class 0: 1/4, class 1: 1/3, class 2: 1.5 / 2.5 = 3/5.
"""

from __future__ import annotations

import math

import pytest
import torch

from softseg import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss

X = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 0.5], [0.0, 0.5]],
        [[0.5, 0.5], [0.0, 0.0], [0.5, 0.5]],
    ]
)
Y = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
        [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]],
    ]
)
ENTRY = torch.tensor([[0.0, 1 / 3, 1.0], [0.5, 0.0, 0.5]])
POOLED = torch.tensor([0.25, 1 / 3, 0.6])


def hand_loss(**options):
    return dice_loss(X, Y, activation="none", **options)


# ---------------------------------------------------------------- aggregation, by hand


@pytest.mark.parametrize(
    ("aggregation", "active_classes", "expected"),
    [
        # global: mean over classes of the pooled losses; every class is present somewhere in the batch
        ("global", "all", (0.25 + 1 / 3 + 0.6) / 3),
        ("global", "present", (0.25 + 1 / 3 + 0.6) / 3),
        # image: mean over classes per image, then over images
        ("image", "all", ((0 + 1 / 3 + 1) / 3 + (0.5 + 0 + 0.5) / 3) / 2),
        # present: image 0 scores classes 0, 1; image 1 scores classes 0, 2
        ("image", "present", ((0 + 1 / 3) / 2 + (0.5 + 0.5) / 2) / 2),
        # class: mean over images per class, then over classes
        ("class", "all", ((0 + 0.5) / 2 + (1 / 3 + 0) / 2 + (1 + 0.5) / 2) / 3),
        # present: class 0 over both images, class 1 over image 0, class 2 over image 1
        ("class", "present", ((0 + 0.5) / 2 + 1 / 3 + 0.5) / 3),
        # a mix is the weighted sum of the levels
        ({"image": 0.5, "class": 0.5}, "present", 0.5 * (1 / 3) + 0.5 * (13 / 36)),
        ({"global": 1.0, "image": 2.0}, "all", (0.25 + 1 / 3 + 0.6) / 3 + 2 * 7 / 18),
    ],
)
def test_aggregation_by_hand(aggregation, active_classes, expected):
    actual = hand_loss(aggregation=aggregation, active_classes=active_classes)
    assert actual.item() == pytest.approx(expected, abs=1e-6)


def test_global_present_drops_a_class_absent_from_the_whole_batch():
    # class 1 never appears in the target but is predicted: loss 1 when counted, dropped when "present".
    x = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])
    y = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    # class 0: |x - y| = 1, |x| + |y| = 3 -> 1/3
    assert dice_loss(x, y, activation="none").item() == pytest.approx((1 / 3 + 1) / 2)
    assert dice_loss(x, y, activation="none", active_classes="present").item() == pytest.approx(1 / 3)


def test_presence_threshold():
    x = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])
    y = torch.tensor([[[1.0, 0.95], [0.0, 0.05]]])
    per_class = dice_loss(x, y, activation="none", reduction="none")
    low = dice_loss(x, y, activation="none", active_classes="present").item()
    high = dice_loss(x, y, activation="none", active_classes="present", presence_threshold=0.1).item()
    assert low == pytest.approx(per_class.mean().item())  # 0.05 > 0.01: class 1 present
    assert high == pytest.approx(per_class[0].item())  # 0.05 <= 0.1: class 1 absent


def test_nothing_active_gives_zero():
    x = torch.tensor([[[0.3, 0.6]]])
    y = torch.zeros(1, 1, 2)
    for aggregation in ("global", "image", "class", {"image": 1.0, "global": 1.0}):
        loss = dice_loss(x, y, activation="none", active_classes="present", aggregation=aggregation)
        assert loss.item() == 0.0


# ---------------------------------------------------------------- class weights


@pytest.mark.parametrize(
    ("aggregation", "active_classes", "expected"),
    [
        ("global", "all", (1 * 0.25 + 2 * (1 / 3) + 3 * 0.6) / 6),
        ("image", "all", ((2 / 3 + 3) / 6 + (0.5 + 1.5) / 6) / 2),
        # image 0: classes 0, 1 (weights 1, 2); image 1: classes 0, 2 (weights 1, 3)
        ("image", "present", ((2 / 3) / 3 + (0.5 + 1.5) / 4) / 2),
        # class: unweighted mean over images, weighted mean over classes
        ("class", "present", (1 * 0.25 + 2 * (1 / 3) + 3 * 0.5) / 6),
    ],
)
def test_class_weights_by_hand(aggregation, active_classes, expected):
    actual = hand_loss(weight=[1.0, 2.0, 3.0], aggregation=aggregation, active_classes=active_classes)
    assert actual.item() == pytest.approx(expected, abs=1e-6)


def test_weights_as_tensor_or_list_agree_and_scale_invariance():
    weight = torch.tensor([1.0, 2.0, 3.0])
    assert hand_loss(weight=weight).item() == pytest.approx(hand_loss(weight=[1, 2, 3]).item())
    assert hand_loss(weight=weight * 10).item() == pytest.approx(hand_loss(weight=weight).item())
    for level in ("global", "image", "class"):  # weights below 1 sum to less than 1: still a weighted mean
        expected = hand_loss(weight=weight, aggregation=level).item()
        assert hand_loss(weight=weight / 10, aggregation=level).item() == pytest.approx(expected)
    assert hand_loss(weight=[1.0, 1.0, 1.0]).item() == pytest.approx(hand_loss().item())


def test_weights_without_background():
    actual = hand_loss(weight=[2.0, 3.0], include_background=False).item()
    assert actual == pytest.approx((2 * (1 / 3) + 3 * 0.6) / 5)


def test_weight_is_a_buffer_that_moves_with_the_module():
    module = DiceLoss(weight=[1.0, 2.0, 3.0], activation="none")
    assert "weight" in dict(module.named_buffers())
    assert module.state_dict()["weight"].tolist() == [1.0, 2.0, 3.0]
    module = module.to(torch.float64)
    assert module.weight.dtype == torch.float64
    assert module.to("meta").weight.device.type == "meta"

    restored = DiceLoss(weight=[5.0, 5.0, 5.0], activation="none")
    restored.load_state_dict(DiceLoss(weight=[1.0, 2.0, 3.0]).state_dict())
    assert restored.weight.tolist() == [1.0, 2.0, 3.0]
    assert restored(X, Y).item() == pytest.approx((0.25 + 2 / 3 + 1.8) / 6, abs=1e-6)
    assert "weight" not in DiceLoss().state_dict()


# ---------------------------------------------------------------- reduction


def test_reduction_none_shapes_and_values():
    torch.testing.assert_close(hand_loss(reduction="none"), POOLED)
    torch.testing.assert_close(hand_loss(reduction="none", aggregation="image"), ENTRY)
    torch.testing.assert_close(hand_loss(reduction="none", aggregation="class"), ENTRY)
    # inactive entries are 0, weights multiply
    present = hand_loss(reduction="none", aggregation="image", active_classes="present", weight=[1.0, 2.0, 3.0])
    torch.testing.assert_close(present, torch.tensor([[0.0, 2 / 3, 0.0], [0.5, 0.0, 1.5]]))
    assert hand_loss(reduction="none", include_background=False).shape == (2,)
    assert hand_loss(reduction="none", aggregation="image", include_background=False).shape == (2, 2)


def test_reduction_sum():
    assert hand_loss(reduction="sum").item() == pytest.approx(0.25 + 1 / 3 + 0.6)
    assert hand_loss(reduction="sum", aggregation="image").item() == pytest.approx(7 / 3)
    assert hand_loss(reduction="sum", aggregation="class", active_classes="present").item() == pytest.approx(
        0 + 1 / 3 + 0.5 + 0.5
    )
    mixed = hand_loss(reduction="sum", aggregation={"image": 1.0, "global": 0.5}).item()
    assert mixed == pytest.approx(7 / 3 + 0.5 * (0.25 + 1 / 3 + 0.6))


def test_reduction_mean_is_scalar():
    for aggregation in ("global", "image", "class"):
        assert hand_loss(aggregation=aggregation).shape == ()


# ---------------------------------------------------------------- norm, smoothing, gamma, log loss


def test_norm_2_by_hand():
    # 1 - 2 <x, y> / (||x||^2 + ||y||^2), pooled: class 0: 1 - 3/3.5; class 1: 1 - 1/1.25; class 2: 1 - 1/1.75
    torch.testing.assert_close(hand_loss(norm=2, reduction="none"), torch.tensor([1 / 7, 0.2, 3 / 7]))


def test_smoothing_by_hand_and_zero_at_the_target():
    x = torch.tensor([[[0.2, 0.7, 0.5]]])
    y = torch.tensor([[[0.5, 0.5, 1.0]]])
    # tp 1.2, fp 0.2, fn 0.8; Dice T = (1.2 + 1) / (1.2 + 0.1 + 0.4 + 1) = 2.2 / 2.7
    assert dice_loss(x, y, activation="none", smooth=1.0).item() == pytest.approx(0.5 / 2.7)
    # Jaccard T = (1.2 + 0.5) / (2.2 + 0.5)
    assert jaccard_loss(x, y, activation="none", smooth=0.5).item() == pytest.approx(1 - 1.7 / 2.7)
    for smooth in (1e-5, 1.0, 100.0):
        assert dice_loss(y, y, activation="none", smooth=smooth).item() == 0.0
    # an empty class with smoothing: T = s / s = 1
    assert dice_loss(torch.zeros(1, 1, 3), torch.zeros(1, 1, 3), activation="none", smooth=1.0).item() == 0.0


def test_gamma_applies_per_class_before_averaging():
    expected = ((0.25**2) + (1 / 3) ** 2 + 0.6**2) / 3
    assert hand_loss(gamma=2.0).item() == pytest.approx(expected)
    assert hand_loss(gamma=2.0).item() != pytest.approx(hand_loss().item() ** 2)
    assert hand_loss(gamma=0.5, aggregation="image").item() == pytest.approx(
        ((0 + (1 / 3) ** 0.5 + 1) / 3 + (0.5**0.5 + 0 + 0.5**0.5) / 3) / 2
    )


def test_log_loss_by_hand():
    # -log T per class, T = 1 - L
    expected = sum(-math.log(1 - loss) for loss in (0.25, 1 / 3, 0.6)) / 3
    assert hand_loss(log_loss=True).item() == pytest.approx(expected)
    # gamma applies to -log T
    expected = sum((-math.log(1 - loss)) ** 2 for loss in (0.25, 1 / 3, 0.6)) / 3
    assert hand_loss(log_loss=True, gamma=2.0).item() == pytest.approx(expected)


def test_log_loss_floors_the_index():
    # no overlap at all: T = 0, -log T floored at -log 1e-7
    x = torch.tensor([[[1.0, 0.0]]])
    y = torch.tensor([[[0.0, 1.0]]])
    assert jaccard_loss(x, y, activation="none", log_loss=True).item() == pytest.approx(-math.log(1e-7), rel=1e-5)


def test_include_background():
    assert hand_loss(include_background=False).item() == pytest.approx((1 / 3 + 0.6) / 2)
    assert hand_loss(include_background=False, aggregation="image").item() == pytest.approx(
        ((1 / 3 + 1) / 2 + (0 + 0.5) / 2) / 2
    )


def test_include_background_keeps_class_0_in_the_softmax():
    logits = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 1]])
    probs = logits.softmax(1)
    full = dice_loss(probs, labels, activation="none", reduction="none")
    dropped = dice_loss(logits, labels, include_background=False, reduction="none")
    torch.testing.assert_close(dropped, full[1:])


# ---------------------------------------------------------------- activation and targets


def test_activations_equal_their_explicit_form():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=gen)
    soft = torch.rand(2, 3, 4, 5, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 5), generator=gen)
    for target in (soft, labels):
        torch.testing.assert_close(dice_loss(logits, target), dice_loss(logits.softmax(1), target, activation="none"))
        torch.testing.assert_close(
            dice_loss(logits, target, activation="sigmoid"), dice_loss(logits.sigmoid(), target, activation="none")
        )


def test_binary_sigmoid_with_index_target():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 1, 4, 4, generator=gen)
    labels = torch.randint(0, 2, (3, 4, 4), generator=gen)
    dense = labels.unsqueeze(1).float()
    for aggregation in ("global", "image", "class"):
        expected = dice_loss(logits, dense, activation="sigmoid", aggregation=aggregation)
        for target in (labels, labels.unsqueeze(1)):
            actual = dice_loss(logits, target, activation="sigmoid", aggregation=aggregation)
            torch.testing.assert_close(actual, expected)
    # by hand: one pixel, sigmoid(0) = 0.5, label 1 -> Dice 1 - 2 * 0.5 / 1.5
    assert dice_loss(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.long), activation="sigmoid").item() == (
        pytest.approx(1 / 3)
    )


def test_index_targets_with_ignore_index_and_mask_through_the_loss():
    logits = torch.tensor([[[2.0, -1.0, 0.0, 5.0], [-2.0, 1.0, 0.0, -5.0]]])
    labels = torch.tensor([[0, 1, 9, 1]])
    kept = dice_loss(logits[..., :2], labels[:, :2])
    assert dice_loss(logits, labels, ignore_index=9, mask=torch.tensor([[True, True, True, False]])) == kept
    dense = torch.nn.functional.one_hot(labels.clamp_max(1), 2).movedim(-1, 1).float()
    mask = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(dice_loss(logits, dense, mask=mask), kept)


# ---------------------------------------------------------------- function == module


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"activation": "sigmoid", "smooth": 0.5, "norm": 2},
        {"gamma": 2.0, "log_loss": True, "aggregation": "image", "active_classes": "present"},
        {"weight": [0.5, 1.0], "include_background": False, "aggregation": {"image": 0.5, "class": 0.5}},
        {"ignore_index": 2, "reduction": "none", "aggregation": "class"},
        {"reduction": "sum", "presence_threshold": 0.5, "active_classes": "present"},
    ],
)
def test_function_equals_module(options):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    labels = torch.randint(0, 3, (2, 4, 4), generator=gen)
    mask = torch.rand(2, 4, 4, generator=gen) < 0.8
    for function, module, extra in (
        (dice_loss, DiceLoss, {}),
        (jaccard_loss, JaccardLoss, {}),
        (tversky_loss, TverskyLoss, {"alpha": 0.3, "beta": 0.7}),
    ):
        expected = function(logits, labels, mask=mask, **extra, **options)
        torch.testing.assert_close(module(**extra, **options)(logits, labels, mask=mask), expected)
        torch.testing.assert_close(module(**extra, **options)(logits, labels, mask), expected)
    assert torch.equal(TverskyLoss(alpha=1.0, beta=1.0)(logits, labels), JaccardLoss()(logits, labels))


def test_module_repr_names_options():
    text = repr(TverskyLoss(alpha=0.3, beta=0.7, aggregation="image"))
    assert "alpha=0.3" in text and "aggregation='image'" in text


# ---------------------------------------------------------------- empty batch


@pytest.mark.parametrize("aggregation", ["global", "image", "class", {"image": 0.5, "class": 0.5}])
@pytest.mark.parametrize("target_kind", ["index", "dense"])
def test_empty_batch_gives_zero_without_nan(aggregation, target_kind):
    logits = torch.randn(0, 3, 4, 4, requires_grad=True)
    target = torch.zeros(0, 4, 4, dtype=torch.long) if target_kind == "index" else torch.rand(0, 3, 4, 4)
    for active_classes in ("all", "present"):
        loss = dice_loss(logits, target, aggregation=aggregation, active_classes=active_classes)
        assert loss.item() == 0.0
        loss.backward()
        assert logits.grad.shape == logits.shape
    assert dice_loss(logits, target, reduction="none").tolist() == [0.0, 0.0, 0.0]
    assert dice_loss(logits, target, reduction="none", aggregation="image").shape == (0, 3)
