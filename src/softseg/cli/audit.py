r"""``softseg audit``: check any importable loss for soft-label correctness.

``softseg audit monai.losses.DiceLoss --kwargs '{"softmax": true}' softseg.DiceLoss`` builds each loss
(a class is constructed with its ``--kwargs``; a function gets them as keyword arguments) and calls it as
``loss(input, target)`` on a small random problem: B = 2 images, C classes, S x S pixels, a soft target y
(every pixel a fractional class distribution) and input logits log y (softmax(log y) = y), or the
probabilities y themselves with ``--input probs``. Four checks:

1. at target: the loss at prediction = y (informative: 0 for Dice/Jaccard-like losses, the entropy of y
   for cross-entropy);
2. descent: neither normalised gradient descent started at the target (step sizes 1, 0.1, 0.01 in logit
   space) nor small random moves lower the loss by more than the tolerance: y is its minimiser;
3. hard labels: on a one-hot target, the loss equals softseg's Dice or Jaccard loss under one of the
   aggregations (global, image, class), with or without background, norm 1 or 2 (``--reference auto``:
   "n/a" when none matches; ``--reference dice`` or ``jaccard``: fail when none matches);
4. range: value and gradient finite, value within ``--range``, also with an empty class. By default
   (``auto``) [0, 1] for a loss that matched a Dice or Jaccard form in check 3 (overlap losses are
   bounded by 1), [0, inf) for any other loss: a cross-entropy term, alone or in a compound loss such
   as Dice + CE, is not bounded by 1.

A loss passes when 2, 3 (or n/a) and 4 pass. The exit status is 1 when any loss fails (or raises).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from rich.table import Table
from torch import Tensor

import softseg
from softseg.cli.common import CommandError, make_console, seed_argument

STEP_SIZES = (1.0, 0.1, 0.01)
RANDOM_MOVES = 8


class Problem(NamedTuple):
    """The audit's tensors: soft target (B, C, S, S), a hard one-hot target and its indices, random logits.

    Convention:
        - ``soft``: float (B, C, S, S), every pixel a class distribution (sums to 1 over dim 1).
        - ``hard``: float one-hot (B, C, S, S) of ``hard_index``; ``hard_index``: int64 (B, S, S) class indices.
        - ``logits``: float (B, C, S, S), the random prediction of the hard-label and range checks.
        - A plain ``NamedTuple``: no validation; :func:`make_problem` builds a consistent one (float64, B = 2).

    Example:
        >>> problem = make_problem(classes=2, size=2, seed=0)
        >>> [tuple(t.shape) for t in problem], problem.hard_index.dtype
        ([(2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2), (2, 2, 2, 2)], torch.int64)
    """

    soft: Tensor
    hard: Tensor
    hard_index: Tensor
    logits: Tensor


class Verdict(NamedTuple):
    """One loss's checks: each a (passed: bool | None, text) pair; ``passed`` None means not applicable.

    ``passed`` (property) = no ``error`` and none of ``descent``, ``hard_labels``, ``range`` is False;
    ``at_target`` is informative only and never fails the verdict.

    Convention:
        - ``name``: the row label (loss name, its ``--kwargs`` JSON on a second line when given).
        - ``at_target``, ``descent``, ``hard_labels``, ``range``: ``(bool | None, str)`` pairs.
        - ``error``: ``"<ExceptionType>: <message>"`` when the loss raised (the checks are then
          ``(None, "")``), else None; an error always fails.
        - A plain ``NamedTuple``: no validation, raises nothing.

    Example:
        >>> ok = Verdict("x", (None, "0.5, minimal"), (True, "none"), (None, "n/a"), (True, "[0, 1]"))
        >>> ok.passed, ok._replace(descent=(False, "lowered")).passed, ok._replace(error="ValueError: bad").passed
        (True, False, False)
    """

    name: str
    at_target: tuple[bool | None, str]
    descent: tuple[bool | None, str]
    hard_labels: tuple[bool | None, str]
    range: tuple[bool | None, str]
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and all(
            check[0] is not False for check in (self.descent, self.hard_labels, self.range)
        )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand to ``subparsers``.

    Convention:
        The parser knows the options only; loss names and their ``--kwargs`` are left over by
        ``parse_known_args`` and paired by :func:`parse_loss_specs` (argparse cannot tie an option to the
        positional before it).

    Example:
        >>> sub = argparse.ArgumentParser(prog="softseg").add_subparsers()
        >>> add_parser(sub).parse_known_args(["softseg.DiceLoss", "--kwargs", "{}", "--steps", "3"])[1]
        ['softseg.DiceLoss', '--kwargs', '{}']
    """
    parser = subparsers.add_parser(
        "audit",
        help="check importable losses for soft-label correctness (exit 1 when one fails)",
        usage="softseg audit [options] LOSS [--kwargs JSON] [LOSS [--kwargs JSON] ...]",
        description=(
            "Check losses for soft-label correctness: value at the target, no descent from the target, equality "
            "with softseg's Dice/Jaccard on hard labels, finite values in range. LOSS is a dotted name "
            "(module.Class or module.function); --kwargs JSON after a LOSS passes keyword arguments to it. "
            "The loss is called as loss(input, target) with input (B, C, S, S) logits (or probabilities with "
            "--input probs) and a float target of the same shape (or indices with --hard-target index)."
        ),
        epilog="Example: softseg audit monai.losses.DiceLoss --kwargs '{\"softmax\": true}' softseg.DiceLoss softseg.JaccardLoss",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--input",
        choices=("logits", "probs"),
        default="logits",
        help="what the loss takes as its first argument (default logits)",
    )
    parser.add_argument(
        "--hard-target",
        choices=("onehot", "index"),
        default="onehot",
        help="format of the hard target in check 3: float one-hot (B, C, S, S) or int64 indices (B, 1, S, S) (default onehot)",
    )
    parser.add_argument(
        "--reference",
        choices=("auto", "dice", "jaccard", "none"),
        default="auto",
        help="hard-label reference of check 3 (default auto: n/a when no form matches)",
    )
    parser.add_argument(
        "--range",
        dest="value_range",
        default="auto",
        metavar="LOW,HIGH",
        help="allowed values, e.g. 0,1 (default auto: 0,1 for a loss that matches a Dice or Jaccard form on "
        "hard labels, 0,inf for any other loss, such as cross-entropy or Dice + CE)",
    )
    parser.add_argument("--classes", metavar="N", type=int, default=3, help="number of classes C >= 2 (default 3)")
    parser.add_argument("--size", metavar="N", type=int, default=8, help="image side S >= 2 (default 8)")
    parser.add_argument("--steps", metavar="N", type=int, default=20, help="gradient steps per step size (default 20)")
    parser.add_argument(
        "--tolerance",
        metavar="T",
        type=float,
        default=1e-4,
        help="relative tolerance of the comparisons (default 1e-4)",
    )
    parser.add_argument(
        "--seed", metavar="N", type=seed_argument, default=0, help="seed of the random problem (default 0)"
    )
    parser.add_argument("--quiet", action="store_true", help="print no table; only the exit status tells")
    parser.set_defaults(run=_run, extras=[])
    return parser


