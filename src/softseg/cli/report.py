"""The report folder of ``softseg compare``: tables (Markdown, CSV, JSON) and figures (matplotlib, Agg).

The folder is assembled in a temporary sibling and moved into place only when everything succeeded,
so a failed run never leaves a partial report (and keeps an earlier report intact).
"""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from rich.table import Table  # noqa: E402

import softseg  # noqa: E402
from softseg import metrics  # noqa: E402
from softseg.cli.configs import classic_dice_loss  # noqa: E402
from softseg.cli.train import METRIC_LABELS, RunResult  # noqa: E402

COLUMNS = ("loss", "target", *METRIC_LABELS, "train_seconds")
HEADERS = ("loss", "target", *METRIC_LABELS.values(), "train time (s)")
LOWER_IS_BETTER = {"ece", "brier"}


@contextlib.contextmanager
def atomic_folder(destination: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``destination``; on success it replaces ``destination``.

    On an exception the temporary folder is deleted and ``destination`` is left as it was.

    Convention:
        - ``destination``: ``str`` or ``Path`` of a folder (may exist; its parents are created).
        - Yields a ``Path``: a fresh folder ``.<name>.partial-*`` in ``destination.parent`` (mode 0o755). On a
          normal exit it is renamed to ``destination``; an existing ``destination`` is replaced (moved aside,
          then deleted) rather than merged.
        - Raises ``ValueError`` (before yielding) when ``destination`` exists and is not a folder; an exception
          in the ``with`` body removes the staging folder and propagates unchanged.

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


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, object]]:
    """One row per configuration: name, target, the final test metrics and the training time.

    Convention:
        Keys are ``COLUMNS``: ``loss``, ``target``, the metric keys of :data:`METRIC_LABELS`, ``train_seconds``.
        ``results``: a sequence of :class:`RunResult` (empty gives ``[]``); returns one dict per result, in
        order, with the result's ``metrics`` copied as they are (no check that every key is present).
        Raises nothing of its own.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], [], {"soft_dice": 0.75}, 2.0, torch.zeros(1, 2, 4, 4))
        >>> summary_rows([result])
        [{'loss': 'ce', 'target': 'hard', 'soft_dice': 0.75, 'train_seconds': 2.0}]
    """
    return [
        {"loss": r.config.name, "target": r.config.target, **r.metrics, "train_seconds": r.seconds} for r in results
    ]


