"""softseg's promise, checked on its own losses: every loss exported as softseg.*Loss passes `softseg audit`
with its default construction and the audit's default settings (what the before-stop hook runs)."""

import pytest

import softseg
from softseg.cli import main

LOSSES = sorted(f"softseg.{name}" for name in softseg.__all__ if name.endswith("Loss"))


def test_the_list_holds_the_whole_family():
    for name in ("FocalLoss", "GeneralizedDiceLoss", "MCCLoss", "CompoundLoss", "DeepSupervisionLoss", "DiceLoss"):
        assert f"softseg.{name}" in LOSSES


@pytest.mark.parametrize("name", LOSSES)
def test_exported_loss_passes_the_audit(name, capsys):
    assert main(["audit", name]) == 0, capsys.readouterr().out
