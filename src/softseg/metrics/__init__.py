"""Metrics to judge soft-label training: overlap of hard and soft predictions, and calibration.

Each metric is a function (a scalar by default) and a :class:`torchmetrics.Metric` class over the same
statistics: :func:`softseg.region_statistics` / :func:`confusion_statistics` for overlap, calibration
histograms and pixel sums for calibration. States are sums where the metric allows it (constant memory),
per-image rows where it does not (image/class aggregation, worst-q% tails); both are exact under
multi-process sync.
"""

from softseg.metrics.calibration import (
    BrierScore,
    CalibrationError,
    NegativeLogLikelihood,
    ReliabilityBins,
    adaptive_calibration_error,
    brier_score,
    calibration_histograms,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_bins,
)
from softseg.metrics.overlap import DiceScore, IoUScore, confusion_statistics, dice_score, iou_score
from softseg.metrics.soft_overlap import (
    SoftDiceScore,
    SoftJaccardScore,
    ThresholdedDiceScore,
    soft_dice_score,
    soft_jaccard_score,
    thresholded_dice_score,
    thresholded_statistics,
)

__all__ = [
    "BrierScore",
    "CalibrationError",
    "DiceScore",
    "IoUScore",
    "NegativeLogLikelihood",
    "ReliabilityBins",
    "SoftDiceScore",
    "SoftJaccardScore",
    "ThresholdedDiceScore",
    "adaptive_calibration_error",
    "brier_score",
    "calibration_histograms",
    "confusion_statistics",
    "dice_score",
    "expected_calibration_error",
    "iou_score",
    "maximum_calibration_error",
    "negative_log_likelihood",
    "reliability_bins",
    "soft_dice_score",
    "soft_jaccard_score",
    "thresholded_dice_score",
    "thresholded_statistics",
]
