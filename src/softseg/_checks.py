"""Argument validation shared by every public entry point.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value)
with a message that names the argument, what was seen and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal

import torch
from torch import Tensor

TargetKind = Literal["index", "dense"]

ACTIVATIONS = ("softmax", "sigmoid", "none")
REDUCTIONS = ("mean", "sum", "none")
ACTIVE_CLASSES = ("all", "present")


def _compiling() -> bool:
    # Reading a value back would graph-break under torch.compile: there the range checks run on the device.
    return torch.compiler.is_compiling()


_VALUE_CHECKS = True  # see set_value_checks


class set_value_checks:
    r"""Turn the value checks (label range, [0, 1] targets, finite weights) on or off; also a ``with`` block.

    These checks read a tensor's minimum and maximum back to the host: on a GPU each one is a sync that
    waits for all queued work (the network's forward pass too), so the host cannot run ahead while the
    GPU computes. With the checks off a training step has no sync in softseg. Shape, dtype and option
    checks always run. Same idea as ``torch.distributions.Distribution.set_default_validate_args``.

    .. math::

        	ext{checked} = \{\, y \in [0, C) 	ext{ (labels)},\ y \in [0, 1] 	ext{ (targets)},        w \ge 0 	ext{ finite (weights)} \,\}

    Convention:
        - ``enabled``: a bool; on by default, process-wide (not per thread), like torch's own switches.
        - As a call it stays in force; as ``with set_value_checks(False):`` the previous state returns
          on exit. Under ``torch.compile`` the label and target range checks run on the device, inside the
          compiled graph (``torch._assert_async``: a ``RuntimeError`` without the offending value, no host
          sync); the class weights are not checked there.
        - With the checks off, bad values are not caught: an out-of-range label counts for no class in
          the fused kernels and may raise a device-side error elsewhere (as ``F.cross_entropy`` does).

    Example:
        >>> import softseg
        >>> labels = torch.tensor([[0, 3]])                   # class 3 with 2 channels: out of range
        >>> logits = torch.zeros(1, 2, 2)
        >>> softseg.dice_loss(logits, labels)
        Traceback (most recent call last):
        ...
        ValueError: target holds class index 3; expected indices in [0, 1]
        >>> with softseg.set_value_checks(False):             # no check, no host sync
        ...     loss = softseg.dice_loss(logits, torch.tensor([[0, 1]]))
        >>> softseg.value_checks_enabled()
        True
    """

    def __init__(self, enabled: bool) -> None:
        global _VALUE_CHECKS
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool; got {type(enabled).__name__}")
        self.previous = _VALUE_CHECKS
        self.enabled = enabled
        _VALUE_CHECKS = enabled

    def __repr__(self) -> str:
        return f"set_value_checks({self.enabled})"

    def __enter__(self) -> set_value_checks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _VALUE_CHECKS
        _VALUE_CHECKS = self.previous


def value_checks_enabled() -> bool:
    """Whether the value checks run (:class:`set_value_checks`).

    Convention:
        Returns the process-wide switch (read when ``torch.compile`` traces: switching it recompiles).

    Example:
        >>> value_checks_enabled()
        True
    """
    return _VALUE_CHECKS


def _skip_value_checks() -> bool:
    return not _VALUE_CHECKS or _compiling()


COMPILED_CHECK_NOTE = (
    "(checked on the device under torch.compile: run the step eagerly to see the offending value, or turn the "
    "checks off with softseg.set_value_checks(False))"
)


def _assert_on_device(condition: Tensor, message: str) -> None:
    # Under torch.compile with the checks on: an assertion the compiled graph evaluates where the data is (no
    # host sync, no graph break; on CUDA a device-side assert, as torch's own index checks). A RuntimeError.
    if _VALUE_CHECKS:
        torch._assert_async(condition, f"{message} {COMPILED_CHECK_NOTE}")


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def check_number(
    name: str, value: object, *, minimum: float | None = None, strict: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        bound = ">" if strict else ">="
        raise ValueError(f"{name} must be {bound} {minimum}; got {value}")
    return value


def check_ignore_index(ignore_index: object) -> int | None:
    """``ignore_index`` is None or an int (a bool is not a label); returns it."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None; got {type(ignore_index).__name__}")
    return ignore_index


def check_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def check_input(input: object) -> Tensor:
    """``input``: float (B, C, *spatial) with at least one spatial dimension."""
    input = check_tensor("input", input)
    if not input.is_floating_point():
        raise TypeError(f"input must hold floating-point logits or probabilities; got dtype {input.dtype}")
    if input.ndim < 3:
        raise ValueError(
            f"input must have shape (B, C, *spatial) with at least one spatial dimension; "
            f"got shape {tuple(input.shape)}"
        )
    return input


