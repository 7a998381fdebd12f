"""Import the peers' loss modules for the comparison tests, or skip with the reason.

segmentation_models_pytorch's top-level package imports torchvision and timm (its models); its ``losses``
subpackage needs neither. When the top-level package cannot be imported, a stub package object with the
installed package's ``__path__`` stands in for it, so ``segmentation_models_pytorch.losses`` loads alone.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types

import pytest

SMP = "segmentation_models_pytorch"


def smp_losses() -> types.ModuleType:
    """segmentation_models_pytorch.losses (smp 0.6), or pytest.skip when smp is not installed."""
    if SMP not in sys.modules:
        spec = importlib.util.find_spec(SMP)
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"{SMP} is not installed (pip install --no-deps 'segmentation-models-pytorch==0.6.0')")
        stub = types.ModuleType(SMP)
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules[SMP] = stub
    losses = importlib.import_module(f"{SMP}.losses")
    version = importlib.metadata.version("segmentation-models-pytorch")
    if not version.startswith("0.6."):
        pytest.skip(f"the comparison is written for smp 0.6; {version} is installed")
    return losses
