"""The benchmark end to end on tiny inputs (fresh processes), its table and goal report, and its options."""

from __future__ import annotations

import pytest
import torch

from softseg import benchmark


def test_quick_benchmark_end_to_end(capsys):
    status = benchmark.main(
        ["--quick", "--process", "fresh", "--workloads", "W1", "--implementations", "softseg", "cross_entropy",
         "--repeats", "1", "--no-install"]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    rows = [line for line in out.splitlines() if line.startswith("| W1 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["softseg", "cross_entropy"]
    # cross-entropy is the baseline of every ratio; both rows have a time and a memory figure.
    assert rows[1].split("|")[4].strip() == "1.00"
    assert all(row.split("|")[3].strip() != "-" and row.split("|")[5].strip() != "-" for row in rows)
    assert "- W1 softseg Dice time: " in out and "x cross-entropy's time (aim <= 0.8x: " in out
    assert "- W1 softseg extra peak memory: " in out and "x the logits' size (aim <= 1x: " in out


def test_rows_in_process_and_missing_peer():
    rows = benchmark.run_benchmark(
        workloads=["W3", "W5-2d"], implementations=["softseg", "smp", "torch-reference", "cross_entropy"],
        scale=0.02, repeats=1, warmup=0, fresh_process=False, install_peers=False,
    )
    by_key = {(r["workload"], r["implementation"]): r for r in rows}
    assert by_key[("W3", "softseg")]["status"] == "ok" and by_key[("W3", "softseg")]["extra_bytes"] is None
    assert by_key[("W3", "smp")]["status"] in ("not installed", "ok")
    assert by_key[("W5-2d", "smp")]["status"] in ("not installed", "not supported")
    # The plain-torch reference computes the same global Dice as softseg on hard labels (+ the same CE in W5).
    for workload in ("W3", "W5-2d"):
        assert by_key[(workload, "softseg")]["loss"] == pytest.approx(by_key[(workload, "torch-reference")]["loss"],
                                                                       rel=1e-5)
    table = benchmark._format_table(rows)
    assert "| W3 | smp | - | - | - | - | not installed" in table or "| W3 | smp |" in table


def test_format_and_goals_from_known_rows():
    rows = [
        {"workload": "W1", "implementation": "softseg", "status": "ok", "median_s": 0.06, "extra_bytes": 50 * 2**20,
         "logits_bytes": 100 * 2**20},
        {"workload": "W1", "implementation": "monai", "status": "ok", "median_s": 0.24, "extra_bytes": 300 * 2**20,
         "logits_bytes": 100 * 2**20},
        {"workload": "W1", "implementation": "cross_entropy", "status": "ok", "median_s": 0.1, "extra_bytes": None,
         "logits_bytes": 100 * 2**20},
    ]
    table = benchmark._format_table(rows)
    assert "| W1 | softseg | 60.0 | 0.60 | 50 | 0.50 | |" in table
    assert "| W1 | cross_entropy | 100.0 | 1.00 | - | - | |" in table
    summary = benchmark._summary(rows)
    assert "- W1 softseg Dice time: 0.60x cross-entropy's time (aim <= 0.8x: reached)" in summary
    assert "- W1 softseg extra peak memory: 0.50x the logits' size (aim <= 1x: reached)" in summary
    assert "- W1 speed-up over MONAI DiceLoss(soft_label=True): 4.00x (aim >= 3x: reached)" in summary
    rows[0]["median_s"] = 0.09
    assert "- W1 softseg Dice time: 0.90x cross-entropy's time (aim <= 0.8x: missed)" in benchmark._summary(rows)


def test_min_time_adds_timed_steps_up_to_the_cap(monkeypatch):
    # Millisecond steps get more timed steps than --repeats, until they add up to min_time, capped.
    def run(min_time):
        [row] = benchmark.run_benchmark(workloads=["W3"], implementations=["cross_entropy"], scale=0.02, repeats=2,
                                        warmup=0, fresh_process=False, install_peers=False, min_time=min_time)
        return row["steps"]

    assert run(0.0) == 2
    monkeypatch.setattr(benchmark, "MAX_TIMED_STEPS", 7)
    assert run(60.0) == 7  # a tiny step: the cap ends it long before a minute


def test_scaled_workload_keeps_batch_and_classes():
    small = benchmark.WORKLOADS["W1"].scaled(0.1)
    assert small.shape == (2, 14, 10, 10, 10)
    assert benchmark.WORKLOADS["W3"].scaled(0.001).shape == (8, 1, 4, 4)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--repeats", "0"], "--repeats must be >= 1; got 0"),
        (["--scale", "0"], "--scale must be > 0; got 0"),
        (["--workloads", "W9"], "invalid choice: 'W9'"),
        (["--min-time", "-1"], "--min-time must be >= 0; got -1.0"),
    ],
)
def test_bad_arguments_are_named(argv, match, capsys):
    with pytest.raises(SystemExit):
        benchmark.main(argv)
    assert match in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_refused(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(["--quick", "--device", "cuda"])
    assert "--device cuda: torch sees no CUDA device here" in capsys.readouterr().err


def test_blocks_rows_run_the_torch_block_path(monkeypatch):
    # softseg-blocks turns the native and Triton kernels off for its steps: the torch blocks run, same loss.
    import softseg.kernels.ops as ops

    paths = []
    original = ops.block_statistics
    monkeypatch.setattr(ops, "block_statistics", lambda *a, **k: paths.append("blocks") or original(*a, **k))
    rows = benchmark.run_benchmark(workloads=["W2"], implementations=["softseg-blocks", "softseg"], scale=0.02,
                                   repeats=1, warmup=0, fresh_process=False, install_peers=False)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5)
    assert paths  # the block path ran


def test_compile_mode_rows_and_goals():
    rows = benchmark.run_benchmark(workloads=["W5-2d"], implementations=["softseg", "cross_entropy"], scale=0.02,
                                   repeats=1, warmup=0, fresh_process=False, install_peers=False, compile=True)
    assert [row["status"] for row in rows] == ["ok", "ok"]
    eager = benchmark.run_benchmark(workloads=["W5-2d"], implementations=["softseg"], scale=0.02, repeats=1,
                                    warmup=0, fresh_process=False, install_peers=False)
    assert rows[0]["loss"] == pytest.approx(eager[0]["loss"], rel=1e-5)
    rows[0]["extra_bytes"], rows[1]["extra_bytes"] = 10, 40
    summary = benchmark._summary(rows, compile=True)
    assert "- W5-2d compiled softseg Dice + CE time: " in summary
    assert "x compiled cross-entropy's time (aim <= 1.2x: " in summary
    assert ("- W5-2d compiled softseg extra peak memory (aim: the larger of 0.25x and compiled cross-entropy's "
            "0.00x): ") in summary