def parse_loss_specs(tokens: Sequence[str]) -> list[tuple[str, dict]]:
    """Pair every loss name with the JSON object of the ``--kwargs`` that follows it (``{}`` if none).

    Convention:
        - ``tokens``: the strings ``parse_known_args`` left over, in order; ``--kwargs JSON`` and
          ``--kwargs=JSON`` are both accepted and apply to the loss name just before them.
        - Returns ``[(name, kwargs), ...]`` in the order given (names are not checked here; duplicates kept).
        - Raises :class:`CommandError` when: no loss name at all; ``--kwargs`` lacks its value, comes before any
          name or is given twice for one name; the JSON is invalid or not an object; any other token starts
          with ``-``.

    Example:
        >>> parse_loss_specs(["monai.losses.DiceLoss", "--kwargs", '{"softmax": true}', "softseg.DiceLoss"])
        [('monai.losses.DiceLoss', {'softmax': True}), ('softseg.DiceLoss', {})]
    """
    specs: list[tuple[str, dict]] = []
    given: set[int] = set()
    tokens = list(tokens)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--kwargs" or token.startswith("--kwargs="):
            if token == "--kwargs":
                if index + 1 >= len(tokens):
                    raise CommandError("--kwargs needs a JSON object, e.g. --kwargs '{\"softmax\": true}'")
                text, index = tokens[index + 1], index + 2
            else:
                text, index = token.split("=", 1)[1], index + 1
            if not specs:
                raise CommandError(f"--kwargs {text} comes before any loss name; put it after the loss it configures")
            if len(specs) - 1 in given:
                raise CommandError(f"{specs[-1][0]} has --kwargs twice; merge them into one JSON object")
            try:
                kwargs = json.loads(text)
            except json.JSONDecodeError as error:
                raise CommandError(f"--kwargs of {specs[-1][0]} is not valid JSON ({error}); got {text!r}") from None
            if not isinstance(kwargs, dict):
                raise CommandError(
                    f"--kwargs of {specs[-1][0]} must be a JSON object like '{{\"softmax\": true}}'; got {text!r}"
                )
            specs[-1] = (specs[-1][0], kwargs)
            given.add(len(specs) - 1)
            continue
        if token.startswith("-"):
            raise CommandError(f"unknown option {token!r} (see softseg audit --help)")
        specs.append((token, {}))
        index += 1
    if not specs:
        raise CommandError("name at least one loss to audit, e.g. softseg audit softseg.DiceLoss")
    return specs


