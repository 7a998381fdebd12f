"""Argument checks and NaN-safe helpers shared by the MONAI and smp compatibility layers.

The peers take their options loosely (``bool(flag)``, ``int(label)``, ``torch.as_tensor(weights)``); the
compatibility layers accept what the peers accept for well-formed input and refuse, with a message that
names the argument and the entry, what the peers would silently reinterpret.
"""

from __future__ import annotations

import dis
import numbers
import sys
from collections.abc import Sequence
from types import FrameType

import torch
from torch import Tensor

from softseg._checks import _describe, check_device


class ShapeMismatchError(ValueError, AssertionError):
    """Input and target (or mask) do not fit together.

    A ValueError, as everywhere in softseg, and an AssertionError, which the peers raise for the same
    inputs (MONAI's ``ground truth has different shape``, smp's ``assert``), so code and tests written
    against either catch it.

    Example:
        >>> issubclass(ShapeMismatchError, ValueError) and issubclass(ShapeMismatchError, AssertionError)
        True
    """


def check_flag(name: str, value: object) -> bool:
    """A boolean option: ``True``/``False`` (or a numpy bool); a string such as ``'False'`` is refused.

    Example:
        >>> check_flag("sigmoid", True)
        True
        >>> check_flag("sigmoid", "False")
        Traceback (most recent call last):
        ...
        TypeError: sigmoid must be a bool (True or False); got str 'False'
    """
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_" and type(value).__module__ == "numpy":
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False); got {_describe(value)}")


def _entries(name: str, values: object, what: str) -> list[object]:
    if isinstance(values, Tensor):
        if values.ndim > 1:
            raise ValueError(f"{name} must be 1-D, {what}; got a tensor of shape {tuple(values.shape)}")
        if values.device.type == "meta":
            raise ValueError(f"{name} must hold values; got a tensor on the meta device")
        return values.reshape(-1).tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence, {what}; got {type(values).__name__}")
    return list(values)


def check_index_list(name: str, values: object) -> list[int]:
    """A sequence of class indices, checked entry by entry: ints only (no float, bool or string).

    Example:
        >>> check_index_list("classes", [0, 2])
        [0, 2]
        >>> check_index_list("classes", [1.7])
        Traceback (most recent call last):
        ...
        TypeError: classes[0] must be an int; got float 1.7
    """
    entries = _entries(name, values, "one class index per entry")
    for position, entry in enumerate(entries):
        if isinstance(entry, bool) or not isinstance(entry, numbers.Integral):
            raise TypeError(f"{name}[{position}] must be an int; got {_describe(entry)}")
    return [int(entry) for entry in entries]


def class_weights_on(name: str, weight: Tensor, input: Tensor, *, given_as_tensor: bool) -> Tensor:
    """Class weights on the input's device and accumulation dtype.

    Weights the user passed as a tensor must already be there (:func:`check_device`: move the loss module
    with ``.to(device)``); weights given as numbers were built by the layer and follow the input, as the
    peers move them at every call.
    """
    if given_as_tensor:
        check_device(name, weight, input.device)
    return weight.to(device=input.device)


def exclude(tensor: Tensor, excluded: Tensor | None) -> Tensor:
    """``tensor`` with 0 where ``excluded`` (broadcast) is True: selected out, not multiplied by 0.

    A NaN or inf at an excluded position leaves no trace in the value nor in the gradient (the gradient
    there is 0), which ``tensor * keep`` cannot promise (0 * inf is NaN).

    Example:
        >>> exclude(torch.tensor([float("nan"), 2.0]), torch.tensor([True, False]))
        tensor([0., 2.])
    """
    if excluded is None:
        return tensor
    return torch.where(excluded, torch.zeros((), dtype=tensor.dtype, device=tensor.device), tensor)


def missing_peer_class(module: str, name: str, reasons: dict[str, str], peer: str) -> Exception:
    """The error for a peer class that the compatibility layer does not mirror (for a module ``__getattr__``).

    For the names in ``reasons``, a message that says why the class is not here and where to import it from:
    an ImportError when ``module.__getattr__`` was called by a ``from module import Name`` (an AttributeError
    there would be replaced by Python's bare "cannot import name"), an AttributeError otherwise, as PEP 562
    asks, so that ``hasattr`` is False and ``getattr(module, name, default)`` gives the default. The usual
    AttributeError for any other name.

    Example:
        >>> missing_peer_class("softseg.compat.smp", "LovaszLoss", {"LovaszLoss": "a hinge loss"}, "smp.losses")
        AttributeError('softseg.compat.smp has no LovaszLoss: a hinge loss, outside the soft-label family that softseg covers. Import it from the original library: from smp.losses import LovaszLoss')
    """
    if name not in reasons:
        return AttributeError(f"module {module!r} has no attribute {name!r}")
    message = (
        f"{module} has no {name}: {reasons[name]}, outside the soft-label family that softseg covers. "
        f"Import it from the original library: from {peer} import {name}"
    )
    if _importing_from(sys._getframe(2)):  # (0: here, 1: the module's __getattr__, 2: its caller)
        return ImportError(message, name=module)
    return AttributeError(message)


def _importing_from(frame: FrameType | None) -> bool:
    """Whether ``frame`` is running a ``from ... import`` (its current instruction is IMPORT_FROM)."""
    return frame is not None and frame.f_code.co_code[frame.f_lasti] == dis.opmap["IMPORT_FROM"]


def mean_or_zero(tensor: Tensor) -> Tensor:
    """The mean of every entry, 0 (with a zero gradient) for an empty tensor (an empty batch, B = 0).

    Example:
        >>> mean_or_zero(torch.zeros(0, 3))
        tensor(0.)
    """
    return tensor.mean() if tensor.numel() else tensor.sum()
