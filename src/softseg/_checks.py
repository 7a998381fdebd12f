"""Argument validation shared by every public entry point.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right kind, wrong value)
with a message that names the argument, what was seen and what was expected.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal, TypeVar

import torch
from torch import Tensor

TargetKind = Literal["index", "dense"]
Reduction = Literal["mean", "sum", "none"]
ActiveClasses = Literal["all", "present"]

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

        \text{checked} = \{\, y \in [0, C) \text{ (labels)},\ y \in [0, 1] \text{ (targets)},\ w \ge 0 \text{ finite (weights)} \,\}

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


F = TypeVar("F", bound=Callable)


def explain_unexpected_keywords(fixed: Mapping[str, str] | None = None) -> Callable[[F], F]:
    """Decorator: a keyword the callable does not take is a ``TypeError`` that names it and helps.

    The message names the callable (a class for its ``__init__``) and adds the closest option
    (``DiceLoss(smoth=1)``: did you mean 'smooth'?) or, for a keyword in ``fixed``, its explanation. The
    check runs only when the call fails, so a working call costs one frame.

    Convention:
        - ``fixed``: {keyword: why the callable does not take it}, e.g. options a specialised loss fixes.
        - Wraps with ``functools.wraps``: ``inspect.signature`` and ``help`` show the callable's own signature.

    Example:
        >>> @explain_unexpected_keywords()
        ... def loss(input, *, smooth=0.0, gamma=1.0):
        ...     return input
        >>> loss(1, smoth=2)
        Traceback (most recent call last):
        ...
        TypeError: loss() got an unexpected keyword argument 'smoth'; did you mean 'smooth'?
    """
    fixed = dict(fixed or {})

    def decorate(function: F) -> F:
        parameters = inspect.signature(function).parameters
        keywords = [name for name, p in parameters.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
        options = [name for name, p in parameters.items() if p.kind == p.KEYWORD_ONLY]
        if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return function  # takes any keyword: nothing is unexpected
        owner = function.__qualname__.removesuffix(".__init__")

        @functools.wraps(function)
        def call(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except TypeError:
                unknown = [name for name in kwargs if name not in keywords]
                if not unknown:
                    raise
            name = unknown[0]
            close = difflib.get_close_matches(name, [k for k in keywords if k != "self"], n=1)
            hint = fixed.get(name) or (f"did you mean {close[0]!r}?" if close else f"its options: {', '.join(options)}")
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}; {hint}")

        return call  # type: ignore[return-value]

    return decorate


def check_choice(name: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def _describe(value: object) -> str:
    """A value's type and a short repr, for messages (a long repr is cut)."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def check_number(
    name: str,
    value: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    strict: bool = False,
) -> float:
    """A finite real number (numpy scalars too, never a bool) in the given bounds; returns it as a float.

    Convention:
        - ``minimum`` and ``maximum`` are inclusive, None for open; ``strict`` makes ``minimum`` exclusive.
        - Not a real number: ``TypeError``; NaN, an infinity or out of bounds: ``ValueError``, each naming
          ``name``, the value seen and the bounds.

    Example:
        >>> check_number("alpha", 0.25, minimum=0.0, maximum=1.0)
        0.25
        >>> check_number("alpha", 1.5, minimum=0.0, maximum=1.0)
        Traceback (most recent call last):
        ...
        ValueError: alpha must lie in [0, 1]; got 1.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are real numbers
        raise TypeError(f"{name} must be a real number; got {_describe(value)}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite; got {value}")
    below = minimum is not None and (value <= minimum if strict else value < minimum)
    above = maximum is not None and value > maximum
    if (below or above) and minimum is not None and maximum is not None:
        raise ValueError(f"{name} must lie in {'(' if strict else '['}{minimum:g}, {maximum:g}]; got {value}")
    if below:
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {value}")
    if above:
        raise ValueError(f"{name} must be <= {maximum}; got {value}")
    return value


def check_ignore_index(ignore_index: object) -> int | None:
    """``ignore_index`` is None or an int (a bool is not a label); returns it."""
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None; got {type(ignore_index).__name__}")
    return ignore_index


def not_ignored(labels: Tensor, ignore_index: int) -> Tensor:
    """Bool of ``labels``' shape: True where a label is not ``ignore_index``, compared as numbers.

    ``labels != ignore_index`` casts the int to the labels' dtype first, so uint8 labels equal -100 at 156 and
    int32 labels equal 2**32 at 0: an ``ignore_index`` that no label of the dtype can hold ignores nothing.
    """
    if labels.dtype == torch.bool:
        representable = ignore_index in (0, 1)
    elif labels.dtype.is_floating_point or labels.dtype.is_complex:
        representable = True
    else:
        info = torch.iinfo(labels.dtype)
        representable = info.min <= ignore_index <= info.max
    if representable:
        return labels != ignore_index
    return torch.ones_like(labels, dtype=torch.bool)


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
    A bool target is neither (a TypeError that says how to convert it; the compat layers take bool targets,
    as MONAI and smp do).
    """
    target = check_tensor("target", target)
    check_device("target", target, input.device)
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
    if target.dtype == torch.bool and tshape in index_shapes and tshape != shape:
        raise TypeError(
            f"target is a bool mask of shape {tshape}; {expected}. A bool is not read as a class index: pass "
            "target.long() (or target.view(torch.uint8), without a copy) for the classes 0 and 1"
        )
    if (integral or target.dtype == torch.bool) and tshape == shape:
        raise TypeError(
            f"target has the shape of class probabilities {tshape} but dtype {target.dtype}; {expected}. "
            "Convert a one-hot target with .float()"
        )
    raise ValueError(f"target of shape {tshape} and dtype {target.dtype} does not fit input of shape {shape}; {expected}")


