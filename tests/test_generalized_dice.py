"""Generalized Dice loss: equal to MONAI's GeneralizedDiceLoss on hard labels (soft_label=False) and with
soft_label=True on soft ones, 0 and minimal at every soft target, absent classes as MONAI, empty inputs,
half precision, ignored pixels, gradients, the audit and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import softseg
from loss_checks import assert_zero_and_minimal_at, value_and_grad
from softseg.cli.audit import audit_loss, make_problem
from softseg.losses.generalized_dice import GeneralizedDiceLoss, generalized_dice_loss, generalized_dice_weights

seeds = st.integers(0, 2**31 - 1)
monai_losses = pytest.importorskip("monai.losses")


def one_hot(labels, channels, dtype=torch.float64):
    return F.one_hot(labels, channels).movedim(-1, 1).to(dtype)


def problem(seed, batch=3, classes=4, shape=(5, 6), absent=True):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch, *shape), generator=g)
    if absent:
        labels[0][labels[0] == 2] = 1  # class 2 absent from image 0: its weight is the image's largest
    soft = (torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64) * 2).softmax(1)
    return logits, labels, soft




# ---- MONAI, value and gradient --------------------------------------------------------------------


@given(
    seeds,
    st.sampled_from(["square", "simple", "uniform"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["softmax", "sigmoid"]),
)
def test_equals_monai(seed, weighting, batch, include_background, activation):
    logits, labels, soft = problem(seed)
    for soft_label, target in ((False, one_hot(labels, 4)), (True, soft)):
        monai = monai_losses.GeneralizedDiceLoss(
            include_background=include_background, softmax=activation == "softmax", sigmoid=activation == "sigmoid",
            w_type=weighting, batch=batch, smooth_nr=1e-5, smooth_dr=1e-5, soft_label=soft_label, reduction="none",
        )
        options = dict(
            weighting=weighting, activation=activation, aggregation="global" if batch else "image", smooth=1e-5,
            include_background=include_background,
        )
        expected, expected_grad = value_and_grad(monai, logits, target)
        got, grad = value_and_grad(lambda z, t: generalized_dice_loss(z, t, reduction="none", **options), logits, target)
        torch.testing.assert_close(got, expected.reshape(-1), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-9)
        mean, _ = value_and_grad(lambda z, t: generalized_dice_loss(z, t, **options), logits, target)
        torch.testing.assert_close(mean, expected.mean(), rtol=1e-6, atol=1e-8)
    # Hard labels given as indices: the same numbers as their one-hot, no one-hot built.
    torch.testing.assert_close(
        generalized_dice_loss(logits, labels, **options), generalized_dice_loss(logits, one_hot(labels, 4), **options)
    )


def test_monai_soft_label_false_is_not_zero_at_the_target_ours_is():
    _, _, soft = problem(3)
    classic = monai_losses.GeneralizedDiceLoss(soft_label=False, smooth_nr=0.0, smooth_dr=1e-12)(soft, soft)
    assert classic.item() > 0.1
    assert generalized_dice_loss(soft, soft, activation="none").item() == 0


# ---- hand-computed ------------------------------------------------------------------------------------


def test_hand_value_with_an_absent_class():
    # One image, C = 3, N = 4. Class 2 absent: weight max(1/2^2, 1/2^2) = 1/4 ("square").
    probs = torch.tensor([[[0.9, 0.6, 0.1, 0.0], [0.1, 0.2, 0.8, 0.5], [0.0, 0.2, 0.1, 0.5]]])
    labels = torch.tensor([[0, 0, 1, 1]])
    # tp = (1.5, 1.3, 0), fp = (0.1, 0.3, 0.8), fn = (0.5, 0.7, 0), w = (1/4, 1/4, 1/4)
    numerator = 2 * 0.25 * (1.5 + 1.3)
    denominator = 0.25 * (2 * 1.5 + 0.6 + 2 * 1.3 + 1.0 + 0.8)
    expected = 1 - numerator / denominator
    got = generalized_dice_loss(probs, labels, activation="none")
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # "simple" with unequal masses: w = (1/2, 1/2, max) = (1/2, 1/2, 1/2); "uniform": 1.
    masses = torch.tensor([[3.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(
        generalized_dice_weights(masses, "square"), torch.tensor([[1 / 9, 1.0, 1.0], [0.0, 0.0, 0.0]])
    )
    torch.testing.assert_close(generalized_dice_weights(masses, "simple"), torch.tensor([[1 / 3, 1.0, 1.0], [0, 0, 0.0]]))
    torch.testing.assert_close(generalized_dice_weights(masses, "uniform"), torch.ones(2, 3))
    # A mass whose weight overflows float32 (1 / (1e-30)^2) counts as absent, as MONAI's isinf rule.
    tiny = torch.tensor([[2.0, 1e-30]])
    torch.testing.assert_close(generalized_dice_weights(tiny, "square"), torch.tensor([[0.25, 0.25]]))
    probs = torch.tensor([[[0.9, 0.6], [0.1, 0.4]]])
    target = torch.tensor([[[1.0, 1.0], [1e-30, 0.0]]])
    monai = monai_losses.GeneralizedDiceLoss(soft_label=True, smooth_nr=0.0, smooth_dr=0.0)(probs, target)
    torch.testing.assert_close(generalized_dice_loss(probs, target, activation="none", aggregation="image"), monai)


def test_weights_follow_the_aggregation():
    # Global: weights from the batch's masses (one score); image: each image's own weights (two scores).
    probs = torch.tensor([[[0.8, 0.3, 0.4]], [[0.1, 0.9, 0.2]]])     # (B=2, C=1, N=3), sigmoid-like
    target = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 0.0]]])
    per_image = generalized_dice_loss(probs, target, activation="none", aggregation="image", reduction="none")
    dice = softseg.dice_loss(probs, target, activation="none", aggregation="image", reduction="none")[:, 0]
    torch.testing.assert_close(per_image, dice)  # one class: the weight cancels, it is the Dice loss
    pooled = generalized_dice_loss(probs, target, activation="none", reduction="none")
    assert pooled.shape == (1,)
    torch.testing.assert_close(pooled[0], softseg.dice_loss(probs, target, activation="none"))


# ---- soft labels: zero and minimal at the target ------------------------------------------------------


@given(seeds, st.sampled_from(["square", "simple", "uniform"]), st.sampled_from(["global", "image"]),
       st.sampled_from([0.0, 1.0]), st.sampled_from([1, 2]))
def test_zero_and_minimal_at_every_soft_target(seed, weighting, aggregation, smooth, norm):
    _, _, soft = problem(seed)
    options = dict(weighting=weighting, aggregation=aggregation, smooth=smooth, norm=norm)
    assert_zero_and_minimal_at(lambda z, t: generalized_dice_loss(z, t, **options), soft.log(), soft, seed)


def test_audit_passes():
    verdict = audit_loss(
        "GeneralizedDiceLoss", GeneralizedDiceLoss(), make_problem(classes=3, size=6, seed=0), input_kind="logits",
        hard_target="onehot", reference="auto", value_range=(0.0, 1.0), steps=5, tolerance=1e-4, seed=0,
    )
    assert verdict.passed, verdict
    assert verdict.at_target == (True, "0.0000")


# ---- empty, ignored, dtypes, gradients -----------------------------------------------------------------


def test_nothing_present_gives_zero_with_finite_gradient():
    logits = torch.full((2, 3, 4), -30.0, dtype=torch.float64)
    logits[:, 0] = 30.0                      # background everywhere, predicted and labelled
    labels = torch.zeros(2, 4, dtype=torch.long)
    for options in ({"include_background": False}, {"include_background": False, "aggregation": "image"}):
        value, grad = value_and_grad(lambda z, t: generalized_dice_loss(z, t, **options), logits, labels)
        assert value.item() == pytest.approx(0.0, abs=1e-12) and torch.isfinite(grad).all()
    # Every pixel ignored: nothing counts, 0.
    value, grad = value_and_grad(
        lambda z, t: generalized_dice_loss(z, t, ignore_index=255), torch.randn(2, 3, 4), torch.full((2, 4), 255)
    )
    assert value.item() == 0 and torch.isfinite(grad).all()


@pytest.mark.parametrize("aggregation", ["global", "image"])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_empty_batch(aggregation, kind):
    logits = torch.zeros(0, 3, 4, 4, requires_grad=True)
    target = torch.zeros(0, 4, 4, dtype=torch.long) if kind == "index" else torch.zeros(0, 3, 4, 4)
    loss = generalized_dice_loss(logits, target, aggregation=aggregation)
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == (0, 3, 4, 4)


def test_ignored_pixels_equal_the_kept_pixels():
    logits, labels, soft = problem(5, batch=1, shape=(12,))
    keep = torch.rand(1, 12, generator=torch.Generator().manual_seed(5)) > 0.3
    kept_logits, kept_labels = logits[..., keep[0]], labels[..., keep[0]]
    reference = generalized_dice_loss(kept_logits, kept_labels)
    torch.testing.assert_close(generalized_dice_loss(logits, labels.masked_fill(~keep, -1), ignore_index=-1), reference)
    torch.testing.assert_close(generalized_dice_loss(logits, labels, mask=keep), reference)
    torch.testing.assert_close(
        generalized_dice_loss(logits, soft, mask=keep), generalized_dice_loss(kept_logits, soft[..., keep[0]])
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    logits, labels, soft = problem(6, batch=2, shape=(16, 16))
    for target in (labels, soft):
        low = generalized_dice_loss(logits.to(dtype), target if target is labels else target.to(dtype))
        assert low.dtype == torch.float32 and torch.isfinite(low)
        torch.testing.assert_close(low, generalized_dice_loss(logits.float(), target.float() if target is soft else target),
                                   rtol=2e-2, atol=2e-3)


def test_gradcheck():
    logits, labels, soft = problem(7, batch=2, classes=3, shape=(4,))
    z = logits.clone().requires_grad_(True)
    for weighting in ("square", "simple", "uniform"):
        assert torch.autograd.gradcheck(lambda x: generalized_dice_loss(x, labels, weighting=weighting), (z,))
        assert torch.autograd.gradcheck(
            lambda x: generalized_dice_loss(x, soft, weighting=weighting, aggregation="image", norm=2), (z,)
        )


def test_module_equals_function_and_is_exported():
    logits, labels, _ = problem(8)
    module = softseg.GeneralizedDiceLoss(weighting="simple", aggregation="image", ignore_index=3)
    torch.testing.assert_close(
        module(logits, labels), softseg.generalized_dice_loss(logits, labels, weighting="simple", aggregation="image",
                                                              ignore_index=3)
    )
    assert "weighting='simple'" in repr(module)
    assert math.isfinite(float(module(logits, labels, torch.ones(3, 5, 6, dtype=torch.bool))))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"weighting": "squared"}, ValueError, "weighting must be one of 'square', 'simple', 'uniform'; got 'squared'"),
        ({"aggregation": "class"}, ValueError, "aggregation must be one of 'global', 'image'; got 'class'"),
        ({"aggregation": {"image": 1.0}}, TypeError, "aggregation of the generalized Dice must be 'global' or 'image'"),
        ({"smooth": -1.0}, ValueError, "smooth must be >= 0.0; got -1.0"),
        ({"norm": 3}, ValueError, "norm must be 1 or 2; got 3"),
        ({"reduction": "batch"}, ValueError, "reduction must be one of 'mean', 'sum', 'none'; got 'batch'"),
        ({"include_background": "False"}, TypeError, "include_background must be a bool; got str"),
        ({"distributed": 1}, TypeError, "distributed must be a bool; got int"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        generalized_dice_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), **options)
    with pytest.raises(error, match=match):
        GeneralizedDiceLoss(**options)


def test_misspelt_options_name_the_loss_and_the_closest_option():
    with pytest.raises(TypeError, match=r"GeneralizedDiceLoss\(\) got an unexpected keyword argument 'weighing'; did you mean 'weighting'"):
        GeneralizedDiceLoss(weighing="simple")
    with pytest.raises(TypeError, match=r"generalized_dice_loss\(\) got an unexpected keyword argument 'w_type'"):
        generalized_dice_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), w_type="simple")


def test_bad_targets():
    with pytest.raises(TypeError, match="Float labels are not truncated"):
        generalized_dice_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        generalized_dice_loss(torch.zeros(1, 3, 2), torch.full((1, 3, 2), 1.5))
    with pytest.raises(ValueError, match="include_background=False drops class 0, but input has a single channel"):
        generalized_dice_loss(torch.zeros(1, 1, 2), torch.zeros(1, 2, dtype=torch.long), activation="sigmoid",
                              include_background=False)
