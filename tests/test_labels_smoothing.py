"""Label, boundary and distance smoothing: hand-built shapes with exact values, sums, ignore, spacing."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg.labels import boundary_mask, boundary_smoothing, distance_smoothing, label_smoothing


def square(size=7, low=2, high=5):
    labels = torch.zeros(1, size, size, dtype=torch.long)
    labels[0, low:high, low:high] = 1
    return labels


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def brute_force_signed_distance(labels: np.ndarray, cls: int, spacing) -> np.ndarray:
    """O(N^2) reference: distance between pixel centres, + inside (to another class), - outside (to cls)."""
    coords = np.stack(
        np.meshgrid(*[np.arange(n) * s for n, s in zip(labels.shape, spacing)], indexing="ij"), -1
    ).reshape(-1, labels.ndim)
    inside = (labels == cls).reshape(-1)
    pairwise = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
    to_outside = np.where(~inside[None, :], pairwise, np.inf).min(1)
    to_inside = np.where(inside[None, :], pairwise, np.inf).min(1)
    return np.where(inside, to_outside, -to_inside).reshape(labels.shape)


def brute_force_distance_target(labels: np.ndarray, num_classes: int, width: float, spacing) -> np.ndarray:
    logistic = np.stack(
        [1 / (1 + np.exp(-brute_force_signed_distance(labels, c, spacing) / width)) for c in range(num_classes)]
    )
    return logistic / logistic.sum(0, keepdims=True)


# ---------------------------------------------------------------- label smoothing


def test_label_smoothing_square_exact():
    target = label_smoothing(square(), 2, epsilon=0.1)
    assert target.shape == (1, 2, 7, 7) and target.dtype == torch.float32
    assert torch.allclose(target[0, 1, 2:5, 2:5], torch.full((3, 3), 0.95))
    assert target[0, 1, 0, 0] == pytest.approx(0.05)
    assert target[0, 0, 3, 3] == pytest.approx(0.05)


@given(st.integers(2, 5), st.floats(0, 1), st.integers(0, 2**31 - 1))
def test_label_smoothing_sums_to_one_and_keeps_ignore(num_classes, epsilon, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (2, 4, 5), generator=generator)
    ignored = torch.rand(2, 4, 5, generator=generator) < 0.3
    labels[ignored] = 255
    target = label_smoothing(labels, num_classes, epsilon=epsilon, ignore_index=255)
    sums = target.sum(1)
    assert torch.allclose(sums[~ignored], torch.ones(()))
    assert torch.all(target.permute(0, 2, 3, 1)[ignored] == 0)
    kept = ~ignored
    picked = target.gather(1, labels.masked_fill(ignored, 0).unsqueeze(1)).squeeze(1)
    assert torch.allclose(picked[kept], torch.tensor(1 - epsilon + epsilon / num_classes))


def test_label_smoothing_limits():
    labels = torch.tensor([[0, 2, 1]])
    assert torch.equal(label_smoothing(labels, 3, epsilon=0.0), torch.eye(3)[[0, 2, 1]].T.unsqueeze(0))
    assert torch.allclose(label_smoothing(labels, 3, epsilon=1.0), torch.full((1, 3, 3), 1 / 3))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda: label_smoothing(torch.tensor([[0.0, 1.0]]), 2),
            TypeError,
            "labels must hold class indices.*float32.*not truncated",
        ),
        (
            lambda: label_smoothing(torch.tensor([[0, 3]]), 2),
            ValueError,
            "labels holds class index 3; expected indices in \\[0, 1\\]",
        ),
        (
            lambda: label_smoothing(torch.tensor([0, 1]), 2),
            ValueError,
            "labels must have shape \\(B, \\*spatial\\).*got shape \\(2,\\)",
        ),
        (
            lambda: label_smoothing(torch.tensor([[0, 1]]), 2, epsilon=1.5),
            ValueError,
            "epsilon must lie in \\[0, 1\\]; got 1.5",
        ),
        (lambda: label_smoothing(torch.tensor([[0, 1]]), 1), ValueError, "num_classes must be >= 2; got 1"),
        (lambda: label_smoothing(torch.tensor([[0, 1]]), 2.0), TypeError, "num_classes must be an int; got float"),
        (lambda: label_smoothing([[0, 1]], 2), TypeError, "labels must be a torch.Tensor; got list"),
        (
            lambda: label_smoothing(torch.tensor([[0, 1]]), 2, ignore_index=1.0),
            TypeError,
            "ignore_index must be an int or None; got float",
        ),
    ],
)
def test_label_smoothing_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------- boundary smoothing


def test_boundary_smoothing_square_radius_one_exact():
    labels = square()
    target = boundary_smoothing(labels, 2, epsilon=0.2, radius=1)
    band = torch.zeros(7, 7, dtype=torch.bool)
    band[1:6, 1:6] = True
    band[3, 3] = False  # the centre's 3x3 window is all foreground
    hard = torch.stack([labels[0] == 0, labels[0] == 1]).float()
    expected = torch.where(band, hard * 0.8 + 0.1, hard)
    assert torch.allclose(target[0], expected)
    assert torch.equal(boundary_mask(labels, radius=1)[0], band)


def test_boundary_smoothing_radius_zero_and_two():
    labels = square()
    hard = label_smoothing(labels, 2, epsilon=0.0)
    assert torch.equal(boundary_smoothing(labels, 2, epsilon=0.3, radius=0), hard)
    # Radius 2 reaches every pixel of the 7x7 image (corners see (2, 2)); the result is plain smoothing.
    assert torch.allclose(boundary_smoothing(labels, 2, epsilon=0.3, radius=2), label_smoothing(labels, 2, epsilon=0.3))


def test_boundary_smoothing_3d_ball_band_and_sums():
    grid = torch.stack(torch.meshgrid(*[torch.arange(9)] * 3, indexing="ij"))
    ball = ((grid - 4).pow(2).sum(0) <= 4).long().unsqueeze(0)  # radius-2 ball
    target = boundary_smoothing(ball, 2, epsilon=0.1, radius=1)
    assert torch.allclose(target.sum(1), torch.ones(()))
    assert target[0, 1, 4, 4, 4] == 1.0  # the centre is 2 voxels deep
    assert target[0, 1, 4, 4, 2] == pytest.approx(0.95)  # on the surface, inside
    assert target[0, 0, 4, 4, 1] == pytest.approx(0.95)  # just outside
    assert target[0, 0, 0, 0, 0] == 1.0  # far outside


def test_boundary_smoothing_ignored_pixels_make_no_boundary():
    labels = torch.tensor([[0, 0, 255, 255, 0]])
    target = boundary_smoothing(labels, 2, epsilon=0.2, ignore_index=255)
    assert torch.equal(target[0, 0], torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]))
    assert torch.equal(target[0, 1], torch.zeros(5))


def test_boundary_smoothing_bad_input():
    with pytest.raises(ValueError, match="radius must be >= 0; got -1"):
        boundary_smoothing(square(), 2, radius=-1)
    with pytest.raises(TypeError, match="radius must be an int \\(pixels\\); got float"):
        boundary_smoothing(square(), 2, radius=1.5)
    with pytest.raises(ValueError, match="labels must have 1 to 3 spatial dimensions; got shape \\(1, 2, 2, 2, 2\\)"):
        boundary_smoothing(torch.zeros(1, 2, 2, 2, 2, dtype=torch.long), 2)


# ---------------------------------------------------------------- distance smoothing


def test_distance_smoothing_square_exact_values():
    target = distance_smoothing(square(), 2, width=1.0)[0, 1]
    assert target[3, 3] == pytest.approx(sigmoid(2.0))  # centre: 2 pixels to the background
    assert target[2, 3] == pytest.approx(sigmoid(1.0))  # inner edge
    assert target[1, 3] == pytest.approx(sigmoid(-1.0))  # outer edge
    assert target[1, 1] == pytest.approx(sigmoid(-math.sqrt(2)))  # diagonal corner
    assert target[0, 0] == pytest.approx(sigmoid(-math.sqrt(8)))


def test_distance_smoothing_disc_matches_brute_force():
    grid = torch.stack(torch.meshgrid(torch.arange(11), torch.arange(11), indexing="ij"))
    disc = ((grid - 5).pow(2).sum(0) <= 9).long().unsqueeze(0)
    target = distance_smoothing(disc, 2, width=1.5)
    expected = brute_force_distance_target(disc[0].numpy(), 2, 1.5, (1.0, 1.0))
    assert np.allclose(target[0].numpy(), expected, atol=1e-6)


def test_distance_smoothing_3d_ball_with_anisotropic_spacing():
    grid = torch.stack(torch.meshgrid(torch.arange(5), torch.arange(7), torch.arange(7), indexing="ij"))
    ball = ((grid[0] - 2).pow(2) * 4 + (grid[1] - 3).pow(2) + (grid[2] - 3).pow(2) <= 6).long().unsqueeze(0)
    spacing = (2.0, 1.0, 1.0)  # mm
    target = distance_smoothing(ball, 2, width=2.0, spacing=spacing)
    expected = brute_force_distance_target(ball[0].numpy(), 2, 2.0, spacing)
    assert np.allclose(target[0].numpy(), expected, atol=1e-6)
    # Along z the neighbour is 2 mm away: the voxel below the ball is at -2 mm.
    assert target[0, 1, 0, 3, 3] == pytest.approx(sigmoid(-2.0 / 2.0))


def test_distance_smoothing_width_scales_with_isotropic_spacing():
    labels = square()
    in_pixels = distance_smoothing(labels, 2, width=1.5)
    in_mm = distance_smoothing(labels, 2, width=1.5 * 0.7, spacing=0.7)
    assert torch.allclose(in_pixels, in_mm, atol=1e-6)


@given(st.integers(0, 2**31 - 1), st.floats(0.5, 4.0))
def test_distance_smoothing_multiclass_sums_and_reference(seed, width):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (1, 5, 6), generator=generator)
    target = distance_smoothing(labels, 3, width=width)
    assert torch.allclose(target.sum(1), torch.ones(()), atol=1e-6)
    assert np.allclose(
        target[0].numpy(), brute_force_distance_target(labels[0].numpy(), 3, width, (1.0, 1.0)), atol=1e-5
    )


def test_distance_smoothing_absent_and_full_classes():
    labels = torch.zeros(1, 3, 3, dtype=torch.long)  # class 0 fills the image, classes 1 and 2 absent
    target = distance_smoothing(labels, 3)
    assert torch.equal(target[0, 0], torch.ones(3, 3))
    assert torch.equal(target[0, 1:], torch.zeros(2, 3, 3))


def test_distance_smoothing_ignore_takes_nearest_label():
    labels = torch.tensor([[0, 0, 0, 1, 1, 1]])
    ignored = labels.clone()
    ignored[0, 5] = 255
    full = distance_smoothing(labels, 2, width=1.0)
    partial = distance_smoothing(ignored, 2, width=1.0, ignore_index=255)
    assert torch.allclose(partial[..., :5], full[..., :5])
    assert torch.equal(partial[..., 5], torch.zeros(1, 2))
    assert torch.equal(distance_smoothing(torch.full((1, 3), 255), 2, ignore_index=255), torch.zeros(1, 2, 3))


def test_distance_smoothing_bad_input():
    with pytest.raises(ValueError, match="width must be > 0.0; got 0.0"):
        distance_smoothing(square(), 2, width=0.0)
    with pytest.raises(ValueError, match="spacing must have one value per spatial dimension \\(2\\); got 3"):
        distance_smoothing(square(), 2, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing\\[1\\] must be > 0.0; got -1.0"):
        distance_smoothing(square(), 2, spacing=(1.0, -1.0))
    with pytest.raises(TypeError, match="spacing must be a number or a sequence of 2 numbers; got str"):
        distance_smoothing(square(), 2, spacing="1mm")


def test_more_bad_input():
    with pytest.raises(TypeError, match="labels must hold class indices of an integer dtype; got dtype torch.float32"):
        boundary_mask(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="epsilon must be >= 0.0; got -0.1"):
        boundary_smoothing(square(), 2, epsilon=-0.1)