def load_loss(name: str, kwargs: dict) -> Callable[[Tensor, Tensor], Tensor]:
    """Import the dotted ``name``; construct a class with ``kwargs``, or bind them to a function.

    The longest importable module prefix of ``name`` is imported and the rest is looked up as attributes.

    Convention:
        - ``name``: dotted ``module.Class``, ``module.function`` (or deeper attributes); ``kwargs``: keyword
          arguments (``{}`` for none).
        - Returns ``Class(**kwargs)`` for a class, ``functools.partial(function, **kwargs)`` for another
          callable (the function itself when ``kwargs`` is empty).
        - Raises :class:`CommandError` when no prefix imports, the attribute is missing, the object is not
          callable, or the constructor raises (its message included).

    Example:
        >>> load_loss("softseg.DiceLoss", {"smooth": 1.0})
        DiceLoss(alpha=0.5, beta=0.5, activation='softmax', smooth=1.0, ...)
    """
    parts = name.split(".")
    target, error = None, None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError as exc:
            error = error or exc
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            raise CommandError(
                f"cannot find {name!r}: module {'.'.join(parts[:cut])!r} has no {'.'.join(parts[cut:])!r}"
            ) from None
        break
    else:
        detail = f" ({error})" if error else ""
        raise CommandError(f"cannot import {name!r}{detail}; expected a dotted name such as softseg.DiceLoss")
    if not callable(target):
        raise CommandError(f"{name!r} is a {type(target).__name__}, not a loss class or function")
    if isinstance(target, type):
        try:
            return target(**kwargs)
        except Exception as exc:  # whatever the constructor raises, the user needs its message
            raise CommandError(f"cannot construct {name} with --kwargs {json.dumps(kwargs)}: {exc}") from exc
    return functools.partial(target, **kwargs) if kwargs else target


