"""``softseg compare``: train one small network per loss configuration on the same data, folds and seeds,
and report each metric's mean with a 95% interval and its paired comparison with a baseline.

Default data: the embedded multi-rater set (:mod:`softseg.cli.dataset`); ``--data DIR`` reads CHASE_DB1,
STARE, the DRIVE test set or the generic layout (:mod:`softseg.cli.datasets`). Configurations come from the
registry in :mod:`softseg.cli.configs`; training from :mod:`softseg.cli.train`; statistics from
:mod:`softseg.cli.stats`. The report is written to a temporary folder and moved to ``--out`` only when every
run succeeded: bad input, a failed run or Ctrl-C leave no partial report.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from softseg.cli import plots, report
from softseg.cli.common import CommandError, make_console
from softseg.cli.configs import LOSS_CONFIGURATIONS, LossConfiguration, accepts_mask, resolve_configurations
from softseg.cli.dataset import MultiRaterData, generate_multirater
from softseg.cli.datasets import LAYOUTS, load_data
from softseg.cli.images import CHANNELS, DataError
from softseg.cli.train import (
    HARD_TARGETS,
    Fold,
    RunResult,
    TrainingData,
    TrainingError,
    TrainSettings,
    make_folds,
    prepare_data,
    total_steps,
    train_run,
)

# The default takes 2 to 5 minutes on two otherwise idle CPU cores (measured with torch 2.13 CPU: 125 s on
# an AMD EPYC (Zen 5) VM, 281 s on an Intel Xeon VM), longer where other jobs share the cores; --quick
# takes seconds.
PRESETS = {
    "default": {
        "images": 240,
        "size": 64,
        "raters": 5,
        "epochs": 40,
        "batch_size": 16,
        "learning_rate": 3e-3,
        "width": 16,
        "depth": 2,
    },
    "quick": {
        "images": 6,
        "size": 16,
        "raters": 3,
        "epochs": 2,
        "batch_size": 4,
        "learning_rate": 3e-3,
        "width": 4,
        "depth": 2,
    },
}
EMBEDDED_ONLY = ("images", "size", "raters")
CONVERGENCE_TOLERANCE = 0.01
FEW_STEPS = 200  # below this many steps on real data, say that --steps and --patch exist


def _integer(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}; got {value}")
        return value

    return parse


_positive_int = _integer(1, "a positive integer")
_non_negative_int = _integer(0, "a non-negative integer")


def _number(low: float, high: float, what: str, *, closed: tuple[bool, bool]):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        above = value >= low if closed[0] else value > low
        below = value <= high if closed[1] else value < high
        if not (above and below):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text}")
        return value

    return parse


_positive_float = _number(0.0, float("inf"), "a positive finite number", closed=(False, False))
_scale = _number(0.0, 1.0, "a scale in (0, 1]", closed=(False, True))
_tolerance = _number(0.0, 1.0, "a number in [0, 1)", closed=(True, False))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand (options, help text, its runner) to ``subparsers``.

    Convention:
        Options default to None where the preset (``PRESETS``: default or ``--quick``) or the data decide;
        an explicit option overrides the preset. The parsed namespace carries ``run``.

    Example:
        >>> sub = argparse.ArgumentParser(prog="softseg").add_subparsers()
        >>> args = add_parser(sub).parse_args(["--quick", "--epochs", "3", "--folds", "3"])
        >>> args.epochs, args.folds, args.seeds, args.hard_target
        (3, 3, 1, 'majority')
    """
    parser = subparsers.add_parser(
        "compare",
        help="train a small network with several losses on multi-rater data and report how each did",
        description=(
            "Train a compact U-Net once per loss configuration on the same data, folds and seeds (same weights "
            "at the start, same batches) and write a report: each metric's mean with a 95% interval over the "
            "test cases, its paired difference with a baseline (Wilcoxon signed-rank p), learning curves, "
            "reliability diagrams, paired-difference plots. Without --data it uses the embedded multi-rater "
            "data set, generated from --seed."
        ),
        epilog=(
            "--data layouts, recognised by their files: "
            + "; ".join(f"{layout.name}: {layout.files}" for layout in LAYOUTS)
            + f". Known loss configurations: {', '.join(sorted(LOSS_CONFIGURATIONS))}. "
            "Register your own with softseg.cli.configs.register_loss_configuration in a module and load it "
            "with --import MODULE."
        ),
        allow_abbrev=False,
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, metavar="DIR", help="data folder (default: embedded data)")
    data.add_argument(
        "--channel",
        choices=CHANNELS,
        help="image channel(s) the network sees (default: green for colour fundus sets, gray otherwise)",
    )
    data.add_argument(
        "--scale",
        type=_scale,
        default=1.0,
        metavar="S",
        help="working scale of --data images, in (0, 1]: images by area, masks by area then 0.5 (default 1)",
    )
    default = PRESETS["default"]
    data.add_argument(
        "--raters",
        metavar="N",
        type=_positive_int,
        help=f"raters per image, embedded data (default {default['raters']})",
    )
    data.add_argument(
        "--size",
        metavar="N",
        type=_positive_int,
        help=f"image side, embedded data, a multiple of 2 ** depth (default {default['size']})",
    )
    data.add_argument(
        "--images",
        metavar="N",
        type=_positive_int,
        help=f"number of images, embedded data (default {default['images']})",
    )

    design = parser.add_argument_group("comparison")
    design.add_argument(
        "--losses",
        metavar="NAME[,NAME]",
        help="configurations to compare (default: ce,classic-dice,softseg-dice,softseg-jaccard-ce)",
    )
    design.add_argument(
        "--baseline", metavar="NAME", help="configuration the others are compared with (default: the first)"
    )
    design.add_argument(
        "--hard-target",
        choices=HARD_TARGETS,
        default="majority",
        help="what the hard-label configurations train on: the majority vote, rater 1, or a random rater per "
        "case and step (default majority)",
    )
    design.add_argument(
        "--folds", metavar="K", type=int, help="K-fold cross-validation over cases (default: one 75/25 split)"
    )
    design.add_argument("--seeds", metavar="N", type=_positive_int, default=1, help="seeds per fold (default 1)")
    design.add_argument(
        "--seed",
        metavar="N",
        type=_non_negative_int,
        default=0,
        help="seed of the data, the folds, the weights and the batches; seed s of --seeds uses N + s (default 0)",
    )
    design.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (it may register loss configurations); repeatable",
    )
    design.add_argument(
        "--out",
        type=Path,
        default=Path("softseg-report"),
        metavar="DIR",
        help="report folder (default: ./softseg-report)",
    )

    training = parser.add_argument_group("training")
    training.add_argument(
        "--epochs",
        metavar="N",
        type=_positive_int,
        help=f"train by epochs of whole images (default {default['epochs']})",
    )
    training.add_argument(
        "--steps",
        metavar="N",
        type=_positive_int,
        help="train by N optimisation steps on augmented crops instead of epochs",
    )
    training.add_argument(
        "--patch",
        metavar="P",
        type=_positive_int,
        help="with --steps: random P x P crops, a multiple of 2 ** depth (default: whole images)",
    )
    training.add_argument(
        "--evaluations",
        metavar="N",
        type=_positive_int,
        default=10,
        help="with --steps: monitoring points (default 10)",
    )
    training.add_argument(
        "--converge-tol",
        dest="converge_tol",
        metavar="T",
        type=_tolerance,
        default=CONVERGENCE_TOLERANCE,
        help="warn when the test soft Dice rose by more than T over the last tenth of training "
        f"(default {CONVERGENCE_TOLERANCE})",
    )
    training.add_argument(
        "--batch-size", metavar="N", type=_positive_int, help=f"batch size (default {default['batch_size']})"
    )
    training.add_argument(
        "--lr",
        dest="learning_rate",
        metavar="RATE",
        type=_positive_float,
        help=f"Adam learning rate (default {default['learning_rate']})",
    )
    training.add_argument(
        "--width",
        metavar="N",
        type=_positive_int,
        help=f"channels of the network's first level (default {default['width']})",
    )
    training.add_argument(
        "--depth", metavar="N", type=_positive_int, help=f"pooling levels of the network (default {default['depth']})"
    )
    training.add_argument(
        "--threads", metavar="N", type=_positive_int, default=2, help="CPU threads for torch (default 2)"
    )
    training.add_argument(
        "--quick", action="store_true", help="tiny configuration that runs in seconds (tests, smoke checks)"
    )
    parser.set_defaults(run=_run)
    return parser


