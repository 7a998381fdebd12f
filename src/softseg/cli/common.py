"""Shared by the subcommands: the error the command reports as a message, and the console it prints to."""

from __future__ import annotations

import sys

from rich.console import Console


class CommandError(Exception):
    """Bad arguments or data: printed as ``softseg <command>: error: <message>`` with exit status 2."""


def make_console() -> Console:
    """A rich console on stdout; 120 columns when stdout is not a terminal (logs, pipes) so tables stay readable."""
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 120)
