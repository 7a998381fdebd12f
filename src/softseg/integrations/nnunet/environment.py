r"""What the nnU-Net integration needs from its environment, checked with messages that say how to fix it.

- nnU-Net v2 2.8.x (the ``nnunet`` extra): 2.8 added external trainers (``nnUNet_extTrainer``), and the
  trainers override its private ``_build_loss``. Checked from the package metadata, without importing it.
- a torchvision that imports: nnU-Net's trainer lookup imports every trainer module nnU-Net ships, one of
  which imports timm, which imports torchvision; a torchvision built for another torch fails there.
- the folder to put on ``nnUNet_extTrainer`` (inside this package, so it needs nothing installed).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import warnings
from pathlib import Path

#: The nnU-Net versions the trainers are written against: [2.8, 2.9).
SUPPORTED = ((2, 8), (2, 9))
INSTALL_HINT = "pip install 'softseg[nnunet]'"


def ext_trainer_path() -> str:
    """The folder that re-exports softseg's trainers for nnU-Net's ``nnUNet_extTrainer`` lookup.

    path = <site-packages>/softseg/integrations/nnunet/ext

    Convention:
        - No inputs; returns an absolute path (str) of an existing folder. Needs neither nnU-Net nor torch
          to be importable; nothing is imported.

    Example:
        >>> import os
        >>> path = ext_trainer_path()
        >>> os.path.isfile(os.path.join(path, "softseg_nnunet_trainers.py"))
        True
    """
    return str(Path(__file__).resolve().parent / "ext")


def check_nnunet() -> str:
    """The installed nnunetv2 version, or ``ImportError`` saying what to install.

    Accepted: 2.8 <= version < 2.9 silently; a later version with a ``UserWarning`` (the overridden private
    methods may have changed).

    Convention:
        - No inputs; reads the installed package's metadata only (nnU-Net is not imported).
        - ``ImportError`` when nnunetv2 is missing (names the ``nnunet`` extra) or older than 2.8 (names the
          version found and why 2.8 is needed).

    Example:
        >>> try:
        ...     version = check_nnunet()
        ... except ImportError as error:
        ...     message = str(error)
        ...     assert "softseg[nnunet]" in message
    """
    try:
        version = importlib.metadata.version("nnunetv2")
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(
            f"softseg's nnU-Net trainers need nnU-Net v2 (the nnunetv2 package), which is not installed: {INSTALL_HINT}"
        ) from None
    release = _release(version)
    if release < SUPPORTED[0]:
        raise ImportError(
            f"softseg's nnU-Net trainers need nnunetv2 >= 2.8 (the first with external trainers through "
            f"nnUNet_extTrainer, and the _build_loss they override); found nnunetv2 {version}: {INSTALL_HINT}"
        )
    if release >= SUPPORTED[1]:
        warnings.warn(
            f"softseg's nnU-Net trainers are written against nnunetv2 2.8 (they override its private _build_loss); "
            f"found {version}, which they have not been tested with",
            UserWarning,
            stacklevel=2,
        )
    return version


def check_torchvision() -> None:
    """``ImportError`` with a fix when torchvision does not import (nnU-Net's trainer lookup needs it).

    Convention:
        - No inputs; imports torchvision (a no-op when it already is). Any exception raised by that import
          (a missing package, or ``RuntimeError: operator torchvision::nms does not exist`` for a build
          that does not match torch) becomes an ``ImportError`` naming torch's version and the fix.

    Example:
        >>> try:
        ...     check_torchvision()
        ... except ImportError as error:
        ...     assert "torchvision" in str(error)
    """
    try:
        importlib.import_module("torchvision")
    except Exception as error:  # noqa: BLE001  (a mismatched build raises RuntimeError, not ImportError)
        import torch

        raise ImportError(
            f"torchvision does not import ({type(error).__name__}: {error}). nnU-Net's trainer lookup imports "
            f"every trainer it ships, one of which imports timm, which needs a torchvision built for the installed "
            f"torch {torch.__version__}. Install a matching pair, e.g. on a CPU-only machine "
            "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu "
            "(or the CUDA builds from PyPI, which also run on the CPU)"
        ) from error


def _release(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ImportError(f"cannot read the installed nnunetv2 version {version!r}; expected 2.8.x: {INSTALL_HINT}")
    return int(match.group(1)), int(match.group(2))