def _settings(args: argparse.Namespace) -> dict:
    preset = PRESETS["quick" if args.quick else "default"]
    resolved = {key: getattr(args, key) if getattr(args, key) is not None else value for key, value in preset.items()}
    multiple = 2 ** resolved["depth"]
    if args.data is not None:
        given = [f"--{key}" for key in EMBEDDED_ONLY if getattr(args, key) is not None]
        if given:
            raise CommandError(f"{', '.join(given)} apply to the embedded data only; --data {args.data} was given")
        for key in EMBEDDED_ONLY:
            resolved.pop(key)
    else:
        if args.channel is not None:
            raise CommandError("--channel applies to --data only")
        if args.scale != 1.0:
            raise CommandError("--scale applies to --data only")
        if resolved["size"] % multiple:
            raise CommandError(
                f"--size must be a multiple of {multiple} (2 ** --depth: the network pools {resolved['depth']} times); "
                f"got {resolved['size']}"
            )
        if resolved["images"] < 2:
            raise CommandError(f"--images must be at least 2 (one to train on, one to test); got {resolved['images']}")
    if args.folds is not None and args.folds < 2:
        raise CommandError(
            f"--folds must be at least 2 (k-fold cross-validation); got {args.folds} (leave it out for one split)"
        )
    if args.steps is not None and args.epochs is not None:
        raise CommandError("give --epochs or --steps, not both")
    if args.steps is None and args.patch is not None:
        raise CommandError("--patch needs --steps (training on crops counts steps, not epochs)")
    if args.patch is not None and args.patch % multiple:
        raise CommandError(
            f"--patch must be a multiple of {multiple} (2 ** --depth: the network pools {resolved['depth']} times); "
            f"got {args.patch}"
        )
    return resolved


