"""Losses: each a function and a thin nn.Module over it, all on :mod:`softseg.statistics`.

- :mod:`softseg.losses.region`: Tversky, Dice, Jaccard (soft-label correct);
- :mod:`softseg.losses.focal`: focal loss (softmax or sigmoid, index or soft targets);
- :mod:`softseg.losses.compound`: a region loss plus cross-entropy or focal, sharing one softmax;
- :mod:`softseg.losses.generalized_dice`: generalized Dice (class weights from the target's mass);
- :mod:`softseg.losses.mcc`: Matthews correlation coefficient loss (true negatives in the min/max form);
- :mod:`softseg.losses.deep_supervision`: one loss over several output scales, targets downsampled;
- :mod:`softseg.losses.compound_loss`: named terms with weights that follow schedules over training;
- :mod:`softseg.losses.recipes`: staged and mixed losses from the literature.
"""

from softseg.losses.compound import DiceCELoss, RegionCELoss, dice_ce_loss, region_ce_loss
from softseg.losses.compound_loss import CompoundLoss
from softseg.losses.deep_supervision import DeepSupervisionLoss
from softseg.losses.focal import FocalLoss, focal_loss
from softseg.losses.generalized_dice import GeneralizedDiceLoss, generalized_dice_loss
from softseg.losses.mcc import MCCLoss, mcc_loss
from softseg.losses import recipes
from softseg.losses.region import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss

__all__ = [
    "CompoundLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "GeneralizedDiceLoss",
    "JaccardLoss",
    "MCCLoss",
    "RegionCELoss",
    "TverskyLoss",
    "dice_ce_loss",
    "dice_loss",
    "focal_loss",
    "generalized_dice_loss",
    "jaccard_loss",
    "mcc_loss",
    "region_ce_loss",
    "tversky_loss",
]
