"""Shared by the subcommands: the error the command reports as a message, and the console it prints to."""

from __future__ import annotations

import sys

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
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
