"""Load one subpackage of a peer library without running its package's ``__init__``.

segmentation_models_pytorch's top level imports torchvision and timm for its models; its ``losses``
subpackage needs neither. Where torchvision does not load beside the installed torch (a CPU build of a
newer torch), importing ``segmentation_models_pytorch.losses`` the usual way fails although the losses
would run. The benchmark and the comparison tests load such a subpackage under a stand-in package module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_without_package_init(package: str, submodule: str) -> types.ModuleType:
    """Import ``package.submodule`` with a bare stand-in for ``package`` (its ``__init__`` is not run).

    Convention:
        - ``package``: an installed top-level package name; ``submodule``: a dotted name inside it.
        - If ``package`` is already imported, it is used as it is. Otherwise a module object with the
          installed package's ``__path__`` and spec is placed in ``sys.modules[package]`` first, for the
          rest of the process: call this in processes that use the package for nothing else.
        - Raises ``ModuleNotFoundError`` when ``package`` is not installed.

    Example:
        >>> import_without_package_init("json", "decoder").JSONDecoder.__name__
        'JSONDecoder'
    """
    if package not in sys.modules:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"No module named {package!r} (or it is not a package)", name=package)
        stand_in = types.ModuleType(package)
        stand_in.__path__ = list(spec.submodule_search_locations)
        stand_in.__spec__ = spec
        sys.modules[package] = stand_in
    return importlib.import_module(f"{package}.{submodule}")


__all__ = ["import_without_package_init"]
