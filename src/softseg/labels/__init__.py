"""Making soft targets: label, boundary and distance smoothing, several raters, distillation, deep supervision.

Every function returns class probabilities (B, C, *spatial) that the losses and metrics take as a dense
target (majority_vote returns class indices).
"""

from softseg.labels.distillation import distillation_target
from softseg.labels.multiscale import downsample_target
from softseg.labels.raters import dice_weighted_mean, majority_vote, rater_agreement, rater_mean
from softseg.labels.smoothing import boundary_mask, boundary_smoothing, distance_smoothing, label_smoothing

__all__ = [
    "boundary_mask",
    "boundary_smoothing",
    "dice_weighted_mean",
    "distance_smoothing",
    "distillation_target",
    "downsample_target",
    "label_smoothing",
    "majority_vote",
    "rater_agreement",
    "rater_mean",
]
