"""Reliability under the inputs real pipelines produce (issue 14): one table of bad and edge inputs.

Every row is one input to the public API (losses, metrics, label functions, compat layers, the command)
with its expected outcome: an error of the right type whose message names the argument (matched), or a
finite value equal to an independent reference (``tests/_reliability_reference.py``: float64 torch from
the definitions, on the kept pixels only; never the function under test called another way, except the
compat layers, whose kept-pixel reference is the layer on the kept pixels gathered into one image).

Rows that other branches fix are marked ``xfail(strict=True, reason="fixed on branch <name>")``: they
start failing (XPASS) when the fix lands, and the marker comes off then. Empty ranks under two gloo
processes are in ``tests/test_metrics_distributed.py``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _reliability_reference as ref
import pytest
import torch

import softseg
from softseg import (
    DiceCELoss,
    DiceLoss,
    dice_ce_loss,
    dice_loss,
    focal_loss,
    jaccard_loss,
    region_ce_loss,
    region_statistics,
    tversky_loss,
)
from softseg.cli import main
from softseg.compat import monai as compat_monai
from softseg.compat import smp as compat_smp
from softseg.labels import (
    boundary_mask,
    boundary_smoothing,
    dice_weighted_mean,
    distance_smoothing,
    distillation_target,
    downsample_target,
    label_smoothing,
    majority_vote,
    rater_agreement,
    rater_mean,
)
from softseg.metrics import (
    BrierScore,
    CalibrationError,
    DiceScore,
    IoUScore,
    NegativeLogLikelihood,
    SoftDiceScore,
    SoftJaccardScore,
    ThresholdedDiceScore,
    adaptive_calibration_error,
    brier_score,
    calibration_histograms,
    confusion_statistics,
    dice_score,
    expected_calibration_error,
    iou_score,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    soft_dice_score,
    soft_jaccard_score,
    thresholded_dice_score,
    thresholded_statistics,
)

F64 = torch.float64
IGNORE = 255
NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[], Any]
    expect: Callable[[], Any] | None = None  # the independent reference (value rows)
    error: type[BaseException] | tuple[type[BaseException], ...] | None = None
    match: str | None = None  # the error message, naming the argument
    branch: str | None = None  # another branch fixes it: xfail until that branch lands
    rtol: float = 1e-5
    atol: float = 1e-6


CASES: list[Case] = []


def _marks(case: Any) -> list[pytest.MarkDecorator]:
    """Rows another branch fixes fail here until it lands; strict, so the marker must come off then."""
    if case.branch is None:
        return []
    return [pytest.mark.xfail(strict=True, reason=f"fixed on branch {case.branch}")]


def value(name: str, run, expect, *, branch: str | None = None, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    CASES.append(Case(name, run, expect=expect, branch=branch, rtol=rtol, atol=atol))


def error(name: str, run, kind, match: str, *, branch: str | None = None) -> None:
    CASES.append(Case(name, run, error=kind, match=match, branch=branch))


def zero() -> torch.Tensor:
    return torch.zeros((), dtype=F64)


# ---------------------------------------------------------------- shared inputs

SHAPE = (2, 3, 4, 5)  # B, C, H, W
X = ref.logits(SHAPE, seed=10)
LABELS = ref.labels((2, 4, 5), 3, seed=11)
SOFT = ref.soft_target(SHAPE, seed=12)
KEEP = torch.ones(2, 4, 5, dtype=torch.bool)
KEEP[0, 0, :3] = False
KEEP[1, :, 0] = False
IGNORED_LABELS = LABELS.masked_fill(~KEEP, IGNORE)


def poisoned(values: torch.Tensor, poison: float, keep: torch.Tensor = KEEP) -> torch.Tensor:
    """``values`` with ``poison`` at every excluded pixel (all channels)."""
    return values.masked_fill(~keep.unsqueeze(1), poison)


def with_gradient(fn, leaf: torch.Tensor, *args, view=None, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Value of fn(view(leaf), ...) and its gradient with respect to ``leaf``."""
    leaf = leaf.detach().clone().requires_grad_(True)
    loss = fn(leaf if view is None else view(leaf), *args, **kwargs)
    loss.backward()
    return loss.detach(), leaf.grad


def kept_image(values: torch.Tensor, keep: torch.Tensor = KEEP) -> torch.Tensor:
    """The kept pixels of (B, [C,] *spatial) as one image (1, [C,] K)."""
    if values.ndim == keep.ndim:
        return values[keep].unsqueeze(0)
    return ref.pixels(values, keep).T.unsqueeze(0)


def kept_call(loss, leaf: torch.Tensor, target: torch.Tensor, keep: torch.Tensor = KEEP):
    """Value and gradient of a compat layer on the kept pixels gathered into one image (pooled layers only)."""
    kept_leaf = ref.pixels(leaf.detach(), keep).T.unsqueeze(0).clone().requires_grad_(True)
    value_ = loss(kept_leaf, kept_image(target, keep))
    value_.backward()
    grad = torch.zeros_like(leaf)
    grad.movedim(1, -1)[keep] = kept_leaf.grad[0].T
    return value_.detach(), grad


# ================================================================ item 1: non-finite values at excluded pixels
# Losses (value and gradient) against the float64 reference on the kept pixels; the gradient at an
# excluded pixel must be exactly 0.


def _module(cls, **options):
    """A loss module called like the functions: ignore_index goes to the constructor, mask to forward."""
    return lambda x, t, ignore_index=None, mask=None: cls(ignore_index=ignore_index, **options)(x, t, mask=mask)


LOSSES = {  # name: (loss, reference kind, options shared with the reference)
    "dice_loss": (dice_loss, "dice", {}),
    "jaccard_loss": (jaccard_loss, "jaccard", {}),
    "tversky_loss": (tversky_loss, "tversky", {"alpha": 0.3, "beta": 0.7}),
    "dice_ce_loss": (dice_ce_loss, "dice_ce", {}),
    "region_ce_loss_jaccard": (lambda x, t, **o: region_ce_loss(x, t, region="jaccard", **o), "jaccard_ce", {}),
    "DiceLoss": (_module(DiceLoss), "dice", {}),
    "DiceCELoss": (_module(DiceCELoss), "dice_ce", {}),
    "focal_loss": (focal_loss, "focal", {}),
}
EXCLUSIONS = {  # target, options, poison
    "ignore_index_nan": (IGNORED_LABELS, {"ignore_index": IGNORE}, NAN),
    "mask_index_inf": (LABELS, {"mask": KEEP}, INF),
    "mask_dense_minus_inf": (SOFT, {"mask": KEEP}, -INF),
}
for loss_name, (fn, kind, options) in LOSSES.items():
    for how, (target, extra, poison) in EXCLUSIONS.items():
        value(
            f"excluded/{loss_name}/{how}",
            lambda f=fn, t=target, o={**options, **extra}, p=poison: with_gradient(f, poisoned(X, p), t, **o),
            lambda k=kind, t=target, p=poison, o=options: ref.loss_reference(k, poisoned(X, p), t, KEEP, **o),
        )

