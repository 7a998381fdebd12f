"""Losses: each a function and a thin nn.Module over it, all on :mod:`softseg.statistics`."""

from softseg.losses.region import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss

__all__ = ["DiceLoss", "JaccardLoss", "TverskyLoss", "dice_loss", "jaccard_loss", "tversky_loss"]
