"""Import the peers' loss modules for the comparison tests, or skip with the reason.

segmentation_models_pytorch's top-level package imports torchvision and timm (its models); its ``losses``
subpackage needs neither, and loads alone under a stand-in package (``softseg._peers``).
"""

from __future__ import annotations

import importlib.metadata
import types

import pytest

from softseg._peers import import_without_package_init

SMP = "segmentation_models_pytorch"


def smp_losses() -> types.ModuleType:
    """segmentation_models_pytorch.losses (smp 0.6), or pytest.skip when smp is not installed."""
    try:
        losses = import_without_package_init(SMP, "losses")
    except ModuleNotFoundError:
        pytest.skip(f"{SMP} is not installed (pip install --no-deps 'segmentation-models-pytorch==0.6.0')")
    version = importlib.metadata.version("segmentation-models-pytorch")
    if not version.startswith("0.6."):
        pytest.skip(f"the comparison is written for smp 0.6; {version} is installed")
    return losses
