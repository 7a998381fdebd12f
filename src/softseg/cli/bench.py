"""``softseg bench``: run the performance benchmark (:mod:`softseg.benchmark`) and print its table.

Every argument after ``bench`` is forwarded unchanged to ``softseg.benchmark.main`` (a leading ``--``
is dropped), so ``softseg bench -- --help`` shows the benchmark's own options and
``softseg bench --quick`` runs its quick mode.
"""

from __future__ import annotations

import argparse
import importlib

from softseg.cli.common import CommandError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand; its arguments are the ones ``parse_known_args`` leaves over.

    Convention:
        - ``subparsers``: the action returned by ``ArgumentParser.add_subparsers``; returns the new
          ``bench`` parser (no options besides ``-h``), with defaults ``run`` (the handler) and
          ``forwarded=[]``.
        - Unknown arguments are not errors: :func:`softseg.cli.main` stores them in ``args.forwarded``;
          the handler drops one leading ``--`` and passes the rest to ``softseg.benchmark.main``.
        - Raises nothing of its own; ``--help`` prints the usage and exits (``SystemExit``).

    Example:
        >>> sub = argparse.ArgumentParser(prog="softseg").add_subparsers()
        >>> add_parser(sub).parse_known_args(["--quick"])[1]
        ['--quick']
    """
    parser = subparsers.add_parser(
        "bench",
        help="time softseg's losses against cross-entropy and their peers",
        description="Run softseg's benchmark of losses against cross-entropy and their peers (MONAI, smp, where "
        "installed; nothing is installed unless you pass --install-peers) and print its table. "
        "All arguments are forwarded to softseg.benchmark.main; `softseg bench -- --help` lists them.",
        add_help=True,
        allow_abbrev=False,
    )
    parser.set_defaults(run=_run, forwarded=[])
    return parser


def _run(args: argparse.Namespace) -> int:
    forwarded = list(args.forwarded[1:] if args.forwarded[:1] == ["--"] else args.forwarded)
    try:
        benchmark = importlib.import_module("softseg.benchmark")
    except ImportError as error:
        raise CommandError(f"the benchmark module softseg.benchmark cannot be imported: {error}") from error
    status = benchmark.main(forwarded, prog="softseg bench")
    return 0 if status is None else int(status)