def target_kind(input: Tensor, target: object) -> TargetKind:
    """Decide whether ``target`` holds class indices or class probabilities, and validate its shape.

    Index targets: an integer dtype, shape (B, *spatial) or (B, 1, *spatial).
    Dense targets: a float dtype, shape (B, C, *spatial) equal to the input's.
    """
    target = check_tensor("target", target)
    shape, tshape = tuple(input.shape), tuple(target.shape)
    index_shapes = (shape[:1] + shape[2:], shape[:1] + (1,) + shape[2:])
    integral = not target.is_floating_point() and not target.is_complex() and target.dtype != torch.bool
    expected = (
        f"expected class indices of an integer dtype with shape {index_shapes[0]} or {index_shapes[1]}, "
        f"or class probabilities of a float dtype with shape {shape}"
    )
    if integral and tshape in index_shapes:
        return "index"
    if target.is_floating_point() and tshape == shape:
        return "dense"
    if target.is_floating_point() and tshape in index_shapes:
        raise TypeError(
            f"target has the shape of class indices {tshape} but dtype {target.dtype}; {expected}. "
            "Float labels are not truncated: convert them with .long() if they are indices"
        )
    if (integral or target.dtype == torch.bool) and tshape == shape:
        raise TypeError(
            f"target has the shape of class probabilities {tshape} but dtype {target.dtype}; {expected}. "
            "Convert a one-hot target with .float()"
        )
    raise ValueError(f"target of shape {tshape} and dtype {target.dtype} does not fit input of shape {shape}; {expected}")


def check_unit_interval(name: str, value: Tensor) -> None:
    """Values must lie in [0, 1] (on the device under torch.compile; skipped with set_value_checks(False))."""
    if _compiling() and value.numel() > 0:
        _assert_on_device(((value >= 0) & (value <= 1)).all(), f"{name} must hold values in [0, 1]")
    if _skip_value_checks() or value.numel() == 0:
        return
    low, high = torch.stack(torch.aminmax(value.detach())).tolist()  # one device-to-host copy
    check_unit_interval_bounds(name, low, high)


def check_unit_interval_bounds(name: str, low: float, high: float) -> None:
    """The verdict of :func:`check_unit_interval` on a tensor's smallest and largest value (NaN: either)."""
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{name} must hold values in [0, 1]; found NaN")
    if low < 0 or high > 1:
        raise ValueError(f"{name} must hold values in [0, 1]; found values in [{low:.4g}, {high:.4g}]")


def check_labels(labels: Tensor, num_classes: int, valid: Tensor | None, ignore_index: int | None) -> None:
    """Index labels must lie in [0, num_classes) wherever they count (skipped as check_unit_interval)."""
    if _compiling() and labels.numel() > 0:
        in_range = (labels >= 0) & (labels < num_classes)
        _assert_on_device((in_range if valid is None else in_range | ~valid).all(),
                          f"target holds a class index outside [0, {num_classes - 1}]")
    if _skip_value_checks() or labels.numel() == 0:
        return
    counted = labels if valid is None else labels[valid]
    if counted.numel() == 0:
        return
    low, high = int(counted.min()), int(counted.max())
    if low < 0 or high >= num_classes:
        ignore = f" (ignore_index={ignore_index} is excluded)" if ignore_index is not None else ""
        raise ValueError(
            f"target holds class index {low if low < 0 else high}; expected indices in "
            f"[0, {num_classes - 1}]{ignore}"
        )


def check_mask(mask: object, input: Tensor) -> Tensor:
    """``mask``: bool, shape (B, *spatial), (B, 1, *spatial) or (B, C, *spatial); True marks counted pixels.

    Returned with a channel dimension, ready to broadcast against (B, C, *spatial).
    """
    mask = check_tensor("mask", mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = pixel counts); got dtype {mask.dtype}")
    shape = tuple(input.shape)
    spatial = shape[:1] + shape[2:]
    if tuple(mask.shape) == spatial:
        return mask.unsqueeze(1)
    if tuple(mask.shape) in (shape[:1] + (1,) + shape[2:], shape):
        return mask
    raise ValueError(
        f"mask must have shape {spatial}, {shape[:1] + (1,) + shape[2:]} or {shape}; got {tuple(mask.shape)}"
    )


def check_weight(weight: object, num_classes: int | None, *, include_background: bool) -> Tensor | None:
    """Class weights: one non-negative finite number per scored class (length unchecked when num_classes is None)."""
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        tensor = weight
    elif isinstance(weight, Sequence) and not isinstance(weight, str):
        tensor = torch.as_tensor(weight, dtype=torch.float64)
    else:
        raise TypeError(f"weight must be a 1-D tensor or a sequence of numbers; got {type(weight).__name__}")
    if tensor.ndim != 1:
        raise ValueError(f"weight must be 1-D, one value per class; got shape {tuple(tensor.shape)}")
    if num_classes is not None and tensor.shape[0] != num_classes:
        note = " (include_background=False: leave out class 0)" if not include_background else ""
        raise ValueError(f"weight must have one value per scored class, {num_classes}{note}; got {tensor.shape[0]}")
    if not _skip_value_checks() and not _checked_before(tensor):
        if not bool(torch.isfinite(tensor).all()) or bool((tensor < 0).any()):  # one or two syncs on a GPU
            raise ValueError(f"weight must hold finite non-negative values; got {tensor.tolist()}")
        tensor._softseg_checked_version = _version(tensor)
    return tensor


def _version(tensor: Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors keep no version counter: checked at every call
        return None


def _checked_before(tensor: Tensor) -> bool:
    # A weight tensor whose values passed carries its version counter from then: a loss module's weight
    # buffer is checked on its first call on a device, not at every step (each check is a sync on a GPU).
    # Writing into the tensor bumps its version, so changed values are checked again.
    version = _version(tensor)
    return version is not None and getattr(tensor, "_softseg_checked_version", None) == version