value(
    "excluded/dice_loss/sigmoid_mask_nan",
    lambda: with_gradient(dice_loss, poisoned(X, NAN), SOFT, mask=KEEP, activation="sigmoid"),
    lambda: ref.loss_reference("dice", poisoned(X, NAN), SOFT, KEEP, activation="sigmoid"),
)
value(
    "excluded/dice_loss/probabilities_nan_activation_none",
    lambda: with_gradient(dice_loss, poisoned(X.softmax(1), NAN), LABELS, mask=KEEP, activation="none"),
    lambda: ref.loss_reference("dice", poisoned(X.softmax(1), NAN), LABELS, KEEP, activation="none"),
)
value(
    "excluded/dice_loss/dense_target_nan_at_masked_pixels",
    lambda: with_gradient(dice_loss, X, poisoned(SOFT, NAN), mask=KEEP),
    lambda: ref.loss_reference("dice", X, poisoned(SOFT, NAN), KEEP),
)
value(
    "excluded/compat_smp_DiceLoss/ignore_index_nan",
    lambda: with_gradient(compat_smp.DiceLoss("multiclass", ignore_index=IGNORE), poisoned(X, NAN), IGNORED_LABELS),
    lambda: kept_call(compat_smp.DiceLoss("multiclass"), poisoned(X, NAN), LABELS),
)
value(
    "excluded/compat_smp_JaccardLoss/ignore_index_inf",
    lambda: with_gradient(compat_smp.JaccardLoss("multiclass", ignore_index=IGNORE), poisoned(X, INF), IGNORED_LABELS),
    lambda: kept_call(compat_smp.JaccardLoss("multiclass"), poisoned(X, INF), LABELS),
)
value(
    "excluded/compat_smp_FocalLoss/ignore_index_nan",
    lambda: with_gradient(compat_smp.FocalLoss("multiclass", ignore_index=IGNORE), poisoned(X, NAN), IGNORED_LABELS),
    lambda: kept_call(compat_smp.FocalLoss("multiclass"), poisoned(X, NAN), LABELS),
)


def _smp_soft_ce_reference(leaf, labels, keep):
    # smp's SoftCrossEntropyLoss (smooth_factor 0): the NLL of the kept pixels summed, over all B*H*W pixels.
    leaf64 = leaf.detach().to(F64).requires_grad_(True)
    log_p = ref.pixels(leaf64, keep).log_softmax(-1)
    loss = -log_p.gather(1, labels[keep].unsqueeze(1)).sum() / labels.numel()
    loss.backward()
    return loss.detach(), leaf64.grad


value(
    "excluded/compat_smp_SoftCrossEntropyLoss/ignore_index_nan",
    lambda: with_gradient(compat_smp.SoftCrossEntropyLoss(ignore_index=IGNORE), poisoned(X, NAN), IGNORED_LABELS),
    lambda: _smp_soft_ce_reference(poisoned(X, NAN), LABELS, KEEP),
)
value(
    "excluded/compat_monai_MaskedDiceLoss/mask_nan",
    lambda: with_gradient(
        compat_monai.MaskedDiceLoss(softmax=True, to_onehot_y=True, batch=True),
        poisoned(X, NAN),
        LABELS.unsqueeze(1),
        mask=KEEP.unsqueeze(1),
    ),
    lambda: kept_call(
        lambda x, t: compat_monai.DiceLoss(softmax=True, to_onehot_y=True, batch=True)(x, t.unsqueeze(1)),
        poisoned(X, NAN),
        LABELS,
    ),
)

# Metrics: ignored/masked pixels hold NaN or inf; references on the kept pixels (float64, torchmetrics rules).
P = X.softmax(1)
P_KEPT, SOFT_KEPT, HARD_KEPT = ref.pixels(P, KEEP), ref.pixels(SOFT, KEEP), ref.one_hot(LABELS, 3)
HARD_KEPT = ref.pixels(HARD_KEPT, KEEP)
METRIC_ROWS = {
    "expected_calibration_error": (expected_calibration_error, lambda p, y: ref.top_label_ece(p, y)),
    "maximum_calibration_error": (maximum_calibration_error, lambda p, y: ref.top_label_ece(p, y, maximum=True)),
    "brier_score": (brier_score, ref.brier),
    "negative_log_likelihood": (negative_log_likelihood, ref.nll),
    "soft_dice_score": (soft_dice_score, ref.soft_dice_score),
    "soft_jaccard_score": (soft_jaccard_score, lambda p, y: ref.soft_dice_score(p, y, alpha=1.0)),
}
for metric_name, (fn, reference) in METRIC_ROWS.items():
    value(
        f"excluded/{metric_name}/ignore_index_nan",
        lambda f=fn: f(poisoned(P, NAN), IGNORED_LABELS, ignore_index=IGNORE),
        lambda r=reference: r(P_KEPT, HARD_KEPT),
    )
    value(
        f"excluded/{metric_name}/mask_dense_inf_logits",
        lambda f=fn: f(poisoned(X, INF), SOFT, mask=KEEP, activation="softmax"),
        lambda r=reference: r(P_KEPT, SOFT_KEPT),
    )
value(
    "excluded/adaptive_calibration_error/mask_nan",
    lambda: adaptive_calibration_error(poisoned(P, NAN), LABELS, mask=KEEP, n_bins=1),
    lambda: ref.top_label_ece(P_KEPT, HARD_KEPT, n_bins=1),  # one bin: equal-mass and equal-width agree
)
value(
    "excluded/reliability_bins/ignore_index_nan",
    lambda: reliability_bins(poisoned(P, NAN), IGNORED_LABELS, ignore_index=IGNORE, n_bins=1)[:3],
    lambda: (
        P_KEPT.max(1).values.mean().reshape(1),
        (P_KEPT.argmax(1) == HARD_KEPT.argmax(1)).double().mean().reshape(1),
        torch.tensor([len(P_KEPT)]),
    ),
)
value(
    "excluded/thresholded_dice_score/mask_nan",
    lambda: thresholded_dice_score(poisoned(P, NAN), SOFT, mask=KEEP, thresholds=(0.3,), aggregation="global"),
    lambda: ref.soft_dice_score((P_KEPT > 0.3).double(), (SOFT_KEPT > 0.3).double()),
)
value(
    "excluded/dice_score/argmax_of_nan_logits_at_ignored_pixels",
    lambda: dice_score(poisoned(X, NAN).argmax(1), IGNORED_LABELS, num_classes=3, ignore_index=IGNORE),
    lambda: ref.hard_score(X.argmax(1)[KEEP], LABELS[KEEP], 3),
)
value(
    "excluded/iou_score/argmax_of_inf_logits_at_ignored_pixels",
    lambda: iou_score(poisoned(X, INF).argmax(1), IGNORED_LABELS, num_classes=3, ignore_index=IGNORE),
    lambda: ref.hard_score(X.argmax(1)[KEEP], LABELS[KEEP], 3, alpha=1.0),
)


def _metric_class_row(metric, *args, **kwargs):
    metric.update(*args, **kwargs)
    return metric.compute()


value(
    "excluded/SoftDiceScore/update_mask_nan",
    lambda: _metric_class_row(SoftDiceScore(num_classes=3), poisoned(P, NAN), SOFT, mask=KEEP),
    lambda: ref.soft_dice_score(P_KEPT, SOFT_KEPT),
)
value(
    "excluded/CalibrationError/update_ignore_index_inf_logits",
    lambda: _metric_class_row(
        CalibrationError(activation="softmax", ignore_index=IGNORE), poisoned(X, INF), IGNORED_LABELS
    ),
    lambda: ref.top_label_ece(P_KEPT, HARD_KEPT),
)
value(
    "excluded/BrierScore/update_mask_nan",
    lambda: _metric_class_row(BrierScore(), poisoned(P, NAN), SOFT, mask=KEEP),
    lambda: ref.brier(P_KEPT, SOFT_KEPT),
)
value(
    "excluded/NegativeLogLikelihood/update_ignore_index_nan",
    lambda: _metric_class_row(NegativeLogLikelihood(ignore_index=IGNORE), poisoned(P, NAN), IGNORED_LABELS),
    lambda: ref.nll(P_KEPT, HARD_KEPT),
)

