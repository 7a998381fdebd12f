"""softseg audit: known-good losses pass, known-bad ones fail, and every bad argument gets a clear message."""

import json

import pytest
import torch

import softseg

from softseg.cli import main
from softseg.cli.audit import audit_loss, load_loss, make_problem, parse_loss_specs
from softseg.cli.common import CommandError
from softseg.cli.configs import classic_dice_loss

monai_losses = pytest.importorskip("monai.losses")

OPTIONS = dict(
    input_kind="logits",
    hard_target="onehot",
    reference="auto",
    value_range=(0.0, 1.0),
    steps=10,
    tolerance=1e-4,
    seed=0,
)


@pytest.fixture(scope="module")
def problem():
    return make_problem(classes=3, size=6, seed=0)


def test_softseg_losses_pass_every_check(problem):
    for name in ("softseg.DiceLoss", "softseg.JaccardLoss"):
        verdict = audit_loss(name, load_loss(name, {}), problem, **OPTIONS)
        assert verdict.passed, verdict
        assert verdict.at_target == (True, "0.0000")
        assert verdict.descent == (True, "none")
        assert verdict.hard_labels[0] is True and verdict.range[0] is True
    jaccard = audit_loss("j", load_loss("softseg.JaccardLoss", {}), problem, **OPTIONS)
    assert jaccard.hard_labels == (True, "jaccard (global)")


def test_monai_dice_fails_on_soft_targets_but_matches_on_hard_ones(problem):
    loss = load_loss("monai.losses.DiceLoss", {"softmax": True})
    verdict = audit_loss("monai", loss, problem, **OPTIONS)
    assert not verdict.passed
    assert verdict.descent[0] is False and verdict.descent[1].startswith("lowered to")
    assert verdict.at_target[0] is False
    # P1: the product form equals softseg's Dice on one-hot targets (MONAI averages per image: batch=False).
    assert verdict.hard_labels == (True, "dice (image)")


def test_classic_soft_dice_fails_and_its_value_at_the_target_is_hand_checked(problem):
    # At x = y the classic form is mean_c (1 - 2 sum y^2 / (2 sum y)) = mean_c (1 - sum y^2 / sum y) > 0.
    y = problem.soft
    expected = (1 - y.square().sum((0, 2, 3)) / y.sum((0, 2, 3))).mean().item()
    verdict = audit_loss("classic", classic_dice_loss, problem, **OPTIONS)
    assert verdict.at_target == (False, f"{expected:.4f}, not minimal")
    assert expected > 0.3
    assert verdict.descent[0] is False
    assert not verdict.passed


def test_cross_entropy_is_minimal_at_the_target_but_not_a_dice_form(problem):
    loss = torch.nn.CrossEntropyLoss()
    verdict = audit_loss("ce", loss, problem, **{**OPTIONS, "value_range": (0.0, float("inf"))})
    entropy = -(problem.soft * problem.soft.log()).sum(1).mean().item()
    assert verdict.at_target == (None, f"{entropy:.4f}, minimal")
    assert verdict.descent == (True, "none")
    assert verdict.hard_labels[0] is None and verdict.hard_labels[1].startswith("n/a")
    assert verdict.passed
    # With the range [0, 1] the same loss fails check 4 (its values exceed 1) ...
    assert not audit_loss("ce", loss, problem, **OPTIONS).passed
    # ... and the default range (auto) knows that a loss of no Dice/Jaccard form is not bounded by 1.
    assert audit_loss("ce", loss, problem, **{**OPTIONS, "value_range": None}).range == verdict.range


@pytest.mark.parametrize("name", ["softseg.DiceCELoss", "softseg.losses.compound.dice_ce_loss", "softseg.RegionCELoss"])
def test_a_correct_compound_loss_passes_by_default(name, capsys):
    assert main(["audit", "--steps", "3", name]) == 0
    assert "1 passed, 0 failed" in capsys.readouterr().out


def test_auto_range_bounds_overlap_losses_by_one(problem):
    # Dice on hard targets (so it matches a Dice form), plus up to 2 on soft ones: above 1, caught.
    def lifted_dice(logits, target):
        return softseg.dice_loss(logits, target) + 2 * (target - target.round()).abs().amax()

    verdict = audit_loss("lifted", lifted_dice, problem, **{**OPTIONS, "value_range": None})
    assert verdict.hard_labels == (True, "dice (global)")
    assert verdict.range[0] is False and verdict.range[1].endswith("outside [0, 1]")


def test_nan_on_an_empty_class_fails_the_range_check(problem):
    def recall_loss(logits, target):  # 0 / 0 for a class absent from the target
        tp = (logits.softmax(1) * target).sum((2, 3))
        return 1 - (tp / target.sum((2, 3))).mean()

    verdict = audit_loss("recall", recall_loss, problem, **OPTIONS)
    assert verdict.range == (False, "nan (empty class)")
    assert not verdict.passed


