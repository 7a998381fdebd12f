"""softseg: segmentation losses and metrics that stay correct for soft labels.

The layers, bottom to top:

- :mod:`softseg.statistics`: the one engine, probabilities + target -> tp, fp, fn per (image, class);
- :mod:`softseg.kernels`: the same statistics straight from the logits (torch blocks, Triton, custom operators);
  :mod:`softseg.dispatch` chooses between the two paths (``logit_statistics``);
- :mod:`softseg.scores`: Tversky/Dice/Jaccard index of those statistics;
- :mod:`softseg.aggregation`: global, image and class averaging over active classes;
- :mod:`softseg.losses`: the losses, each a function and a thin module;
- :mod:`softseg.schedules`: loss weights over training, for :class:`softseg.CompoundLoss`;
- :mod:`softseg.metrics`: torchmetrics classes and functions over the same statistics;
- :mod:`softseg.labels`: making soft targets (smoothing, raters, distillation, deep supervision);
- :mod:`softseg.compat`: drop-in replacements for MONAI's and smp's losses;
- :mod:`softseg.distributed`: statistics summed over the process group for data-parallel training.
"""

import importlib

from softseg._checks import set_value_checks, value_checks_enabled
from softseg.activation import activate
from softseg.aggregation import aggregate
from softseg import schedules  # softseg.schedules.linear(...) for CompoundLoss weights; not in __all__ (a module)
from softseg.losses import (
    CompoundLoss,
    DeepSupervisionLoss,
    DiceCELoss,
    DiceLoss,
    FocalLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    MCCLoss,
    RegionCELoss,
    TverskyLoss,
    dice_ce_loss,
    dice_loss,
    focal_loss,
    generalized_dice_loss,
    jaccard_loss,
    mcc_loss,
    region_ce_loss,
    tversky_loss,
)
from softseg.dispatch import logit_statistics
from softseg.scores import tversky_index
from softseg.statistics import RegionStatistics, region_statistics

__version__ = "0.1.0"

# Loaded on first use, so that `import softseg` for a loss does not import torchmetrics or scipy.
_SUBPACKAGES = ("compat", "distributed", "labels", "metrics")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"softseg.{name}")
    raise AttributeError(f"module 'softseg' has no attribute {name!r}")

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
    "RegionStatistics",
    "TverskyLoss",
    "activate",
    "aggregate",
    "dice_ce_loss",
    "dice_loss",
    "focal_loss",
    "generalized_dice_loss",
    "jaccard_loss",
    "mcc_loss",
    "logit_statistics",
    "region_ce_loss",
    "region_statistics",
    "tversky_index",
    "tversky_loss",
    "set_value_checks",
    "value_checks_enabled",
]  # the last two: the switch for the host-syncing value checks
