"""softseg bench forwards its arguments to softseg.benchmark.main and reports a missing module clearly."""

import importlib.util
import sys
import types

import pytest

from softseg.cli import main

HAS_BENCHMARK = importlib.util.find_spec("softseg.benchmark") is not None


def test_bench_forwards_arguments_and_exit_status(monkeypatch):
    seen = []
    fake = types.ModuleType("softseg.benchmark")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "softseg.benchmark", fake)
    assert main(["bench", "--quick", "--size", "small"]) == 3
    assert main(["bench", "--", "--help"]) == 3
    assert seen == [["--quick", "--size", "small"], ["--help"]]


def test_bench_without_the_benchmark_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "softseg.benchmark", None)  # makes the import fail
    assert main(["bench"]) == 2
    assert capsys.readouterr().err.startswith(
        "softseg bench: error: the benchmark module softseg.benchmark cannot be imported"
    )


@pytest.mark.skipif(not HAS_BENCHMARK, reason="softseg.benchmark (performance issue 4) is not in the checkout yet")
def test_bench_quick_end_to_end(capsys):
    argv = [
        "bench",
        "--quick",
        "--in-process",
        "--no-install",
        "--workloads",
        "W3",
        "--implementations",
        "softseg",
        "cross_entropy",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "W3" in out and "softseg" in out and "cross_entropy" in out


def test_missing_cli_extra_names_the_extra(monkeypatch):
    import softseg.cli

    # Forget the modules that import matplotlib (monkeypatch puts them back), then hide matplotlib itself.
    for name in ("compare", "report"):
        monkeypatch.delattr(softseg.cli, name, raising=False)
        monkeypatch.delitem(sys.modules, f"softseg.cli.{name}", raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit, match=r"the command needs the cli extra: pip install 'softseg\[cli\]'"):
        main(["audit", "softseg.DiceLoss"])