def _check_out(out: Path) -> None:
    """Stop before any training when the report cannot be written where ``--out`` says."""
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out must be a folder; {out} exists and is a file")
    existing = out.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"--out {out} cannot be created: {existing} is a file, not a folder")
    try:  # the report is staged next to --out: try that where it will happen (permissions, read-only, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".softseg-probe-", dir=existing))
    except OSError as error:
        raise CommandError(f"--out {out} cannot be written: {error.strerror or error} in {existing}") from error


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt  # a job scheduler's SIGTERM ends the run like Ctrl-C: cleanly, without a partial report


def _run(args: argparse.Namespace) -> int:
    """Run ``compare``; Ctrl-C and SIGTERM raise ``KeyboardInterrupt`` (:func:`softseg.cli.main`: exit 130)."""
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        return _compare(args)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _load(args: argparse.Namespace, settings: dict) -> tuple[MultiRaterData, str, dict]:
    """The data, a one-line description of it and what the report says about it."""
    if args.data is None:
        source = f"embedded multi-rater data (seed {args.seed})"
        data = generate_multirater(settings["images"], size=settings["size"], raters=settings["raters"], seed=args.seed)
        return data, source, {"data": source}
    loaded = load_data(args.data, channel=args.channel, scale=args.scale)
    fov = "with" if loaded.data.fov is not None else "without"
    source = (
        f"{loaded.layout.name} layout in {args.data} "
        f"({loaded.channel} channel, scale {args.scale:g}, {fov} field of view)"
    )
    described = {
        "data": str(args.data),
        "layout": loaded.layout.name,
        "channel": loaded.channel,
        "scale": args.scale,
        "field of view": loaded.data.fov is not None,
    }
    return loaded.data, source, described


