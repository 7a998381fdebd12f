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
from softseg.cli.report import atomic_folder, markdown_table
from softseg.statistics import product_statistics

QUICK = ["compare", "--quick", "--threads", "1"]
REPORT_FILES = {
    "summary.md",
    "summary.csv",
    "summary.json",
    "learning_curves.png",
    "reliability.png",
    "one_pixel_loss.png",
}


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
    return {row["loss"]: row for row in json.loads((folder / "summary.json").read_text())["results"]}


def test_quick_compare_writes_the_whole_report(default_run):
    status, out = default_run
    assert status == 0
    assert {p.name for p in out.iterdir()} == REPORT_FILES
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no staging folder left behind
    results = _results(out)
    assert list(results) == ["ce", "classic-dice", "softseg-dice", "softseg-jaccard-ce"]
    for row in results.values():
        for key in ("dice_majority", "soft_dice", "thresholded_dice"):
            assert 0.0 <= row[key] <= 1.0
        assert 0.0 <= row["ece"] <= 1.0 and 0.0 <= row["brier"] <= 2.0 and row["train_seconds"] > 0
    assert results["ce"]["target"] == "hard" and results["softseg-dice"]["target"] == "soft"
    history = json.loads((out / "summary.json").read_text())["history"]["ce"]
    assert [h["epoch"] for h in history] == [1, 2]
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["loss"] for r in rows] == list(results)
    assert float(rows[2]["soft_dice"]) == pytest.approx(results["softseg-dice"]["soft_dice"])
    assert "| softseg-dice | soft |" in (out / "summary.md").read_text()


def test_compare_is_deterministic_and_independent_of_the_other_configurations(default_run, tmp_path, capsys):
    _, out = default_run
    assert main([*QUICK, "--out", str(tmp_path / "alone"), "--losses", "softseg-dice"]) == 0
    printed = capsys.readouterr().out
    assert "Dice vs majority" in printed and "softseg-dice" in printed and str(tmp_path / "alone") in printed
    alone, together = _results(tmp_path / "alone")["softseg-dice"], _results(out)["softseg-dice"]
    for key in ("dice_majority", "soft_dice", "thresholded_dice", "ece", "brier"):
        assert alone[key] == together[key]


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
    assert {p.name for p in out.iterdir()} == REPORT_FILES
    assert list(_results(out)) == ["plugin-tversky"]
    settings = json.loads((out / "summary.json").read_text())["settings"]
    assert settings["cases"] == "2 train, 1 test" and settings["classes"] == 2 and settings["raters"] == 2
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
        (["--size", "18"], "--size must be a multiple of 4 (the network pools twice); got 18"),
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


def test_markdown_table_formats_every_column():
    row = {
        "loss": "a",
        "target": "soft",
        "dice_majority": 0.12345,
        "soft_dice": 1.0,
        "thresholded_dice": 0.0,
        "ece": 0.5,
        "brier": 0.25,
        "train_seconds": 12.345,
    }
    assert markdown_table([row]).splitlines()[2] == "| a | soft | 0.1235 | 1.0000 | 0.0000 | 0.5000 | 0.2500 | 12.3 |"


def test_help_texts(capsys):
    for command in ("compare", "audit", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
    assert "--data DIR" in capsys.readouterr().out
