"""softseg compare end to end on a tiny configuration, its registry of loss configurations and its report."""

import csv
import json
import math

import pytest
import torch

import softseg
from softseg.cli import main
from softseg.cli.configs import (
    LOSS_CONFIGURATIONS,
    classic_dice_loss,
    register_loss_configuration,
    resolve_configurations,
)
from softseg.cli.report import ConfigurationSummary, atomic_folder, markdown_tables
from softseg.cli.stats import Interval, PairedComparison
from softseg.statistics import product_statistics

QUICK = ["compare", "--quick", "--threads", "1"]
REPORT_FILES = {
    "summary.md",
    "summary.csv",
    "summary.json",
    "cases.csv",
    "learning_curves.png",
    "reliability.png",
    "paired_differences.png",
    "one_pixel_loss.png",
}
METRICS = ("dice_majority", "dice_raters", "soft_dice", "thresholded_dice", "ece", "brier")


@pytest.fixture
def nan_configuration():
    register_loss_configuration(
        "test-nan", lambda: lambda logits, target: logits.sum() * math.nan, target="soft", description="always NaN"
    )
    yield "test-nan"
    LOSS_CONFIGURATIONS.pop("test-nan")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One quick run with the default configurations, shared by the report tests (each run costs seconds)."""
    out = tmp_path_factory.mktemp("default") / "report"
    status = main([*QUICK, "--out", str(out)])
    return status, out


def _results(folder):
    return json.loads((folder / "summary.json").read_text())["results"]


def test_quick_compare_writes_the_whole_report(default_run):
    status, out = default_run
    assert status == 0
    assert {p.name for p in out.iterdir()} == REPORT_FILES
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no staging folder left behind
    payload = json.loads((out / "summary.json").read_text())
    results = payload["results"]
    assert list(results) == ["ce", "classic-dice", "softseg-dice", "softseg-jaccard-ce"]
    assert payload["baseline"] == "ce" and payload["paired_test"] == "Wilcoxon signed-rank, two-sided"
    for name, row in results.items():
        for key in METRICS:
            interval = row["metrics"][key]
            assert interval["n"] == 2 and interval["low"] <= interval["mean"] <= interval["high"]
        assert row["train_seconds"] > 0 and row["runs"] == 1
        assert set(row["paired"]) == (set() if name == "ce" else set(METRICS))
    assert results["ce"]["target"] == "hard" and results["softseg-dice"]["target"] == "soft"
    runs = payload["runs"]
    assert [(r["loss"], r["fold"], r["seed"]) for r in runs][:2] == [("ce", 1, 0), ("classic-dice", 1, 0)]
    assert [h["epoch"] for h in runs[0]["history"]] == [1, 2]
    # The table's mean is the mean of the per-case values in cases.csv.
    with open(out / "cases.csv") as handle:
        cases = [row for row in csv.DictReader(handle) if row["loss"] == "softseg-dice"]
    assert len(cases) == 2
    assert results["softseg-dice"]["metrics"]["soft_dice"]["mean"] == pytest.approx(
        sum(float(row["soft_dice"]) for row in cases) / 2
    )
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 * len(METRICS) and rows[0]["loss"] == "ce" and rows[0]["p_value"] == ""
    soft = next(r for r in rows if r["loss"] == "softseg-dice" and r["metric"] == "soft_dice")
    assert float(soft["mean"]) == pytest.approx(results["softseg-dice"]["metrics"]["soft_dice"]["mean"])
    assert float(soft["p_value"]) == pytest.approx(results["softseg-dice"]["paired"]["soft_dice"]["p_value"])
    text = (out / "summary.md").read_text()
    assert "| softseg-dice | soft |" in text and "| soft Dice: difference vs ce, p |" in text


def test_compare_on_a_data_folder_with_a_plugin_configuration(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for case in ("c1", "c2", "c3"):
        (tmp_path / "data" / "masks" / case).mkdir(parents=True)
        (tmp_path / "data" / "images").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "data" / "images" / f"{case}.png")
        for k in (1, 2):
            Image.fromarray(rng.integers(0, 2, (8, 8), dtype=np.uint8)).save(
                tmp_path / "data" / "masks" / case / f"rater{k}.png"
            )
    plugin = tmp_path / "my_losses_plugin.py"
    plugin.write_text(
        "import softseg\n"
        "from softseg.cli.configs import register_loss_configuration\n"
        "register_loss_configuration('plugin-tversky', lambda: softseg.TverskyLoss(alpha=0.3, beta=0.7),\n"
        "                            target='soft', description='Tversky 0.3/0.7', replace=True)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.md").write_text("previous report")  # a successful run replaces an old report
    try:
        argv = [
            *QUICK,
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--import",
            "my_losses_plugin",
            "--losses",
            "plugin-tversky",
        ]
        assert main(argv) == 0
    finally:
        LOSS_CONFIGURATIONS.pop("plugin-tversky", None)
    assert {p.name for p in out.iterdir()} == REPORT_FILES - {"paired_differences.png"}  # nothing to pair
    assert list(_results(out)) == ["plugin-tversky"]
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["split"] == "2 train, 1 test cases" and settings["classes"] == 2 and settings["raters"] == 2
    assert settings["layout"] == "generic" and settings["channel"] == "gray"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "my_losses_plugin.py", "report"]


def test_missing_file_in_data_folder_fails_without_a_report(tmp_path, capsys):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "c1.png").write_bytes(b"")
    out = tmp_path / "report"
    assert main([*QUICK, "--data", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softseg compare: error: missing masks of case 'c1'") and "rater1.png" in err
    assert list(tmp_path.iterdir()) == [tmp_path / "data"]


def test_failed_training_leaves_no_partial_report_and_keeps_the_old_one(tmp_path, capsys, nan_configuration):
    out = tmp_path / "report"
    out.mkdir()
    (out / "old.md").write_text("previous report")
    assert main([*QUICK, "--out", str(out), "--losses", f"ce,{nan_configuration}"]) == 2
    assert "loss configuration 'test-nan' gave a non-finite loss (nan) at epoch 1" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in out.iterdir()] == ["old.md"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--losses", "ce,nope"], "unknown loss configuration(s) 'nope' in --losses; known: "),
        (["--losses", "ce,ce"], "--losses names 'ce' more than once"),
        (["--losses", ","], "--losses must name at least one configuration"),
        (["--size", "18"], "--size must be a multiple of 4 (2 ** --depth: the network pools 2 times); got 18"),
        (["--size", "20", "--depth", "3"], "--size must be a multiple of 8 (2 ** --depth: the network pools 3 times)"),
        (["--images", "1"], "--images must be at least 2"),
        (["--data", "somewhere", "--raters", "3"], "--raters apply to the embedded data only"),
        (["--import", "no_such_module_xyz"], "--import no_such_module_xyz: No module named 'no_such_module_xyz'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, argv, message):
    assert main([*QUICK, "--out", str(tmp_path / "r"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_loss_that_rejects_its_target_is_named(tmp_path, capsys):
    register_loss_configuration(
        "test-hard-dice", lambda: classic_dice_loss, target="hard", description="needs soft targets"
    )
    try:
        assert main([*QUICK, "--out", str(tmp_path / "r"), "--losses", "test-hard-dice"]) == 2
    finally:
        LOSS_CONFIGURATIONS.pop("test-hard-dice")
    assert (
        "loss configuration 'test-hard-dice' failed: classic_dice_loss needs class probabilities"
        in capsys.readouterr().err
    )
    assert list(tmp_path.iterdir()) == []


def test_out_must_not_be_a_file(tmp_path, capsys):
    (tmp_path / "r").write_text("x")
    assert main([*QUICK, "--out", str(tmp_path / "r"), "--losses", "ce"]) == 2
    assert f"--out must be a folder; {tmp_path / 'r'} exists and is a file" in capsys.readouterr().err
    assert main([*QUICK, "--out", str(tmp_path / "r" / "sub" / "report"), "--losses", "ce"]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"softseg compare: error: --out {tmp_path / 'r' / 'sub' / 'report'} cannot be created: "
        f"{tmp_path / 'r'} is a file, not a folder\n"
    )


def test_argparse_rejects_non_positive_numbers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--epochs", "0"])
    assert exit_info.value.code == 2
    assert "expected a positive integer; got 0" in capsys.readouterr().err


def test_register_rejects_bad_configurations():
    with pytest.raises(ValueError, match="a loss configuration named 'ce' exists; pass replace=True"):
        register_loss_configuration("ce", lambda: None, target="hard", description="")
    with pytest.raises(ValueError, match="name must be a non-empty string without commas or spaces; got 'a,b'"):
        register_loss_configuration("a,b", lambda: None, target="hard", description="")
    with pytest.raises(ValueError, match=r"target must be one of \('soft', 'hard'\); got 'dense'"):
        register_loss_configuration("x", lambda: None, target="dense", description="")
    with pytest.raises(TypeError, match="build must be callable"):
        register_loss_configuration("x", 3, target="soft", description="")
    assert [c.name for c in resolve_configurations(" softseg-dice , ce ")] == ["softseg-dice", "ce"]


def test_classic_dice_equals_softseg_dice_on_hard_labels_and_not_on_soft_ones():
    torch.manual_seed(0)
    probs = torch.rand(2, 3, 5, 5).softmax(1)
    one_hot = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 5, 5)), 3).movedim(-1, 1).float()
    assert torch.allclose(
        classic_dice_loss(probs, one_hot, activation="none"), softseg.dice_loss(probs, one_hot, activation="none")
    )
    soft = torch.rand(2, 3, 5, 5).softmax(1)
    assert classic_dice_loss(soft, soft, activation="none") > 0.3  # not zero at the target
    # Hand value, one pixel with y = 0.5: 1 - 2 * t * 0.5 / (t + 0.5) at t = 1 is 1/3.
    assert classic_dice_loss(
        torch.tensor([[[1.0]]]), torch.tensor([[[0.5]]]), activation="none"
    ).item() == pytest.approx(1 / 3)
    stats = product_statistics(torch.tensor([[[0.2, 0.7, 0.5]]]), torch.tensor([[[0.5, 0.5, 1.0]]]))
    assert [round(float(s), 4) for s in stats[:3]] == [0.95, 0.45, 1.05]
    with pytest.raises(
        ValueError, match=r"classic_dice_loss needs class probabilities of shape \(2, 3, 5, 5\); got torch.int64"
    ):
        classic_dice_loss(probs, torch.zeros(2, 5, 5, dtype=torch.long), activation="none")
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]; found values in \[0, 2\]"):
        classic_dice_loss(probs, 2 * one_hot, activation="none")


def test_atomic_folder_cleans_up_on_failure(tmp_path):
    with pytest.raises(KeyError):
        with atomic_folder(tmp_path / "report") as folder:
            (folder / "half.md").write_text("x")
            raise KeyError("boom")
    assert list(tmp_path.iterdir()) == []


def test_markdown_tables_format_intervals_and_p_values():
    intervals = {k: Interval(0.12345, 0.1, 0.15, 9) for k in METRICS}
    paired = {k: PairedComparison(Interval(-0.01, -0.03, 0.01, 9), 0.0004, "Wilcoxon") for k in METRICS}
    rows = [
        ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], intervals, {}, 12.345, 20.0, None, 3),
        ConfigurationSummary(LOSS_CONFIGURATIONS["softseg-dice"], intervals, paired, 10.0, 20.0, None, 3),
    ]
    lines = markdown_tables(rows, baseline="ce").splitlines()
    assert lines[2] == "| ce | hard |" + " 0.1235 [0.1000, 0.1500] |" * 6 + " 12.3 |"
    assert lines[4] == ""
    assert lines[5].startswith("| loss | Dice vs majority: difference vs ce, p | Dice vs raters: difference vs ce, p |")
    assert lines[7] == "| softseg-dice |" + " -0.0100 [-0.0300, +0.0100], p = 4.0e-04 |" * 6
    single = {k: Interval(0.5, None, None, 1) for k in METRICS}
    lines = markdown_tables(
        [ConfigurationSummary(LOSS_CONFIGURATIONS["ce"], single, {}, 1.0, 1.0, None, 1)], baseline="ce"
    )
    assert lines.splitlines()[2] == "| ce | hard |" + " 0.5000 |" * 6 + " 1.0 |"


def test_help_texts(capsys):
    for command in ("compare", "audit", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--data DIR" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--folds", "1"], "--folds must be at least 2 (k-fold cross-validation); got 1"),
        (["--folds", "7"], "--folds 7 is larger than the number of cases (6)"),
        (
            ["--baseline", "softseg-dice", "--losses", "ce"],
            "--baseline 'softseg-dice' is not among the configurations (ce)",
        ),
        (
            ["--steps", "2", "--patch", "6"],
            "--patch must be a multiple of 4 (2 ** --depth: the network pools 2 times); got 6",
        ),
        (["--steps", "2", "--patch", "32"], "--patch 32 is larger than the images (16x16 at the working scale)"),
        (["--patch", "8"], "--patch needs --steps"),
        (["--steps", "2", "--epochs", "2"], "give --epochs or --steps, not both"),
        (["--channel", "green"], "--channel applies to --data only"),
        (["--scale", "0.5"], "--scale applies to --data only"),
    ],
)
def test_bad_design_options_exit_2_before_training(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("softseg.cli.compare.train_run", _no_training)
    assert main([*QUICK, "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softseg compare: error: ") and message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _no_training(*args, **kwargs):
    raise AssertionError("training started despite bad input")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seed", "-1"], "argument --seed: expected a non-negative integer; got -1"),
        (["--scale", "1.5"], "argument --scale: expected a scale in (0, 1]; got 1.5"),
        (["--hard-target", "rater2"], "argument --hard-target: invalid choice: 'rater2'"),
        (["--channel", "red"], "argument --channel: invalid choice: 'red'"),
    ],
)
def test_argparse_errors_name_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main([*QUICK, *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_layout_and_missing_file_exit_2(tmp_path, capsys, monkeypatch):
    from fundus_layouts import write_stare

    monkeypatch.setattr("softseg.cli.compare.train_run", _no_training)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("x")
    assert main(["compare", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r")]) == 2
    assert f"--data {tmp_path / 'data'}: unknown layout; expected one of: CHASE_DB1" in capsys.readouterr().err
    stare = write_stare(tmp_path / "stare", cases=2)
    (stare / "stare-images" / "im0002.ppm.gz").unlink()
    assert main(["compare", "--data", str(stare), "--out", str(tmp_path / "r")]) == 2
    assert "missing " in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_interrupt_exits_130_without_a_report(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "report"
    out.mkdir()
    (out / "old.md").write_text("previous report")
    monkeypatch.setattr("softseg.cli.compare.train_run", interrupted)
    assert main([*QUICK, "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == "softseg compare: interrupted"
    assert [p.name for p in tmp_path.iterdir()] == ["report"] and [p.name for p in out.iterdir()] == ["old.md"]


def test_terminate_signal_ends_the_run_like_ctrl_c(tmp_path, capsys, monkeypatch):
    import os
    import signal

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr("softseg.cli.compare.train_run", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main([*QUICK, "--out", str(tmp_path / "report")]) == 130
    assert capsys.readouterr().err.strip() == "softseg compare: interrupted"
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


def test_folds_seeds_baseline_and_plain_progress_lines(tmp_path, capsys):
    out = tmp_path / "r"
    argv = [
        *QUICK,
        "--out",
        str(out),
        "--losses",
        "ce,softseg-dice",
        "--baseline",
        "softseg-dice",
        "--folds",
        "3",
        "--seeds",
        "2",
        "--seed",
        "5",
    ]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    progress = [line for line in lines if " fold " in line]
    assert len(progress) == 3 * 2 * 2
    assert progress[0].startswith("ce fold 1/3 seed 5: ") and "run 1/12, elapsed 0:00:" in progress[0]
    assert progress[-1].startswith("softseg-dice fold 3/3 seed 6: ") and "about 0:00:00 left" in progress[-1]
    payload = json.loads((out / "summary.json").read_text())
    assert payload["baseline"] == "softseg-dice" and set(payload["results"]["ce"]["paired"]) == set(METRICS)
    assert payload["results"]["softseg-dice"]["paired"] == {}
    runs = payload["runs"]
    tested = sorted(case for r in runs if r["loss"] == "ce" and r["seed"] == 5 for case in r["test_cases"])
    assert tested == sorted(f"synthetic{i:04d}" for i in range(6))  # every case tested once per seed
    assert payload["results"]["ce"]["metrics"]["soft_dice"]["n"] == 6
    # Paired difference = mean over cases of (ce - softseg-dice), each case averaged over the two seeds.
    with open(out / "cases.csv") as handle:
        rows = list(csv.DictReader(handle))
    per_case = {}
    for row in rows:
        per_case.setdefault((row["loss"], row["case"]), []).append(float(row["brier"]))
    differences = [
        sum(per_case[("ce", case)]) / 2 - sum(per_case[("softseg-dice", case)]) / 2
        for case in sorted({c for _, c in per_case})
    ]
    assert payload["results"]["ce"]["paired"]["brier"]["mean"] == pytest.approx(sum(differences) / 6)


def test_steps_on_a_drive_layout_with_field_of_view(tmp_path, capsys):
    from fundus_layouts import write_drive

    drive = write_drive(tmp_path / "drive", cases=4, size=(16, 20))
    out = tmp_path / "r"
    argv = [
        "compare",
        "--data",
        str(drive),
        "--out",
        str(out),
        "--threads",
        "1",
        "--losses",
        "ce,softseg-dice,classic-dice",
        "--folds",
        "2",
        "--steps",
        "6",
        "--patch",
        "8",
        "--batch-size",
        "2",
        "--width",
        "4",
        "--evaluations",
        "3",
        "--hard-target",
        "random-rater",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "DRIVE test set layout in" in printed and "green channel, scale 1, with field of view" in printed
    payload = json.loads((out / "summary.json").read_text())
    assert (
        payload["settings"]["training"] == "6 steps of 2 crops of 8x8" and payload["settings"]["field of view"] is True
    )
    history = payload["runs"][0]["history"]
    assert [h["step"] for h in history] == [2, 4, 6] and "epoch" not in history[0]
    assert payload["results"]["ce"]["metrics"]["dice_raters"]["n"] == 4


def test_one_rater_is_said_and_run(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    for case in ("a", "b"):
        (tmp_path / "data" / "masks" / case).mkdir(parents=True)
        (tmp_path / "data" / "images").mkdir(exist_ok=True)
        Image.fromarray(np.eye(8, dtype=np.uint8) * 200).save(tmp_path / "data" / "images" / f"{case}.png")
        Image.fromarray(np.eye(8, dtype=np.uint8)).save(tmp_path / "data" / "masks" / case / "rater1.png")
    argv = [*QUICK, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "r"), "--losses", "ce,soft-ce"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "note: the data has one rater: the averaged raters equal its mask, so soft and hard targets coincide" in printed
    )
    assert "real images want --steps N --patch P" in printed
    notes = json.loads((tmp_path / "r" / "summary.json").read_text())["notes"]
    assert notes[0].startswith("the data has one rater")
    # One rater: cross-entropy on the soft target is cross-entropy on the hard one, step for step.
    results = _results(tmp_path / "r")
    for key in METRICS:
        assert results["soft-ce"]["metrics"][key]["mean"] == pytest.approx(
            results["ce"]["metrics"][key]["mean"], abs=1e-6
        )


def test_a_loss_without_mask_stops_on_data_with_a_field_of_view(tmp_path, capsys):
    from fundus_layouts import write_drive

    register_loss_configuration(
        "test-no-mask", lambda: torch.nn.functional.cross_entropy, target="hard", description="takes no mask"
    )
    try:
        argv = [
            "compare",
            "--data",
            str(write_drive(tmp_path / "d", cases=2)),
            "--out",
            str(tmp_path / "r"),
            "--losses",
            "test-no-mask",
        ]
        assert main(argv) == 2
    finally:
        LOSS_CONFIGURATIONS.pop("test-no-mask")
    assert "loss configuration 'test-no-mask' takes no mask= argument, but" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_fill_readme_copies_the_tables_and_the_time(default_run, tmp_path):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "fill_readme.py"
    spec = importlib.util.spec_from_file_location("fill_readme", script)
    fill_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fill_readme)
    _, out = default_run
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- quick:start -->\nold\n<!-- quick:end -->\ntail\n")
    fill_readme.fill(readme, "quick", fill_readme.block(out))
    text = readme.read_text()
    assert "\nold\n" not in text and text.endswith("<!-- quick:end -->\ntail\n")
    assert "| ce | hard |" in text and "| softseg-dice | " in text and "difference vs ce, p |" in text
    seconds = json.loads((out / "summary.json").read_text())["settings"]["total seconds"]
    assert f"({seconds} s;" in text and "on 1 threads), torch " in text
    with pytest.raises(SystemExit, match="has no <!-- other:start -->"):
        fill_readme.fill(readme, "other", "x")
