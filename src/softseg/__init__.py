"""softseg: segmentation losses and metrics that stay correct for soft labels.

The layers, bottom to top:

- :mod:`softseg.statistics`: the one engine, probabilities + target -> tp, fp, fn per (image, class);
- :mod:`softseg.scores`: Tversky/Dice/Jaccard index of those statistics;
- :mod:`softseg.aggregation`: global, image and class averaging over active classes;
- :mod:`softseg.losses`: the losses, each a function and a thin module.
"""

from softseg.activation import activate
from softseg.aggregation import aggregate
from softseg.losses import DiceLoss, JaccardLoss, TverskyLoss, dice_loss, jaccard_loss, tversky_loss
from softseg.scores import tversky_index
from softseg.statistics import RegionStatistics, region_statistics

__version__ = "0.1.0"

__all__ = [
    "DiceLoss",
    "JaccardLoss",
    "RegionStatistics",
    "TverskyLoss",
    "activate",
    "aggregate",
    "dice_loss",
    "jaccard_loss",
    "region_statistics",
    "tversky_index",
    "tversky_loss",
]
