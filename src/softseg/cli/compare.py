"""``softseg compare``: train one small network per loss configuration on the same data and report.

Default data: the embedded multi-rater set (:mod:`softseg.cli.dataset`); ``--data DIR`` reads a folder
(:mod:`softseg.cli.folder`). Configurations come from the registry in :mod:`softseg.cli.configs`.
The report (tables, learning curves, reliability diagrams, the one-pixel figure) is written to a
temporary folder and moved to ``--out`` only when every run succeeded.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from softseg.cli import report
from softseg.cli.common import CommandError, make_console
from softseg.cli.configs import LOSS_CONFIGURATIONS, resolve_configurations
from softseg.cli.dataset import generate_multirater
from softseg.cli.folder import DataError, load_rater_folder
from softseg.cli.train import TrainingError, TrainSettings, split_data, train_configuration

# The default takes about two minutes on two otherwise idle CPU cores (measured: 125 s, torch 2.13 CPU),
# well inside the five-minute budget, and longer where other jobs share the cores; --quick takes seconds.
PRESETS = {
    "default": {
        "images": 240,
        "size": 64,
        "raters": 5,
        "epochs": 40,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "width": 16,
    },
    "quick": {"images": 6, "size": 16, "raters": 3, "epochs": 2, "batch_size": 4, "learning_rate": 3e-3, "width": 4},
}
EMBEDDED_ONLY = ("images", "size", "raters")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand (options, help text, its runner) to ``subparsers``.

    Convention:
        Options default to None where the preset (``PRESETS``: default or ``--quick``) decides; an
        explicit option overrides the preset. The parsed namespace carries ``run``.

    Example:
        >>> sub = argparse.ArgumentParser(prog="softseg").add_subparsers()
        >>> add_parser(sub).parse_args(["--quick", "--epochs", "3"]).epochs
        3
    """
    parser = subparsers.add_parser(
        "compare",
        help="train a small network with several losses on multi-rater data and report how each did",
        description=(
            "Train a compact U-Net once per loss configuration on the same data (same seed, same weights at "
            "the start) and write a report: summary table (Markdown, CSV, JSON), learning curves, "
            "reliability diagrams and the one-pixel figure. Without --data it uses the embedded multi-rater "
            "data set, generated from --seed."
        ),
        epilog=(
            "--data layout: DIR/images/<case>.png|.nii|.nii.gz and DIR/masks/<case>/rater1.png, rater2.png, ... "
            "(integer class labels, same size as the image, same number of raters for every case). "
            f"Known loss configurations: {', '.join(sorted(LOSS_CONFIGURATIONS))}. "
            "Register your own with softseg.cli.configs.register_loss_configuration in a module and load it "
            "with --import MODULE."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--data", type=Path, metavar="DIR", help="folder of images and rater masks (default: embedded data)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("softseg-report"),
        metavar="DIR",
        help="report folder (default: ./softseg-report)",
    )
    parser.add_argument(
        "--losses",
        metavar="NAME[,NAME]",
        help="configurations to compare (default: ce,classic-dice,softseg-dice,softseg-jaccard-ce)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register loss configurations); repeatable",
    )
    parser.add_argument(
        "--epochs", metavar="N", type=_positive_int, help=f"training epochs (default {PRESETS['default']['epochs']})"
    )
    parser.add_argument(
        "--seed",
        metavar="N",
        type=int,
        default=0,
        help="seed of the data, the split, the weights and the batch order (default 0)",
    )
    parser.add_argument(
        "--raters",
        metavar="N",
        type=_positive_int,
        help=f"raters per image, embedded data (default {PRESETS['default']['raters']})",
    )
    parser.add_argument(
        "--size",
        metavar="N",
        type=_positive_int,
        help=f"image height and width, embedded data, a multiple of 4 (default {PRESETS['default']['size']})",
    )
    parser.add_argument(
        "--images",
        metavar="N",
        type=_positive_int,
        help=f"number of images, embedded data (default {PRESETS['default']['images']})",
    )
    parser.add_argument(
        "--batch-size", metavar="N", type=_positive_int, help=f"batch size (default {PRESETS['default']['batch_size']})"
    )
    parser.add_argument(
        "--lr",
        dest="learning_rate",
        metavar="RATE",
        type=_positive_float,
        help=f"Adam learning rate (default {PRESETS['default']['learning_rate']})",
    )
    parser.add_argument(
        "--width",
        metavar="N",
        type=_positive_int,
        help=f"channels of the network's first level (default {PRESETS['default']['width']})",
    )
    parser.add_argument(
        "--threads", metavar="N", type=_positive_int, default=2, help="CPU threads for torch (default 2)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny configuration that runs in seconds (tests, smoke checks)"
    )
    parser.set_defaults(run=_run)
    return parser


def _settings(args: argparse.Namespace) -> dict:
    preset = PRESETS["quick" if args.quick else "default"]
    resolved = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in preset.items()}
    if args.data is not None:
        given = [f"--{key}" for key in EMBEDDED_ONLY if getattr(args, key) is not None]
        if given:
            raise CommandError(f"{', '.join(given)} apply to the embedded data only; --data {args.data} was given")
        for key in EMBEDDED_ONLY:
            resolved.pop(key)
    elif resolved["size"] % 4:
        raise CommandError(f"--size must be a multiple of 4 (the network pools twice); got {resolved['size']}")
    elif resolved["images"] < 2:
        raise CommandError(f"--images must be at least 2 (one to train on, one to test); got {resolved['images']}")
    return resolved