def make_problem(*, classes: int, size: int, seed: int) -> Problem:
    """A seeded problem: fractional soft target, its argmax as hard target (with every class present), logits.

    Convention:
        float64 tensors of shape (2, ``classes``, ``size``, ``size``); ``soft`` = softmax(1.5 z) with z
        standard normal, so every pixel is fractional; ``hard_index`` (2, size, size) int64 with every class
        present in every image (``size`` ** 2 >= ``classes``); ``hard`` its one-hot.

    Example:
        >>> problem = make_problem(classes=3, size=4, seed=0)
        >>> tuple(problem.soft.shape), bool(torch.allclose(problem.soft.sum(1), torch.ones(2, 4, 4, dtype=torch.float64)))
        ((2, 3, 4, 4), True)
    """
    generator = torch.Generator().manual_seed(seed)
    soft = (1.5 * torch.randn(2, classes, size, size, generator=generator, dtype=torch.float64)).softmax(1)
    hard_index = soft.argmax(1)
    hard_index.view(2, -1)[:, :classes] = torch.arange(classes)  # every class present in every image
    hard = torch.nn.functional.one_hot(hard_index, classes).movedim(-1, 1).to(torch.float64)
    logits = torch.randn(2, classes, size, size, generator=generator, dtype=torch.float64)
    return Problem(soft, hard, hard_index, logits)


def _value(loss: Callable, input: Tensor, target: Tensor) -> Tensor:
    value = loss(input, target)
    if not isinstance(value, Tensor):
        raise TypeError(f"the loss returned {type(value).__name__}, expected a tensor")
    return value.mean() if value.numel() != 1 else value.reshape(())


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _hard_references(probs: Tensor, hard_index: Tensor, reference: str) -> dict[str, float]:
    names = ("dice", "jaccard") if reference == "auto" else (reference,)
    functions = {"dice": softseg.dice_loss, "jaccard": softseg.jaccard_loss}
    values = {}
    for name in names:
        for aggregation in ("global", "image", "class"):
            for include_background in (True, False):
                for norm in (1, 2):
                    label = f"{name} ({aggregation}{'' if include_background else ', no background'}{', norm 2' if norm == 2 else ''})"
                    values[label] = float(
                        functions[name](
                            probs,
                            hard_index,
                            activation="none",
                            aggregation=aggregation,
                            include_background=include_background,
                            norm=norm,
                        )
                    )
    return values


