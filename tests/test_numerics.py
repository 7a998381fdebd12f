"""Numerics: float16/bfloat16, float64 gradcheck, torch.compile, empty classes, index == dense gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg import DiceLoss, activate, dice_loss, jaccard_loss, tversky_loss

AGGREGATIONS = ["global", "image", "class", {"image": 0.5, "class": 0.3, "global": 0.2}]


def _problem(shape=(2, 3, 4, 5), seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen, dtype=dtype) * 2
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=gen)
    soft = torch.randn(shape, generator=gen, dtype=dtype).softmax(1)
    mask = torch.rand((shape[0], *shape[2:]), generator=gen) < 0.8
    return logits, labels, soft, mask


def _value_and_grad(fn, logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_(True)
    value = fn(x, *args, **kwargs)
    value.sum().backward()
    return value.detach(), x.grad


# ---------------------------------------------------------------- index and dense targets: same gradient


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 6), (2, 3, 4, 5), (2, 2, 2, 3, 3)])
def test_index_and_one_hot_targets_give_the_same_loss_and_gradient(aggregation, norm, shape):
    logits, labels, _, _ = _problem(shape, dtype=torch.float64)
    labels[0].view(-1)[:2] = -100  # a few ignored pixels
    one_hot = torch.nn.functional.one_hot(labels.clamp_min(0), shape[1]).movedim(-1, 1).double()
    options = dict(aggregation=aggregation, norm=norm, active_classes="present", gamma=1.5)
    index_value, index_grad = _value_and_grad(dice_loss, logits, labels, ignore_index=-100, **options)
    dense_value, dense_grad = _value_and_grad(dice_loss, logits, one_hot, mask=labels != -100, **options)
    torch.testing.assert_close(index_value, dense_value)
    torch.testing.assert_close(index_grad, dense_grad)
    # (B, 1, *spatial) index targets too
    value, grad = _value_and_grad(dice_loss, logits, labels.unsqueeze(1), ignore_index=-100, **options)
    torch.testing.assert_close(value, dense_value)
    torch.testing.assert_close(grad, dense_grad)


# ---------------------------------------------------------------- float16 and bfloat16


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("target_kind", ["index", "dense"])
@pytest.mark.parametrize("aggregation", ["global", "image"])
def test_half_precision_is_finite_and_close_to_float32(dtype, tolerance, target_kind, aggregation):
    logits, labels, soft, mask = _problem((2, 3, 8, 8), seed=1)
    target = labels if target_kind == "index" else soft
    options = dict(aggregation=aggregation, mask=mask)
    value32, grad32 = _value_and_grad(dice_loss, logits, target, **options)
    half_target = target if target_kind == "index" else target.to(dtype)
    value, grad = _value_and_grad(dice_loss, logits.to(dtype), half_target, **options)
    assert value.dtype == torch.float32  # sums (and the loss) in float32
    assert grad.dtype == dtype
    assert bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all())
    torch.testing.assert_close(value, value32, atol=tolerance, rtol=0)
    torch.testing.assert_close(grad.float(), grad32, atol=tolerance * grad32.abs().max().item(), rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_large_image_does_not_overflow(dtype):
    # 512 x 512 pixels of one class: fp16 sums would overflow at 65504; here they run in float32.
    logits = torch.zeros(1, 2, 512, 512, dtype=dtype)
    logits[:, 0] = 20.0  # probability of class 0 is 1 up to rounding
    labels = torch.zeros(1, 512, 512, dtype=torch.long)
    mask = torch.ones(1, 512, 512, dtype=torch.bool)
    for target in (labels, torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).to(dtype)):
        loss = dice_loss(logits, target, mask=mask, reduction="none")
        assert bool(torch.isfinite(loss).all())
        # class 0: perfect; class 1: no target, and a prediction of about 2e-9 per pixel -> loss 1
        torch.testing.assert_close(loss, torch.tensor([0.0, 1.0]), atol=1e-3, rtol=0)


# ---------------------------------------------------------------- float64 gradcheck


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": 2},
        {"aggregation": "image", "active_classes": "present"},
        {"aggregation": "class", "gamma": 2.0, "weight": [0.5, 1.0, 2.0]},
        {"aggregation": {"image": 0.5, "global": 0.5}, "log_loss": True, "smooth": 0.5},
        {"gamma": 0.5, "include_background": False},
        {"activation": "sigmoid", "reduction": "sum"},
        {"alpha": 0.3, "beta": 0.7, "aggregation": "image", "reduction": "none"},
    ],
)
@pytest.mark.parametrize("target_kind", ["index", "dense"])
def test_gradcheck_float64(options, target_kind):
    logits, labels, soft, mask = _problem((2, 3, 3, 3), seed=2, dtype=torch.float64)
    target = labels if target_kind == "index" else soft
    options = dict(options)
    alpha, beta = options.pop("alpha", 0.5), options.pop("beta", 0.5)
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: tversky_loss(x, target, alpha=alpha, beta=beta, mask=mask, **options), (x,)
    )


def test_gradcheck_probabilities_and_gradient_of_the_target():
    # activation="none" and a soft target that also needs a gradient (distillation with a learned teacher).
    _, _, soft, _ = _problem((1, 2, 4), seed=3, dtype=torch.float64)
    probs = torch.tensor([[[0.1, 0.6, 0.3, 0.8], [0.7, 0.2, 0.9, 0.4]]], dtype=torch.float64, requires_grad=True)
    teacher = soft.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, y: jaccard_loss(x, y, activation="none"), (probs, teacher))


# ---------------------------------------------------------------- torch.compile


def test_torch_compile_gives_the_same_values_and_gradients():
    logits, labels, soft, mask = _problem((2, 3, 4, 5), seed=4)
    labels[0, 0, 0] = 255
    loss = DiceLoss(aggregation="image", active_classes="present", ignore_index=255, gamma=2.0)
    compiled = torch.compile(loss, backend="aot_eager")
    for target, extra in ((labels, {}), (soft, {"mask": mask})):
        if extra:
            loss = DiceLoss(aggregation="image", active_classes="present", gamma=2.0)
            compiled = torch.compile(loss, backend="aot_eager")
        expected_value, expected_grad = _value_and_grad(loss, logits, target, **extra)
        value, grad = _value_and_grad(compiled, logits, target, **extra)
        torch.testing.assert_close(value, expected_value)
        torch.testing.assert_close(grad, expected_grad)


# ---------------------------------------------------------------- empty classes: 0, never NaN


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"norm": 2},
        {"gamma": 0.5},
        {"gamma": 2.0},
        {"log_loss": True},
        {"smooth": 1.0},
        {"active_classes": "present"},
    ],
)
def test_empty_class_gives_zero_loss_and_finite_gradient(aggregation, options):
    # class 2 is in neither the target nor the prediction (softmax underflows to exactly 0).
    logits, labels, _, _ = _problem((2, 3, 4, 4), seed=5)
    logits[:, 2] = -1e4
    labels = labels.clamp_max(1)
    probs = logits.softmax(1)
    assert bool((probs[:, 2] == 0).all())
    one_hot = torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()
    for fn in (dice_loss, jaccard_loss):
        for input, target, activation in ((logits, labels, "softmax"), (probs, one_hot, "none")):
            value, grad = _value_and_grad(fn, input, target, activation=activation, aggregation=aggregation, **options)
            assert bool(torch.isfinite(value)) and bool(torch.isfinite(grad).all())
            if not isinstance(aggregation, dict):
                entries = fn(input, target, activation=activation, aggregation=aggregation, reduction="none", **options)
                assert bool((entries[..., 2] == 0).all())


@pytest.mark.parametrize("options", [{}, {"gamma": 0.5}, {"log_loss": True}, {"norm": 2}])
def test_all_empty_input_gives_zero_loss_and_zero_gradient(options):
    probs = torch.zeros(2, 3, 4, requires_grad=True)
    target = torch.zeros(2, 3, 4)
    for aggregation in AGGREGATIONS:
        loss = dice_loss(probs, target, activation="none", aggregation=aggregation, **options)
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, probs)
        assert bool(torch.isfinite(grad).all())


def test_gamma_below_one_at_a_perfect_prediction_has_a_finite_gradient():
    # loss 0 -> loss ** 0.5 has an infinite derivative at 0; power() returns 0 there
    target = torch.tensor([[[0.3, 0.9], [0.7, 0.1]]])
    probs = target.clone().requires_grad_(True)
    loss = dice_loss(probs, target, activation="none", gamma=0.5, aggregation="image")
    loss.backward()
    assert loss.item() == 0.0
    assert bool(torch.isfinite(probs.grad).all())


# ---------------------------------------------------------------- fused logits path == probabilities path


@st.composite
def _logit_problems(draw):
    ndim = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    activation = draw(st.sampled_from(["softmax", "sigmoid"]))
    channels = draw(st.integers(2 if activation == "softmax" else 1, 4))
    return {
        "shape": (draw(st.integers(1, 3)), channels, *spatial),
        "activation": activation,
        "target": draw(st.sampled_from(["index", "index_channel", "dense"])),
        "mask": draw(st.sampled_from([None, "pixel", "pixel_channel", "class"])),
        "ignore": draw(st.booleans()),
        "norm": draw(st.sampled_from([1, 2])),
        "aggregation": draw(st.sampled_from(AGGREGATIONS)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@given(_logit_problems())
def test_logits_path_equals_activated_probabilities_path(problem):
    # The losses may compute the statistics straight from the logits; they must equal the reference path.
    gen = torch.Generator().manual_seed(problem["seed"])
    batch, channels, *spatial = shape = problem["shape"]
    logits = torch.randn(shape, generator=gen, dtype=torch.float64) * 3
    labels = torch.randint(0, max(channels, 2), (batch, *spatial), generator=gen)
    options = {"norm": problem["norm"], "aggregation": problem["aggregation"], "active_classes": "present"}
    if problem["target"] == "dense":
        target = torch.rand(shape, generator=gen, dtype=torch.float64)
    else:
        if problem["ignore"]:
            labels = torch.where(torch.rand(labels.shape, generator=gen) < 0.3, 255, labels)
            options["ignore_index"] = 255
        target = labels.unsqueeze(1) if problem["target"] == "index_channel" else labels
    mask_shape = {
        None: None,
        "pixel": (batch, *spatial),
        "pixel_channel": (batch, 1, *spatial),
        "class": shape,
    }[problem["mask"]]
    if mask_shape is not None:
        options["mask"] = torch.rand(mask_shape, generator=gen) < 0.7
    activation = problem["activation"]

    def through_probabilities(x, target, **kw):
        return dice_loss(activate(x, activation), target, activation="none", **kw)

    expected_value, expected_grad = _value_and_grad(through_probabilities, logits, target, **options)
    value, grad = _value_and_grad(dice_loss, logits, target, activation=activation, **options)
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(grad, expected_grad)


def test_gradient_reaches_a_soft_target_that_requires_grad():
    # Distillation with a trained teacher: the target's gradient is not dropped.
    logits, _, _, _ = _problem((2, 3, 3, 3), seed=20, dtype=torch.float64)
    teacher = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(21))
    logits.requires_grad_(True)
    teacher.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, t: dice_loss(x, t.softmax(1), aggregation="image"), (logits, teacher))


@pytest.mark.parametrize("input_dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_mixed_input_and_target_dtypes(input_dtype):
    # e.g. float16 logits under autocast with a float32 target
    logits, labels, soft, mask = _problem((2, 3, 4, 5), seed=22)
    expected = dice_loss(logits, soft, mask=mask)
    for target in (soft, soft.double()):
        value = dice_loss(logits.to(input_dtype), target, mask=mask)
        assert bool(torch.isfinite(value))
        torch.testing.assert_close(value.float(), expected, atol=2e-2, rtol=0)


def test_non_contiguous_and_channels_last_inputs():
    logits, labels, soft, mask = _problem((2, 3, 4, 5), seed=23)
    permuted = logits.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # same values, other strides
    assert not permuted.is_contiguous()
    channels_last = logits.contiguous(memory_format=torch.channels_last)
    expanded = logits[:1].expand(2, -1, -1, -1)
    for target in (labels, soft, labels.transpose(1, 2).contiguous().transpose(1, 2)):
        expected = dice_loss(logits, target, mask=mask, aggregation="image")
        torch.testing.assert_close(dice_loss(permuted, target, mask=mask, aggregation="image"), expected)
        torch.testing.assert_close(dice_loss(channels_last, target, mask=mask, aggregation="image"), expected)
    torch.testing.assert_close(dice_loss(expanded, soft), dice_loss(expanded.contiguous(), soft))


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_empty_mask_and_zero_pixels_give_zero_without_nan(aggregation, activation):
    logits, labels, soft, _ = _problem((2, 3, 4, 4), seed=30)
    nothing = torch.zeros(2, 4, 4, dtype=torch.bool)
    cases = [
        (logits, labels, {"mask": nothing}),
        (logits, soft, {"mask": nothing}),
        (logits, torch.full_like(labels, 255), {"ignore_index": 255}),
        (torch.randn(2, 3, 0), torch.zeros(2, 0, dtype=torch.long), {}),
        (torch.randn(2, 3, 0, 5), torch.rand(2, 3, 0, 5), {}),
    ]
    for input, target, options in cases:
        for active_classes in ("all", "present"):
            value, grad = _value_and_grad(
                dice_loss, input, target, activation=activation, aggregation=aggregation,
                active_classes=active_classes, **options,
            )
            assert value.item() == 0.0
            assert bool((grad == 0).all())
