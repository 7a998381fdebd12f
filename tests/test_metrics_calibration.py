"""Calibration: torchmetrics and scikit-learn references, hand-computed soft and equal-mass cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import multiclass_calibration_error

from softseg.labels import label_smoothing
from softseg.metrics import (
    BrierScore,
    CalibrationError,
    NegativeLogLikelihood,
    adaptive_calibration_error,
    brier_score,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)


def random_case(seed, classes=3, shape=(2, 5, 6), sharpness=2.0):
    generator = torch.Generator().manual_seed(seed)
    probs = (sharpness * torch.randn(shape[0], classes, *shape[1:], generator=generator)).softmax(1)
    labels = torch.randint(0, classes, shape, generator=generator)
    return probs, labels


def pixels(probs):
    return probs.movedim(1, -1).reshape(-1, probs.shape[1])


@given(st.integers(0, 2**31 - 1), st.integers(2, 5), st.integers(1, 20))
def test_top_label_matches_torchmetrics(seed, classes, n_bins):
    probs, labels = random_case(seed, classes)
    for norm, fn in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        reference = multiclass_calibration_error(
            pixels(probs), labels.flatten(), num_classes=classes, n_bins=n_bins, norm=norm
        )
        assert fn(probs, labels, n_bins=n_bins).item() == pytest.approx(reference.item(), abs=1e-6)


def test_soft_target_accuracy_is_the_target_probability_of_the_predicted_class():
    probs = torch.tensor([[[0.9, 0.8, 0.3], [0.1, 0.2, 0.7]]])
    target = torch.tensor([[[0.6, 1.0, 0.5], [0.4, 0.0, 0.5]]])
    # one bin: conf mean (0.9 + 0.8 + 0.7)/3 = 0.8, acc mean (0.6 + 1.0 + 0.5)/3 = 0.7
    assert expected_calibration_error(probs, target, n_bins=1).item() == pytest.approx(0.1)
    bins = reliability_bins(probs, target, n_bins=2)
    assert bins.count.tolist() == [0.0, 3.0]
    assert bins.accuracy.tolist() == pytest.approx([0.0, 0.7])
    # a one-hot float target is the same as the index target
    probs2, labels = random_case(1)
    one_hot = label_smoothing(labels, 3, epsilon=0.0)
    for mode in ("top-label", "class-wise"):
        assert expected_calibration_error(probs2, one_hot, mode=mode).item() == pytest.approx(
            expected_calibration_error(probs2, labels, mode=mode).item()
        )


def test_class_wise_hand_computed():
    probs = torch.tensor([[[0.8, 0.3], [0.2, 0.7]]])  # (B=1, C=2, N=2)
    labels = torch.tensor([[0, 0]])
    # class 0: p (0.8, 0.3), y (1, 1): bins [0, .5): |1 - .3|, [.5, 1]: |1 - .8| -> (0.7 + 0.2)/2 = 0.45
    # class 1: p (0.2, 0.7), y (0, 0): (0.2 + 0.7)/2 = 0.45
    assert expected_calibration_error(probs, labels, n_bins=2, mode="class-wise").item() == pytest.approx(0.45)
    assert maximum_calibration_error(probs, labels, n_bins=2, mode="class-wise").item() == pytest.approx(0.7)
    bins = reliability_bins(probs, labels, n_bins=2, mode="class-wise")
    assert bins.confidence.shape == (2, 2) and bins.edges.shape == (2, 3)
    assert bins.confidence[1].tolist() == pytest.approx([0.2, 0.7])


def test_equal_mass_bins_hand_computed():
    probs = torch.tensor([[[0.95, 0.9, 0.6, 0.55], [0.05, 0.1, 0.4, 0.45]]])
    labels = torch.tensor([[0, 1, 0, 1]])
    # sorted confidences 0.55 (wrong), 0.6 (right), 0.9 (wrong), 0.95 (right): two bins of two
    assert adaptive_calibration_error(probs, labels, n_bins=2).item() == pytest.approx(
        (abs(0.5 - 0.575) + abs(0.5 - 0.925)) / 2
    )
    bins = reliability_bins(probs, labels, n_bins=2, binning="mass")
    assert bins.count.tolist() == [2.0, 2.0]
    assert bins.edges.tolist() == pytest.approx([0.0, 0.9, 1.0])
    # equal width would put all four in the upper bin
    assert expected_calibration_error(probs, labels, n_bins=2).item() == pytest.approx(abs(0.5 - 0.75))


@given(st.integers(0, 2**31 - 1), st.integers(1, 8))
def test_equal_mass_bins_have_equal_counts(seed, n_bins):
    probs, labels = random_case(seed, shape=(1, 4, 6))
    bins = reliability_bins(probs, labels, n_bins=n_bins, binning="mass", resolution=1_000_000)
    assert bins.count.sum().item() == 24
    assert bins.count.max() - bins.count.min() <= 1
    assert torch.all(bins.edges[1:] >= bins.edges[:-1])


@given(st.integers(0, 2**31 - 1), st.sampled_from(["width", "mass"]), st.sampled_from(["top-label", "class-wise"]))
def test_ece_is_the_weighted_gap_of_the_reliability_bins(seed, binning, mode):
    probs, labels = random_case(seed)
    bins = reliability_bins(probs, labels, n_bins=7, binning=binning, mode=mode)
    gap = ((bins.accuracy - bins.confidence).abs() * bins.count).sum(-1) / bins.count.sum(-1)
    ece = expected_calibration_error(probs, labels, n_bins=7, binning=binning, mode=mode)
    assert ece.item() == pytest.approx(gap.mean().item(), abs=1e-9)
    mce = maximum_calibration_error(probs, labels, n_bins=7, binning=binning, mode=mode)
    assert mce.item() == pytest.approx(
        torch.where(bins.count > 0, (bins.accuracy - bins.confidence).abs(), 0).amax(-1).mean().item(), abs=1e-9
    )


def test_per_image_is_the_mean_of_single_images_and_ignore_drops_pixels():
    probs, labels = random_case(3, shape=(3, 4, 4))
    for fn in (
        expected_calibration_error,
        maximum_calibration_error,
        adaptive_calibration_error,
        brier_score,
        negative_log_likelihood,
    ):
        per_image = fn(probs, labels, aggregation="image")
        singles = torch.stack([fn(probs[b : b + 1], labels[b : b + 1]) for b in range(3)]).mean()
        assert per_image.item() == pytest.approx(singles.item(), abs=1e-9)
        ignored = labels.clone()
        ignored[:, 0] = 255
        kept = fn(probs[..., 1:, :], labels[:, 1:], aggregation="image")
        assert fn(probs, ignored, aggregation="image", ignore_index=255).item() == pytest.approx(kept.item(), abs=1e-9)
        assert fn(probs, labels, aggregation="image", mask=ignored != 255).item() == pytest.approx(
            kept.item(), abs=1e-9
        )


def test_binary_single_channel_equals_two_channels():
    generator = torch.Generator().manual_seed(0)
    foreground = torch.rand(2, 1, 8, generator=generator)
    labels = torch.randint(0, 2, (2, 8), generator=generator)
    two = torch.cat([1 - foreground, foreground], 1)
    for fn in (expected_calibration_error, brier_score, negative_log_likelihood):
        assert fn(foreground, labels).item() == pytest.approx(fn(two, labels).item())


@given(st.integers(0, 2**31 - 1), st.integers(2, 4))
def test_brier_and_nll_match_scikit_learn(seed, classes):
    probs, labels = random_case(seed, classes)
    p, y = pixels(probs).double(), labels.flatten().numpy()
    p = (p / p.sum(1, keepdim=True)).numpy()  # float32 softmax rows sum to 1 only up to rounding
    assert brier_score(probs, labels).item() == pytest.approx(
        brier_score_loss(y, p, labels=list(range(classes)), scale_by_half=False), abs=1e-6
    )
    assert negative_log_likelihood(probs, labels).item() == pytest.approx(
        log_loss(y, p, labels=list(range(classes))), abs=1e-5
    )


@given(st.integers(0, 2**31 - 1))
def test_soft_target_brier_and_nll(seed):
    probs, _ = random_case(seed)
    target, _ = random_case(seed + 1)
    nll = F.cross_entropy(probs.double().log(), target.double())
    assert negative_log_likelihood(probs, target).item() == pytest.approx(nll.item(), abs=1e-6)
    assert brier_score(probs, target).item() == pytest.approx(
        (probs - target).double().pow(2).sum(1).mean().item(), abs=1e-6
    )
    assert brier_score(target, target).item() == 0.0


def test_nothing_counted_gives_zero():
    probs, labels = random_case(0, shape=(1, 2, 2))
    mask = torch.zeros(1, 2, 2, dtype=torch.bool)
    for fn in (expected_calibration_error, maximum_calibration_error, brier_score, negative_log_likelihood):
        assert fn(probs, labels, mask=mask).item() == 0.0
    assert negative_log_likelihood(torch.tensor([[[1.0], [0.0]]]), torch.tensor([[1]])).item() == pytest.approx(
        -np.log(1e-7)
    )


@pytest.mark.parametrize(
    "binning, mode, norm, aggregation",
    [
        ("width", "top-label", "l1", "global"),
        ("mass", "class-wise", "l1", "global"),
        ("width", "class-wise", "max", "global"),
        ("mass", "top-label", "l1", "image"),
        ("width", "top-label", "max", "image"),
    ],
)
def test_calibration_class_equals_functional(binning, mode, norm, aggregation):
    probs, labels = random_case(5, shape=(4, 3, 5))
    metric = CalibrationError(n_bins=6, binning=binning, mode=mode, norm=norm, aggregation=aggregation, num_classes=3)
    for b in range(0, 4, 2):
        metric.update(probs[b : b + 2], labels[b : b + 2])
    fn = expected_calibration_error if norm == "l1" else maximum_calibration_error
    assert metric.compute().item() == pytest.approx(
        fn(probs, labels, n_bins=6, binning=binning, mode=mode, aggregation=aggregation).item(), abs=1e-9
    )
    if aggregation == "global":
        expected = reliability_bins(probs, labels, n_bins=6, binning=binning, mode=mode)
        for got, want in zip(metric.reliability(), expected):
            assert torch.allclose(got, want)


def test_pixel_metric_classes_equal_functional():
    probs, labels = random_case(6, shape=(4, 3, 5))
    for cls, fn in ((BrierScore, brier_score), (NegativeLogLikelihood, negative_log_likelihood)):
        for aggregation in ("global", "image"):
            metric = cls(aggregation=aggregation)
            metric.update(probs[:1], labels[:1])
            metric.update(probs[1:], labels[1:])
            assert metric.compute().item() == pytest.approx(fn(probs, labels, aggregation=aggregation).item(), abs=1e-9)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_bins=0), ValueError, "n_bins must be >= 1; got 0"),
        (dict(n_bins=2.5), TypeError, "n_bins must be an int; got float"),
        (dict(binning="quantile"), ValueError, "binning must be one of 'width', 'mass'; got 'quantile'"),
        (dict(mode="marginal"), ValueError, "mode must be one of 'top-label', 'class-wise'; got 'marginal'"),
        (dict(aggregation="class"), ValueError, "aggregation must be one of 'global', 'image'; got 'class'"),
        (dict(resolution=3), ValueError, "resolution must be >= 15; got 3"),
        (dict(mask=torch.ones(1, 2, 3, dtype=torch.bool)), ValueError, "mask must be per pixel"),
        (dict(ignore_index=1.5), TypeError, "ignore_index must be an int or None; got float"),
    ],
)
def test_calibration_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        expected_calibration_error(torch.full((1, 2, 3), 0.5), torch.zeros(1, 3, dtype=torch.long), **kwargs)


def test_calibration_bad_data():
    with pytest.raises(ValueError, match="target holds class index 4; expected indices in \\[0, 1\\]"):
        brier_score(torch.full((1, 2, 3), 0.5), torch.tensor([[0, 1, 4]]))
    with pytest.raises(ValueError, match="target must hold values in \\[0, 1\\]"):
        negative_log_likelihood(torch.full((1, 2, 3), 0.5), torch.full((1, 2, 3), 2.0))
    with pytest.raises(ValueError, match="ignore_index applies to index targets only"):
        brier_score(torch.full((1, 2, 3), 0.5), torch.full((1, 2, 3), 0.5), ignore_index=0)
    with pytest.raises(ValueError, match="eps must be > 0.0; got 0.0"):
        negative_log_likelihood(torch.full((1, 2, 3), 0.5), torch.zeros(1, 3, dtype=torch.long), eps=0.0)
    with pytest.raises(ValueError, match="mode='class-wise' keeps one histogram per class: num_classes is required"):
        CalibrationError(mode="class-wise")
    with pytest.raises(ValueError, match="reliability\\(\\) needs the pooled histograms"):
        CalibrationError(aggregation="image").reliability()
    metric = CalibrationError(mode="class-wise", num_classes=3)
    with pytest.raises(ValueError, match="built for 3 class histograms"):
        metric.update(torch.full((1, 2, 3), 0.5), torch.zeros(1, 3, dtype=torch.long))


def test_classes_check_options_at_construction():
    with pytest.raises(ValueError, match="activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"):
        CalibrationError(activation="relu")
    with pytest.raises(ValueError, match="activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"):
        BrierScore(activation="relu")
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got str"):
        CalibrationError(ignore_index="x")
    with pytest.raises(ValueError, match="norm must be one of 'l1', 'max'; got 'l2'"):
        CalibrationError(norm="l2")
