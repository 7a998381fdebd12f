"""The report of ``softseg compare``: per-case values to summaries (mean, 95% interval, paired comparison
with the baseline), and the report folder's tables (Markdown, CSV, JSON) and rich tables.

The folder is assembled in a temporary sibling and moved into place only when everything succeeded,
so a failed or interrupted run never leaves a partial report (and keeps an earlier report intact).
Figures are drawn by :mod:`softseg.cli.plots`.
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

from rich.table import Table

from softseg.cli.configs import LossConfiguration
from softseg.cli.stats import LEVEL, PAIRED_TEST, Interval, PairedComparison, mean_interval, paired_comparison
from softseg.cli.train import LOWER_IS_BETTER, METRIC_LABELS, RunResult


@contextlib.contextmanager
def atomic_folder(destination: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``destination``; on success it replaces ``destination``.

    On an exception (Ctrl-C included) the temporary folder is deleted and ``destination`` is left as it was.

    Convention:
        - ``destination``: ``str`` or ``Path`` of a folder (may exist; its parents are created).
        - Yields a ``Path``: a fresh folder ``.<name>.partial-*`` in ``destination.parent`` (mode 0o755). On a
          normal exit it is renamed to ``destination``; an existing ``destination`` is replaced (moved aside,
          then deleted) rather than merged.
        - Raises ``ValueError`` (before yielding) when ``destination`` exists and is not a folder, ``OSError``
          when the folder cannot be created; an exception in the ``with`` body removes the staging folder
          and propagates unchanged.

    Example:
        >>> root = Path(tempfile.mkdtemp())
        >>> with atomic_folder(root / "report") as folder:
        ...     _ = (folder / "table.md").write_text("| a |")
        >>> sorted(p.name for p in root.iterdir()), (root / "report" / "table.md").exists()
        (['report'], True)
        >>> with atomic_folder(root / "report") as folder:
        ...     raise RuntimeError("failed")
        Traceback (most recent call last):
        RuntimeError: failed
        >>> sorted(p.name for p in root.iterdir()), (root / "report" / "table.md").exists()
        (['report'], True)
    """
    destination = Path(destination)
    if destination.exists() and not destination.is_dir():
        raise ValueError(f"--out must be a folder; {destination} exists and is a file")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a report is an ordinary folder
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if destination.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{destination.name}.previous-", dir=destination.parent))
        previous.rmdir()
        destination.rename(previous)
    staging.rename(destination)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def case_values(results: Sequence[RunResult], name: str, metric: str) -> dict[int, float]:
    """One value per test case of configuration ``name``: ``metric`` averaged over the seeds that tested it.

    Convention:
        - ``results``: :class:`RunResult` sequence; ``name``: a configuration name; ``metric``: a key of
          :data:`METRIC_LABELS`. Returns {case index: mean value}, sorted by case index (empty when no
          result has that configuration).

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> ce = LOSS_CONFIGURATIONS["ce"]
        >>> runs = [RunResult(ce, 1, s, [], {"ece": [0.1 * (s + 1), 0.5]}, (4, 2), 1.0, 1.0, None) for s in (0, 1)]
        >>> {k: round(v, 4) for k, v in case_values(runs, "ce", "ece").items()}
        {2: 0.5, 4: 0.15}
    """
    collected: dict[int, list[float]] = defaultdict(list)
    for result in results:
        if result.config.name == name:
            for case, value in zip(result.test_cases, result.case_metrics[metric], strict=True):
                collected[case].append(value)
    return {case: sum(values) / len(values) for case, values in sorted(collected.items())}


class ConfigurationSummary(NamedTuple):
    """One configuration's summary over its runs.

    Convention:
        - ``config``: the :class:`LossConfiguration`; ``metrics``: metric key -> :class:`Interval` over the
          test cases; ``paired``: metric key -> :class:`PairedComparison` with the baseline (empty for the
          baseline itself); ``train_seconds``/``cpu_seconds``: mean per run of the optimisation's wall and
          CPU time; ``last_tenth_gain``: mean over runs of the monitored soft Dice's rise over the last tenth
          of training (None when no run could judge it); ``runs``: the number of runs.
        - A plain ``NamedTuple``; :func:`summarise` builds them.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], {}, {}, 1.0, 2.0, None, 3).runs
        3
    """

    config: LossConfiguration
    metrics: dict[str, Interval]
    paired: dict[str, PairedComparison]
    train_seconds: float
    cpu_seconds: float
    last_tenth_gain: float | None
    runs: int


