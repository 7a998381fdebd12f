"""The thin nn.Module shared by the losses: a loss function with its keyword options fixed (kornia style)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from softseg._checks import check_weight


class FunctionalLoss(nn.Module):
    """Calls ``loss_function(input, target, weight=self.weight, mask=mask, **self.options)``.

    Subclasses set ``loss_function`` and validate their options before calling ``__init__``; the class
    weights become a float32 buffer, so they follow ``.to(device)`` and are saved in the state dict.
    """

    loss_function: ClassVar[Callable[..., Tensor]]
    weight: Tensor | None

    def __init__(
        self, options: dict, weight: Tensor | Sequence[float] | None, *, include_background: bool = True
    ) -> None:
        super().__init__()
        self.options = options
        if weight is not None:
            weight = check_weight(weight, None, include_background=include_background).to(torch.float32)
        self.register_buffer("weight", weight)

    def forward(self, input: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return type(self).loss_function(input, target, weight=self.weight, mask=mask, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.options.items())
