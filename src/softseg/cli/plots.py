"""The figures of ``softseg compare`` (matplotlib, Agg backend: files only, no display needed).

- ``learning_curves.png``: training loss and the monitored test soft Dice against the step or epoch;
- ``reliability.png``: one reliability diagram per configuration, pooled over its runs;
- ``paired_differences.png``: per metric, each test case's difference with the baseline;
- ``one_pixel_loss.png``: classic Dice beside softseg's for one pixel with target 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import softseg  # noqa: E402
from softseg.cli.configs import LossConfiguration, classic_dice_loss  # noqa: E402
from softseg.cli.report import ConfigurationSummary, case_values  # noqa: E402
from softseg.cli.train import LOWER_IS_BETTER, METRIC_LABELS, MONITOR, RunResult  # noqa: E402


def _runs_by_configuration(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    grouped: dict[str, list[RunResult]] = {}
    for result in results:
        grouped.setdefault(result.config.name, []).append(result)
    return grouped


def plot_learning_curves(path: Path, results: Sequence[RunResult]) -> None:
    """Training loss (each configuration in its own units, log scale) and test soft Dice against training time.

    One colour per configuration: a thin line per run (fold and seed) and a thick line for their mean at
    each evaluation. The x axis is the epoch when the histories have one, else the optimisation step. A
    third panel draws each term's weight over training when a staged configuration (a
    :class:`softseg.CompoundLoss`) recorded ``loss_weights``.

    Convention:
        - ``path``: the image file to write (format from its suffix, e.g. ``.png``; 110 dpi); ``results``:
          :class:`RunResult` sequence whose histories hold ``step`` (and ``epoch``), ``train_loss`` (> 0
          for the log scale) and ``test_soft_dice``.
        - Writes the figure, closes it, returns None. A history lacking a key raises ``KeyError``; an
          unwritable path raises ``OSError``.

    Example:
        >>> import tempfile
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> history = [{"epoch": 1, "step": 2, "train_loss": 0.9, "test_soft_dice": 0.4},
        ...            {"epoch": 2, "step": 4, "train_loss": 0.5, "test_soft_dice": 0.6}]
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], 1, 0, history, {}, (0,), 1.0, 1.0, None)
        >>> path = Path(tempfile.mkdtemp()) / "curves.png"
        >>> plot_learning_curves(path, [result])
        >>> path.exists()
        True
    """
    staged = any("loss_weights" in h for result in results for h in result.history)
    panels = 3 if staged else 2
    figure, (loss_axes, dice_axes, *weight_axes) = plt.subplots(1, panels, figsize=(5 * panels, 4))
    axis_key = "epoch" if results and results[0].history and "epoch" in results[0].history[0] else "step"
    for colour, (name, runs) in enumerate(_runs_by_configuration(results).items()):
        # A staged loss (softseg.CompoundLoss): each term's weight over training, the same for every run.
        terms = runs[0].history[0].get("loss_weights", {}) if runs[0].history else {}
        for style, term in zip(("-", "--", ":", "-."), terms):
            weights = [h["loss_weights"][term] for h in runs[0].history]
            x = [h[axis_key] for h in runs[0].history]
            weight_axes[0].plot(x, weights, style, color=f"C{colour}", label=f"{name}: {term}")
        for axes, key in ((loss_axes, "train_loss"), (dice_axes, MONITOR)):
            for run in runs:
                axes.plot(
                    [h[axis_key] for h in run.history],
                    [h[key] for h in run.history],
                    color=f"C{colour}",
                    alpha=0.25,
                    linewidth=0.8,
                )
            length = min(len(run.history) for run in runs)
            mean = [np.mean([run.history[i][key] for run in runs]) for i in range(length)]
            axes.plot([h[axis_key] for h in runs[0].history[:length]], mean, color=f"C{colour}", label=name)
    loss_axes.set(xlabel=axis_key, ylabel="training loss", title="training loss (own units)", yscale="log")
    dice_axes.set(xlabel=axis_key, ylabel="soft Dice", title="test soft Dice vs averaged raters (monitoring only)")
    dice_axes.legend()
    if staged:
        weight_axes[0].set(xlabel=axis_key, ylabel="weight", title="loss weights of the staged configurations")
        weight_axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(path: Path, results: Sequence[RunResult], summaries: Sequence[ConfigurationSummary]) -> None:
    """Reliability diagram per configuration: accuracy (the averaged raters' mass on the predicted class)
    against confidence, from the test pixels of all its runs (histograms summed over folds and seeds).

    Convention:
        - ``path``: the image file to write (110 dpi); ``results``: :class:`RunResult` sequence with
          ``reliability`` histograms (count, confidence sum, accuracy sum); ``summaries``: the configurations
          to draw, in order (their mean ECE in the titles). Empty bins are left out.
        - Writes the figure, closes it, returns None.

    Example:
        >>> import tempfile
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> from softseg.cli.stats import Interval
        >>> sums = (torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.5]), torch.tensor([0.0, 1.0]))
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], 1, 0, [], {}, (0,), 1.0, 1.0, sums)
        >>> ece = {"ece": Interval(0.1, None, None, 1)}
        >>> summary = ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], ece, {}, 1.0, 1.0, None, 1)
        >>> path = Path(tempfile.mkdtemp()) / "reliability.png"
        >>> plot_reliability(path, [result], [summary])
        >>> path.exists()
        True
    """
    grouped = _runs_by_configuration(results)
    figure, axes = plt.subplots(1, len(summaries), figsize=(3.2 * len(summaries), 3.4), squeeze=False)
    for axis, summary in zip(axes[0], summaries, strict=True):
        count, confidence, accuracy = (
            sum(parts) for parts in zip(*(r.reliability for r in grouped[summary.config.name]), strict=True)
        )
        bins = len(count)
        counted = count > 0
        centers = ((torch.arange(bins, dtype=torch.float64) + 0.5) / bins)[counted]
        axis.bar(
            centers.tolist(),
            (accuracy[counted] / count[counted]).tolist(),
            width=1.0 / bins,
            edgecolor="black",
            alpha=0.7,
        )
        axis.plot([0, 1], [0, 1], "k--", linewidth=1)
        axis.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            title=f"{summary.config.name}\nECE {summary.metrics['ece'].mean:.4f}",
        )
    axes[0][0].set_ylabel("accuracy (averaged raters)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_paired_differences(
    path: Path, results: Sequence[RunResult], configs: Sequence[LossConfiguration], *, baseline: str
) -> None:
    """Per metric, a box plot per configuration of its test cases' differences with ``baseline``, points on top.

    A point above the dashed zero line is a case where the configuration scored higher than the baseline
    (for ECE and Brier, lower is better: the panel says so).

    Convention:
        - ``path``: the image file to write (110 dpi); ``results``: every run; ``configs``: the
          configurations, the baseline among them (it is not drawn); ``baseline``: its name.
        - Writes the figure, closes it, returns None. Needs at least one configuration besides the baseline
          (else ``ValueError``).

    Example:
        >>> import tempfile
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS as known
        >>> def run(name, values):
        ...     return RunResult(known[name], 1, 0, [], {k: values for k in METRIC_LABELS}, (0, 1), 1.0, 1.0, None)
        >>> path = Path(tempfile.mkdtemp()) / "paired.png"
        >>> plot_paired_differences(path, [run("ce", [0.5, 0.6]), run("soft-ce", [0.6, 0.5])],
        ...                         [known["ce"], known["soft-ce"]], baseline="ce")
        >>> path.exists()
        True
    """
    others = [c for c in configs if c.name != baseline]
    if not others:
        raise ValueError("plot_paired_differences needs a configuration besides the baseline")
    columns = 3
    rows = -(-len(METRIC_LABELS) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    rng = np.random.default_rng(0)  # horizontal jitter of the points only
    for axis, (key, label) in zip(list(axes.flat)[: len(METRIC_LABELS)], METRIC_LABELS.items(), strict=True):
        reference = case_values(results, baseline, key)
        differences = []
        for config in others:
            values = case_values(results, config.name, key)
            differences.append([values[case] - reference[case] for case in reference])
        axis.boxplot(differences, showfliers=False)
        axis.set_xticks(range(1, len(others) + 1), [c.name for c in others], rotation=20, fontsize=8)
        for position, values in enumerate(differences, 1):
            axis.plot(position + rng.uniform(-0.12, 0.12, len(values)), values, ".", color="C0", alpha=0.6)
        axis.axhline(0.0, color="gray", linestyle="--", linewidth=1)
        better = "lower is better" if key in LOWER_IS_BETTER else "higher is better"
        axis.set(title=f"{label} ({better})", ylabel=f"difference with {baseline}")
    for axis in list(axes.flat)[len(METRIC_LABELS) :]:
        axis.set_visible(False)
    figure.suptitle("per test case: configuration minus baseline")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_one_pixel(path: Path, *, target: float = 0.5) -> None:
    """Loss against the prediction t of one pixel with target ``target``: classic Dice beside softseg's.

    Two panels over t in [0, 1] (201 points): classic soft Dice 1 - 2ty / (t + y) and softseg Dice
    |t - y| / (t + y), each marking y and the curve's minimum.

    Convention:
        - ``path``: the image file to write (format from its suffix; 110 dpi); ``target``: float y in [0, 1]
          (default 0.5).
        - Writes the figure, closes it, returns None. A ``target`` outside [0, 1] raises ``ValueError`` (the
          losses' target check); an unwritable path raises ``OSError``.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "one_pixel.png"
        >>> plot_one_pixel(path, target=0.3)
        >>> path.exists()
        True
    """
    predictions = torch.linspace(0.0, 1.0, 201)
    y = torch.tensor([[[target]]])
    curves = {
        "classic soft Dice  1 - 2ty / (t + y)": [
            float(classic_dice_loss(t.view(1, 1, 1), y, activation="none")) for t in predictions
        ],
        "softseg Dice  |t - y| / (t + y)": [
            float(softseg.dice_loss(t.view(1, 1, 1), y, activation="none")) for t in predictions
        ],
    }
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, (name, values) in zip(axes, curves.items(), strict=True):
        best = min(range(len(values)), key=values.__getitem__)
        axis.plot(predictions.tolist(), values)
        axis.axvline(target, color="gray", linestyle="--", label=f"target y = {target}")
        axis.plot(
            [predictions[best].item()],
            [values[best]],
            "o",
            color="red",
            label=f"minimum at t = {predictions[best]:.2f}",
        )
        axis.set(xlabel="prediction t", title=name)
        axis.legend()
    axes[0].set_ylabel("loss")
    figure.suptitle(f"one pixel with target {target}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
