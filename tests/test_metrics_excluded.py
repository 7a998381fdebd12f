"""Excluded pixels leave no trace: a NaN or inf there changes no metric (issue 14, item 1).

Every metric that takes probabilities or logits is called with non-finite values at the pixels that
``mask=`` or ``ignore_index`` leave out. The result must be finite and equal to (a) the same call with
ordinary values there and (b) the metric of the kept pixels alone, gathered into one image (global
aggregation), which never sees the excluded pixels at all.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg.metrics import (
    BrierScore,
    CalibrationError,
    NegativeLogLikelihood,
    SoftDiceScore,
    SoftJaccardScore,
    ThresholdedDiceScore,
    adaptive_calibration_error,
    brier_score,
    calibration_histograms,
    dice_score,
    expected_calibration_error,
    iou_score,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    soft_dice_score,
    soft_jaccard_score,
    thresholded_dice_score,
)

IGNORE = 255
FUNCTIONS = {
    "ece": expected_calibration_error,
    "mce": maximum_calibration_error,
    "ace": adaptive_calibration_error,
    "ece_class_wise": lambda *a, **k: expected_calibration_error(*a, mode="class-wise", **k),
    "reliability_bins": lambda *a, **k: torch.stack(list(reliability_bins(*a, n_bins=5, **k)[:3])),
    "histograms": lambda *a, **k: torch.stack(calibration_histograms(*a, n_bins=5, **k)).sum(1),
    "brier": brier_score,
    "nll": negative_log_likelihood,
    "soft_dice": soft_dice_score,
    "soft_jaccard": soft_jaccard_score,
    "thresholded_dice": lambda *a, **k: thresholded_dice_score(*a, aggregation="global", **k),
}


def _metric_classes(num_classes: int, activation: str, ignore_index: int | None):
    common = dict(activation=activation, ignore_index=ignore_index)
    return {
        "CalibrationError": CalibrationError(n_bins=5, **common),
        "BrierScore": BrierScore(**common),
        "NegativeLogLikelihood": NegativeLogLikelihood(**common),
        "SoftDiceScore": SoftDiceScore(num_classes=num_classes, **common),
        "SoftJaccardScore": SoftJaccardScore(num_classes=num_classes, **common),
        "ThresholdedDiceScore": ThresholdedDiceScore(num_classes=num_classes, aggregation="global", **common),
    }


def _case(seed: int, activation: str, target_kind: str, poison: float):
    """Inputs with poison at excluded pixels, the same inputs with finite values there, and the call's options."""
    generator = torch.Generator().manual_seed(seed)
    classes = 1 if activation == "sigmoid" and seed % 2 else 3
    logits = 3 * torch.randn(2, classes, 3, 4, generator=generator, dtype=torch.float64)
    clean = logits if activation != "none" else (logits.softmax(1) if classes > 1 else logits.sigmoid())
    excluded = torch.rand(2, 3, 4, generator=generator) < 0.4
    excluded[0, 0, 0] = True
    excluded[1, -1, -1] = False
    labels = torch.randint(0, max(classes, 2), (2, 3, 4), generator=generator)
    if target_kind == "dense":
        soft = torch.rand(2, classes, 3, 4, generator=generator, dtype=torch.float64)
        target = soft / soft.sum(1, keepdim=True) if classes > 1 else soft
        poisoned_target = target.masked_fill(excluded.unsqueeze(1), poison)
        options = {"mask": ~excluded}
    elif target_kind == "ignore_index":
        target = poisoned_target = labels.masked_fill(excluded, IGNORE)
        options = {"ignore_index": IGNORE}
    else:
        target = poisoned_target = labels
        options = {"mask": ~excluded}
    poisoned = clean.masked_fill(excluded.unsqueeze(1), poison)
    return clean, target, poisoned, poisoned_target, excluded, options


