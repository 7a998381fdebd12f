"""pytest plugin: segmentation_models_pytorch's own ``tests/test_losses.py`` (smp 0.6.0) on softseg.compat.smp.

Loaded with ``-p smp_plugin`` (``scripts/peer_tests.py smp`` does it). Before the test module is imported,
``segmentation_models_pytorch`` and ``segmentation_models_pytorch.losses`` are stand-in modules whose loss
classes are softseg.compat.smp's, so ``import segmentation_models_pytorch as smp`` and
``from segmentation_models_pytorch.losses import DiceLoss`` in smp's tests reach softseg, not smp. No smp code
runs. The tests of smp's private functional API (``losses._functional``: soft_dice_score and friends) test
functions that are not part of the drop-in; they are skipped with that reason, and so is a class that
softseg.compat.smp does not have yet.
"""

from __future__ import annotations

import sys
import types

import pytest

PACKAGE = "segmentation_models_pytorch"
# The tests that call smp.losses._functional (smp's private helpers), not a loss class.
FUNCTIONAL_TESTS = (
    "test_focal_loss_with_logits",
    "test_softmax_focal_loss_with_logits",
    "test_soft_jaccard_score",
    "test_soft_jaccard_score_2",
    "test_soft_dice_score",
    "test_soft_tversky_score",
)
PEER_CLASSES = (
    "DiceLoss",
    "JaccardLoss",
    "TverskyLoss",
    "FocalLoss",
    "SoftBCEWithLogitsLoss",
    "SoftCrossEntropyLoss",
    "MCCLoss",
    "LovaszLoss",
)


def _unavailable(name: str, reason: str) -> type:
    class Unavailable:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pytest.skip(f"softseg.compat.smp has no {name} ({reason})")

    Unavailable.__name__ = name
    return Unavailable


def _private(name: str) -> object:
    raise AttributeError(f"{PACKAGE}.losses._functional.{name} is smp's private API, not part of the drop-in")


def pytest_configure(config: pytest.Config) -> None:
    import softseg.compat.smp as compat

    package = types.ModuleType(PACKAGE)
    package.__path__ = []
    losses = types.ModuleType(f"{PACKAGE}.losses")
    losses.__path__ = []
    for name in ("BINARY_MODE", "MULTICLASS_MODE", "MULTILABEL_MODE"):
        setattr(losses, name, getattr(compat, name))
    for name in PEER_CLASSES:
        try:
            setattr(losses, name, getattr(compat, name))
        except (AttributeError, ImportError) as error:
            setattr(losses, name, _unavailable(name, str(error).split(":")[0]))
    functional = types.ModuleType(f"{PACKAGE}.losses._functional")
    functional.__getattr__ = _private
    package.losses, losses._functional = losses, functional
    sys.modules.update({PACKAGE: package, f"{PACKAGE}.losses": losses, f"{PACKAGE}.losses._functional": functional})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.name.split("[")[0] in FUNCTIONAL_TESTS:
            item.add_marker(pytest.mark.skip(reason="tests smp's private functional API, not a loss class"))