def summarise(
    results: Sequence[RunResult], configs: Sequence[LossConfiguration], *, baseline: str
) -> list[ConfigurationSummary]:
    """Per configuration: every metric's mean and 95% interval over the test cases, and the paired comparison
    of each case with the same case under ``baseline`` (:mod:`softseg.cli.stats`).

    Convention:
        - ``results``: every run of every configuration in ``configs`` (each case tested by each
          configuration); ``baseline``: the name of one of ``configs``.
        - Returns one :class:`ConfigurationSummary` per configuration, in the order of ``configs``.
        - Raises ``ValueError`` when a configuration did not test the same cases as the baseline.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS as known
        >>> def run(name, values):
        ...     return RunResult(known[name], 1, 0, [], {k: values for k in METRIC_LABELS}, (0, 1, 2), 1.0, 1.0, None)
        >>> runs = [run("ce", [0.5, 0.6, 0.7]), run("soft-ce", [0.6, 0.8, 0.7])]
        >>> rows = summarise(runs, [known["ce"], known["soft-ce"]], baseline="ce")
        >>> round(rows[1].paired["soft_dice"].difference.mean, 4), rows[0].paired
        (0.1, {})
    """
    summaries = []
    for config in configs:
        runs = [r for r in results if r.config.name == config.name]
        intervals, paired = {}, {}
        for metric in METRIC_LABELS:
            values = case_values(runs, config.name, metric)
            intervals[metric] = mean_interval(list(values.values()))
            if config.name != baseline:
                reference = case_values(results, baseline, metric)
                if list(reference) != list(values):
                    raise ValueError(f"configuration {config.name!r} did not test the same cases as {baseline!r}")
                paired[metric] = paired_comparison(list(values.values()), list(reference.values()))
        judged = [r.last_tenth_gain for r in runs if r.last_tenth_gain is not None]
        summaries.append(
            ConfigurationSummary(
                config,
                intervals,
                paired,
                sum(r.seconds for r in runs) / len(runs),
                sum(r.cpu_seconds for r in runs) / len(runs),
                sum(judged) / len(judged) if judged else None,
                len(runs),
            )
        )
    return summaries


def convergence_warnings(summaries: Sequence[ConfigurationSummary], *, tolerance: float) -> list[str]:
    """One line per configuration whose monitored soft Dice rose by more than ``tolerance`` in the last tenth.

    Convention:
        - ``summaries``: :class:`ConfigurationSummary` sequence; ``tolerance``: float >= 0. Returns strings.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> late = ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], {}, {}, 1.0, 1.0, 0.05, 3)
        >>> convergence_warnings([late], tolerance=0.01)[0]
        'ce: the test soft Dice still rose by 0.0500 over the last tenth of training (mean of 3 runs); train longer'
    """
    return [
        f"{s.config.name}: the test soft Dice still rose by {s.last_tenth_gain:.4f} over the last tenth of training "
        f"(mean of {s.runs} runs); train longer"
        for s in summaries
        if s.last_tenth_gain is not None and s.last_tenth_gain > tolerance
    ]


