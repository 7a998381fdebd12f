"""Turning logits into probabilities, explicitly: softmax, sigmoid or none."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from softseg._checks import ACTIVATIONS, check_choice, check_input, check_unit_interval

Activation = Literal["softmax", "sigmoid", "none"]


def activate(input: Tensor, activation: Activation) -> Tensor:
    r"""Apply the activation named by ``activation`` over the class dimension of (B, C, \*spatial) ``input``.

    - ``"softmax"``: mutually exclusive classes; needs C >= 2 (a single channel would be constant 1).
    - ``"sigmoid"``: independent classes (multi-label), or binary with one channel.
    - ``"none"``: ``input`` already holds probabilities; values outside [0, 1] are an error.

    Convention:
        - ``input``: (B, C, \*spatial), floating point; the result has the same shape and dtype.
        - Every pixel is activated: ignored pixels are removed later, in the statistics.

    Example:
        >>> import torch
        >>> activate(torch.zeros(1, 2, 3), "softmax")[0, :, 0]
        tensor([0.5000, 0.5000])
    """
    input = check_input(input)
    check_choice("activation", activation, ACTIVATIONS)
    if activation == "softmax":
        if input.shape[1] < 2:
            raise ValueError(
                f"activation='softmax' needs at least 2 channels; input has shape {tuple(input.shape)}. "
                "Use activation='sigmoid' for binary segmentation with one channel"
            )
        return input.softmax(1)
    if activation == "sigmoid":
        return input.sigmoid()
    check_unit_interval("input (activation='none' expects probabilities)", input)
    return input
