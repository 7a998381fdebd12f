"""``softseg nnunet {train,predict,ext-path}``: nnU-Net v2 with softseg's trainers (:mod:`softseg.integrations.nnunet.commands`).

Every argument after ``nnunet`` goes to :func:`softseg.integrations.nnunet.commands.main`: :func:`softseg.cli.main`
hands ``softseg nnunet ...`` over to :func:`run` without parsing it (nnU-Net's own options, ``-h`` too, are
its business); :func:`add_parser` lists it in ``softseg --help``.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``nnunet`` subcommand; everything after it is forwarded.

    Convention:
        - ``subparsers``: the action returned by ``ArgumentParser.add_subparsers``; returns the new parser
          (no options of its own, not even ``-h``), with defaults ``run`` (the handler) and one
          ``arguments`` list holding the rest of the command line.

    Example:
        >>> sub = argparse.ArgumentParser(prog="softseg").add_subparsers()
        >>> add_parser(sub).parse_args(["train", "501", "2d", "0", "-h"]).arguments
        ['train', '501', '2d', '0', '-h']
    """
    parser = subparsers.add_parser(
        "nnunet",
        help="nnU-Net v2 with softseg's trainers: train, predict, ext-path (softseg nnunet -h)",
        add_help=False,
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``softseg nnunet`` with ``args.arguments``; returns its exit status.

    Convention:
        - ``args``: the parsed namespace with ``arguments`` (list of str). Imports the integration's command
          module only here (it needs no nnU-Net to print ``ext-path``).

    Example:
        >>> run(argparse.Namespace(arguments=["ext-path"])) == 0
        /...ext
        True
    """
    from softseg.integrations.nnunet.commands import main

    return main(args.arguments)
