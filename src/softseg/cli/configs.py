"""Named loss configurations for ``softseg compare``: a registry that users can extend.

A configuration names a loss and the target it trains on: ``"soft"`` (the averaged raters, class
probabilities (B, C, H, W)) or ``"hard"`` (the majority vote, class indices (B, H, W)). Add your own with
:func:`register_loss_configuration` (Python) or ``softseg compare --import my_module`` where
``my_module`` calls it at import time; then select it with ``--losses``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

import softseg
from softseg.aggregation import aggregate
from softseg.losses.compound import DiceCELoss, RegionCELoss
from softseg.losses.recipes import ce_warmup_recipe, l2_to_l1_recipe
from softseg.scores import tversky_index
from softseg.statistics import product_statistics

LossFunction = Callable[[Tensor, Tensor], Tensor]
TARGETS = ("soft", "hard")


class LossConfiguration(NamedTuple):
    """A named way to train: ``build()`` returns ``loss(logits, target)``; ``target`` is ``"soft"`` or ``"hard"``.

    Convention:
        - ``name``: the ``--losses`` name; ``build``: zero-argument callable returning ``loss(logits, target)``
          (logits float (B, C, H, W), scalar tensor out); ``target``: ``"soft"`` (float (B, C, H, W) averaged
          raters) or ``"hard"`` (int64 (B, H, W) majority vote); ``description``: one line for the report.
        - A plain ``NamedTuple``: constructing one validates nothing; :func:`register_loss_configuration`
          checks the fields and raises ``ValueError`` / ``TypeError``.

    Example:
        >>> config = LOSS_CONFIGURATIONS["ce"]
        >>> config.target, config.description
        ('hard', 'cross-entropy on the majority vote')
        >>> float(config.build()(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64)))
        0.6931...
    """

    name: str
    build: Callable[[], LossFunction]
    target: str
    description: str


LOSS_CONFIGURATIONS: dict[str, LossConfiguration] = {}
DEFAULT_CONFIGURATIONS = ("ce", "classic-dice", "softseg-dice", "softseg-jaccard-ce")


def register_loss_configuration(
    name: str,
    build: Callable[[], LossFunction],
    *,
    target: str,
    description: str,
    replace: bool = False,
) -> LossConfiguration:
    """Add a configuration that ``softseg compare --losses NAME`` can select.

    ``build()`` is called once per training run and returns ``loss(logits, target)``: logits
    (B, C, H, W) and the target the configuration asks for.

    Convention:
        - Field of view: when the data has one, the loss is called as ``loss(logits, target, mask=fov)``
          with ``fov`` bool (B, H, W), True = the pixel counts; it must then accept ``mask=``
          (:func:`accepts_mask`; softseg's losses do), else ``compare`` stops before training.
        - Schedules: when the built loss has a ``step()`` method it is called after every optimisation
          step; when it has a ``weights`` attribute (a number, a sequence or a mapping of numbers) its value
          is recorded in the run's history at every evaluation (``history[i]["loss_weights"]``).
        - ``name``: non-empty, no commas or spaces (``--losses`` splits on commas); registering an existing
          name raises unless ``replace=True``.
        - ``target``: ``"soft"`` (averaged raters, float (B, C, H, W)) or ``"hard"`` (majority vote,
          int64 (B, H, W)).
        - Staged losses: a ``build`` with a ``total_steps`` parameter gets the run's number of optimisation
          steps (:func:`build_loss`); a loss with a ``step()`` method (:class:`softseg.CompoundLoss`) is
          stepped after every optimisation step, and its ``weights`` go into the history.

    Example:
        >>> from softseg import TverskyLoss
        >>> config = register_loss_configuration(
        ...     "doc-tversky", lambda: TverskyLoss(alpha=0.3, beta=0.7), target="soft",
        ...     description="softseg Tversky (0.3, 0.7) on the averaged raters")
        >>> loss = resolve_configurations("ce,doc-tversky")[1].build()
        >>> float(loss(torch.zeros(1, 2, 4, 4), torch.full((1, 2, 4, 4), 0.5)))
        0.0
        >>> _ = LOSS_CONFIGURATIONS.pop("doc-tversky")
    """
    if not isinstance(name, str) or not name or any(c in name for c in ", \t"):
        raise ValueError(f"name must be a non-empty string without commas or spaces; got {name!r}")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}; got {target!r}")
    if not callable(build):
        raise TypeError(f"build must be callable, returning loss(logits, target); got {type(build).__name__}")
    if name in LOSS_CONFIGURATIONS and not replace:
        raise ValueError(f"a loss configuration named {name!r} exists; pass replace=True to override it")
    config = LossConfiguration(name, build, target, description)
    LOSS_CONFIGURATIONS[name] = config
    return config


def resolve_configurations(names: str | None) -> list[LossConfiguration]:
    """Comma-separated names (None: the defaults) to configurations, in order, without duplicates.

    Convention:
        - ``names``: a string such as ``"ce,softseg-dice"`` (whitespace around names and empty items are
          ignored), or None for :data:`DEFAULT_CONFIGURATIONS`.
        - Returns a list of :class:`LossConfiguration` in the order named.
        - Raises ``ValueError`` when no name is left, a name is not registered (the message lists the
          known ones), or a name appears more than once.

    Example:
        >>> [c.name for c in resolve_configurations(None)]
        ['ce', 'classic-dice', 'softseg-dice', 'softseg-jaccard-ce']
        >>> [c.target for c in resolve_configurations(" soft-ce, ce ,")]
        ['soft', 'hard']
    """
    selected = list(DEFAULT_CONFIGURATIONS) if names is None else [n.strip() for n in names.split(",") if n.strip()]
    if not selected:
        raise ValueError(f"--losses must name at least one configuration; got {names!r}")
    unknown = [n for n in selected if n not in LOSS_CONFIGURATIONS]
    if unknown:
        known = ", ".join(sorted(LOSS_CONFIGURATIONS))
        raise ValueError(f"unknown loss configuration(s) {', '.join(map(repr, unknown))} in --losses; known: {known}")
    duplicates = sorted({n for n in selected if selected.count(n) > 1})
    if duplicates:
        raise ValueError(f"--losses names {', '.join(map(repr, duplicates))} more than once")
    return [LOSS_CONFIGURATIONS[n] for n in selected]


def classic_dice_loss(
    input: Tensor, target: Tensor, *, activation: str = "softmax", mask: Tensor | None = None
) -> Tensor:
    r"""Classic soft Dice 1 - 2<x, y> / (|x| + |y|) per class, mean over classes (global aggregation).

    What MONAI's ``DiceLoss`` and most code compute; on soft targets its minimiser is not the target.
    The score is softseg's :func:`~softseg.scores.tversky_index` (alpha = beta = 1/2) on
    :func:`softseg.statistics.product_statistics`; only the intersection differs from :func:`softseg.dice_loss`.

    Convention:
        - ``input``: logits (B, C, \*spatial) (``activation="softmax"``) or probabilities (``"none"``).
        - ``target``: class probabilities of the input's shape, float in [0, 1].
        - ``mask``: bool (B, \*spatial), True = the pixel counts (a field of view), or None; pixels outside
          leave every sum (prediction and target are zeroed there, which is the same for the product form).
        - Empty classes score 0 loss (no NaN); sums in float32.

    Example:
        >>> half = torch.tensor([[[0.5]]])
        >>> classic_dice_loss(half, half, activation="none")      # not zero at the target
        tensor(0.5000)
        >>> classic_dice_loss(torch.tensor([[[1.0]]]), half, activation="none")
        tensor(0.3333)
    """
    probs = softseg.activate(input, activation)
    if target.shape != probs.shape or not target.is_floating_point():
        raise ValueError(
            f"classic_dice_loss needs class probabilities of shape {tuple(probs.shape)}; "
            f"got {target.dtype} of shape {tuple(target.shape)}"
        )
    if mask is not None:
        if mask.dtype != torch.bool or mask.shape != probs.shape[:1] + probs.shape[2:]:
            raise ValueError(
                f"mask must be bool of shape {tuple(probs.shape[:1] + probs.shape[2:])}; "
                f"got {mask.dtype} of shape {tuple(mask.shape)}"
            )
        probs, target = probs * mask.unsqueeze(1), target * mask.unsqueeze(1)
    stats = product_statistics(probs, target)  # also checks that the target lies in [0, 1]
    return aggregate(stats, lambda s: 1 - tversky_index(s, alpha=0.5, beta=0.5))


def cross_entropy(input: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
    r"""``F.cross_entropy`` (class indices or class probabilities) averaged over the pixels ``mask`` keeps.

    loss = sum_i m_i CE_i / max(sum_i m_i, 1), CE_i = -sum_c y_ic log softmax(x_i)_c.

    Convention:
        - ``input``: logits (B, C, \*spatial); ``target``: int64 (B, \*spatial) or float (B, C, \*spatial);
          ``mask``: bool (B, \*spatial) or None (every pixel: exactly ``F.cross_entropy``).
        - No kept pixel gives 0 (never NaN).

    Example:
        >>> logits = torch.tensor([[[0.0, 2.0]], [[0.0, -2.0]]]).unsqueeze(0)   # (1, 2, 1, 2)
        >>> labels = torch.tensor([[[0, 0]]])
        >>> round(float(cross_entropy(logits, labels, mask=torch.tensor([[[True, False]]]))), 4)
        0.6931
    """
    if mask is None:
        return F.cross_entropy(input, target)
    terms = F.cross_entropy(input, target, reduction="none")
    if mask.dtype != torch.bool or mask.shape != terms.shape:
        raise ValueError(
            f"mask must be bool of shape {tuple(terms.shape)}; got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return (terms * mask).sum() / mask.sum().clamp_min(1)


def accepts_mask(loss: LossFunction) -> bool:
    """Whether ``loss`` takes a ``mask=`` keyword (a field of view), judged from its signature.

    Convention:
        - ``loss``: a function or an ``nn.Module`` (its ``forward`` is inspected). True when the signature
          has a ``mask`` parameter or ``**kwargs``; False when it has neither or cannot be inspected.

    Example:
        >>> accepts_mask(softseg.DiceLoss()), accepts_mask(cross_entropy), accepts_mask(F.cross_entropy)
        (True, True, False)
    """
    function = loss.forward if isinstance(loss, torch.nn.Module) else loss
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "mask" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def build_loss(config: LossConfiguration, *, total_steps: int) -> LossFunction:
    """``config.build()``, told the run's length when it takes ``total_steps`` (staged losses need it).

    Convention:
        - ``build`` is called with ``total_steps=`` (the run's number of optimisation steps, int >= 1) when
          its signature has that parameter, else with no argument. A loss with a ``step()`` method (a
          :class:`softseg.CompoundLoss`) is stepped after every optimisation step by the trainer, and its
          ``weights`` are recorded in the history.

    Example:
        >>> loss = build_loss(LOSS_CONFIGURATIONS["ce-to-softseg-dice"], total_steps=100)
        >>> loss.weights_at(0), loss.weights_at(100)
        ({'ce': 1.0, 'region': 0.0}, {'ce': 0.0, 'region': 1.0})
    """
    try:
        staged = "total_steps" in inspect.signature(config.build).parameters
    except (TypeError, ValueError):  # a builtin or a class without an inspectable signature
        staged = False
    return config.build(total_steps=total_steps) if staged else config.build()


def _cross_entropy() -> LossFunction:
    return cross_entropy  # index targets (majority vote) or class probabilities (averaged raters)


def _ce_to_dice(total_steps: int = 1000) -> LossFunction:
    # Cross-entropy for the first quarter, handed over to softseg's Dice over the middle half (cosine).
    return ce_warmup_recipe(steps=max(total_steps // 2, 1), begin=total_steps // 4)


def _l2_to_l1_dice(total_steps: int = 1000) -> LossFunction:
    # The L2 Dice for the first quarter, handed over to the L1 Dice over the middle half (cosine).
    return l2_to_l1_recipe(steps=max(total_steps // 2, 1), begin=total_steps // 4)


def _jaccard_ce() -> LossFunction:
    return RegionCELoss(region="jaccard")  # Jaccard + CE from one pass over the logits; CE takes soft targets


for _name, _build, _target, _description in (
    ("ce", _cross_entropy, "hard", "cross-entropy on the majority vote"),
    ("classic-dice", lambda: classic_dice_loss, "soft", "classic soft Dice (product form) on the averaged raters"),
    ("softseg-dice", softseg.DiceLoss, "soft", "softseg Dice on the averaged raters"),
    ("softseg-jaccard-ce", _jaccard_ce, "soft", "softseg Jaccard + cross-entropy on the averaged raters"),
    ("soft-ce", _cross_entropy, "soft", "cross-entropy on the averaged raters"),
    ("softseg-dice-ce", DiceCELoss, "soft", "softseg Dice + cross-entropy on the averaged raters"),
    ("dice-majority", softseg.DiceLoss, "hard", "softseg Dice on the majority vote"),
    ("ce-to-softseg-dice", _ce_to_dice, "soft", "cross-entropy handed over to softseg Dice (staged), averaged raters"),
    ("l2-to-l1-dice", _l2_to_l1_dice, "soft", "softseg Dice, L2 form handed over to L1 (staged), averaged raters"),
):
    register_loss_configuration(_name, _build, target=_target, description=_description)
