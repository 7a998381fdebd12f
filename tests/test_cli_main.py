"""The `softseg` command as a whole: `python -m softseg`, what `--help` imports, the command without the cli
extra (as `pip install softseg` leaves it), and one-line messages with the right exit status for Ctrl-C,
unwritable paths and bad arguments."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

import softseg.cli
import softseg.cli.audit
from softseg.cli import CLI_EXTRA, main

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout's sources first on the path."""
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def test_python_dash_m_softseg_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "softseg", "--help"], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: softseg [-h] {compare,audit,bench,nnunet}")
    for line in ("compare ", "audit ", "bench "):
        assert f"\n    {line}" in done.stdout
    done = subprocess.run([sys.executable, "-m", "softseg", "audit", "--seed", "-1", "softseg.DiceLoss"],
                          capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == "softseg audit: error: argument --seed: expected an integer in [0, 2**63); got -1"


def test_help_imports_no_subcommand_and_no_compiler():
    done = _python("""
        import sys
        from softseg.cli import main
        try:
            main(["--help"])
        except SystemExit as exit:
            assert exit.code == 0
        heavy = ("softseg.cli.", "softseg.metrics", "softseg.labels", "softseg.losses", "matplotlib", "rich",
                 "torch", "triton", "torchmetrics", "scipy", "numpy")
        print(sorted(name for name in sys.modules if name.startswith(heavy)))
    """)
    assert done.returncode == 0, done.stderr
    # Not even torch: `softseg --help` answers at once (softseg's own names are loaded on first use).
    assert done.stdout.splitlines()[-1] == "['softseg.cli.common']"


def test_import_softseg_loads_names_on_first_use():
    done = _python("""
        import sys
        import softseg
        print("torch" in sys.modules)
        from softseg import *
        assert set(softseg.__all__) <= set(dir(softseg)) and "metrics" in dir(softseg)
        assert DiceLoss is softseg.DiceLoss and callable(tversky_loss)  # the star import gave the names
        assert softseg.DiceLoss is sys.modules["softseg.losses"].DiceLoss
        assert softseg.schedules.linear is sys.modules["softseg.schedules"].linear
        assert "dice_loss" in vars(softseg)  # cached: later accesses are plain attributes
        print(sorted(name for name in sys.modules if name.startswith(("torchmetrics", "scipy", "torch._dynamo"))))
        try:
            softseg.dice_los
        except AttributeError as error:
            print(error)
    """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "[]", "module 'softseg' has no attribute 'dice_los'"]


# The command as `pip install softseg` leaves it: the cli extra's libraries (matplotlib, Pillow, nibabel)
# cannot be imported.
WITHOUT_EXTRA = """
    import importlib.abc, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("matplotlib", "PIL", "nibabel"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    sys.meta_path.insert(0, NotInstalled())
    from softseg.cli import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["audit", "--help"],
        ["audit", "--quiet", "--steps", "2", "--size", "4", "softseg.DiceLoss"],
        ["bench", "--quick", "--workloads", "W3", "--implementations", "softseg", "cross_entropy"],
    ],
)
def test_without_the_cli_extra_audit_and_bench_work(argv):
    done = _python(WITHOUT_EXTRA, *argv)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [["compare", "--quick"], ["compare", "--help"]])
def test_without_the_cli_extra_compare_names_the_extra(argv):
    done = _python(WITHOUT_EXTRA, *argv)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "softseg compare: error: matplotlib is not installed; this command needs the cli extra: "
        "pip install 'softseg[cli]'"
    )


def test_the_packaging_matches_what_the_command_imports():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dependencies = {requirement.split(">")[0].split("=")[0].strip() for requirement in project["dependencies"]}
    assert "rich" in dependencies  # audit's and bench's tables
    cli = {requirement.split(">")[0].strip() for requirement in project["optional-dependencies"]["cli"]}
    distribution = {"matplotlib": "matplotlib", "PIL": "pillow", "nibabel": "nibabel", "rich": "rich"}
    assert {distribution[module] for module in CLI_EXTRA} <= cli
    assert project["scripts"]["softseg"] == "softseg.cli:main"
    assert (ROOT / "src" / "softseg" / "py.typed").is_file()
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["softseg"] == [
        "py.typed",
        "kernels/*.cpp",  # the native CPU kernels' source, built on first use
    ]
    assert (ROOT / "src" / "softseg" / "kernels" / "native_kernels.cpp").is_file()


# ---------------------------------------------------------------- one-line messages, exit status


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (KeyboardInterrupt(), 130, "softseg audit: interrupted"),
        (PermissionError(13, "Permission denied", "/report/summary.md"), 2,
         "softseg audit: error: cannot use /report/summary.md: permission denied"),
        (OSError(28, "No space left on device"), 2, "softseg audit: error: No space left on device"),
        (ModuleNotFoundError("No module named 'nibabel'", name="nibabel"), 1,
         "softseg audit: error: nibabel is not installed; this command needs the cli extra: pip install 'softseg[cli]'"),
    ],
)
def test_errors_while_a_command_runs_are_one_line_messages(monkeypatch, capsys, error, status, message):
    def interrupted(args):
        raise error

    monkeypatch.setattr(softseg.cli.audit, "_run", interrupted)
    assert main(["audit", "softseg.DiceLoss"]) == status
    assert capsys.readouterr().err.strip() == message


def test_a_closed_pipe_ends_quietly(monkeypatch, capsys):
    def closed(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(softseg.cli.audit, "_run", closed)
    assert main(["audit", "softseg.DiceLoss"]) == 1
    assert capsys.readouterr().err == ""


def test_an_unrelated_import_error_is_not_disguised(monkeypatch):
    def broken(args):
        raise ModuleNotFoundError("No module named 'softseg.nothing'", name="softseg.nothing")

    monkeypatch.setattr(softseg.cli.audit, "_run", broken)
    with pytest.raises(ModuleNotFoundError):  # a bug, not a missing extra: the traceback helps
        main(["audit", "softseg.DiceLoss"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: {compare,audit,bench,nnunet}"),
        (["frobnicate"], "argument {compare,audit,bench,nnunet}: invalid choice: 'frobnicate'"),
        (["compare", "--quick", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
