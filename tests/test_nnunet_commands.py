"""softseg-nnunet-train/-predict and `softseg nnunet`: the lookup path, argument forwarding, and the messages
for a missing extra, nnU-Net < 2.8, a torchvision that does not import and a clashing trainer name.

Most tests run in either environment (nnU-Net's presence is faked where it matters); the ones marked
with ``needs_nnunet`` run in the nnU-Net environment (``bash scripts/test_nnunet.sh``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys

import pytest

from softseg.cli import main as softseg_main
from softseg.integrations.nnunet import commands
from softseg.integrations.nnunet.commands import (
    NNUNetCommandError,
    check_trainer_name,
    requested_trainer,
    run_nnunet,
    with_ext_trainer_path,
)
from softseg.integrations.nnunet.environment import check_nnunet, check_torchvision, ext_trainer_path

needs_nnunet = pytest.mark.skipif(
    importlib.util.find_spec("nnunetv2") is None, reason="needs nnU-Net: bash scripts/test_nnunet.sh runs it"
)
TRAINERS = [
    "nnUNetTrainerSoftsegDiceCE",
    "nnUNetTrainerSoftsegDiceCE_nearestDS",
    "nnUNetTrainerSoftsegJaccardCE",
    "nnUNetTrainerSoftsegJaccardCE_nearestDS",
    "nnUNetTrainerSoftsegTverskyCE",
    "nnUNetTrainerSoftsegTverskyCE_nearestDS",
]


def _installed(monkeypatch, version):
    """Pretend nnunetv2 `version` is installed (None: not installed)."""
    real = importlib.metadata.version

    def fake(name):
        if name != "nnunetv2":
            return real(name)
        if version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return version

    monkeypatch.setattr(importlib.metadata, "version", fake)


# ---------------------------------------------------------------------------------------------------------
# The folder and the variable


def test_ext_folder_holds_only_the_re_export_module():
    path = ext_trainer_path()
    assert os.path.isabs(path)
    modules = sorted(name for name in os.listdir(path) if name.endswith(".py"))
    assert modules == ["__init__.py", "softseg_nnunet_trainers.py"]


def test_ext_path_is_prepended_once_and_keeps_the_users_folders():
    ours = ext_trainer_path()
    assert with_ext_trainer_path(None) == ours
    assert with_ext_trainer_path("") == ours
    joined = os.pathsep.join(["/a", ours, "", "/b"])
    assert with_ext_trainer_path(joined).split(os.pathsep) == [ours, "/a", "/b"]


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["1", "2d", "0", "-tr", "nnUNetTrainerSoftsegJaccardCE"], "nnUNetTrainerSoftsegJaccardCE"),
        (["1", "2d", "0", "-tr=X", "-tr", "Y"], "Y"),
        (["1", "2d", "0", "-tr"], None),
        (["-i", "in", "-o", "out", "-d", "1"], None),
    ],
)
def test_requested_trainer(arguments, expected):
    assert requested_trainer(arguments) == expected


def test_ext_path_subcommand_prints_the_folder(capsys):
    assert softseg_main(["nnunet", "ext-path"]) == 0
    assert capsys.readouterr().out == ext_trainer_path() + "\n"
    with pytest.raises(SystemExit) as exit_info:
        softseg_main(["nnunet"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: {train,predict,ext-path}" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Forwarding to nnU-Net's own command


@pytest.mark.parametrize("command, script", [("train", "nnUNetv2_train"), ("predict", "nnUNetv2_predict")])
def test_arguments_and_lookup_path_reach_nnunets_command_unchanged(monkeypatch, command, script):
    seen = {}

    def fake_entry_point():
        seen["argv"] = list(sys.argv)
        seen["ext"] = os.environ["nnUNet_extTrainer"]
        return None

    monkeypatch.setattr(commands, "check_nnunet", lambda: "2.8.1")
    monkeypatch.setattr(commands, "check_torchvision", lambda: None)
    monkeypatch.setattr(commands, "check_trainer_name", lambda name: seen.setdefault("checked", name))
    monkeypatch.setattr(commands, "_nnunet_entry_point", lambda name: seen.setdefault("script", name) and fake_entry_point)
    monkeypatch.setenv("nnUNet_extTrainer", "/my/trainers")
    argv_before = list(sys.argv)
    arguments = ["501", "2d", "0", "-tr", "nnUNetTrainerSoftsegDiceCE", "-h", "--npz"]
    assert softseg_main(["nnunet", command, *arguments]) == 0
    assert seen == {
        "script": script,
        "checked": "nnUNetTrainerSoftsegDiceCE",
        "argv": [script, *arguments],
        "ext": os.pathsep.join([ext_trainer_path(), "/my/trainers"]),
    }
    assert sys.argv == argv_before


def test_console_scripts_forward_sys_argv(monkeypatch):
    calls = []
    monkeypatch.setattr(commands, "run_nnunet", lambda command, arguments: calls.append((command, arguments)) or 3)
    monkeypatch.setattr(sys, "argv", ["softseg-nnunet-train", "1", "2d", "0"])
    assert commands.train_entry() == 3
    monkeypatch.setattr(sys, "argv", ["softseg-nnunet-predict", "-i", "x"])
    assert commands.predict_entry() == 3
    assert calls == [("train", ["1", "2d", "0"]), ("predict", ["-i", "x"])]


# ---------------------------------------------------------------------------------------------------------
# Clear messages


def test_missing_extra(monkeypatch, capsys):
    _installed(monkeypatch, None)
    message = r"softseg's nnU-Net trainers need nnU-Net v2 \(the nnunetv2 package\), which is not installed: pip install 'softseg\[nnunet\]'"
    with pytest.raises(ImportError, match=message):
        check_nnunet()
    monkeypatch.setattr(sys, "argv", ["softseg-nnunet-train", "1", "2d", "0"])
    assert commands.train_entry() == 2
    assert capsys.readouterr().err.startswith("softseg-nnunet-train: error: softseg's nnU-Net trainers need nnU-Net v2")
    # Importing the trainers says the same, before nnU-Net's own import would fail less clearly.
    monkeypatch.delitem(sys.modules, "softseg.integrations.nnunet.trainers", raising=False)
    with pytest.raises(ImportError, match=message):
        importlib.import_module("softseg.integrations.nnunet.trainers")


def test_nnunet_before_2_8(monkeypatch, capsys):
    _installed(monkeypatch, "2.7.0")
    with pytest.raises(ImportError, match=r"need nnunetv2 >= 2.8 \(the first with external trainers through nnUNet_extTrainer, "
                       r"and the _build_loss they override\); found nnunetv2 2.7.0: pip install 'softseg\[nnunet\]'"):
        check_nnunet()
    assert softseg_main(["nnunet", "predict", "-i", "x"]) == 2
    assert "softseg nnunet predict: error: softseg's nnU-Net trainers need nnunetv2 >= 2.8" in capsys.readouterr().err


def test_nnunet_after_2_8_warns(monkeypatch):
    _installed(monkeypatch, "2.9.0")
    with pytest.warns(UserWarning, match="written against nnunetv2 2.8 .*found 2.9.0, which they have not been tested with"):
        assert check_nnunet() == "2.9.0"
    _installed(monkeypatch, "2.8.1")
    assert check_nnunet() == "2.8.1"
    _installed(monkeypatch, "unknown")
    with pytest.raises(ImportError, match=r"cannot read the installed nnunetv2 version 'unknown'; expected 2.8.x"):
        check_nnunet()


def test_torchvision_that_does_not_import(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # any import failure; a mismatched build raises RuntimeError
    with pytest.raises(ImportError, match=r"torchvision does not import \(.*\)\. nnU-Net's trainer lookup imports every "
                       r"trainer it ships, one of which imports timm, which needs a torchvision built for the installed torch"):
        check_torchvision()
    _installed(monkeypatch, "2.8.1")
    assert softseg_main(["nnunet", "train", "1", "2d", "0"]) == 2
    assert "softseg nnunet train: error: torchvision does not import" in capsys.readouterr().err


def test_unknown_command_is_a_value_error():
    with pytest.raises(ValueError, match=r"command must be one of \('train', 'predict'\); got 'evaluate'"):
        run_nnunet("evaluate", [])


# ---------------------------------------------------------------------------------------------------------
# With nnU-Net installed


@needs_nnunet
def test_clashing_builtin_name_is_refused_before_anything_runs(monkeypatch, capsys):
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as builtin_module

    # As if a future nnU-Net shipped a trainer of one of softseg's names: its lookup would take that one.
    monkeypatch.setattr(builtin_module, "nnUNetTrainerSoftsegDiceCE", builtin_module.nnUNetTrainer, raising=False)
    with pytest.raises(NNUNetCommandError, match=r"-tr nnUNetTrainerSoftsegDiceCE: nnU-Net 2\.8\.\d+ has a built-in trainer "
                       r"of that name \(nnunetv2.training.nnUNetTrainer.nnUNetTrainer\), and its lookup takes built-in "
                       r"trainers before those on nnUNet_extTrainer, so the softseg trainer would never run"):
        check_trainer_name("nnUNetTrainerSoftsegDiceCE")
    monkeypatch.setattr(commands, "_nnunet_entry_point", lambda name: pytest.fail("nnU-Net must not run"))
    assert softseg_main(["nnunet", "train", "1", "2d", "0", "-tr", "nnUNetTrainerSoftsegDiceCE"]) == 2
    assert "has a built-in trainer of that name" in capsys.readouterr().err
    check_trainer_name("nnUNetTrainerSoftsegJaccardCE")  # the other names are free
    check_trainer_name("nnUNetTrainer_5epochs")  # built-in names without softseg's prefix are not checked


@needs_nnunet
def test_entry_points_are_nnunets_own_commands():
    from nnunetv2.inference.predict_from_raw_data import predict_entry_point
    from nnunetv2.run.run_training import run_training_entry

    assert commands._nnunet_entry_point("nnUNetv2_train") is run_training_entry
    assert commands._nnunet_entry_point("nnUNetv2_predict") is predict_entry_point


@needs_nnunet
def test_nnunets_lookup_finds_every_trainer_through_the_folder(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from softseg.integrations.nnunet import trainers

    monkeypatch.setenv("nnUNet_extTrainer", ext_trainer_path())  # as a user who sets it by hand
    for name in TRAINERS:
        found = recursive_find_trainer_class_by_name(name)
        assert found is getattr(trainers, name) and issubclass(found, nnUNetTrainer)
    assert "softseg_nnunet_trainers" not in sys.modules  # nnU-Net dropped the re-export module again
    assert sorted(trainers.__all__) == TRAINERS
    with pytest.raises(RuntimeError, match="Could not find requested nnunet trainer nnUNetTrainerSoftsegBase"):
        recursive_find_trainer_class_by_name("nnUNetTrainerSoftsegBase")  # the base class is not for -tr
