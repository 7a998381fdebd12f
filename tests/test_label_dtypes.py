"""Label maps of every integer dtype give the int64 results, ``ignore_index`` included.

Pipelines hand over uint8 (PNG masks), bool (binary masks), int16 or int32 label maps. ``labels !=
ignore_index`` in torch casts the int to the labels' dtype first: uint8 labels equal -100 at 156, int32 labels
equal 2**32 + 1 at 1. An ``ignore_index`` that no label of the dtype can hold must ignore nothing, so every
public entry point that takes labels and ``ignore_index`` is run here with such a pair, against the same call
with int64 labels, where the comparison is exact.
"""

from __future__ import annotations

import pytest
import torch

import softseg
from softseg import DeepSupervisionLoss, region_statistics
from softseg.statistics import counted_pixels
from softseg.compat import smp as compat_smp
from softseg.labels import boundary_mask, boundary_smoothing, downsample_target, label_smoothing
from softseg.metrics import (
    brier_score,
    confusion_statistics,
    dice_score,
    expected_calibration_error,
    negative_log_likelihood,
    soft_dice_score,
)

# (labels' dtype, an ignore_index outside its range, the label that ignore_index wraps to, classes)
WRAPPING = [
    pytest.param(torch.uint8, -100, 156, 160, id="uint8-minus100"),
    pytest.param(torch.uint8, 257, 1, 3, id="uint8-257"),
    pytest.param(torch.int8, 257, 1, 3, id="int8-257"),
    pytest.param(torch.int16, 65537, 1, 3, id="int16-65537"),
    pytest.param(torch.int32, 2**32 + 1, 1, 3, id="int32-2**32+1"),
]


def _labels(wrapped: int, classes: int) -> torch.Tensor:
    """(2, 4, 4) labels in [0, classes) holding ``wrapped`` at several pixels."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, min(classes, 4), (2, 4, 4), generator=generator)
    labels[0, 0] = wrapped
    labels[1, 2, 1:3] = wrapped
    return labels


def _logits(classes: int) -> torch.Tensor:
    return torch.randn(2, classes, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


ENTRY_POINTS = {
    "dice_loss": lambda x, t, i, c: softseg.dice_loss(x, t, ignore_index=i),
    "dice_loss float32 (fused kernels)": lambda x, t, i, c: softseg.dice_loss(x.float(), t, ignore_index=i),
    "dice_loss activation=none (reference path)": lambda x, t, i, c: softseg.dice_loss(
        x.softmax(1), t, activation="none", ignore_index=i
    ),
    "dice_ce_loss": lambda x, t, i, c: softseg.dice_ce_loss(x, t, ignore_index=i),
    "dice_ce_loss float32": lambda x, t, i, c: softseg.dice_ce_loss(x.float(), t, ignore_index=i),
    "focal_loss": lambda x, t, i, c: softseg.focal_loss(x, t, ignore_index=i),
    "generalized_dice_loss": lambda x, t, i, c: softseg.generalized_dice_loss(x, t, ignore_index=i),
    "mcc_loss": lambda x, t, i, c: softseg.mcc_loss(x, t, ignore_index=i),
    "region_statistics": lambda x, t, i, c: torch.stack(region_statistics(x.softmax(1), t, ignore_index=i)),
    "counted_pixels": lambda x, t, i, c: counted_pixels(x, t, ignore_index=i),
    "soft_dice_score": lambda x, t, i, c: soft_dice_score(x.softmax(1), t, ignore_index=i),
    "expected_calibration_error": lambda x, t, i, c: expected_calibration_error(x.softmax(1), t, ignore_index=i),
    "negative_log_likelihood": lambda x, t, i, c: negative_log_likelihood(x.softmax(1), t, ignore_index=i),
    "brier_score": lambda x, t, i, c: brier_score(x.softmax(1), t, ignore_index=i),
    "dice_score": lambda x, t, i, c: dice_score(x.argmax(1), t, num_classes=c, ignore_index=i),
    "confusion_statistics": lambda x, t, i, c: torch.stack(
        confusion_statistics(x.argmax(1), t, num_classes=c, ignore_index=i)
    ),
    "label_smoothing": lambda x, t, i, c: label_smoothing(t, c, ignore_index=i),
    "boundary_smoothing": lambda x, t, i, c: boundary_smoothing(t, c, ignore_index=i),
    "boundary_mask": lambda x, t, i, c: boundary_mask(t, ignore_index=i),
    "downsample_target": lambda x, t, i, c: downsample_target(t, 0.5, num_classes=c, ignore_index=i),
    "DeepSupervisionLoss": lambda x, t, i, c: DeepSupervisionLoss(
        softseg.DiceLoss(), target_downsampling="nearest", ignore_index=i
    )([x, x[..., ::2, ::2]], t),
    "compat.smp.DiceLoss": lambda x, t, i, c: compat_smp.DiceLoss("multiclass", ignore_index=i)(x, t),
    "compat.smp.JaccardLoss": lambda x, t, i, c: compat_smp.JaccardLoss("multiclass", ignore_index=i)(x, t),
    "compat.smp.FocalLoss": lambda x, t, i, c: compat_smp.FocalLoss("multiclass", ignore_index=i)(x, t),
    "compat.smp.TverskyLoss": lambda x, t, i, c: compat_smp.TverskyLoss("multiclass", ignore_index=i)(x, t),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
@pytest.mark.parametrize(("dtype", "ignore_index", "wrapped", "classes"), WRAPPING)
def test_an_ignore_index_the_dtype_cannot_hold_ignores_nothing(name, dtype, ignore_index, wrapped, classes):
    run = ENTRY_POINTS[name]
    labels, logits = _labels(wrapped, classes), _logits(classes)
    expected = run(logits, labels, ignore_index, classes)  # int64: no label equals ignore_index
    assert torch.equal(
        run(logits, labels, None, classes).to(expected.dtype), expected
    ), "the int64 call must ignore nothing"
    got = run(logits, labels.to(dtype), ignore_index, classes)
    torch.testing.assert_close(got.to(expected.dtype), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["dice_loss float32 (fused kernels)", "dice_ce_loss", "counted_pixels", "label_smoothing"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_a_representable_ignore_index_still_ignores(name, dtype):
    # The guard must not turn ignoring off where the dtype holds the value: 255 in uint8 (the usual PNG void).
    run = ENTRY_POINTS[name]
    labels, logits = _labels(2, 3), _logits(3)
    labels[1, 3] = 255
    expected = run(logits, labels, 255, 3)
    torch.testing.assert_close(run(logits, labels.to(dtype), 255, 3).to(expected.dtype), expected)
    assert not torch.equal(labels.to(dtype) != 255, torch.ones_like(labels, dtype=torch.bool))

