"""Distillation targets and deep-supervision downsampling."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from softseg.labels import distillation_target, downsample_target, label_smoothing

# ---------------------------------------------------------------- distillation


def test_distillation_temperature_exact():
    logits = torch.tensor([[[2.0], [0.0]]])
    target = distillation_target(logits, temperature=2.0)
    p = 1 / (1 + math.exp(-1.0))
    assert torch.allclose(target[0, :, 0], torch.tensor([p, 1 - p]))


@given(st.floats(0.1, 10.0), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_distillation_is_a_mixture(temperature, label_weight, seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    target = distillation_target(logits, temperature=temperature, labels=labels, label_weight=label_weight)
    expected = (1 - label_weight) * (logits / temperature).softmax(1) + label_weight * label_smoothing(
        labels, 3, epsilon=0.0
    )
    assert torch.allclose(target, expected, atol=1e-6)
    assert torch.allclose(target.sum(1), torch.ones(()), atol=1e-6)


def test_distillation_limits_and_ignore():
    logits = torch.randn(1, 4, 3, 3)
    assert torch.allclose(distillation_target(logits, temperature=1e6), torch.full((1, 4, 3, 3), 0.25), atol=1e-5)
    labels = torch.randint(0, 4, (1, 3, 3))
    labels[0, 0, 0] = -1
    target = distillation_target(logits, labels=labels, label_weight=1.0, ignore_index=-1)
    assert torch.allclose(target[0, :, 0, 0], logits[0, :, 0, 0].softmax(0))  # ignored: teacher only
    assert torch.equal(target[0, :, 1, 1], F.one_hot(labels[0, 1, 1], 4).float())


def test_distillation_binary_sigmoid_and_no_gradient():
    logits = torch.tensor([[[0.0, 4.0]]], requires_grad=True)
    target = distillation_target(logits, activation="sigmoid", labels=torch.tensor([[1, 0]]), label_weight=0.5)
    assert not target.requires_grad
    assert torch.allclose(target[0, 0], torch.tensor([0.75, 0.5 * torch.sigmoid(torch.tensor(4.0)).item()]))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(temperature=0.0), ValueError, "temperature must be > 0.0; got 0.0"),
        (dict(label_weight=0.5), ValueError, "label_weight=0.5 mixes in the hard label, but labels is None"),
        (
            dict(label_weight=1.5, labels=torch.zeros(1, 2, dtype=torch.long)),
            ValueError,
            "label_weight must lie in \\[0, 1\\]; got 1.5",
        ),
        (
            dict(labels=torch.zeros(1, 3, dtype=torch.long)),
            ValueError,
            "labels must have shape \\(1, 2\\) to match teacher_logits",
        ),
        (dict(activation="none"), ValueError, "activation must be one of 'softmax', 'sigmoid'; got 'none'"),
    ],
)
def test_distillation_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        distillation_target(torch.zeros(1, 2, 2), **kwargs)


def test_distillation_bad_logits():
    with pytest.raises(TypeError, match="teacher_logits must hold floating-point"):
        distillation_target(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(
        ValueError, match="activation='softmax' needs at least 2 channels; teacher_logits has shape \\(1, 1, 2\\)"
    ):
        distillation_target(torch.zeros(1, 1, 2))


# ---------------------------------------------------------------- deep supervision


def test_downsample_keeps_a_small_structure():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1, 2] = 1  # one pixel
    soft = downsample_target(labels, 0.5, num_classes=2)
    expected = torch.tensor([[0.0, 0.25], [0.0, 0.0]])
    assert torch.equal(soft[0, 1], expected)
    # nearest-neighbour resizing deletes it
    nearest = F.interpolate(labels.unsqueeze(1).float(), scale_factor=0.5, mode="nearest")
    assert nearest.sum() == 0


def test_downsample_size_equals_scale_and_dense_matches_avg_pool():
    labels = torch.randint(0, 3, (2, 8, 6))
    by_scale = downsample_target(labels, (0.5, 0.5), num_classes=3)
    by_size = downsample_target(labels, (4, 3), num_classes=3)
    assert torch.equal(by_scale, by_size)
    dense = label_smoothing(labels, 3, epsilon=0.0)
    assert torch.allclose(downsample_target(dense, 0.5), F.avg_pool2d(dense, 2))
    assert torch.allclose(by_scale, F.avg_pool2d(dense, 2))
    assert torch.allclose(by_scale.sum(1), torch.ones(()))


def test_downsample_3d_and_ignore():
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    labels[0, 0, 0, 0] = 1
    labels[0, 1, 1, 1] = 9
    soft = downsample_target(labels, 1, num_classes=2, ignore_index=9)
    assert torch.allclose(soft.flatten(), torch.tensor([6 / 7, 1 / 7]))
    all_ignored = torch.full((1, 2, 2), 9)
    assert torch.equal(downsample_target(all_ignored, 1, num_classes=2, ignore_index=9), torch.zeros(1, 2, 1, 1))


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((torch.zeros(1, 4, 4, dtype=torch.long), 0.5), {}, ValueError, "num_classes is required for an index target"),
        (
            (torch.zeros(1, 4, 4, dtype=torch.long), 1.5),
            dict(num_classes=2),
            ValueError,
            "scale factors must lie in \\(0, 1\\]; got \\(1.5, 1.5\\)",
        ),
        (
            (torch.zeros(1, 4, 4, dtype=torch.long), (2, 2, 2)),
            dict(num_classes=2),
            ValueError,
            "one value per spatial dimension \\(2\\)",
        ),
        (
            (torch.zeros(1, 4, 4, dtype=torch.long), 8),
            dict(num_classes=2),
            ValueError,
            "output size must lie in \\[1, input size \\(4, 4\\)\\]",
        ),
        (
            (torch.zeros(1, 4, 4, dtype=torch.long), "half"),
            dict(num_classes=2),
            TypeError,
            "size_or_scale must be ints",
        ),
        (
            (torch.zeros(1, 2, 4, 4), 0.5),
            dict(num_classes=3),
            ValueError,
            "num_classes=3 does not match the target's 2 channels",
        ),
        (
            (torch.zeros(1, 2, 4, 4), 0.5),
            dict(ignore_index=0),
            ValueError,
            "ignore_index applies to index targets only",
        ),
        (
            (torch.zeros(1, 4, 4, dtype=torch.bool), 0.5),
            {},
            TypeError,
            "target must be class indices of an integer dtype or probabilities",
        ),
    ],
)
def test_downsample_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        downsample_target(*args, **kwargs)


def test_more_bad_input():
    with pytest.raises(ValueError, match="teacher_logits must have shape \\(B, C, \\*spatial\\)"):
        distillation_target(torch.zeros(2, 3))
    with pytest.raises(
        ValueError,
        match="a float target must have shape \\(B, C, \\*spatial\\) with 1 to 3 spatial dimensions; got shape \\(2, 3\\)",
    ):
        downsample_target(torch.zeros(2, 3), 1)
    with pytest.raises(ValueError, match="target must have 1 to 3 spatial dimensions; got shape \\(1, 2, 2, 2, 2\\)"):
        downsample_target(torch.zeros(1, 2, 2, 2, 2, dtype=torch.long), 1, num_classes=2)