# ================================================================ item 2: the class-weight check cannot be bypassed


def _weight_written_through_data(make_loss):
    loss, weight = make_loss()
    loss(X, LABELS)  # checked once, with valid values
    weight.data.copy_(torch.tensor([1.0, -5.0, 1.0]))  # .data does not bump the version counter
    return loss(X, LABELS)


for name, make_loss in {
    "DiceLoss": lambda: (lambda m: (m, m.weight))(DiceLoss(weight=torch.ones(3))),
    "DiceCELoss": lambda: (lambda m: (m, m.weight))(DiceCELoss(weight=torch.ones(3))),
    "dice_loss": lambda: (lambda w: (lambda x, t: dice_loss(x, t, weight=w), w))(torch.ones(3)),
}.items():
    error(
        f"weight_bypass/{name}/negative_written_through_data",
        lambda m=make_loss: _weight_written_through_data(m),
        (ValueError, RuntimeError),
        r"weight",
    )

# ================================================================ item 3: compat layers on an empty batch (B = 0)

EMPTY_LOGITS = torch.zeros(0, 3, 4, 4, requires_grad=True)
EMPTY_INDEX = torch.zeros(0, 1, 4, 4, dtype=torch.long)
for cls in (
    compat_monai.DiceLoss,
    compat_monai.DiceCELoss,
    compat_monai.FocalLoss,
    compat_monai.TverskyLoss,
    compat_monai.GeneralizedDiceLoss,
    compat_monai.DiceFocalLoss,
    compat_monai.GeneralizedDiceFocalLoss,
    compat_monai.MaskedDiceLoss,
):
    value(
        f"empty_batch/compat_monai_{cls.__name__}",
        lambda c=cls: c(to_onehot_y=True)(
            EMPTY_LOGITS, EMPTY_INDEX, **({"mask": EMPTY_INDEX > 0} if c is compat_monai.MaskedDiceLoss else {})
        ),
        lambda: torch.zeros(()),
    )
for cls in (compat_smp.DiceLoss, compat_smp.JaccardLoss, compat_smp.TverskyLoss, compat_smp.FocalLoss):
    value(
        f"empty_batch/compat_smp_{cls.__name__}",
        lambda c=cls: c("multiclass")(EMPTY_LOGITS, EMPTY_INDEX[:, 0]),
        lambda: torch.zeros(()),
    )
value(
    "empty_batch/compat_smp_SoftCrossEntropyLoss",
    lambda: compat_smp.SoftCrossEntropyLoss()(EMPTY_LOGITS, EMPTY_INDEX[:, 0]),
    lambda: torch.zeros(()),
)
value(
    "empty_batch/compat_smp_SoftBCEWithLogitsLoss",
    lambda: compat_smp.SoftBCEWithLogitsLoss()(EMPTY_LOGITS, EMPTY_LOGITS.detach()),
    lambda: torch.zeros(()),
)
for name, fn in {
    "dice_loss": dice_loss,
    "jaccard_loss": jaccard_loss,
    "dice_ce_loss": dice_ce_loss,
    "focal_loss": focal_loss,
    "dice_loss_image": lambda x, t: dice_loss(x, t, aggregation="image"),
}.items():
    value(
        f"empty_batch/{name}",
        lambda f=fn: with_gradient(f, EMPTY_LOGITS, EMPTY_INDEX[:, 0]),
        lambda: (torch.zeros(()), torch.zeros(0, 3, 4, 4)),
    )

# ================================================================ item 4: no silent reinterpretation

for name, run, kind, match, branch in (
    (
        "compat_smp_SoftCrossEntropyLoss/dim_5_on_4d_input",
        lambda: compat_smp.SoftCrossEntropyLoss(dim=5)(X, LABELS),
        (ValueError, IndexError),
        r"\bdim\b",
        None,
    ),
    (
        "compat_smp_DiceLoss/classes_float",
        lambda: compat_smp.DiceLoss("multiclass", classes=[1.7])(X, LABELS),
        (TypeError, ValueError),
        r"classes",
        None,
    ),
    (
        "compat_monai_DiceLoss/sigmoid_string_False",
        lambda: compat_monai.DiceLoss(sigmoid="False")(X, SOFT),
        TypeError,
        r"sigmoid",
        None,
    ),
    (
        "compat_monai_DiceLoss/softmax_string_True",
        lambda: compat_monai.DiceLoss(softmax="True")(X, SOFT),
        TypeError,
        r"softmax",
        None,
    ),
    (
        "compat_smp_DiceLoss/from_logits_string_False",
        lambda: compat_smp.DiceLoss("multiclass", from_logits="False")(X, LABELS),
        TypeError,
        r"from_logits",
        None,
    ),
    (
        "compat_monai_TverskyLoss/alpha_2.0",
        lambda: compat_monai.TverskyLoss(alpha=2.0, softmax=True, to_onehot_y=True)(X, LABELS.unsqueeze(1)),
        ValueError,
        r"alpha",
        None,
    ),
    (
        "compat_monai_TverskyLoss/alpha_-1.0",
        lambda: compat_monai.TverskyLoss(alpha=-1.0, softmax=True, to_onehot_y=True)(X, LABELS.unsqueeze(1)),
        ValueError,
        r"alpha",
        None,
    ),
    (
        "compat_monai_FocalLoss/alpha_2",
        lambda: compat_monai.FocalLoss(alpha=2.0, to_onehot_y=True)(X, LABELS.unsqueeze(1)),
        ValueError,
        r"alpha",
        None,
    ),
    ("dice_loss/log_loss_string", lambda: dice_loss(X, LABELS, log_loss="False"), TypeError, r"log_loss", None),
    (
        "dice_loss/include_background_int",
        lambda: dice_loss(X, LABELS, include_background=0),
        TypeError,
        r"include_background",
        None,
    ),
    (
        "dice_loss/float_labels_not_truncated",
        lambda: dice_loss(X, LABELS.float() + 0.5),
        TypeError,
        r"target .*Float labels are not truncated",
        None,
    ),
    (
        "dice_score/float_preds_not_truncated",
        lambda: dice_score(LABELS.float(), LABELS, num_classes=3),
        TypeError,
        r"preds must hold class indices",
        None,
    ),
    (
        "label_smoothing/float_labels",
        lambda: label_smoothing(LABELS.float(), 3),
        TypeError,
        r"labels must hold class indices",
        None,
    ),
    (
        "set_value_checks/string",
        lambda: softseg.set_value_checks("False"),
        TypeError,
        r"enabled must be a bool",
        None,
    ),
):
    error(f"reinterpret/{name}", run, kind, match, branch=branch)

# ================================================================ item 5: downsample_target