def test_a_loss_that_raises_is_a_failing_verdict(problem):
    verdict = audit_loss("nll", torch.nn.functional.nll_loss, problem, **OPTIONS)
    assert verdict.error is not None and not verdict.passed


def test_explicit_reference_fails_when_no_form_matches(problem):
    verdict = audit_loss("d", load_loss("softseg.DiceLoss", {}), problem, **{**OPTIONS, "reference": "jaccard"})
    assert verdict.hard_labels[0] is False and "!= jaccard" in verdict.hard_labels[1]


def test_index_hard_targets_and_probability_inputs(problem):
    loss = load_loss("softseg.dice_loss", {"activation": "none", "aggregation": "image"})
    verdict = audit_loss("d", loss, problem, **{**OPTIONS, "input_kind": "probs", "hard_target": "index"})
    assert verdict.passed and verdict.hard_labels == (True, "dice (image)")


def test_command_exit_status_and_table(capsys):
    assert (
        main(["audit", "softseg.DiceLoss", "softseg.JaccardLoss", "--kwargs", '{"smooth": 1.0}', "--steps", "5"]) == 0
    )
    out = capsys.readouterr().out
    assert out.count("PASS") == 2 and "2 passed, 0 failed" in out and '{"smooth": 1.0}' in out
    status = main(
        [
            "audit",
            "--steps",
            "5",
            "monai.losses.DiceLoss",
            "--kwargs",
            json.dumps({"softmax": True}),
            "softseg.DiceLoss",
        ]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "1 passed, 1 failed: monai.losses.DiceLoss" in out and "FAIL" in out


def test_quiet_prints_nothing(capsys):
    assert main(["audit", "--quiet", "--steps", "2", "softseg.cli.configs.classic_dice_loss"]) == 1
    assert capsys.readouterr().out == ""


def test_parse_loss_specs_pairs_kwargs_with_the_preceding_loss():
    assert parse_loss_specs(["a.B", '--kwargs={"x": 1}', "c.d", "e.F", "--kwargs", "{}"]) == [
        ("a.B", {"x": 1}),
        ("c.d", {}),
        ("e.F", {}),
    ]


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "name at least one loss"),
        (["--kwargs", "{}", "a.B"], "comes before any loss name"),
        (["a.B", "--kwargs"], "--kwargs needs a JSON object"),
        (["a.B", "--kwargs", "{softmax: true}"], "--kwargs of a.B is not valid JSON"),
        (["a.B", "--kwargs", "[1, 2]"], "must be a JSON object"),
        (["a.B", "--kwargs", "{}", "--kwargs", "{}"], "has --kwargs twice"),
        (["a.B", "--bogus"], "unknown option '--bogus'"),
    ],
)
def test_parse_loss_specs_errors(tokens, message):
    with pytest.raises(CommandError, match=message):
        parse_loss_specs(tokens)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("no_such_module_xyz.Loss", {}, "cannot import 'no_such_module_xyz.Loss'"),
        ("softseg.NoSuchLoss", {}, "module 'softseg' has no 'NoSuchLoss'"),
        ("softseg.__version__", {}, "is a str, not a loss class or function"),
        (
            "softseg.DiceLoss",
            {"smooth": -1},
            r"cannot construct softseg.DiceLoss with --kwargs \{\"smooth\": -1\}: smooth must be >= 0",
        ),
    ],
)
def test_load_loss_errors(name, kwargs, message):
    with pytest.raises(CommandError, match=message):
        load_loss(name, kwargs)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--range", "1"], "--range must be auto or LOW,HIGH"),
        (["--range", "1,0"], "--range must have LOW <= HIGH"),
        (["--classes", "1"], "--classes must be >= 2; got 1"),
        (["--tolerance", "0"], "--tolerance must be > 0"),
        (["--range", "low,high"], "--range must be auto or LOW,HIGH"),
        (["--classes", "5", "--size", "2"], "--classes 5 needs at least 5 pixels per image, but --size 2 gives 4; "
                                            "use --size 3 or more"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 2**63); got -1"),
        (["--seed", "1.5"], "argument --seed: expected an integer in [0, 2**63); got '1.5'"),
        (["--steps", "x"], "argument --steps: invalid int value: 'x'"),
    ],
)
def test_command_errors_exit_2_with_a_message(capsys, argv, message):
    try:
        status = main(["audit", *argv, "softseg.DiceLoss"])
    except SystemExit as exit:  # argparse's own errors (a bad --seed or --steps) exit with its usage line
        status = exit.code
    assert status == 2
    err = capsys.readouterr().err
    assert "softseg audit: error: " in err and message in err and "Traceback" not in err
