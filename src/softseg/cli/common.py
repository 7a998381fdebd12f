"""Shared by the subcommands: the error the command reports as a message, and the console it prints to."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class CommandError(Exception):
    """Bad arguments or data: printed as ``softseg <command>: error: <message>`` with exit status 2.

    Convention:
        - Constructed with one message string (``str(error)`` is the message); a plain ``Exception`` subclass.
        - Raised by the subcommands; :func:`softseg.cli.main` catches it, prints the message to stderr and
          returns 2 (no traceback).

    Example:
        >>> error = CommandError("--size must be >= 2; got 1")
        >>> str(error), isinstance(error, Exception)
        ('--size must be >= 2; got 1', True)
    """


def make_console() -> Console:
    """A rich console on stdout; 120 columns when stdout is not a terminal (logs, pipes) so tables stay readable.

    Convention:
        - No inputs; returns a new ``rich.console.Console`` writing to the ``sys.stdout`` of the call.
        - Width: the terminal's when stdout is a TTY (``width=None``), else fixed at 120 columns.
        - Raises nothing of its own.

    Example:
        >>> console = make_console()
        >>> console.file is sys.stdout, sys.stdout.isatty() or console.width == 120
        (True, True)
    """
    from rich.console import Console  # here, so that importing the command's shared parts stays cheap

    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)


SEED_LIMIT = 2**63  # torch.manual_seed takes seeds in [0, 2**64); numpy's generators any non-negative integer


def seed_argument(text: str) -> int:
    """argparse ``type=`` of a ``--seed`` option: an integer in [0, 2**63).

    Convention:
        ``text``: the option's value. Returns the int; anything else raises ``argparse.ArgumentTypeError``,
        which argparse reports as ``argument --seed: ...`` with exit status 2 (no traceback).

    Example:
        >>> seed_argument("7")
        7
        >>> seed_argument("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected an integer in [0, 2**63); got -1
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63); got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2**63); got {value}")
    return value