error(
    "downsample_target/dense_nan",
    lambda: downsample_target(torch.full((1, 2, 4, 4), NAN), 0.5),
    ValueError,
    r"target must hold values in \[0, 1\]; found NaN",
)
error(
    "downsample_target/dense_above_one",
    lambda: downsample_target(torch.full((1, 2, 4, 4), 1.5), 0.5),
    ValueError,
    r"target must hold values in \[0, 1\]; found values in \[1\.5, 1\.5\]",
)
error(
    "downsample_target/dense_negative_float16",
    lambda: downsample_target(torch.full((1, 2, 4, 4), -0.25, dtype=torch.float16), 2),
    ValueError,
    r"target must hold values in \[0, 1\]",
)
value(
    "downsample_target/index_zero_size_dimension_scale",
    lambda: downsample_target(torch.zeros(2, 0, 4, dtype=torch.long), 0.5, num_classes=3),
    lambda: torch.zeros(2, 3, 0, 2),
)
value(
    "downsample_target/dense_zero_size_dimension_scale",
    lambda: downsample_target(torch.zeros(2, 3, 4, 0), 0.5),
    lambda: torch.zeros(2, 3, 2, 0),
)
value(
    "downsample_target/index_zero_size_dimension_size_0",
    lambda: downsample_target(torch.zeros(1, 4, 0, dtype=torch.long), (2, 0), num_classes=2),
    lambda: torch.zeros(1, 2, 2, 0),
)
error(
    "downsample_target/zero_size_dimension_positive_size",
    lambda: downsample_target(torch.zeros(1, 4, 0, dtype=torch.long), 2, num_classes=2),
    ValueError,
    r"size_or_scale as an output size must lie in \[1, input size \(4, 0\)\].*got \(2, 2\)",
)
error(
    "downsample_target/num_classes_string",
    lambda: downsample_target(torch.rand(1, 2, 4), 2, num_classes="2"),
    TypeError,
    r"num_classes must be an int; got str",
)
error(
    "downsample_target/scale_nan",
    lambda: downsample_target(LABELS, NAN, num_classes=3),
    ValueError,
    r"size_or_scale as scale factors must lie in \(0, 1\]",
)
value(
    "downsample_target/all_pixels_ignored",
    lambda: downsample_target(torch.full((1, 4, 4), IGNORE), 2, num_classes=2, ignore_index=IGNORE),
    lambda: torch.zeros(1, 2, 2, 2),
)
CL_TARGET = ref.soft_target((1, 3, 4, 6), seed=13)
value(
    "downsample_target/dense_channels_last",
    lambda: downsample_target(CL_TARGET.contiguous(memory_format=torch.channels_last), 0.5),
    lambda: ref.block_mean(CL_TARGET, 2),
)
value(
    "downsample_target/index_non_contiguous_slice",
    lambda: downsample_target(ref.labels((2, 8, 8), 3, seed=14)[:, ::2, 1::2], 0.5, num_classes=3),
    lambda: ref.block_mean(ref.one_hot(ref.labels((2, 8, 8), 3, seed=14)[:, ::2, 1::2], 3), 2),
)

# ================================================================ item 6: empty batches in metrics and label functions

E_PROBS = torch.zeros(0, 3, 4, 4)
E_LABELS = torch.zeros(0, 4, 4, dtype=torch.long)
EMPTY_FUNCTIONS = {
    "dice_score": lambda: dice_score(E_LABELS, E_LABELS, num_classes=3),
    "dice_score_image_worst_q": lambda: dice_score(E_LABELS, E_LABELS, num_classes=3, aggregation="image", worst_q=10),
    "iou_score_class": lambda: iou_score(E_LABELS, E_LABELS, num_classes=3, aggregation="class"),
    "iou_score_ignore_index": lambda: iou_score(E_LABELS, E_LABELS, num_classes=3, ignore_index=IGNORE),
    "expected_calibration_error": lambda: expected_calibration_error(E_PROBS, E_LABELS),
    "expected_calibration_error_image_class_wise": lambda: expected_calibration_error(
        E_PROBS, E_PROBS, aggregation="image", mode="class-wise"
    ),
    "maximum_calibration_error": lambda: maximum_calibration_error(E_PROBS, E_LABELS),
    "adaptive_calibration_error": lambda: adaptive_calibration_error(E_PROBS, E_PROBS),
    "brier_score": lambda: brier_score(E_PROBS, E_LABELS),
    "brier_score_image": lambda: brier_score(E_PROBS, E_PROBS, aggregation="image"),
    "negative_log_likelihood": lambda: negative_log_likelihood(E_PROBS, E_LABELS, activation="softmax"),
    "soft_dice_score": lambda: soft_dice_score(E_PROBS, E_PROBS),
    "soft_jaccard_score_image": lambda: soft_jaccard_score(E_PROBS, E_LABELS, aggregation="image"),
    "thresholded_dice_score": lambda: thresholded_dice_score(E_PROBS, E_PROBS),
}
for name, run in EMPTY_FUNCTIONS.items():
    value(f"empty_batch/{name}", run, zero)
value(
    "empty_batch/reliability_bins",
    lambda: reliability_bins(E_PROBS, E_LABELS, n_bins=3),
    lambda: (torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.linspace(0, 1, 4)),
)
value(
    "empty_batch/calibration_histograms",
    lambda: calibration_histograms(E_PROBS, E_LABELS, n_bins=3),
    lambda: (torch.zeros(0, 1, 3),) * 3,
)
value(
    "empty_batch/confusion_statistics",
    lambda: confusion_statistics(E_LABELS, E_LABELS, num_classes=3),
    lambda: (torch.zeros(0, 3),) * 4,
)
METRIC_CLASSES = {
    "DiceScore": (lambda: DiceScore(num_classes=3), (E_LABELS, E_LABELS)),
    "DiceScore_image": (lambda: DiceScore(num_classes=3, aggregation="image"), (E_LABELS, E_LABELS)),
    "IoUScore_class": (lambda: IoUScore(num_classes=3, aggregation="class"), (E_LABELS, E_LABELS)),
    "SoftDiceScore": (lambda: SoftDiceScore(num_classes=3), (E_PROBS, E_PROBS)),
    "SoftJaccardScore_image": (lambda: SoftJaccardScore(num_classes=3, aggregation="image"), (E_PROBS, E_LABELS)),
    "ThresholdedDiceScore": (lambda: ThresholdedDiceScore(num_classes=3), (E_PROBS, E_PROBS)),
    "CalibrationError": (lambda: CalibrationError(), (E_PROBS, E_LABELS)),
    "CalibrationError_image": (lambda: CalibrationError(aggregation="image"), (E_PROBS, E_LABELS)),
    "BrierScore": (lambda: BrierScore(), (E_PROBS, E_LABELS)),
    "NegativeLogLikelihood_image": (lambda: NegativeLogLikelihood(aggregation="image"), (E_PROBS, E_PROBS)),
}


def _compute_quietly(metric):
    with warnings.catch_warnings():  # compute() before update() warns, as torchmetrics does
        warnings.simplefilter("ignore", UserWarning)
        return metric.compute()


for name, (make, batch) in METRIC_CLASSES.items():
    value(f"empty_batch/{name}/update", lambda m=make, b=batch: _metric_class_row(m(), *b), zero)
    value(f"empty_batch/{name}/no_update", lambda m=make: _compute_quietly(m()), zero)

value(
    "empty_batch/thresholded_statistics",
    lambda: thresholded_statistics(E_PROBS, E_PROBS, thresholds=(0.2, 0.7)),
    lambda: (torch.zeros(0, 2, 3),) * 4,
)
value(
    "empty_batch/CalibrationError/reliability",
    lambda: (lambda m: (m.update(E_PROBS, E_LABELS), m.reliability()[:3])[1])(CalibrationError(n_bins=2)),
    lambda: (torch.zeros(2),) * 3,
)
# A zero-size spatial dimension: no pixel at all, the same results as nothing counted.
Z_PROBS, Z_LABELS = torch.zeros(2, 3, 0, 4), torch.zeros(2, 0, 4, dtype=torch.long)
for name, run, expect in (
    ("expected_calibration_error", lambda: expected_calibration_error(Z_PROBS, Z_LABELS), zero),
    (
        "maximum_calibration_error_image",
        lambda: maximum_calibration_error(Z_PROBS, Z_LABELS, aggregation="image"),
        zero,
    ),
    ("negative_log_likelihood_image", lambda: negative_log_likelihood(Z_PROBS, Z_PROBS, aggregation="image"), zero),
    ("soft_dice_score", lambda: soft_dice_score(Z_PROBS, Z_PROBS), zero),
    ("dice_score_image", lambda: dice_score(Z_LABELS, Z_LABELS, num_classes=3, aggregation="image"), zero),
    ("thresholded_dice_score_empty_one", lambda: thresholded_dice_score(Z_PROBS, Z_PROBS), lambda: torch.ones(())),
    ("label_smoothing", lambda: label_smoothing(Z_LABELS, 3), lambda: torch.zeros(2, 3, 0, 4)),
    ("distance_smoothing", lambda: distance_smoothing(Z_LABELS, 3), lambda: torch.zeros(2, 3, 0, 4)),
):
    value(f"zero_size_dimension/{name}", run, expect)