def _number(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def format_p(p_value: float | None) -> str:
    """A p-value for a table: three decimals, scientific below 0.001, ``n/a`` for None.

    Convention:
        - ``p_value``: float in [0, 1] or None. Returns a string.

    Example:
        >>> format_p(0.04321), format_p(0.0000123), format_p(None)
        ('0.043', '1.2e-05', 'n/a')
    """
    if p_value is None:
        return "n/a"
    return f"{p_value:.3f}" if p_value >= 0.001 else f"{p_value:.1e}"


def format_interval(interval: Interval, *, signed: bool = False) -> str:
    """``mean [low, high]`` with 4 decimals (``+`` signs for differences); ``mean`` alone without an interval.

    Convention:
        - ``interval``: :class:`Interval`; ``signed``: show the sign of positive numbers. Returns a string.

    Example:
        >>> format_interval(Interval(0.8, 0.79, 0.81, 9)), format_interval(Interval(0.01, -0.02, 0.04, 9), signed=True)
        ('0.8000 [0.7900, 0.8100]', '+0.0100 [-0.0200, +0.0400]')
    """
    text = _number(interval.mean, signed=signed)
    if interval.low is None:
        return text
    return f"{text} [{_number(interval.low, signed=signed)}, {_number(interval.high, signed=signed)}]"


def markdown_tables(summaries: Sequence[ConfigurationSummary], *, baseline: str) -> str:
    """Two GitHub Markdown tables: the means with 95% intervals, and the paired differences with the baseline.

    Convention:
        - ``summaries``: :func:`summarise` output (at least one); ``baseline``: its baseline's name.
        - Returns the two tables (the second only with two or more configurations) as one string, lines
          joined by ``\\n``, no trailing newline.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> one = {k: Interval(0.5, 0.4, 0.6, 9) for k in METRIC_LABELS}
        >>> summary = ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], one, {}, 3.0, 5.0, None, 1)
        >>> lines = markdown_tables([summary], baseline="ce").splitlines()
        >>> len(lines), lines[0][:45]
        (3, '| loss | target | Dice vs majority | Dice vs ')
        >>> lines[2].split(" | ")[:3], lines[2].split(" | ")[-1]
        (['| ce', 'hard', '0.5000 [0.4000, 0.6000]'], '3.0 |')
    """
    headers = ["loss", "target", *METRIC_LABELS.values(), "train time (s)"]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for s in summaries:
        cells = [s.config.name, s.config.target, *(format_interval(s.metrics[k]) for k in METRIC_LABELS)]
        lines.append("| " + " | ".join([*cells, f"{s.train_seconds:.1f}"]) + " |")
    others = [s for s in summaries if s.paired]
    if others:
        headers = ["loss", *(f"{label}: difference vs {baseline}, p" for label in METRIC_LABELS.values())]
        lines += ["", "| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
        for s in others:
            cells = [
                f"{format_interval(s.paired[k].difference, signed=True)}, p = {format_p(s.paired[k].p_value)}"
                for k in METRIC_LABELS
            ]
            lines.append("| " + " | ".join([s.config.name, *cells]) + " |")
    return "\n".join(lines)


def _best(summaries: Sequence[ConfigurationSummary], metric: str) -> float:
    means = [s.metrics[metric].mean for s in summaries]
    return min(means) if metric in LOWER_IS_BETTER else max(means)


def rich_tables(summaries: Sequence[ConfigurationSummary], *, baseline: str, cases: int) -> list[Table]:
    """The summary for the terminal: means with the interval's half-width, then the paired differences.

    The t interval is symmetric, so ``mean ±h`` is the whole interval. The best mean of every metric is bold
    (lowest ECE and Brier), and so is every difference with p < 0.05.

    Convention:
        - ``summaries``: :func:`summarise` output (at least one); ``baseline``: its name; ``cases``: the
          number of test cases. Returns one ``rich.table.Table``, two with two or more configurations.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> one = {k: Interval(0.5, 0.4, 0.6, 9) for k in METRIC_LABELS}
        >>> summary = ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], one, {}, 3.0, 5.0, None, 1)
        >>> [table.row_count for table in rich_tables([summary], baseline="ce", cases=9)]
        [1]
    """

    def cell(interval: Interval, *, signed: bool = False) -> str:
        text = _number(interval.mean, signed=signed)
        return text if interval.low is None else f"{text}\n±{(interval.high - interval.low) / 2:.4f}"

    means = Table(title=f"softseg compare: mean ±{LEVEL:.0%} interval over {cases} test cases")
    for header in ("loss", "target", *METRIC_LABELS.values(), "train time (s)"):
        means.add_column(header, justify="left" if header in ("loss", "target") else "right")
    for s in summaries:
        cells = []
        for key in METRIC_LABELS:
            text = cell(s.metrics[key])
            bold = len(summaries) > 1 and s.metrics[key].mean == _best(summaries, key)
            cells.append(f"[bold]{text}[/bold]" if bold else text)
        means.add_row(s.config.name, s.config.target, *cells, f"{s.train_seconds:.1f}")
    tables = [means]
    others = [s for s in summaries if s.paired]
    if others:
        paired = Table(title=f"difference with {baseline} per test case: mean ±{LEVEL:.0%} interval, p ({PAIRED_TEST})")
        for header in ("loss", *METRIC_LABELS.values()):
            paired.add_column(header, justify="left" if header == "loss" else "right")
        for s in others:
            cells = []
            for key in METRIC_LABELS:
                comparison = s.paired[key]
                text = f"{cell(comparison.difference, signed=True)}\np {format_p(comparison.p_value)}"
                significant = comparison.p_value is not None and comparison.p_value < 0.05
                cells.append(f"[bold]{text}[/bold]" if significant else text)
            paired.add_row(s.config.name, *cells)
        tables.append(paired)
    return tables


def _interval_json(interval: Interval) -> dict:
    return interval._asdict()


def write_tables(
    folder: Path,
    summaries: Sequence[ConfigurationSummary],
    results: Sequence[RunResult],
    settings: dict,
    *,
    baseline: str,
    names: Sequence[str],
    notes: Sequence[str] = (),
) -> None:
    """summary.md, summary.csv, cases.csv and summary.json.

    Convention:
        - ``folder``: an existing folder (files in it are overwritten); ``summaries``: :func:`summarise` of
          ``results``; ``settings``: JSON-serialisable dict, listed at the top of summary.md and stored in
          summary.json; ``baseline``: the baseline's name; ``names``: case names by index; ``notes``:
          warnings and notes, listed in summary.md and summary.json.
        - summary.csv: one row per (configuration, metric) with the mean, interval, paired difference with
          its interval and p; cases.csv: one row per (configuration, fold, seed, test case) with every
          metric; summary.json: settings, notes, summaries and every run's history and per-case values.
        - Raises ``TypeError`` for non-serialisable settings, ``OSError`` when a file cannot be written.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> values = {k: [0.5, 0.7] for k in METRIC_LABELS}
        >>> run = RunResult(LOSS_CONFIGURATIONS["ce"], 1, 0, [], values, (0, 1), 1.0, 1.0, None)
        >>> summaries = summarise([run], [run.config], baseline="ce")
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_tables(folder, summaries, [run], {"epochs": 1}, baseline="ce", names=("a", "b"))
        >>> sorted(p.name for p in folder.iterdir())
        ['cases.csv', 'summary.csv', 'summary.json', 'summary.md']
    """
    header = "# softseg compare\n\n" + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n\n"
    warned = "".join(f"- {note}\n" for note in notes)
    explained = (
        f"\n\nTest cases only; each case's value is the mean over the seeds. Intervals: {LEVEL:.0%} Student-t over "
        f"the test cases. Paired differences: the case's value minus the same case's value under {baseline}; "
        f"p from the {PAIRED_TEST} test (not corrected for the several metrics and configurations). "
        "Dice vs majority: hard prediction (argmax) against the majority vote. Dice vs raters: the mean of its "
        "Dice against each rater. soft Dice: probabilities against the averaged raters (1 exactly when equal). "
        "thresholded Dice: both binarised at 0.1, ..., 0.9 (QUBIQ). These four leave the background out. ECE "
        "(top-label, 15 bins) and Brier (sum over classes of squared errors, mean over pixels): against the "
        "averaged raters; lower is better. Pixels outside a field of view count nowhere. train time: "
        "seconds of optimisation per run.\n"
    )
    text = header + (f"Notes:\n\n{warned}\n" if notes else "") + markdown_tables(summaries, baseline=baseline)
    (folder / "summary.md").write_text(text + explained)
    with open(folder / "summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "loss",
                "target",
                "metric",
                "mean",
                "low",
                "high",
                "n",
                "difference",
                "difference_low",
                "difference_high",
                "p_value",
            ]
        )
        for s in summaries:
            for key in METRIC_LABELS:
                interval = s.metrics[key]
                row = [s.config.name, s.config.target, key, interval.mean, interval.low, interval.high, interval.n]
                paired = s.paired.get(key)
                row += [None] * 4 if paired is None else [*paired.difference[:3], paired.p_value]
                writer.writerow(["" if v is None else v for v in row])
    with open(folder / "cases.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["loss", "fold", "seed", "case", *METRIC_LABELS])
        for r in results:
            for i, case in enumerate(r.test_cases):
                writer.writerow(
                    [r.config.name, r.fold, r.seed, names[case], *(r.case_metrics[k][i] for k in METRIC_LABELS)]
                )
    payload = {
        "settings": settings,
        "baseline": baseline,
        "interval": f"{LEVEL:.0%} Student-t over test cases",
        "paired_test": PAIRED_TEST,
        "notes": list(notes),
        "results": {
            s.config.name: {
                "target": s.config.target,
                "description": s.config.description,
                "metrics": {k: _interval_json(v) for k, v in s.metrics.items()},
                "paired": {k: {**_interval_json(v.difference), "p_value": v.p_value} for k, v in s.paired.items()},
                "train_seconds": s.train_seconds,
                "cpu_seconds": s.cpu_seconds,
                "last_tenth_gain": s.last_tenth_gain,
                "runs": s.runs,
            }
            for s in summaries
        },
        "runs": [
            {
                "loss": r.config.name,
                "fold": r.fold,
                "seed": r.seed,
                "test_cases": [names[c] for c in r.test_cases],
                "case_metrics": r.case_metrics,
                "train_seconds": r.seconds,
                "history": r.history,
            }
            for r in results
        ],
    }
    (folder / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")