def check_unit_interval(name: str, value: Tensor) -> None:
    """Values must lie in [0, 1] (on the device under torch.compile; skipped with set_value_checks(False))."""
    if value.numel() == 0 or value.device.type == "meta":
        return
    if _compiling():
        _assert_on_device(((value >= 0) & (value <= 1)).all(), f"{name} must hold values in [0, 1]")
    if _skip_value_checks():
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
    if labels.numel() == 0 or labels.device.type == "meta":
        return
    if _compiling():
        in_range = (labels >= 0) & (labels < num_classes)
        _assert_on_device((in_range if valid is None else in_range | ~valid).all(),
                          f"target holds a class index outside [0, {num_classes - 1}]")
    if _skip_value_checks():
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
    check_device("mask", mask, input.device)
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


def check_device(
    name: str, value: Tensor, device: torch.device, *, note: str = "", reference: str = "input"
) -> None:
    """``value`` must be on ``device`` (``reference``'s): nothing is copied between devices behind the user's back.

    Convention:
        A ``ValueError`` naming ``name``, both devices and ``reference`` (the argument ``device`` belongs to).

    Example:
        >>> check_device("target", torch.zeros(1, device="meta"), torch.device("cpu"))
        Traceback (most recent call last):
        ...
        ValueError: target is on device meta but input is on device cpu; expected both on one device (move target with .to('cpu'))
    """
    if value.device != device:
        raise ValueError(
            f"{name} is on device {value.device} but {reference} is on device {device}; expected both on one device "
            f"(move {name}{note} with .to({str(device)!r}))"
        )


def check_number_sequence(
    name: str, value: object, *, minimum: float | None = None, maximum: float | None = None
) -> list[float]:
    """A 1-D sequence of real numbers (list, tuple, 1-D numpy array or tensor), checked entry by entry.

    Convention:
        - An entry that is not a real number (``None``, a string, a bool, a nested list) is a ``TypeError``
          naming ``name[i]``; a NaN, an infinity or a value outside [``minimum``, ``maximum``] (None: open)
          is a ``ValueError`` naming it (:func:`check_number`).
        - numpy arrays, numpy scalars and tensors hold numbers; an array or tensor must be 1-D, a tensor
          must not be on the ``meta`` device (it has no values to check). Returns Python floats.

    Example:
        >>> check_number_sequence("weight", [1, 0.5])
        [1.0, 0.5]
        >>> check_number_sequence("weight", [1, None, 2])
        Traceback (most recent call last):
        ...
        TypeError: weight[1] must be a real number; got NoneType None
    """
    if isinstance(value, (str, bytes, Mapping)):
        raise TypeError(f"{name} must be a sequence of numbers; got {type(value).__name__}")
    if hasattr(value, "__array__") and hasattr(value, "tolist"):  # numpy arrays and tensors
        shape = tuple(getattr(value, "shape", ()))
        if len(shape) != 1:
            raise ValueError(f"{name} must be 1-D; got an array of shape {shape}")
        if isinstance(value, Tensor) and value.device.type == "meta":
            raise ValueError(f"{name} must hold values; got a tensor on the meta device")
        entries = value.tolist()  # numpy scalars become Python numbers (bools stay bools: rejected below)
    elif isinstance(value, Sequence):
        entries = list(value)
    else:
        raise TypeError(f"{name} must be a sequence of numbers; got {type(value).__name__}")
    return [check_number(f"{name}[{i}]", entry, minimum=minimum, maximum=maximum) for i, entry in enumerate(entries)]