E_MASKS = torch.zeros(0, 3, 4, 4, dtype=torch.long)
for name, run, shape in (
    ("rater_mean", lambda: rater_mean(E_MASKS, 2), (0, 2, 4, 4)),
    ("majority_vote", lambda: majority_vote(E_MASKS, 2), (0, 4, 4)),
    ("rater_agreement", lambda: rater_agreement(E_MASKS, 2), (0, 3)),
    ("dice_weighted_mean", lambda: dice_weighted_mean(E_MASKS, 2), (0, 2, 4, 4)),
    ("label_smoothing", lambda: label_smoothing(E_LABELS, 3), (0, 3, 4, 4)),
    ("boundary_smoothing", lambda: boundary_smoothing(E_LABELS, 3), (0, 3, 4, 4)),
    ("distance_smoothing", lambda: distance_smoothing(E_LABELS, 3), (0, 3, 4, 4)),
    ("boundary_mask", lambda: boundary_mask(E_LABELS).float(), (0, 4, 4)),
    ("distillation_target", lambda: distillation_target(E_PROBS), (0, 3, 4, 4)),
    ("downsample_target", lambda: downsample_target(E_LABELS, 0.5, num_classes=3), (0, 3, 2, 2)),
):
    value(f"empty_batch/{name}", run, lambda s=shape: torch.zeros(s))
value(
    "empty_batch/rater_mean_zero_size_dimension",
    lambda: rater_mean(torch.zeros(2, 3, 0, 4, dtype=torch.long), 2),
    lambda: torch.zeros(2, 2, 0, 4),
)
error(
    "empty_batch/rater_mean_no_raters",
    lambda: rater_mean(torch.zeros(2, 0, 4, 4, dtype=torch.long), 2),
    ValueError,
    r"masks must hold at least one rater in dimension 1",
)

# ================================================================ item 7: devices (meta stands for another device)

META_LABELS = torch.zeros(2, 4, 5, dtype=torch.long, device="meta")
META_MASK = torch.ones(2, 4, 5, dtype=torch.bool, device="meta")
DEVICE = r"(meta.*cpu|cpu.*meta)"
for name, run, argument, branch in (
    ("dice_loss/target", lambda: dice_loss(X, META_LABELS), "target", None),
    ("dice_loss/mask", lambda: dice_loss(X, LABELS, mask=META_MASK), "mask", None),
    ("dice_loss/weight", lambda: dice_loss(X, LABELS, weight=torch.ones(3, device="meta")), "weight", None),
    ("dice_ce_loss/target", lambda: dice_ce_loss(X, META_LABELS), "target", None),
    ("focal_loss/target", lambda: focal_loss(X, META_LABELS), "target", None),
    ("region_statistics/target", lambda: region_statistics(P, META_LABELS), "target", None),
    ("soft_dice_score/mask", lambda: soft_dice_score(P, SOFT, mask=META_MASK), "mask", None),
    ("expected_calibration_error/target", lambda: expected_calibration_error(P, META_LABELS), "target", None),
    ("dice_score/target", lambda: dice_score(LABELS, META_LABELS, num_classes=3), "target", None),
    (
        "soft_dice_score/weight",
        lambda: soft_dice_score(P, SOFT, weight=torch.ones(3, device="meta")),
        "weight",
        None,
    ),
    (
        "distillation_target/labels",
        lambda: distillation_target(X, labels=META_LABELS, label_weight=0.5),
        "labels",
        None,
    ),
    (
        "compat_monai_DiceLoss/target",
        lambda: compat_monai.DiceLoss(to_onehot_y=True, softmax=True)(X, META_LABELS.unsqueeze(1)),
        "target",
        None,
    ),
    ("compat_smp_DiceLoss/target", lambda: compat_smp.DiceLoss("multiclass")(X, META_LABELS), "y_true", None),
):
    error(f"device/{name}", run, (ValueError, RuntimeError), rf"{argument}.*{DEVICE}", branch=branch)

# ================================================================ item 8: double backward through the fused path