def audit_loss(
    name: str,
    loss: Callable,
    problem: Problem,
    *,
    input_kind: str,
    hard_target: str,
    reference: str,
    value_range: tuple[float, float] | None,
    steps: int,
    tolerance: float,
    seed: int,
) -> Verdict:
    """Run the four checks of the module docstring on ``loss``; an exception inside the loss is a failing verdict.

    Convention:
        ``input_kind`` ``"logits"`` (the loss gets z, starting at log y) or ``"probs"`` (softmax(z));
        gradient steps move z. ``hard_target`` ``"onehot"`` or ``"index"`` ((B, 1, S, S) int64).
        ``reference`` ``"auto"``, ``"dice"``, ``"jaccard"`` or ``"none"``. Comparisons are relative to
        ``tolerance`` (scaled by max(1, |value|)). A loss returning a non-scalar tensor is averaged.
        ``value_range`` None: [0, 1] when the hard-label check matched a Dice or Jaccard form, else [0, inf).

    Example:
        >>> import softseg
        >>> verdict = audit_loss("dice", softseg.DiceLoss(), make_problem(classes=3, size=4, seed=0),
        ...     input_kind="logits", hard_target="onehot", reference="auto", value_range=(0.0, 1.0),
        ...     steps=3, tolerance=1e-4, seed=0)
        >>> verdict.passed, verdict.at_target, verdict.hard_labels
        (True, (True, '0.0000'), (True, 'dice (global)'))
    """
    to_input = (lambda z: z) if input_kind == "logits" else (lambda z: z.softmax(1))
    try:
        start = problem.soft.log()
        at_target = _value(loss, to_input(start), problem.soft).item()
        lowest, lowest_how = at_target, ""
        for step in STEP_SIZES:
            z = start.clone()
            for _ in range(steps):
                z.requires_grad_(True)
                value = _value(loss, to_input(z), problem.soft)
                (gradient,) = torch.autograd.grad(value, z)
                if value.item() < lowest:
                    lowest, lowest_how = value.item(), f"step {step}"
                scale = gradient.abs().max()
                if not torch.isfinite(scale) or scale == 0:
                    break
                z = (z - step * gradient / scale).detach()
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for move in range(RANDOM_MOVES):
                radius = 0.1 if move % 2 else 0.01
                value = _value(
                    loss,
                    to_input(start + radius * torch.randn(start.shape, generator=generator, dtype=start.dtype)),
                    problem.soft,
                ).item()
                if value < lowest:
                    lowest, lowest_how = value, f"random move {radius}"
        lowered = at_target - lowest > tolerance * max(1.0, abs(at_target))
        descent = (False, f"lowered to {lowest:.4f} ({lowest_how})") if lowered else (True, "none")
        if _close(at_target, 0.0, tolerance):
            target_check = (True, f"{at_target:.4f}")
        else:
            target_check = (
                (None, f"{at_target:.4f}, minimal") if not lowered else (False, f"{at_target:.4f}, not minimal")
            )

        hard_input = problem.logits if input_kind == "logits" else problem.logits.softmax(1)
        hard_arg = problem.hard if hard_target == "onehot" else problem.hard_index.unsqueeze(1)
        hard_value = _value(loss, hard_input, hard_arg).item()
        if reference == "none":
            hard_check = (None, "n/a (--reference none)")
        else:
            references = _hard_references(problem.logits.softmax(1), problem.hard_index, reference)
            matches = [label for label, value in references.items() if _close(hard_value, value, tolerance)]
            if matches:
                hard_check = (True, matches[0])
            elif reference == "auto":
                hard_check = (None, "n/a (no Dice/Jaccard form)")
            else:
                closest = min(references.items(), key=lambda item: abs(item[1] - hard_value))
                hard_check = (False, f"{hard_value:.4f} != {closest[0]}: {closest[1]:.4f}")

        if value_range is None:  # auto: only overlap losses are bounded by 1 (cross-entropy terms are not)
            value_range = (0.0, 1.0) if hard_check[0] is True else (0.0, math.inf)
        range_check = _range_check(loss, problem, to_input, hard_arg, value_range, start)
    except Exception as error:  # any failure inside a foreign loss is a verdict, not a crash of the command
        return Verdict(name, (None, ""), (None, ""), (None, ""), (None, ""), error=f"{type(error).__name__}: {error}")
    return Verdict(name, target_check, descent, hard_check, range_check)


def _range_check(
    loss: Callable,
    problem: Problem,
    to_input: Callable,
    hard_arg: Tensor,
    value_range: tuple[float, float],
    start: Tensor,
) -> tuple[bool, str]:
    # An absent class: zero in the target, (almost) zero in the prediction; the case that gives NaN in naive code.
    empty_logits = problem.logits.clone()
    empty_logits[:, -1] = -30.0
    empty_soft = problem.soft.clone()
    empty_soft[:, -2] += empty_soft[:, -1]
    empty_soft[:, -1] = 0.0
    cases = {
        "at target": (start, problem.soft),
        "random vs soft": (problem.logits, problem.soft),
        "random vs hard": (problem.logits, hard_arg),
        "empty class": (empty_logits, empty_soft),
    }
    low, high = math.inf, -math.inf
    for case, (z, target) in cases.items():
        z = z.clone().requires_grad_(True)
        value = _value(loss, to_input(z), target)
        (gradient,) = torch.autograd.grad(value, z, allow_unused=True)
        if not torch.isfinite(value):
            return False, f"{value.item()} ({case})"
        if gradient is not None and not bool(torch.isfinite(gradient).all()):
            return False, f"non-finite gradient ({case})"
        low, high = min(low, value.item()), max(high, value.item())
    slack = 1e-6 * max(1.0, abs(value_range[0]), abs(value_range[1]) if math.isfinite(value_range[1]) else 1.0)
    inside = low >= value_range[0] - slack and high <= value_range[1] + slack
    text = f"[{low:.4f}, {high:.4f}]"
    return (True, text) if inside else (False, f"{text} outside [{value_range[0]:g}, {value_range[1]:g}]")


