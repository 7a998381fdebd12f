"""Which pixels a metric counts, and keeping the values of the others out of every computation.

Padded volumes and out-of-view regions carry NaN or inf at pixels that ``mask=`` or ``ignore_index``
leave out. Multiplying such a value by a zero weight gives NaN again, so the metrics *select* instead:
before activation and any check, the excluded values are replaced by 0 (``torch.where``, no arithmetic
on them). The result then equals the metric computed on the kept pixels alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from softseg._checks import TargetKind, check_ignore_index, check_input, check_mask, not_ignored, target_kind
from softseg.activation import activate


def counted_entries(
    input: Tensor, target: Tensor, kind: TargetKind, *, ignore_index: int | None, mask: Tensor | None
) -> Tensor | None:
    """Bool (B, 1, \\*spatial) or (B, C, \\*spatial) of counted entries; None when every pixel counts.

    ``mask`` is the checked mask with a channel dimension (:func:`softseg._checks.check_mask`);
    ``ignore_index`` applies to index targets ((B, \\*spatial) or (B, 1, \\*spatial)).
    """
    counted = mask
    if ignore_index is not None and kind == "index":
        labels = target if target.ndim == input.ndim else target.unsqueeze(1)
        kept = not_ignored(labels, ignore_index)
        counted = kept if counted is None else counted & kept
    return counted


def clear_excluded(
    input: Tensor, target: Tensor, kind: TargetKind, counted: Tensor | None, *, activation: str
) -> tuple[Tensor, Tensor]:
    """``input`` and a dense ``target`` with 0 wherever nothing counts, selected (never multiplied).

    Softmax mixes the classes of a pixel, so its logits are replaced only where no class of the pixel
    counts (a per-class mask keeps a partly counted pixel whole); sigmoid and probabilities are replaced
    entry by entry. Index targets need nothing: their labels at excluded pixels are never read.
    """
    if counted is None:
        return input, target
    keep = counted.any(1, keepdim=True) if activation == "softmax" else counted
    input = torch.where(keep, input, torch.zeros((), dtype=input.dtype, device=input.device))
    if kind == "dense":
        target = torch.where(counted, target, torch.zeros((), dtype=target.dtype, device=target.device))
    return input, target


class CountedInput(NamedTuple):
    """A metric's inputs after the exclusion step: see :func:`activate_counted`."""

    probs: Tensor
    target: Tensor
    kind: TargetKind
    counted: Tensor | None
    mask: Tensor | None


def activate_counted(
    input: object, target: object, *, activation: str, ignore_index: object, mask: object
) -> CountedInput:
    """Check ``input``, ``target``, ``ignore_index`` and ``mask``, clear the excluded values, then activate.

    Returns the probabilities, the target (dense values cleared where excluded), its kind, the counted
    entries (:func:`counted_entries`) and the checked mask (with a channel dimension). The range check of
    ``activation="none"`` runs after the clearing, so it reads counted pixels only.
    """
    input = check_input(input)
    kind = target_kind(input, target)
    check_ignore_index(ignore_index)
    if ignore_index is not None and kind == "dense":
        raise ValueError("ignore_index applies to index targets only; pass mask= to leave pixels out of a dense target")
    mask = None if mask is None else check_mask(mask, input)
    counted = counted_entries(input, target, kind, ignore_index=ignore_index, mask=mask)
    input, target = clear_excluded(input, target, kind, counted, activation=activation)
    return CountedInput(activate(input, activation), target, kind, counted, mask)