def _kept_only(values: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """The kept pixels of (B, [C,] *spatial) as one image (1, [C,] K): the excluded values never read."""
    if values.ndim == excluded.ndim:  # index target
        return values[~excluded].unsqueeze(0)
    return values.movedim(1, -1)[~excluded].T.unsqueeze(0)


CASES = dict(
    seed=st.integers(0, 2**16),
    activation=st.sampled_from(["none", "softmax", "sigmoid"]),
    target_kind=st.sampled_from(["dense", "ignore_index", "mask"]),
    poison=st.sampled_from([float("nan"), float("inf"), float("-inf")]),
)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@given(**CASES)
def test_functions_ignore_non_finite_values_at_excluded_pixels(name, seed, activation, target_kind, poison):
    fn = FUNCTIONS[name]
    clean, target, poisoned, poisoned_target, excluded, options = _case(seed, activation, target_kind, poison)
    result = fn(poisoned, poisoned_target, activation=activation, **options)
    assert torch.isfinite(result).all()
    torch.testing.assert_close(result, fn(clean, target, activation=activation, **options))
    kept = fn(_kept_only(clean, excluded), _kept_only(target, excluded), activation=activation)
    torch.testing.assert_close(result, kept)


@given(**CASES)
def test_metric_classes_ignore_non_finite_values_at_excluded_pixels(seed, activation, target_kind, poison):
    clean, target, poisoned, poisoned_target, excluded, options = _case(seed, activation, target_kind, poison)
    classes = clean.shape[1]
    ignore_index = options.get("ignore_index")
    mask = options.get("mask")
    poisoned_metrics = _metric_classes(classes, activation, ignore_index)
    kept_metrics = _metric_classes(classes, activation, None)
    for name, metric in poisoned_metrics.items():
        metric.update(poisoned[:1], poisoned_target[:1], mask=None if mask is None else mask[:1])
        metric.update(poisoned[1:], poisoned_target[1:], mask=None if mask is None else mask[1:])
        kept_metrics[name].update(_kept_only(clean, excluded), _kept_only(target, excluded))
        value = metric.compute()
        assert torch.isfinite(value), name
        torch.testing.assert_close(value, kept_metrics[name].compute(), msg=name)


@pytest.mark.parametrize("score", [dice_score, iou_score])
@pytest.mark.parametrize("aggregation", ["global", "image", "class"])
def test_hard_scores_of_argmax_with_nan_logits_at_ignored_pixels(score, aggregation):
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    ignored = torch.zeros(2, 4, 4, dtype=torch.bool)
    ignored[0, :2] = True
    logits = logits.masked_fill(ignored.unsqueeze(1), float("nan"))
    preds = logits.argmax(1)  # whatever argmax makes of NaN, those pixels are ignored
    result = score(
        preds, labels.masked_fill(ignored, IGNORE), num_classes=3, ignore_index=IGNORE, aggregation=aggregation
    )
    # Reference: per-(image, class) counts of the kept pixels by hand, then the means of the definition.
    alpha = 0.5 if score is dice_score else 1.0
    per_entry = torch.zeros(2, 3, dtype=torch.float64)
    used = torch.zeros(2, 3, dtype=torch.bool)
    for b in range(2):
        keep = ~ignored[b]
        p, t = preds[b][keep], labels[b][keep]
        for c in range(3):
            tp = float(((p == c) & (t == c)).sum())
            fp = float(((p == c) & (t != c)).sum())
            fn = float(((p != c) & (t == c)).sum())
            used[b, c] = tp + fp + fn > 0
            per_entry[b, c] = tp / (tp + alpha * (fp + fn)) if used[b, c] else 0.0
    if aggregation == "image":
        expected = torch.stack([per_entry[b][used[b]].mean() for b in range(2)]).mean()
    elif aggregation == "class":
        expected = torch.stack([per_entry[:, c][used[:, c]].mean() for c in range(3) if used[:, c].any()]).mean()
    else:
        keep = ~ignored
        p, t = preds[keep], labels[keep]
        scores = []
        for c in range(3):
            tp = float(((p == c) & (t == c)).sum())
            fp = float(((p == c) & (t != c)).sum())
            fn = float(((p != c) & (t == c)).sum())
            scores.append(tp / (tp + alpha * (fp + fn)))
        expected = torch.tensor(scores, dtype=torch.float64).mean()
    assert torch.isfinite(result)
    assert result.item() == pytest.approx(expected.item(), abs=1e-12)
