r"""``softseg-nnunet-train``, ``softseg-nnunet-predict`` and ``softseg nnunet train|predict|ext-path``.

The train and predict commands put softseg's re-export folder first on ``nnUNet_extTrainer`` (keeping
what the variable held) and run nnU-Net's own ``nnUNetv2_train`` / ``nnUNetv2_predict`` in the same
process with the same arguments, after checking what would otherwise fail obscurely: nnunetv2 missing or
older than 2.8, a torchvision that does not import (nnU-Net's trainer lookup needs it), and a requested
``nnUNetTrainerSoftseg*`` name that one of nnU-Net's built-in trainers takes (the lookup would pick the
built-in one). ``ext-path`` prints the folder, for users who set the variable themselves.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from collections.abc import Callable, Sequence

from softseg.integrations.nnunet.environment import check_nnunet, check_torchvision, ext_trainer_path

TRAINER_PREFIX = "nnUNetTrainerSoftseg"
NNUNET_COMMANDS = {"train": "nnUNetv2_train", "predict": "nnUNetv2_predict"}
EXT_VARIABLE = "nnUNet_extTrainer"


class NNUNetCommandError(Exception):
    """An environment or argument problem, printed as ``<command>: error: <message>`` with exit status 2.

    Convention:
        - Constructed with one message string; a plain ``Exception`` subclass raised by :func:`run_nnunet`
          and turned into the exit status by :func:`main` and the console scripts.

    Example:
        >>> str(NNUNetCommandError("nnunetv2 is not installed"))
        'nnunetv2 is not installed'
    """


def with_ext_trainer_path(current: str | None) -> str:
    """The value of ``nnUNet_extTrainer`` with softseg's folder first and the earlier entries after it.

    value = ext_trainer_path() + os.pathsep + (current without softseg's folder and empty entries)

    Convention:
        - ``current``: the variable's value, or None when unset. Returns a str; softseg's folder appears
          once, first, so its trainers win over same-named classes in the user's folders.

    Example:
        >>> value = with_ext_trainer_path("/my/trainers")
        >>> value.split(os.pathsep) == [ext_trainer_path(), "/my/trainers"]
        True
        >>> with_ext_trainer_path(value) == value
        True
    """
    ours = ext_trainer_path()
    kept = [entry for entry in (current or "").split(os.pathsep) if entry.strip() and entry != ours]
    return os.pathsep.join([ours, *kept])


def requested_trainer(arguments: Sequence[str]) -> str | None:
    """The trainer name given with ``-tr NAME`` (or ``-tr=NAME``) in nnU-Net's arguments, else None.

    Convention:
        - ``arguments``: nnU-Net's command-line arguments (without the program name); the last ``-tr``
          wins, as with argparse. Returns None when there is none or it has no value.

    Example:
        >>> requested_trainer(["501", "2d", "0", "-tr", "nnUNetTrainerSoftsegDiceCE", "-device", "cpu"])
        'nnUNetTrainerSoftsegDiceCE'
        >>> requested_trainer(["-i", "in", "-o", "out"]) is None
        True
    """
    name = None
    for position, argument in enumerate(arguments):
        if argument == "-tr" and position + 1 < len(arguments):
            name = arguments[position + 1]
        elif argument.startswith("-tr="):
            name = argument[len("-tr="):]
    return name or None


def check_trainer_name(name: str) -> None:
    """``NNUNetCommandError`` when nnU-Net has a built-in trainer called ``name`` that starts with nnUNetTrainerSoftseg.

    nnU-Net's lookup searches its own trainer folder before the ``nnUNet_extTrainer`` folders, so such a
    built-in class would silently replace softseg's (or the user's) trainer of that name.

    Convention:
        - ``name``: the requested trainer. Names without the prefix are not checked (built-in trainers run
          as usual through these commands). Imports nnU-Net's trainer modules, as its own lookup does.

    Example:
        >>> check_trainer_name("nnUNetTrainer")          # not a softseg name: nothing to check
    """
    if not name.startswith(TRAINER_PREFIX):
        return
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
    builtin = recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer")
    if builtin is not None:
        raise NNUNetCommandError(
            f"-tr {name}: nnU-Net {importlib.metadata.version('nnunetv2')} has a built-in trainer of that name "
            f"({builtin.__module__}), and its lookup takes built-in trainers before those on {EXT_VARIABLE}, so the "
            "softseg trainer would never run; subclass it under a name nnU-Net does not use"
        )


def run_nnunet(command: str, arguments: Sequence[str]) -> int:
    """Run nnU-Net's ``nnUNetv2_train`` or ``nnUNetv2_predict`` with softseg's trainers on its lookup path.

    Convention:
        - ``command``: ``"train"`` or ``"predict"``; ``arguments``: nnU-Net's own, passed unchanged (its
          ``-h`` prints its help).
        - Sets ``os.environ["nnUNet_extTrainer"]`` (:func:`with_ext_trainer_path`; child processes such
          as multi-GPU workers inherit it), then calls nnU-Net's console entry point in this process with
          ``sys.argv`` set to its arguments. Returns its exit status (0 when it returns None).
        - ``NNUNetCommandError`` (nothing run) for a missing or too old nnunetv2, a torchvision that does not
          import and a ``nnUNetTrainerSoftseg*`` name taken by a built-in trainer; nnU-Net's own errors
          propagate (``SystemExit`` for its bad arguments).

    Example:
        >>> run_nnunet("evaluate", [])
        Traceback (most recent call last):
        ...
        ValueError: command must be one of ('train', 'predict'); got 'evaluate'
    """
    if command not in NNUNET_COMMANDS:
        raise ValueError(f"command must be one of {tuple(NNUNET_COMMANDS)}; got {command!r}")
    try:
        check_nnunet()
        check_torchvision()
    except ImportError as error:
        raise NNUNetCommandError(str(error)) from error
    os.environ[EXT_VARIABLE] = with_ext_trainer_path(os.environ.get(EXT_VARIABLE))
    name = requested_trainer(arguments)
    if name is not None:
        check_trainer_name(name)
    script = NNUNET_COMMANDS[command]
    entry_point = _nnunet_entry_point(script)
    saved_argv = sys.argv
    sys.argv = [script, *arguments]
    try:
        status = entry_point()
    finally:
        sys.argv = saved_argv
    return 0 if status is None else int(status)


def main(argv: Sequence[str] | None = None) -> int:
    """``softseg nnunet {train,predict,ext-path} ...``; returns the exit status.

    Convention:
        - ``train ARGS`` / ``predict ARGS``: :func:`run_nnunet` with ARGS unchanged (everything after the
          subcommand, ``-h`` included, is nnU-Net's).
        - ``ext-path``: prints :func:`~softseg.integrations.nnunet.environment.ext_trainer_path`; needs no
          nnU-Net.
        - Errors print ``softseg nnunet <subcommand>: error: <message>`` to stderr and return 2.

    Example:
        >>> main(["ext-path"]) == 0                          # prints the folder
        /...softseg/integrations/nnunet/ext
        True
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in NNUNET_COMMANDS:  # by hand: argparse would read nnU-Net's options (-h, -i) as ours
        command = argv[0]
        return _report_errors(f"softseg nnunet {command}", lambda: run_nnunet(command, argv[1:]))
    parser = argparse.ArgumentParser(
        prog="softseg nnunet",
        description="nnU-Net v2 with softseg's trainers: `train` and `predict` run nnUNetv2_train and "
        "nnUNetv2_predict with the same arguments and softseg's trainer folder on nnUNet_extTrainer "
        "(e.g. softseg nnunet train 501 2d 0 -tr nnUNetTrainerSoftsegDiceCE); `ext-path` prints that folder.",
        allow_abbrev=False,
    )
    subcommands = parser.add_subparsers(dest="subcommand", metavar="{train,predict,ext-path}", required=True)
    for command, script in NNUNET_COMMANDS.items():  # listed for --help; handled above
        subcommands.add_parser(command, help=f"run {script} (arguments are {script}'s)")
    subcommands.add_parser("ext-path", help="print the folder to put on nnUNet_extTrainer")
    parser.parse_args(argv)  # ext-path, or a usage error / help (SystemExit)
    print(ext_trainer_path())
    return 0


def train_entry() -> int:
    """The ``softseg-nnunet-train`` console script: ``nnUNetv2_train`` with softseg's trainers (see :func:`run_nnunet`).

    Convention:
        - Reads ``sys.argv[1:]`` (nnUNetv2_train's arguments); returns the exit status (2 with a message
          on ``softseg-nnunet-train: error: ...`` for the problems :func:`run_nnunet` checks).

    Example:
        >>> callable(train_entry)
        True
    """
    return _report_errors("softseg-nnunet-train", lambda: run_nnunet("train", sys.argv[1:]))


def predict_entry() -> int:
    """The ``softseg-nnunet-predict`` console script: ``nnUNetv2_predict`` with softseg's trainers.

    Convention:
        - As :func:`train_entry`, for ``nnUNetv2_predict``'s arguments (``-tr NAME`` as in training).

    Example:
        >>> callable(predict_entry)
        True
    """
    return _report_errors("softseg-nnunet-predict", lambda: run_nnunet("predict", sys.argv[1:]))


def _report_errors(prog: str, run: Callable[[], int]) -> int:
    try:
        return run()
    except NNUNetCommandError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2


def _nnunet_entry_point(script: str) -> Callable[[], object]:
    # nnU-Net's console script, found by its name as pip installed it (robust to nnU-Net moving the function).
    found = importlib.metadata.entry_points(group="console_scripts", name=script)
    for entry_point in found:
        if entry_point.dist is None or entry_point.dist.name.lower() == "nnunetv2":
            return entry_point.load()
    raise NNUNetCommandError(f"nnunetv2 is installed but has no {script} console script; reinstall it: pip install 'softseg[nnunet]'")
