"""Losses: each a function and a thin nn.Module over it, all on :mod:`softseg.statistics`.

- :mod:`softseg.losses.region`: Tversky, Dice, Jaccard (soft-label correct);
- :mod:`softseg.losses.focal`: focal loss (softmax or sigmoid, index or soft targets);
- :mod:`softseg.losses.compound`: a region loss plus cross-entropy or focal, sharing one softmax.
"""

from softseg.losses.compound import DiceCELoss, RegionCELoss, dice_ce_loss, region_ce_loss
from softseg.losses.focal import FocalLoss, focal_loss
from softseg.losses.region import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss

__all__ = [
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "JaccardLoss",
    "RegionCELoss",
    "TverskyLoss",
    "dice_ce_loss",
    "dice_loss",
    "focal_loss",
    "jaccard_loss",
    "region_ce_loss",
    "tversky_loss",
]
