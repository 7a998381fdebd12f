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
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Every public name is loaded on first use (PEP 562), so that `softseg --help` and `import softseg` for a
# single loss do not pay for torch, torchmetrics or scipy before they are needed. Once loaded, a name is a
# plain module attribute (no `__getattr__` call per access, nothing for torch.compile to trace).
_EXPORTS = {
    "set_value_checks": "softseg._checks",  # the switch for the host-syncing value checks
    "value_checks_enabled": "softseg._checks",
    "activate": "softseg.activation",
    "aggregate": "softseg.aggregation",
    "CompoundLoss": "softseg.losses",
    "DeepSupervisionLoss": "softseg.losses",
    "DiceCELoss": "softseg.losses",
    "DiceLoss": "softseg.losses",
    "FocalLoss": "softseg.losses",
    "GeneralizedDiceLoss": "softseg.losses",
    "JaccardLoss": "softseg.losses",
    "MCCLoss": "softseg.losses",
    "RegionCELoss": "softseg.losses",
    "TverskyLoss": "softseg.losses",
    "dice_ce_loss": "softseg.losses",
    "dice_loss": "softseg.losses",
    "focal_loss": "softseg.losses",
    "generalized_dice_loss": "softseg.losses",
    "jaccard_loss": "softseg.losses",
    "mcc_loss": "softseg.losses",
    "region_ce_loss": "softseg.losses",
    "tversky_loss": "softseg.losses",
    "logit_statistics": "softseg.dispatch",
    "tversky_index": "softseg.scores",
    "RegionStatistics": "softseg.statistics",
    "region_statistics": "softseg.statistics",
}
# Submodules reachable as attributes (`softseg.metrics.DiceScore`); not in __all__ (modules).
_SUBMODULES = ("compat", "distributed", "labels", "metrics", "schedules")

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time the names come from __getattr__
    from softseg import compat, distributed, labels, metrics, schedules
    from softseg._checks import set_value_checks, value_checks_enabled
    from softseg.activation import activate
    from softseg.aggregation import aggregate
    from softseg.dispatch import logit_statistics
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
    from softseg.scores import tversky_index
    from softseg.statistics import RegionStatistics, region_statistics


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"softseg.{name}")
    else:
        raise AttributeError(f"module 'softseg' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))
