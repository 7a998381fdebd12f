"""softseg bench forwards its arguments to softseg.benchmark.main, installs nothing unless asked, names the
missing peers with their install line, and speaks to users (no issue numbers)."""

import importlib.util
import sys
import types

import pytest

from softseg.cli import main

HAS_BENCHMARK = importlib.util.find_spec("softseg.benchmark") is not None


def test_bench_forwards_arguments_and_exit_status(monkeypatch):
    seen = []
    fake = types.ModuleType("softseg.benchmark")
    fake.main = lambda argv, prog: seen.append((argv, prog)) or 3
    monkeypatch.setitem(sys.modules, "softseg.benchmark", fake)
    assert main(["bench", "--quick", "--size", "small"]) == 3
    assert main(["bench", "--", "--help"]) == 3
    assert seen == [(["--quick", "--size", "small"], "softseg bench"), (["--help"], "softseg bench")]


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


def test_bench_errors_name_the_command(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--repeats", "0"])
    assert exit.value.code == 2
    assert "softseg bench: error: --repeats must be >= 1; got 0" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_BENCHMARK, reason="softseg.benchmark is not in the checkout")
def test_missing_peers_are_named_with_their_install_line_and_nothing_is_installed(monkeypatch, capsys):
    from softseg import benchmark

    monkeypatch.setitem(benchmark.PEERS, "monai", ("no_such_peer_xyz", "pip install 'monai>=1.6,<1.7' (or ...)"))
    installs = []
    monkeypatch.setattr(benchmark, "_install_monai", lambda: installs.append(1))
    argv = ["bench", "--quick", "--workloads", "W3", "--implementations", "softseg", "monai", "cross_entropy"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert installs == []  # never without --install-peers
    assert "monai is not installed, its rows are skipped: pip install 'monai>=1.6,<1.7' (or ...)" in out
    assert "| W3 | monai | - | - | - | - | not installed: pip install 'monai>=1.6,<1.7' (or ...) |" in out
    # Output for users: no issue numbers, no shouting.
    for internal in ("issue", "NOT met", "Goals"):
        assert internal not in out
    assert "softseg against cross-entropy (medians of this run; at scale 0.1" in out
    assert "- W3 softseg Dice time: " in out and "x cross-entropy's time (aim <= 0.8x: " in out


@pytest.mark.skipif(not HAS_BENCHMARK, reason="softseg.benchmark is not in the checkout")
def test_install_peers_installs_monai_only_when_asked(monkeypatch, capsys):
    from softseg import benchmark

    monkeypatch.setitem(benchmark.PEERS, "monai", ("no_such_peer_xyz", "hint"))
    installs = []
    monkeypatch.setattr(benchmark, "_install_monai", lambda: installs.append(1) or "installing failed: offline")
    argv = ["bench", "--quick", "--install-peers", "--workloads", "W3", "--implementations", "softseg", "monai"]
    assert main(argv) == 0
    assert installs == [1]
    assert "| W3 | monai | - | - | - | - | not installed: installing failed: offline |" in capsys.readouterr().out


@pytest.mark.skipif(not HAS_BENCHMARK, reason="softseg.benchmark is not in the checkout")
def test_json_path_is_checked_before_timing_and_written_whole(tmp_path, capsys):
    base = ["bench", "--quick", "--workloads", "W3", "--implementations", "softseg"]
    for path, reason in ((tmp_path / "missing" / "rows.json", "no such file or directory"), (tmp_path, "is a folder")):
        with pytest.raises(SystemExit) as exit:
            main([*base, "--json", str(path)])
        assert exit.value.code == 2
        err = capsys.readouterr().err
        assert f"softseg bench: error: --json {path}: " in err and reason in err
    target = tmp_path / "rows.json"
    assert main([*base, "--json", str(target)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["rows.json"]  # no .partial left behind
    assert '"implementation": "softseg"' in target.read_text()
