"""Validation and small helpers shared by the label-making functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from softseg._checks import check_labels, check_number, check_tensor, not_ignored


def is_integer_dtype(tensor: Tensor) -> bool:
    return not tensor.is_floating_point() and not tensor.is_complex() and tensor.dtype != torch.bool


def check_num_classes(num_classes: object, *, minimum: int = 2) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"num_classes must be an int; got {type(num_classes).__name__}")
    if num_classes < minimum:
        raise ValueError(f"num_classes must be >= {minimum}; got {num_classes}")
    return num_classes



def check_index_map(
    name: str, labels: object, num_classes: int, *, ignore_index: int | None = None, min_ndim: int = 2
) -> tuple[Tensor, Tensor | None]:
    """An integer label map with values in [0, num_classes) (or ``ignore_index``).

    Returns the labels and the bool mask of counted pixels (None when nothing is ignored).
    """
    labels = check_tensor(name, labels)
    if not is_integer_dtype(labels):
        hint = (
            " Float labels are not truncated: convert them with .long() if they are indices"
            if labels.is_floating_point()
            else ""
        )
        raise TypeError(f"{name} must hold class indices of an integer dtype; got dtype {labels.dtype}.{hint}")
    if labels.ndim < min_ndim:
        expected = "(B, *spatial)" if min_ndim == 2 else "(B, R, *spatial)"
        raise ValueError(
            f"{name} must have shape {expected} with at least one spatial dimension; got shape {tuple(labels.shape)}"
        )
    valid = None if ignore_index is None else not_ignored(labels, ignore_index)
    try:
        check_labels(labels, num_classes, valid, ignore_index)
    except ValueError as error:  # name the argument, not "target"
        raise ValueError(str(error).replace("target holds", f"{name} holds", 1)) from None
    return labels, valid


def one_hot(
    labels: Tensor, num_classes: int, *, valid: Tensor | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(B, *spatial) indices to a (B, C, *spatial) one-hot of ``dtype``; pixels outside ``valid`` are all zero.

    Used only where the result itself is the dense output the caller asked for.
    """
    safe = labels if valid is None else labels.masked_fill(~valid, 0)
    out = torch.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=dtype, device=labels.device)
    out.scatter_(1, safe.unsqueeze(1).long(), 1)
    if valid is not None:
        out = out * valid.unsqueeze(1)
    return out


def check_epsilon(epsilon: object) -> float:
    epsilon = check_number("epsilon", epsilon, minimum=0.0)
    if epsilon > 1:
        raise ValueError(f"epsilon must lie in [0, 1]; got {epsilon}")
    return epsilon


def check_spacing(spacing: object, spatial_dims: int) -> tuple[float, ...]:
    """One positive finite spacing per spatial dimension (None: 1 everywhere, distances in pixels)."""
    if spacing is None:
        return (1.0,) * spatial_dims
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        spacing = (spacing,) * spatial_dims
    if not isinstance(spacing, Sequence) or isinstance(spacing, str):
        raise TypeError(
            f"spacing must be a number or a sequence of {spatial_dims} numbers; got {type(spacing).__name__}"
        )
    if len(spacing) != spatial_dims:
        raise ValueError(
            f"spacing must have one value per spatial dimension ({spatial_dims}); got {len(spacing)}: {tuple(spacing)}"
        )
    return tuple(check_number(f"spacing[{i}]", s, minimum=0.0, strict=True) for i, s in enumerate(spacing))