def _double_backward(fn, reference_kind):
    """Gradient of the squared gradient norm. An error that says what to do is the other accepted outcome."""

    def run():
        leaf = X.clone().requires_grad_(True)
        try:
            (grad,) = torch.autograd.grad(fn(leaf, LABELS), leaf, create_graph=True)
            (second,) = torch.autograd.grad(grad.square().sum(), leaf)
        except RuntimeError as err:
            if "once_differentiable" in str(err) or not re.search(r"create_graph|double backward|twice", str(err)):
                raise
            return expect()  # a clear, actionable error is what the issue allows instead of support
        return second

    def expect():
        leaf = X.detach().to(F64).requires_grad_(True)
        dense = ref.one_hot(LABELS, 3)
        x, y = ref.pixels(leaf), ref.pixels(dense)
        p = x.softmax(-1)
        loss = ref.region_loss(p, y)
        if reference_kind == "dice_ce":
            loss = loss + ref.cross_entropy(x.log_softmax(-1), y)
        (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
        (second,) = torch.autograd.grad(grad.square().sum(), leaf)
        return second

    return run, expect


for name, fn, kind in (("dice_loss", dice_loss, "dice"), ("dice_ce_loss", dice_ce_loss, "dice_ce")):
    run, expect = _double_backward(fn, kind)
    value(f"double_backward/{name}", run, expect, rtol=1e-4, atol=1e-6)

# ================================================================ item 10: sequence options, entry by entry

for name, run, kind, match, branch in (
    (
        "dice_loss/weight_string_entry",
        lambda: dice_loss(X, LABELS, weight=["a", 1, 1]),
        TypeError,
        r"weight\[0\]",
        None,
    ),
    (
        "dice_loss/weight_none_entry",
        lambda: dice_loss(X, LABELS, weight=[1, None, 2]),
        TypeError,
        r"weight\[1\]",
        None,
    ),
    (
        "focal_loss/weight_none_entry",
        lambda: focal_loss(X, LABELS, weight=[1, None, 2]),
        TypeError,
        r"weight\[1\]",
        None,
    ),
    (
        "dice_score/weight_string_entry",
        lambda: dice_score(LABELS, LABELS, num_classes=3, weight=[1, "a", 1]),
        TypeError,
        r"weight\[1\]",
        None,
    ),
    (
        "compat_smp_DiceLoss/classes_string_entry",
        lambda: compat_smp.DiceLoss("multiclass", classes=["a"])(X, LABELS),
        TypeError,
        r"classes\[0\]",
        None,
    ),
    ("dice_loss/weight_nan_entry", lambda: dice_loss(X, LABELS, weight=[1, NAN, 1]), ValueError, r"weight", None),
    (
        "dice_loss/weight_wrong_length",
        lambda: dice_loss(X, LABELS, weight=[1, 1]),
        ValueError,
        r"weight must have one value per scored class, 3",
        None,
    ),
    (
        "thresholded_dice_score/thresholds_string_entry",
        lambda: thresholded_dice_score(P, SOFT, thresholds=[0.5, "a"]),
        TypeError,
        r"thresholds\[1\] must be a real number",
        None,
    ),
    (
        "distance_smoothing/spacing_string_entry",
        lambda: distance_smoothing(LABELS, 3, spacing=[1, "a"]),
        TypeError,
        r"spacing\[1\] must be a real number",
        None,
    ),
    (
        "dice_loss/aggregation_weight_nan",
        lambda: dice_loss(X, LABELS, aggregation={"image": NAN}),
        ValueError,
        r"aggregation\['image'\] must be finite",
        None,
    ),
):
    error(f"sequence/{name}", run, kind, match, branch=branch)


# ================================================================ pipeline inputs: layouts, sizes, dimensions, classes


@dataclass(frozen=True)
class Layout:
    """A leaf tensor, the view of it the API sees, and the matching target."""

    leaf: torch.Tensor
    labels: torch.Tensor
    view: Callable[[torch.Tensor], torch.Tensor] | None = None

    class_dim: int = 1  # of the leaf

    def input(self) -> torch.Tensor:
        return self.arranged(self.leaf)

    def arranged(self, leaf_like: torch.Tensor) -> torch.Tensor:
        return leaf_like if self.view is None else self.view(leaf_like)

    def probabilities(self) -> torch.Tensor:
        """Softmax probabilities in the same layout as the input (strides, expansion, permutation)."""
        return self.arranged(self.leaf.softmax(self.class_dim))


BIG_LABELS = ref.labels((2, 8, 10), 3, seed=21)
LAYOUTS = {
    "channels_last": Layout(X, LABELS, view=lambda t: t.contiguous(memory_format=torch.channels_last)),
    "expanded_batch": Layout(X[:1], LABELS, view=lambda t: t.expand(2, -1, -1, -1)),
    "non_contiguous_slice": Layout(
        ref.logits((2, 3, 8, 10), seed=22), BIG_LABELS[:, ::2, 1::2], view=lambda t: t[:, :, ::2, 1::2]
    ),
    "permuted_classes_last": Layout(
        ref.logits((2, 4, 5, 3), seed=23), LABELS, view=lambda t: t.movedim(-1, 1), class_dim=-1
    ),
    "single_pixel": Layout(ref.logits((2, 3, 1, 1), seed=24), torch.tensor([[[2]], [[0]]])),
    "one_spatial_dim": Layout(ref.logits((2, 3, 7), seed=25), ref.labels((2, 7), 3, seed=26)),
    "three_spatial_dims": Layout(ref.logits((2, 3, 2, 3, 4), seed=27), ref.labels((2, 2, 3, 4), 3, seed=28)),
    "300_classes": Layout(ref.logits((1, 300, 2, 3), seed=29), ref.labels((1, 2, 3), 300, seed=30)),
}
PIPELINE_LOSSES = {
    "dice_loss": (dice_loss, "dice"),
    "jaccard_loss": (jaccard_loss, "jaccard"),
    "dice_ce_loss": (dice_ce_loss, "dice_ce"),
    "focal_loss": (focal_loss, "focal"),
}
for layout_name, layout in LAYOUTS.items():
    for loss_name, (fn, kind) in PIPELINE_LOSSES.items():
        value(
            f"pipeline/{loss_name}/{layout_name}",
            lambda f=fn, lay=layout: with_gradient(f, lay.leaf, lay.labels, view=lay.view),
            lambda k=kind, lay=layout: ref.loss_reference(k, lay.leaf, lay.labels, view=lay.view),
        )
    probs = layout.probabilities()
    dense = ref.one_hot(layout.labels, probs.shape[1]).float()
    p_all, y_all = ref.pixels(probs), ref.pixels(dense)
    for metric_name, run, expect in (
        (
            "soft_dice_score",
            lambda p=probs, lay=layout: soft_dice_score(p, lay.labels),
            lambda p=p_all, y=y_all: ref.soft_dice_score(p, y),
        ),
        (
            "expected_calibration_error",
            lambda p=probs, lay=layout: expected_calibration_error(p, lay.labels),
            lambda p=p_all, y=y_all: ref.top_label_ece(p, y),
        ),
        (
            "brier_score",
            lambda p=probs, lay=layout: brier_score(p, lay.labels),
            lambda p=p_all, y=y_all: ref.brier(p, y),
        ),
        (
            "negative_log_likelihood_logits",
            lambda lay=layout: negative_log_likelihood(lay.input(), lay.labels, activation="softmax"),
            lambda p=p_all, y=y_all: ref.nll(p, y),
        ),
        (
            "dice_score",
            lambda p=probs, lay=layout: dice_score(p.argmax(1), lay.labels, num_classes=p.shape[1]),
            lambda p=probs, lay=layout: ref.hard_score(p.argmax(1).flatten(), lay.labels.flatten(), p.shape[1]),
        ),
    ):
        value(f"pipeline/{metric_name}/{layout_name}", run, expect)

value(
    "pipeline/dice_loss/expanded_target_and_mask",
    lambda: with_gradient(dice_loss, X, LABELS[:1].expand(2, -1, -1), mask=KEEP[:1].expand(2, -1, -1)),
    lambda: ref.loss_reference("dice", X, LABELS[:1].expand(2, -1, -1), KEEP[:1].expand(2, -1, -1)),
)
value(
    "pipeline/dice_loss/soft_target_channels_last_and_mask_with_channel_dim",
    lambda: with_gradient(dice_loss, X, SOFT.contiguous(memory_format=torch.channels_last), mask=KEEP.unsqueeze(1)),
    lambda: ref.loss_reference("dice", X, SOFT, KEEP),
)
value(
    "pipeline/dice_loss/binary_sigmoid_one_channel_1d",
    lambda: with_gradient(
        dice_loss, ref.logits((3, 1, 9), seed=31), ref.labels((3, 9), 2, seed=32), activation="sigmoid"
    ),
    lambda: ref.loss_reference(
        "dice", ref.logits((3, 1, 9), seed=31), ref.labels((3, 9), 2, seed=32), activation="sigmoid"
    ),
)
value(
    "pipeline/dice_loss/uint8_labels_with_class_dim",
    lambda: with_gradient(dice_loss, X, LABELS.to(torch.uint8).unsqueeze(1)),
    lambda: ref.loss_reference("dice", X, LABELS),
)

# Saturated logits (+-1e4) in every dtype: finite, equal to float64 on the same (rounded) logits.
SATURATED = torch.where(torch.rand(2, 3, 4, 5, generator=ref.generator(33)) > 0.5, 1e4, -1e4)
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    dtype_name = str(dtype).removeprefix("torch.")
    tolerance = (
        {"rtol": 2e-2, "atol": 1e-2} if dtype in (torch.float16, torch.bfloat16) else {"rtol": 1e-5, "atol": 1e-6}
    )
    logits_ = SATURATED.to(dtype)
    for loss_name, (fn, kind) in PIPELINE_LOSSES.items():
        value(
            f"saturated/{loss_name}/{dtype_name}",
            lambda f=fn, x=logits_: with_gradient(f, x, LABELS),
            lambda k=kind, x=logits_: ref.loss_reference(k, x, LABELS),
            **tolerance,
        )
    p_sat = ref.pixels(logits_.to(F64).softmax(1))
    value(
        f"saturated/soft_dice_score_logits/{dtype_name}",
        lambda x=logits_: soft_dice_score(x, SOFT, activation="softmax"),
        lambda p=p_sat: ref.soft_dice_score(p, ref.pixels(SOFT)),
        **tolerance,
    )
    value(
        f"saturated/negative_log_likelihood_logits/{dtype_name}",
        lambda x=logits_: negative_log_likelihood(x, LABELS, activation="softmax"),
        lambda p=p_sat: ref.nll(p, ref.pixels(ref.one_hot(LABELS, 3))),
        **tolerance,
    )
    value(
        f"saturated/distillation_target/{dtype_name}",
        lambda x=logits_: distillation_target(x, temperature=2.0),
        lambda x=logits_: (x.to(F64) / 2.0).softmax(1),
        **tolerance,
    )

# Every pixel ignored: nothing counts, every result is 0 (the losses' gradient too), never NaN.
ALL_IGNORED = torch.full((2, 4, 5), IGNORE)
NONE_KEPT = torch.zeros(2, 4, 5, dtype=torch.bool)
for name, run in {
    "dice_loss": lambda: with_gradient(dice_loss, X, ALL_IGNORED, ignore_index=IGNORE),
    "jaccard_loss_image": lambda: with_gradient(jaccard_loss, X, ALL_IGNORED, ignore_index=IGNORE, aggregation="image"),
    "dice_ce_loss": lambda: with_gradient(dice_ce_loss, X, ALL_IGNORED, ignore_index=IGNORE),
    "focal_loss": lambda: with_gradient(focal_loss, X, ALL_IGNORED, ignore_index=IGNORE),
    "tversky_loss_dense_mask": lambda: with_gradient(tversky_loss, X, SOFT, mask=NONE_KEPT),
    "compat_smp_FocalLoss": lambda: with_gradient(
        compat_smp.FocalLoss("multiclass", ignore_index=IGNORE), X, ALL_IGNORED
    ),
}.items():
    value(f"all_ignored/{name}", run, lambda: (torch.zeros(()), torch.zeros(SHAPE)))
for name, run in {
    "soft_dice_score": lambda: soft_dice_score(P, ALL_IGNORED, ignore_index=IGNORE),
    "thresholded_dice_score_skip": lambda: thresholded_dice_score(P, SOFT, mask=NONE_KEPT, empty="skip"),
    "expected_calibration_error": lambda: expected_calibration_error(P, ALL_IGNORED, ignore_index=IGNORE),
    "brier_score_image": lambda: brier_score(P, SOFT, mask=NONE_KEPT, aggregation="image"),
    "negative_log_likelihood": lambda: negative_log_likelihood(P, ALL_IGNORED, ignore_index=IGNORE),
    "dice_score": lambda: dice_score(LABELS, ALL_IGNORED, num_classes=3, ignore_index=IGNORE),
    "DiceScore_image": lambda: _metric_class_row(
        DiceScore(num_classes=3, aggregation="image", ignore_index=IGNORE), LABELS, ALL_IGNORED
    ),
}.items():
    value(f"all_ignored/{name}", run, zero)
value(
    "all_ignored/label_smoothing",
    lambda: label_smoothing(ALL_IGNORED, 3, ignore_index=IGNORE),
    lambda: torch.zeros(SHAPE),
)

# Every class absent from the target.
ZEROS = torch.zeros(SHAPE)
value(
    "absent/dice_loss_sigmoid_present_classes",
    lambda: with_gradient(dice_loss, X, ZEROS, activation="sigmoid", active_classes="present"),
    lambda: (torch.zeros(()), torch.zeros(SHAPE)),
)
value(
    "absent/dice_loss_sigmoid_all_classes",
    lambda: with_gradient(dice_loss, X, ZEROS, activation="sigmoid"),
    lambda: ref.loss_reference("dice", X, ZEROS, activation="sigmoid"),
)
value(
    "absent/dice_ce_loss_zero_target",
    lambda: with_gradient(dice_ce_loss, X, ZEROS),
    lambda: ref.loss_reference("dice_ce", X, ZEROS),
)
value(
    "absent/focal_loss_zero_target",
    lambda: with_gradient(focal_loss, X, ZEROS),
    lambda: (torch.zeros(()), torch.zeros(SHAPE)),
)
value("absent/soft_dice_score_both_empty", lambda: soft_dice_score(ZEROS, ZEROS), zero)
value(
    "absent/soft_dice_score_empty_one",
    lambda: soft_dice_score(ZEROS, ZEROS, empty="one"),
    lambda: torch.ones((), dtype=F64),
)
BACKGROUND = torch.zeros(2, 4, 5, dtype=torch.long)
value(
    "absent/dice_score_no_foreground_without_background",
    lambda: dice_score(BACKGROUND, BACKGROUND, num_classes=3, include_background=False),
    zero,
)
value(
    "absent/iou_score_present_classes_false_positives_only",
    lambda: iou_score(LABELS, BACKGROUND, num_classes=3, include_background=False, active_classes="present"),
    zero,
)
value(
    "absent/thresholded_dice_score_empty_is_one",
    lambda: thresholded_dice_score(ZEROS, ZEROS),
    lambda: torch.ones((), dtype=F64),
)
value(
    "absent/expected_calibration_error_zero_target",
    lambda: expected_calibration_error(P, ZEROS),
    lambda: ref.top_label_ece(ref.pixels(P), ref.pixels(ZEROS)),
)

# Label functions on the same pipeline shapes, against one-hot / brute-force references.
for layout_name in ("non_contiguous_slice", "single_pixel", "one_spatial_dim", "three_spatial_dims", "300_classes"):
    labels_ = LAYOUTS[layout_name].labels
    classes = LAYOUTS[layout_name].leaf.shape[1]
    value(
        f"labels/label_smoothing/{layout_name}",
        lambda lab=labels_, c=classes: label_smoothing(lab, c, epsilon=0.2),
        lambda lab=labels_, c=classes: ref.one_hot(lab, c) * 0.8 + 0.2 / c,
    )
for name, masks, classes in (
    ("non_contiguous_slice", ref.labels((2, 3, 6, 8), 3, seed=40)[:, :, ::2, ::3], 3),
    ("three_spatial_dims", ref.labels((2, 4, 2, 3, 2), 3, seed=41), 3),
    ("300_classes", ref.labels((1, 5, 2, 2), 300, seed=42), 300),
):
    value(
        f"labels/rater_mean/{name}",
        lambda m=masks, c=classes: rater_mean(m, c),
        lambda m=masks, c=classes: ref.rater_mean(m, c),
    )
    value(
        f"labels/majority_vote/{name}",
        lambda m=masks, c=classes: majority_vote(m, c),
        lambda m=masks, c=classes: ref.rater_mean(m, c).argmax(1),  # argmax: first maximum, the lower class
    )


def _brute_force_band(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """True where the (2r + 1)^d window (clipped at the border) holds two classes, pixel by pixel."""
    band = torch.zeros_like(labels, dtype=torch.bool)
    for index in torch.cartesian_prod(*(torch.arange(n) for n in labels.shape)).reshape(-1, labels.ndim).tolist():
        window = tuple([index[0]] + [slice(max(i - radius, 0), i + radius + 1) for i in index[1:]])
        band[tuple(index)] = labels[window].unique().numel() > 1
    return band


for name, labels_ in (
    ("one_spatial_dim", torch.tensor([[0, 0, 1, 1, 1, 2, 0]])),
    ("three_spatial_dims", ref.labels((1, 3, 3, 4), 2, seed=43)),
    ("single_pixel", torch.tensor([[[1]]])),
):
    value(
        f"labels/boundary_mask/{name}",
        lambda lab=labels_: boundary_mask(lab, radius=1).float(),
        lambda lab=labels_: _brute_force_band(lab, 1).float(),
    )
value(
    "labels/boundary_smoothing/three_spatial_dims",
    lambda: boundary_smoothing(ref.labels((1, 3, 3, 4), 2, seed=43), 2, epsilon=0.2),
    lambda: torch.where(
        _brute_force_band(ref.labels((1, 3, 3, 4), 2, seed=43), 1).unsqueeze(1),
        ref.one_hot(ref.labels((1, 3, 3, 4), 2, seed=43), 2) * 0.8 + 0.1,
        ref.one_hot(ref.labels((1, 3, 3, 4), 2, seed=43), 2),
    ),
)
value(
    "labels/distance_smoothing/one_spatial_dim",
    lambda: distance_smoothing(torch.tensor([[0, 0, 1, 1]]), 2, width=1.0)[0, 1],
    lambda: torch.tensor([ref.sigmoid(-2), ref.sigmoid(-1), ref.sigmoid(1), ref.sigmoid(2)]),
)
value(
    "labels/distance_smoothing/single_pixel",
    lambda: distance_smoothing(torch.tensor([[[1]]]), 3),
    lambda: torch.tensor([[[[0.0]], [[1.0]], [[0.0]]]]),
)
value(
    "labels/downsample_target/three_spatial_dims",
    lambda: downsample_target(ref.labels((1, 4, 4, 6), 3, seed=44), (2, 2, 3), num_classes=3),
    lambda: ref.block_mean(ref.one_hot(ref.labels((1, 4, 4, 6), 3, seed=44), 3), 2),
)
value(
    "labels/downsample_target/one_spatial_dim_dense",
    lambda: downsample_target(ref.soft_target((2, 3, 6), seed=45), 0.5),
    lambda: ref.block_mean(ref.soft_target((2, 3, 6), seed=45), 2),
)

# Compat layers on pipeline layouts (MONAI's and smp's global Dice without smoothing: the reference Dice).
value(
    "pipeline/compat_monai_DiceLoss/channels_last",
    lambda: with_gradient(
        compat_monai.DiceLoss(softmax=True, to_onehot_y=True, batch=True, smooth_nr=0, smooth_dr=0),
        X,
        LABELS.unsqueeze(1),
        view=LAYOUTS["channels_last"].view,
    ),
    lambda: ref.loss_reference("dice", X, LABELS),
)
value(
    "pipeline/compat_smp_DiceLoss/non_contiguous_slice",
    lambda: with_gradient(
        compat_smp.DiceLoss("multiclass"),
        LAYOUTS["non_contiguous_slice"].leaf,
        BIG_LABELS[:, ::2, 1::2],
        view=LAYOUTS["non_contiguous_slice"].view,
    ),
    lambda: ref.loss_reference(
        "dice",
        LAYOUTS["non_contiguous_slice"].leaf,
        BIG_LABELS[:, ::2, 1::2],
        view=LAYOUTS["non_contiguous_slice"].view,
    ),
)


# ================================================================ item 9: no traceback for a user error of the command


@dataclass(frozen=True)
class CommandCase:
    name: str
    argv: Callable[[Any], list[str]]  # tmp_path -> arguments
    status: int
    stderr: str  # regex of the message, naming the option
    branch: str | None = None
    interrupt: bool = False  # Ctrl-C during training


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


COMMAND_CASES = [
    CommandCase(
        "compare/out_not_writable",
        lambda tmp: ["compare", "--quick", "--losses", "ce", "--out", "/proc/softseg-report"],
        2,
        r"--out|/proc/softseg-report\b",  # the option or the path given, not a temporary sibling
    ),
    CommandCase(
        "compare/out_is_a_file",
        lambda tmp: ["compare", "--quick", "--losses", "ce", "--out", str(_a_file(tmp))],
        2,
        r"--out must be a folder",
    ),
    CommandCase(
        "compare/seed_negative", lambda tmp: ["compare", "--quick", "--seed", "-1"], 2, r"--seed"
    ),
    CommandCase("compare/epochs_zero", lambda tmp: ["compare", "--quick", "--epochs", "0"], 2, r"--epochs"),
    CommandCase(
        "compare/unknown_loss", lambda tmp: ["compare", "--quick", "--losses", "no-such-loss"], 2, r"no-such-loss"
    ),
    CommandCase(
        "compare/ctrl_c",
        lambda tmp: ["compare", "--quick", "--losses", "ce", "--out", str(tmp / "report")],
        130,
        r"(?i)interrupt",
        interrupt=True,
    ),
    CommandCase(
        "audit/classes_larger_than_pixels",
        lambda tmp: ["audit", "softseg.DiceLoss", "--classes", "200", "--size", "2", "--quiet"],
        2,
        r"--classes",
    ),
    CommandCase(
        "audit/seed_negative",
        lambda tmp: ["audit", "softseg.DiceLoss", "--seed", "-1", "--quiet"],
        2,
        r"--seed",
    ),
    CommandCase(
        "audit/classes_one", lambda tmp: ["audit", "softseg.DiceLoss", "--classes", "1"], 2, r"--classes must be >= 2"
    ),
    CommandCase(
        "audit/kwargs_not_json", lambda tmp: ["audit", "softseg.DiceLoss", "--kwargs", "{oops"], 2, r"--kwargs"
    ),
    CommandCase("audit/loss_not_importable", lambda tmp: ["audit", "no_such_module.Loss"], 2, r"no_such_module"),
    CommandCase("bench/unknown_workload", lambda tmp: ["bench", "--workloads", "W9"], 2, r"--workloads"),
]


def _a_file(tmp) -> Any:
    path = tmp / "a_file"
    path.write_text("")
    return path


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, id=case.name, marks=_marks(case)) for case in COMMAND_CASES],
)
def test_command_errors(case: CommandCase, tmp_path, capsys, monkeypatch) -> None:
    if case.interrupt:
        import softseg.cli.compare

        monkeypatch.setattr(softseg.cli.compare, "train_run", _interrupted)
    monkeypatch.chdir(tmp_path)  # a run that wrongly succeeds writes its default report here, not in the tree
    try:
        status = main(case.argv(tmp_path))
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code
    except KeyboardInterrupt:  # must become exit status 130 and a message, not reach the caller
        status = "KeyboardInterrupt raised"
    stderr = capsys.readouterr().err
    assert status == case.status, stderr
    assert "Traceback" not in stderr
    assert re.search(case.stderr, stderr), stderr
    if case.interrupt:
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert not (tmp_path / "report").exists()


# ================================================================ the test


def _leaves(result: Any) -> list[torch.Tensor]:
    if isinstance(result, (tuple, list)):
        return [leaf for item in result for leaf in _leaves(item)]
    return [torch.as_tensor(result)]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.name, marks=_marks(case)) for case in CASES])
def test_bad_and_edge_inputs(case: Case) -> None:
    if case.error is not None:
        with pytest.raises(case.error, match=case.match):
            case.run()
        return
    actual, expected = _leaves(case.run()), _leaves(case.expect())
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        assert torch.isfinite(got).all(), got
        torch.testing.assert_close(got.to(F64), want.to(F64), rtol=case.rtol, atol=case.atol)


def test_the_table_has_150_distinct_rows() -> None:
    names = [case.name for case in CASES] + [case.name for case in COMMAND_CASES]
    assert len(set(names)) == len(names)
    assert len(names) >= 150