def _parse_range(text: str) -> tuple[float, float] | None:
    if text == "auto":
        return None
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise CommandError(f"--range must be auto or LOW,HIGH such as 0,1 or 0,inf; got {text!r}") from None
    if math.isnan(low) or math.isnan(high) or low > high:
        raise CommandError(f"--range must have LOW <= HIGH; got {text!r}")
    return low, high


def _cell(check: tuple[bool | None, str]) -> str:
    mark = {True: "[green]✓[/green]", False: "[red]✗[/red]", None: "[dim]·[/dim]"}[check[0]]
    return f"{mark} {check[1]}"


def verdict_table(verdicts: Sequence[Verdict]) -> Table:
    """The verdicts as a rich table, one row per loss: a mark (pass, fail, not applicable) and a note per check.

    Convention:
        - ``verdicts``: a sequence of :class:`Verdict` (may be empty: a table with no rows).
        - Returns a ``rich.table.Table`` with 6 columns (loss, at target, descent from target, hard labels,
          range, verdict); marks ✓ / ✗ / · for True / False / None, verdict PASS or FAIL per
          :attr:`Verdict.passed`; a verdict with an ``error`` shows the error in place of the checks.
        - Raises nothing of its own; prints nothing.

    Example:
        >>> table = verdict_table([Verdict("x", (True, "0"), (True, "none"), (None, "n/a"), (True, "[0, 1]"))])
        >>> table.row_count, len(table.columns)
        (1, 6)
    """
    table = Table(title="softseg audit: soft-label correctness", expand=True)
    for header, ratio in (("loss", 5), ("at target", 3), ("descent from target", 4), ("hard labels", 4), ("range", 4)):
        table.add_column(header, ratio=ratio, overflow="fold")
    table.add_column("verdict", no_wrap=True)
    for v in verdicts:
        verdict = "[green]PASS[/green]" if v.passed else "[red]FAIL[/red]"
        if v.error is not None:
            table.add_row(v.name, f"[red]error: {v.error}[/red]", "", "", "", verdict)
        else:
            table.add_row(v.name, *(_cell(c) for c in (v.at_target, v.descent, v.hard_labels, v.range)), verdict)
    return table


def _run(args: argparse.Namespace) -> int:
    specs = parse_loss_specs(args.extras)
    value_range = _parse_range(args.value_range)
    for option, value, minimum in (
        ("--classes", args.classes, 2),
        ("--size", args.size, 2),
        ("--steps", args.steps, 1),
    ):
        if value < minimum:
            raise CommandError(f"{option} must be >= {minimum}; got {value}")
    if args.classes > args.size**2:  # every class is placed in every image of the hard target
        raise CommandError(
            f"--classes {args.classes} needs at least {args.classes} pixels per image, but --size {args.size} "
            f"gives {args.size**2}; use --size {math.ceil(math.sqrt(args.classes))} or more"
        )
    if not args.tolerance > 0:
        raise CommandError(f"--tolerance must be > 0; got {args.tolerance}")
    losses = [(name, load_loss(name, kwargs)) for name, kwargs in specs]  # fail on imports before any check runs
    problem = make_problem(classes=args.classes, size=args.size, seed=args.seed)
    verdicts = []
    for (name, kwargs), (_, loss) in zip(specs, losses, strict=True):
        label = name + (f"\n{json.dumps(kwargs)}" if kwargs else "")
        verdicts.append(
            audit_loss(
                label,
                loss,
                problem,
                input_kind=args.input,
                hard_target=args.hard_target,
                reference=args.reference,
                value_range=value_range,
                steps=args.steps,
                tolerance=args.tolerance,
                seed=args.seed,
            )
        )
    if not args.quiet:
        console = make_console()
        console.print(verdict_table(verdicts))
        failed = [v.name.replace("\n", " ") for v in verdicts if not v.passed]
        console.print(
            f"{len(verdicts) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
        )
    return 0 if all(v.passed for v in verdicts) else 1