class _Plan(NamedTuple):
    """Everything checked and decided before the first training step."""

    configs: list[LossConfiguration]
    baseline: str
    data: TrainingData
    folds: list[Fold]
    seeds: list[int]
    train: TrainSettings
    run_steps: dict[int, int]
    notes: list[str]
    described: dict
    headline: str


def _plan(args: argparse.Namespace) -> _Plan:
    """Check every option and read the data; raises :class:`CommandError` before any training."""
    settings = _settings(args)
    _check_out(args.out)
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise CommandError(f"--import {module}: {error}") from error
    try:
        configs = resolve_configurations(args.losses)
    except ValueError as error:
        raise CommandError(str(error)) from error
    baseline = args.baseline if args.baseline is not None else configs[0].name
    if baseline not in [c.name for c in configs]:
        raise CommandError(
            f"--baseline {baseline!r} is not among the configurations ({', '.join(c.name for c in configs)})"
        )
    try:
        raw, source, described = _load(args, settings)
        data = prepare_data(raw)
        folds = make_folds(len(data.names), folds=args.folds, seed=args.seed)
    except (DataError, ValueError) as error:
        raise CommandError(str(error)) from error
    height, width = data.images.shape[-2:]
    if args.patch is not None and args.patch > min(height, width):
        raise CommandError(f"--patch {args.patch} is larger than the images ({height}x{width} at the working scale)")
    if data.fov is not None:
        for config in configs:
            if not accepts_mask(config.build()):
                raise CommandError(
                    f"loss configuration {config.name!r} takes no mask= argument, but {args.data} has a field of view "
                    "(its outside pixels must leave the loss)"
                )
    train = TrainSettings(
        settings["epochs"],
        settings["batch_size"],
        settings["learning_rate"],
        settings["width"],
        args.seed,
        depth=settings["depth"],
        steps=args.steps,
        patch=args.patch,
        evaluations=args.evaluations,
        hard_target=args.hard_target,
    )
    if args.steps is not None:
        settings.pop("epochs")
    run_steps = {fold.number: total_steps(train, len(fold.train)) for fold in folds}
    notes = []
    if data.raters.shape[1] == 1:
        notes.append("the data has one rater: the averaged raters equal its mask, so soft and hard targets coincide")
    if args.data is not None and args.steps is None and max(run_steps.values()) < FEW_STEPS:
        notes.append(
            f"{train.epochs} epochs of whole images make only {max(run_steps.values())} optimisation steps per run; "
            "real images want --steps N --patch P (thousands of augmented crops)"
        )
    seeds = [args.seed + s for s in range(args.seeds)]
    if train.steps is None:
        training = f"{train.epochs} epochs"
    else:
        crops = f"crops of {train.patch}x{train.patch}" if train.patch else "whole images"
        training = f"{train.steps} steps of {train.batch_size} {crops}"
    split = f"{len(folds)} folds" if args.folds else f"{len(folds[0].train)} train, {len(folds[0].test)} test cases"
    described.update(
        {
            "cases": len(data.names),
            "split": split,
            "image size": f"{height}x{width}",
            "raters": data.raters.shape[1],
            "classes": data.num_classes,
            "training": training,
            "seeds": seeds,
            "hard target": args.hard_target,
            "baseline": baseline,
            **{key: value for key, value in settings.items() if key not in EMBEDDED_ONLY},
            "seed": args.seed,
            "threads": args.threads,
            "torch": torch.__version__,
            "machine": f"{platform.machine()}, {platform.system()}",
        }
    )
    headline = (
        f"softseg compare: {source}; {len(data.names)} cases of {height}x{width}; {data.raters.shape[1]} raters; "
        f"{data.num_classes} classes; {split} x {len(seeds)} seed(s); {training}"
    )
    return _Plan(configs, baseline, data, folds, seeds, train, run_steps, notes, described, headline)


