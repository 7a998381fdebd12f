"""The thin nn.Module shared by the losses: a loss function with its keyword options fixed (kornia style).

The signature pattern of every public loss: the function and the module's ``__init__`` list every option
as a keyword-only parameter with its default and type (no ``**options``), so ``help``, IDEs and type
checkers show them. A specialised loss (Dice from Tversky) repeats the options it keeps and forwards them
with ``**locals()`` (functions) or ``**init_options(locals())`` (modules); the options it fixes go into
``fixed_options`` (modules) or :func:`softseg._checks.explain_unexpected_keywords` (functions), so that
``DiceLoss(alpha=0.3)`` says why and ``DiceLoss(smoth=1)`` blames ``DiceLoss`` and suggests ``smooth``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from softseg._checks import check_weight, explain_unexpected_keywords


def init_options(local_variables: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of an ``__init__`` from its ``locals()``, taken first thing in the body.

    Convention:
        ``local_variables``: ``locals()`` at the top of ``__init__``; ``self`` and the ``__class__`` cell
        that ``super()`` adds are dropped. Returns a new dict.

    Example:
        >>> class Loss:
        ...     def __init__(self, *, smooth=0.0, gamma=1.0):
        ...         self.options = init_options(locals())
        >>> Loss(gamma=2.0).options
        {'smooth': 0.0, 'gamma': 2.0}
    """
    return {name: value for name, value in local_variables.items() if name not in ("self", "__class__")}


class FunctionalLoss(nn.Module):
    """Calls ``loss_function(input, target, weight=self.weight, mask=mask, **self.options)``.

    Subclasses set ``loss_function`` and validate their options before calling ``__init__``; the class
    weights become a float32 buffer, so they follow ``.to(device)`` and are saved in the state dict (and
    are checked again at every call: :func:`softseg._checks.check_weight_values`). Every subclass's
    ``__init__`` is wrapped by :func:`softseg._checks.explain_unexpected_keywords` with its
    ``fixed_options``: a wrong keyword names the class and the closest option.
    """

    loss_function: ClassVar[Callable[..., Tensor]]
    #: Options a subclass fixes, each with the sentence that says so when one is passed anyway.
    fixed_options: ClassVar[dict[str, str]] = {}
    weight: Tensor | None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = explain_unexpected_keywords(cls.fixed_options)(cls.__init__)  # type: ignore[method-assign]

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