def _format(key: str, value: object) -> str:
    if key == "train_seconds":
        return f"{value:.1f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    """A GitHub Markdown table of :func:`summary_rows`.

    Convention:
        - ``rows``: dicts with every key of ``COLUMNS`` (a missing key raises ``KeyError``); may be empty
          (header and separator only).
        - Returns a string of lines joined by ``\\n`` (no trailing newline): a header of ``HEADERS``, a
          separator, then one line per row; floats with 4 decimals, ``train_seconds`` with 1, other values
          via ``str``.

    Example:
        >>> print(markdown_table([{"loss": "ce", "target": "hard", "dice_majority": 0.5, "soft_dice": 0.25,
        ...     "thresholded_dice": 0.5, "ece": 0.1, "brier": 0.2, "train_seconds": 3.0}]))
        | loss | target | Dice vs majority | soft Dice | thresholded Dice | ECE | Brier | train time (s) |
        | --- | --- | --- | --- | --- | --- | --- | --- |
        | ce | hard | 0.5000 | 0.2500 | 0.5000 | 0.1000 | 0.2000 | 3.0 |
    """
    lines = ["| " + " | ".join(HEADERS) + " |", "| " + " | ".join("---" for _ in HEADERS) + " |"]
    lines += ["| " + " | ".join(_format(k, row[k]) for k in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def rich_table(rows: Sequence[dict[str, object]], *, title: str) -> Table:
    """The summary as a rich table; the best value of every metric column is bold.

    Best = the minimum for ``ece`` and ``brier`` (lower is better), the maximum otherwise; ties are all bold,
    and nothing is bold when there is only one row.

    Convention:
        - ``rows``: dicts with every key of ``COLUMNS`` (a missing key raises ``KeyError``), at least one row
          (an empty sequence raises ``ValueError`` from ``max``); ``title``: the table's title.
        - Returns a ``rich.table.Table`` with the ``HEADERS`` columns (text left, numbers right-aligned),
          one row per input row, cells formatted as in :func:`markdown_table`.

    Example:
        >>> row = {"loss": "a", "target": "soft", "dice_majority": 0.5, "soft_dice": 0.5, "thresholded_dice": 0.5,
        ...        "ece": 0.1, "brier": 0.2, "train_seconds": 1.0}
        >>> rich_table([row], title="t").row_count
        1
    """
    table = Table(title=title)
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("loss", "target") else "right")
    best = {}
    for key in METRIC_LABELS:
        values = [row[key] for row in rows]
        best[key] = min(values) if key in LOWER_IS_BETTER else max(values)
    for row in rows:
        cells = []
        for key in COLUMNS:
            text = _format(key, row[key])
            cells.append(f"[bold]{text}[/bold]" if key in best and row[key] == best[key] and len(rows) > 1 else text)
        table.add_row(*cells)
    return table


def write_tables(folder: Path, rows: Sequence[dict[str, object]], results: Sequence[RunResult], settings: dict) -> None:
    """summary.md, summary.csv and summary.json (rows, settings and per-epoch histories).

    Convention:
        - ``folder``: an existing folder (files in it are overwritten); ``rows``: :func:`summary_rows` of
          ``results``; ``results``: :class:`RunResult` sequence (histories and descriptions go to the JSON);
          ``settings``: JSON-serialisable dict, listed at the top of summary.md and stored in summary.json.
        - Writes summary.md (settings, :func:`markdown_table`, notes on the metrics), summary.csv (header
          ``COLUMNS``) and summary.json (keys ``settings``, ``results``, ``history``, ``descriptions``);
          returns None.
        - Raises ``KeyError`` / ``ValueError`` for rows lacking or adding ``COLUMNS`` keys, ``TypeError`` for
          non-serialisable settings, ``OSError`` when a file cannot be written.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> metrics = {"dice_majority": 0.5, "soft_dice": 0.5, "thresholded_dice": 0.5, "ece": 0.1, "brier": 0.2}
        >>> results = [RunResult(LOSS_CONFIGURATIONS["ce"], [], metrics, 1.0, torch.zeros(1, 2, 4, 4))]
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_tables(folder, summary_rows(results), results, {"epochs": 1})
        >>> sorted(p.name for p in folder.iterdir()), json.loads((folder / "summary.json").read_text())["settings"]
        (['summary.csv', 'summary.json', 'summary.md'], {'epochs': 1})
    """
    header = "# softseg compare\n\n" + "\n".join(f"- {k}: {v}" for k, v in settings.items()) + "\n\n"
    notes = (
        "\n\nTest cases only. Dice vs majority: hard prediction (argmax) against the majority vote. soft Dice: "
        "probabilities against the averaged raters (1 exactly when equal). thresholded Dice: both binarised at "
        "0.1, ..., 0.9 (QUBIQ), per image. These three leave the background out. ECE (top-label, 15 bins) and "
        "Brier (sum over classes of squared errors, mean over pixels): against the averaged raters; lower is better.\n"
    )
    (folder / "summary.md").write_text(header + markdown_table(rows) + notes)
    with open(folder / "summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    payload = {
        "settings": settings,
        "results": rows,
        "history": {r.config.name: r.history for r in results},
        "descriptions": {r.config.name: r.config.description for r in results},
    }
    (folder / "summary.json").write_text(json.dumps(payload, indent=2) + "\n")


def plot_learning_curves(path: Path, results: Sequence[RunResult]) -> None:
    """Training loss (each configuration in its own units) and test soft Dice against the epoch.

    Two panels: ``train_loss`` (log scale) and ``test_soft_dice`` of every result's history, one line per
    configuration; a third with each term's weight over training when a staged configuration (a
    :class:`softseg.CompoundLoss`) recorded ``loss_weights``.

    Convention:
        - ``path``: the image file to write (format from its suffix, e.g. ``.png``; 110 dpi); ``results``:
          :class:`RunResult` sequence whose histories hold ``epoch``, ``train_loss`` (> 0 for the log scale)
          and ``test_soft_dice``.
        - Writes the figure, closes it, returns None. A history lacking a key raises ``KeyError``; an
          unwritable path raises ``OSError``.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> history = [{"epoch": 1, "train_loss": 0.9, "test_soft_dice": 0.4},
        ...            {"epoch": 2, "train_loss": 0.5, "test_soft_dice": 0.6}]
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], history, {}, 1.0, torch.zeros(1, 2, 4, 4))
        >>> path = Path(tempfile.mkdtemp()) / "curves.png"
        >>> plot_learning_curves(path, [result])
        >>> path.exists()
        True
    """
    staged = any("loss_weights" in h for result in results for h in result.history)
    panels = 3 if staged else 2
    figure, (loss_axes, dice_axes, *weight_axes) = plt.subplots(1, panels, figsize=(5 * panels, 4))
    for colour, result in enumerate(results):
        epochs = [h["epoch"] for h in result.history]
        for axes, key in ((loss_axes, "train_loss"), (dice_axes, "test_soft_dice")):
            axes.plot(epochs, [h[key] for h in result.history], color=f"C{colour}", label=result.config.name)
        terms = result.history[0].get("loss_weights", {}) if result.history else {}
        for style, term in zip(("-", "--", ":", "-."), terms):  # staged losses: each term's weight over training
            weights = [h["loss_weights"][term] for h in result.history]
            weight_axes[0].plot(epochs, weights, style, color=f"C{colour}", label=f"{result.config.name}: {term}")
    loss_axes.set(xlabel="epoch", ylabel="training loss", title="training loss (own units)", yscale="log")
    dice_axes.set(xlabel="epoch", ylabel="soft Dice", title="test soft Dice vs averaged raters")
    dice_axes.legend()
    if staged:
        weight_axes[0].set(xlabel="epoch", ylabel="weight", title="loss weights of the staged configurations")
        weight_axes[0].legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(path: Path, results: Sequence[RunResult], target: torch.Tensor, *, n_bins: int = 15) -> None:
    """Reliability diagram per configuration: accuracy (the target's mass on the predicted class) against confidence.

    One panel per result: bars of :func:`softseg.metrics.reliability_bins` (``n_bins`` equal-width bins, empty
    bins left out) with the diagonal, titled with the configuration name and its ``metrics["ece"]``.

    Convention:
        - ``path``: the image file to write (format from its suffix; 110 dpi); ``results``: a non-empty
          :class:`RunResult` sequence with ``metrics["ece"]`` and ``test_probs`` float (N, C, H, W);
          ``target``: the averaged raters, float (N, C, H, W); ``n_bins``: int >= 1.
        - Writes the figure, closes it, returns None. Empty ``results`` raises ``ValueError`` (matplotlib);
          a missing ``"ece"`` raises ``KeyError``; shape errors come from ``reliability_bins``.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> probs = torch.tensor([[[[0.8, 0.3]], [[0.2, 0.7]]]])          # (N=1, C=2, H=1, W=2)
        >>> result = RunResult(LOSS_CONFIGURATIONS["soft-ce"], [], {"ece": 0.0}, 1.0, probs)
        >>> path = Path(tempfile.mkdtemp()) / "reliability.png"
        >>> plot_reliability(path, [result], probs, n_bins=5)
        >>> path.exists()
        True
    """
    figure, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for axis, result in zip(axes[0], results, strict=True):
        bins = metrics.reliability_bins(result.test_probs, target, n_bins=n_bins)
        counted = bins.count > 0
        centers = ((bins.edges[:-1] + bins.edges[1:]) / 2)[counted]
        axis.bar(centers.tolist(), bins.accuracy[counted].tolist(), width=1.0 / n_bins, edgecolor="black", alpha=0.7)
        axis.plot([0, 1], [0, 1], "k--", linewidth=1)
        axis.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            title=f"{result.config.name}\nECE {result.metrics['ece']:.4f}",
        )
    axes[0][0].set_ylabel("accuracy (averaged raters)")
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
