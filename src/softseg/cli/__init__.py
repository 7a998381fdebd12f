"""The ``softseg`` command: ``compare`` losses on soft labels, ``audit`` any loss, ``bench`` the losses.

- ``softseg compare``: train a compact U-Net per loss configuration on multi-rater data and write a report
  (:mod:`softseg.cli.compare`).
- ``softseg audit LOSS [--kwargs JSON] [LOSS ...]``: check importable losses for soft-label correctness
  (:mod:`softseg.cli.audit`); exit status 1 when one fails.
- ``softseg bench ...``: the performance benchmark, arguments forwarded (:mod:`softseg.cli.bench`).
- ``softseg nnunet {train,predict,ext-path} ...``: nnU-Net v2 with softseg's trainers (:mod:`softseg.cli.nnunet`).

Exit status: 0 success, 1 an audited loss failed, 2 bad arguments or data (a message, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from softseg.cli.common import CommandError

CLI_EXTRA = ("rich", "matplotlib", "PIL", "nibabel")  # top-level modules of the cli extra's packages


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with the three subcommands.

    Convention:
        - No inputs; returns a fresh ``argparse.ArgumentParser`` (``prog="softseg"``, no abbreviations) whose
          subcommand (``compare``, ``audit`` or ``bench``) is required and sets ``args.command`` and
          ``args.run`` (the subcommand's handler).
        - A missing module of the cli extra (rich, matplotlib, PIL, nibabel) raises ``SystemExit`` with an
          install hint; any other ``ImportError`` propagates.
        - Parsing with no subcommand is an argparse usage error (``SystemExit`` with status 2).

    Example:
        >>> parser = build_parser()
        >>> parser.parse_args(["compare", "--quick", "--losses", "ce"]).losses
        'ce'
    """
    try:
        from softseg.cli import audit, bench, compare, nnunet
    except ImportError as error:
        if error.name not in CLI_EXTRA:
            raise
        raise SystemExit(f"softseg: {error}; the command needs the cli extra: pip install 'softseg[cli]'") from error

    parser = argparse.ArgumentParser(
        prog="softseg",
        description="Segmentation losses that stay correct for soft labels: compare, audit and benchmark them.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="{compare,audit,bench,nnunet}", required=True)
    compare.add_parser(subparsers)
    audit.add_parser(subparsers)
    bench.add_parser(subparsers)
    nnunet.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``softseg`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Convention:
        - Bad arguments or data print ``softseg <command>: error: <message>`` to stderr and return 2
          (argparse's own usage errors exit with 2 as well).
        - ``audit`` returns 1 when a loss fails a check.

    Example:
        >>> main(["audit", "softseg.DiceLoss", "--kwargs", "{\\"activation\\": \\"softmax\\"}", "--quiet"])
        0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["nnunet"]:  # before the parser, which imports every other subcommand (seconds, matplotlib)
        from softseg.cli import nnunet

        return nnunet.run(argparse.Namespace(arguments=argv[1:]))
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.command == "audit":
        args.extras = extras  # loss names with their --kwargs, in order (see softseg.cli.audit)
    elif args.command == "bench":
        args.forwarded = extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        return args.run(args)
    except CommandError as error:
        print(f"softseg {args.command}: error: {error}", file=sys.stderr)
        return 2


__all__ = ["CommandError", "build_parser", "main"]