def _run(args: argparse.Namespace) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()  # data, training, evaluation and report
    console = make_console()
    settings = _settings(args)
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out must be a folder; {args.out} exists and is a file")
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CommandError(f"--import {module}: {error}") from error
    try:
        configs = resolve_configurations(args.losses)
    except ValueError as error:
        raise CommandError(str(error)) from error
    torch.set_num_threads(args.threads)

    try:
        if args.data is None:
            data = generate_multirater(
                settings["images"], size=settings["size"], raters=settings["raters"], seed=args.seed
            )
            source = f"embedded multi-rater data (seed {args.seed})"
        else:
            data = load_rater_folder(args.data)
            source = str(args.data)
        split = split_data(data, seed=args.seed)
    except (DataError, ValueError) as error:
        raise CommandError(str(error)) from error
    train = TrainSettings(
        settings["epochs"], settings["batch_size"], settings["learning_rate"], settings["width"], args.seed
    )
    described = {
        "data": source,
        "cases": f"{len(split.train_images)} train, {len(split.test_images)} test",
        "image size": "x".join(map(str, data.images.shape[-2:])),
        "raters": data.raters.shape[1],
        "classes": data.num_classes,
        **{key: value for key, value in settings.items() if key not in EMBEDDED_ONLY},
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {platform.system()}",
    }
    console.print(
        f"softseg compare: {source}; {described['cases']} cases of {described['image size']}; "
        f"{described['raters']} raters; {data.num_classes} classes; {train.epochs} epochs"
    )

    with report.atomic_folder(args.out) as folder:
        results = []
        columns = (
            TextColumn("{task.description:<20}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=console) as progress:
            tasks = {c.name: progress.add_task(c.name, total=train.epochs) for c in configs}
            for config in configs:
                task = tasks[config.name]
                try:
                    results.append(
                        train_configuration(
                            config, split, train, on_epoch=lambda e, t=task: progress.update(t, completed=e)
                        )
                    )
                except TrainingError as error:
                    raise CommandError(str(error)) from error
                except (RuntimeError, ValueError, TypeError) as error:  # e.g. a registered loss rejects its target
                    raise CommandError(f"loss configuration {config.name!r} failed: {error}") from error
        rows = report.summary_rows(results)
        report.plot_one_pixel(folder / "one_pixel_loss.png")
        report.plot_learning_curves(folder / "learning_curves.png", results)
        report.plot_reliability(folder / "reliability.png", results, split.test_soft)
        described["total seconds"] = round(time.perf_counter() - started, 1)
        described["total CPU seconds"] = round(time.process_time() - cpu_started, 1)  # all threads; shows contention
        report.write_tables(folder, rows, results, described)
    console.print(report.rich_table(rows, title=f"softseg compare: {len(split.test_images)} test cases"))
    console.print(
        f"report in {args.out}/: summary.md|csv|json, learning_curves.png, reliability.png, one_pixel_loss.png"
    )
    console.print(
        f"{described['total seconds']} s in all, {described['total CPU seconds']} s of CPU time on {args.threads} threads"
    )
    return 0