def _compare(args: argparse.Namespace) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()  # data, training, evaluation and report
    console = make_console()
    torch.set_num_threads(args.threads)
    plan = _plan(args)
    console.print(plan.headline, highlight=False, soft_wrap=True)
    for note in plan.notes:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    results: list[RunResult] = []
    compared = len(plan.configs) > 1
    try:
        with report.atomic_folder(args.out) as folder:
            _train_all(console, plan, results)
            summaries = report.summarise(results, plan.configs, baseline=plan.baseline)
            warnings = report.convergence_warnings(summaries, tolerance=args.converge_tol)
            plots.plot_one_pixel(folder / "one_pixel_loss.png")
            plots.plot_learning_curves(folder / "learning_curves.png", results)
            plots.plot_reliability(folder / "reliability.png", results, summaries)
            if compared:
                plots.plot_paired_differences(
                    folder / "paired_differences.png", results, plan.configs, baseline=plan.baseline
                )
            described = plan.described
            described["total seconds"] = round(time.perf_counter() - started, 1)
            described["total CPU seconds"] = round(
                time.process_time() - cpu_started, 1
            )  # all threads; shows contention
            notes = [*plan.notes, *(f"warning: {w}" for w in warnings)]
            report.write_tables(
                folder, summaries, results, described, baseline=plan.baseline, names=plan.data.names, notes=notes
            )
    except OSError as error:
        raise CommandError(f"--out {args.out}: cannot write the report: {error}") from error
    for table in report.rich_tables(summaries, baseline=plan.baseline, cases=summaries[0].metrics["soft_dice"].n):
        console.print(table)
    for warning in warnings:
        console.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    figures = "learning_curves.png, reliability.png, " + ("paired_differences.png, " if compared else "")
    lines = (
        f"report in {args.out}/: summary.md|csv|json, cases.csv, {figures}one_pixel_loss.png",
        f"{described['total seconds']} s in all, "
        f"{described['total CPU seconds']} s of CPU time on {args.threads} threads",
    )
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    return 0


def _train_all(console: Console, plan: _Plan, results: list[RunResult]) -> None:
    """Every configuration on every fold with every seed; progress bars in a terminal, else one line per run."""
    runs = [(fold, seed, config) for fold in plan.folds for seed in plan.seeds for config in plan.configs]
    per_config = sum(plan.run_steps[fold.number] for fold in plan.folds) * len(plan.seeds)
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
        tasks = {c.name: progress.add_task(c.name, total=per_config) for c in plan.configs}
        done_steps = dict.fromkeys(tasks, 0)
        for index, (fold, seed, config) in enumerate(runs, 1):
            task = tasks[config.name]
            run_started = time.perf_counter()
            offset = done_steps[config.name]
            try:
                result = train_run(
                    config,
                    plan.data,
                    fold,
                    plan.train,
                    run_seed=seed,
                    on_step=lambda step, t=task, o=offset: progress.update(t, completed=o + step),
                )
            except TrainingError as error:
                raise CommandError(str(error)) from error
            except (RuntimeError, ValueError, TypeError) as error:  # e.g. a registered loss rejects its target
                raise CommandError(f"loss configuration {config.name!r} failed: {error}") from error
            done_steps[config.name] += plan.run_steps[fold.number]
            results.append(result)
            if not console.is_terminal:
                elapsed = time.perf_counter() - started
                left = elapsed / index * (len(runs) - index)
                print(
                    f"{config.name} fold {fold.number}/{len(plan.folds)} seed {seed}: "
                    f"{time.perf_counter() - run_started:.1f} s; "
                    f"run {index}/{len(runs)}, elapsed {_duration(elapsed)}, about {_duration(left)} left",
                    flush=True,
                )
