"""The ``softseg`` command: ``compare`` losses on soft labels, ``audit`` any loss, ``bench`` the losses.

- ``softseg compare``: train a compact U-Net per loss configuration on multi-rater data and write a report
  (:mod:`softseg.cli.compare`; needs the ``cli`` extra: ``pip install 'softseg[cli]'``).
- ``softseg audit LOSS [--kwargs JSON] [LOSS ...]``: check importable losses for soft-label correctness
  (:mod:`softseg.cli.audit`); exit status 1 when one fails.
- ``softseg bench ...``: the performance benchmark, arguments forwarded (:mod:`softseg.cli.bench`).
- ``softseg nnunet {train,predict,ext-path} ...``: nnU-Net v2 with softseg's trainers (:mod:`softseg.cli.nnunet`).

Also ``python -m softseg ...``. Only the subcommand that runs is imported (``softseg --help`` imports
none). Exit status: 0 success, 1 an audited loss failed (or a library the subcommand needs is missing),
2 bad arguments or data, 130 interrupted (Ctrl-C); every one of them a one-line message, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from softseg.cli.common import CommandError

# Each subcommand: its module (imported only when it runs) and its line in `softseg --help`.
SUBCOMMANDS = {
    "compare": ("softseg.cli.compare", "train a small network with several losses on multi-rater data and report how each did"),
    "audit": ("softseg.cli.audit", "check importable losses for soft-label correctness (exit 1 when one fails)"),
    "bench": ("softseg.cli.bench", "time softseg's losses against cross-entropy and their peers"),
    "nnunet": ("softseg.cli.nnunet", "nnU-Net v2 with softseg's trainers: train, predict, ext-path (softseg nnunet -h)"),
}
CLI_EXTRA = ("rich", "matplotlib", "PIL", "nibabel")  # top-level modules of the cli extra's packages
EXTRA_INSTALL = "pip install 'softseg[cli]'"
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class MissingExtraError(Exception):
    """A library of the ``cli`` extra is missing: ``softseg <command>: error: ...; pip install 'softseg[cli]'``.

    Convention:
        Built from the ``ImportError`` of the missing module; :func:`main` prints it after the command's
        name and returns 1.

    Example:
        >>> str(MissingExtraError(ImportError("No module named 'matplotlib'", name="matplotlib")))
        "matplotlib is not installed; this command needs the cli extra: pip install 'softseg[cli]'"
    """

    def __init__(self, error: ImportError) -> None:
        super().__init__(f"{_top_module(error)} is not installed; this command needs the cli extra: {EXTRA_INSTALL}")


def _top_module(error: ImportError) -> str:
    return (error.name or "").split(".")[0]


def _load(command: str):
    """The subcommand's module; a missing library of the cli extra becomes :class:`MissingExtraError`."""
    try:
        return importlib.import_module(SUBCOMMANDS[command][0])
    except ImportError as error:
        if _top_module(error) not in CLI_EXTRA:
            raise
        raise MissingExtraError(error) from error


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser; the subcommands in ``commands`` (default: all) get their full parsers.

    Convention:
        - ``commands``: names from ``SUBCOMMANDS`` whose modules are imported and whose options are known;
          the others are listed with their one-line help only (enough for ``softseg --help``).
        - Returns a fresh ``argparse.ArgumentParser`` (``prog="softseg"``, no abbreviations) whose
          subcommand is required and sets ``args.command`` and, when loaded, ``args.run`` (its handler).
        - A missing module of the cli extra raises :class:`MissingExtraError`; any other ``ImportError``
          propagates. Parsing with no subcommand is an argparse usage error (``SystemExit``, status 2).

    Example:
        >>> parser = build_parser()
        >>> parser.parse_args(["compare", "--quick", "--losses", "ce"]).losses
        'ce'
        >>> build_parser([]).parse_args(["audit"]).command       # listed only: nothing imported
        'audit'
    """
    commands = tuple(SUBCOMMANDS) if commands is None else tuple(commands)
    parser = argparse.ArgumentParser(
        prog="softseg",
        description="Segmentation losses that stay correct for soft labels: compare, audit and benchmark them.",
        epilog="`softseg COMMAND --help` lists a command's options.",
        allow_abbrev=False,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}", required=True)
    for name, (_, summary) in SUBCOMMANDS.items():
        if name in commands:
            _load(name).add_parser(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``softseg`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Convention:
        - Bad arguments or data print ``softseg <command>: error: <message>`` to stderr and return 2
          (argparse's own usage errors exit with 2 as well); so does a file that cannot be read or
          written (an ``OSError``: its reason and path).
        - A library of the ``cli`` extra that the subcommand needs is missing: the message names it and
          the install line; returns 1.
        - Ctrl-C prints ``softseg <command>: interrupted`` and returns 130 (the subcommands leave no
          partial output behind). A closed pipe (``softseg audit ... | head``) ends quietly with 1.
        - ``audit`` returns 1 when a loss fails a check.

    Example:
        >>> main(["audit", "softseg.DiceLoss", "--kwargs", "{\\"activation\\": \\"softmax\\"}", "--quiet"])
        0
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((token for token in argv if not token.startswith("-")), None)
    command = command if command in SUBCOMMANDS else None
    prefix = f"softseg {command}" if command else "softseg"
    try:
        return _run(argv, command)
    except CommandError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except MissingExtraError as error:
        print(f"{prefix}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except ImportError as error:  # a library of the extra imported lazily, while the command ran
        if _top_module(error) not in CLI_EXTRA:
            raise
        print(f"{prefix}: error: {MissingExtraError(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\n{prefix}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except OSError as error:
        print(f"{prefix}: error: {_describe(error)}", file=sys.stderr)
        return EXIT_USAGE


def _run(argv: list[str], command: str | None) -> int:
    if command == "nnunet":  # every argument after it is nnU-Net's (its own -h too)
        return _load(command).run(argparse.Namespace(arguments=argv[argv.index(command) + 1 :]))
    parser = build_parser([command] if command else [])
    args, extras = parser.parse_known_args(argv)
    if args.command == "audit":
        args.extras = extras  # loss names with their --kwargs, in order (see softseg.cli.audit)
    elif args.command == "bench":
        args.forwarded = extras
    elif extras:
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    return args.run(args)


def _describe(error: OSError) -> str:
    """``[Errno 13] Permission denied: '/x'`` as ``cannot use /x: permission denied``."""
    reason = (error.strerror or str(error)).rstrip(".")
    if error.filename is None:
        return reason
    return f"cannot use {error.filename}: {reason[:1].lower() + reason[1:]}"


def _silence_stdout() -> None:
    # Python's recipe for a closed pipe: point stdout at /dev/null so the exit flush does not fail again.
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured in tests)
        pass


__all__ = ["CommandError", "MissingExtraError", "build_parser", "main"]