def check_weight(
    weight: object, num_classes: int | None, *, include_background: bool, device: torch.device | None = None
) -> Tensor | None:
    """Class weights: one finite number >= 0 per scored class (length unchecked when num_classes is None).

    Convention:
        - A sequence (list, tuple, 1-D numpy array) is checked entry by entry on the host (the error names
          ``weight[i]``) and returned as a float64 CPU tensor. A tensor must be 1-D, of a real dtype, and on
          ``device`` when one is given (the input's: no silent copy between devices).
        - A tensor's values are checked at every call (:func:`check_weight_values`); with
          :class:`set_value_checks` off they are not.

    Example:
        >>> check_weight([1, 2, 0.5], 3, include_background=True)
        tensor([1.0000, 2.0000, 0.5000], dtype=torch.float64)
        >>> check_weight(torch.tensor([1.0, -5.0]), 2, include_background=True)
        Traceback (most recent call last):
        ...
        ValueError: weight[1] must be >= 0.0; got -5.0
    """
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        if weight.dtype == torch.bool or weight.is_complex():
            raise TypeError(f"weight must hold real numbers, one per class; got dtype {weight.dtype}")
        tensor = weight
    elif isinstance(weight, (str, bytes, Mapping)) or not (
        isinstance(weight, Sequence) or (hasattr(weight, "__array__") and hasattr(weight, "tolist"))
    ):
        raise TypeError(f"weight must be a 1-D tensor or a sequence of numbers; got {type(weight).__name__}")
    else:
        # Checked here, on the host, where reading the values costs nothing.
        tensor = torch.tensor(check_number_sequence("weight", weight, minimum=0.0), dtype=torch.float64)
    if tensor.ndim != 1:
        raise ValueError(f"weight must be 1-D, one value per class; got shape {tuple(tensor.shape)}")
    if num_classes is not None and tensor.shape[0] != num_classes:
        note = " (include_background=False: leave out class 0)" if not include_background else ""
        raise ValueError(f"weight must have one value per scored class, {num_classes}{note}; got {tensor.shape[0]}")
    if tensor is weight:
        if device is not None:
            check_device("weight", tensor, device, note=" (or the loss module that holds it)")
        check_weight_values("weight", tensor)
    return tensor


def check_weight_values(name: str, weight: Tensor) -> None:
    """Every entry of a weight tensor finite and >= 0, at every call, without a host sync on an accelerator.

    - CPU: the values are read at every call (a read costs no sync there); a bad entry is a ``ValueError``
      naming ``name[i]``.
    - Accelerators: a host read waits for all queued work, so the values are read once per version of the
      tensor (a clear ``ValueError`` wherever they were set the usual way), and every call adds a
      device-side assertion (``torch._assert_async``, as torch guards its own indices on the GPU): writes
      through ``.data`` or another tensor sharing the storage bump no version counter, and must not slip
      through. A failure there surfaces at the next sync as torch's device-side assertion error.
    - Under ``torch.compile`` only the device-side assertion runs (no graph break); on the ``meta``
      device, and with :class:`set_value_checks` off, nothing runs.

    Convention:
        ``weight``: a tensor of any shape and real dtype; ``name`` the argument the message names.

    Example:
        >>> weight = torch.tensor([1.0, 2.0, 1.0])
        >>> check_weight_values("weight", weight)
        >>> weight.data.copy_(torch.tensor([1.0, -5.0, 1.0]))    # no version bump: checked all the same
        tensor([ 1., -5.,  1.])
        >>> check_weight_values("weight", weight)
        Traceback (most recent call last):
        ...
        ValueError: weight[1] must be >= 0.0; got -5.0
    """
    if not _VALUE_CHECKS or weight.numel() == 0 or weight.device.type == "meta":
        return
    if _compiling():
        _assert_weight_on_device(name, weight)
        return
    if _host_reads_are_free(weight):
        _raise_for_bad_weight(name, weight)
        return
    if not _checked_before(weight):
        _raise_for_bad_weight(name, weight)  # one sync per version of the tensor
        weight._softseg_checked_version = _version(weight)
    _assert_weight_on_device(name, weight)


def _host_reads_are_free(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"


def _raise_for_bad_weight(name: str, weight: Tensor) -> None:
    flat = weight.detach().reshape(-1)
    bad = ~(torch.isfinite(flat) & (flat >= 0))
    if bool(bad.any()):
        index = int(bad.nonzero()[0, 0])
        check_number(f"{name}[{index}]", flat[index].item(), minimum=0.0)


def _assert_weight_on_device(name: str, weight: Tensor) -> None:
    # No host read: the device raises if a value is bad (NaN fails both comparisons).
    ok = ((weight >= 0) & (weight < math.inf)).all()
    torch._assert_async(ok, f"softseg: {name} must hold finite values >= 0 (a write that bypassed the check set one)")


def _version(tensor: Tensor) -> int | None:
    try:
        return tensor._version
    except RuntimeError:  # inference tensors keep no version counter: checked at every call
        return None


def _checked_before(tensor: Tensor) -> bool:
    # A weight whose values passed carries its version counter from then; an in-place write bumps it.
    version = _version(tensor)
    return version is not None and getattr(tensor, "_softseg_checked_version", None) == version
