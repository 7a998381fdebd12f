"""The GPU checks of issue #13 in one short run, for a session that has a CUDA device (none was lent when this
was written): what it measures, in order, each part with its own time limit so one failure does not stop the rest.

1. **No host sync in a step** with the value checks off: one forward + backward of each loss under
   ``torch.cuda.set_sync_debug_mode("error")`` (Dice, Dice + CE, sigmoid Dice, dense targets, ignore_index).
2. **CUDA graph capture** of a whole eager step (forward + backward, value checks off) with
   ``torch.cuda.graph``: the replayed gradient must equal an ordinary step's; prints replay time against the
   eager step. Then ``torch.compile(mode="reduce-overhead")`` (inductor's CUDA graphs): the number of
   cudagraph skips (must be 0) and the compiled step time.
3. **Bandwidth floor**: a Dice step (Triton kernels) against the floor of reading the logits twice and writing
   the gradient once at this device's copy bandwidth; printed as x floor, eager and compiled.
4. **The benchmark under compile**: ``softseg.benchmark --device cuda --compile --process same`` on every
   workload (softseg, softseg-blocks, MONAI, cross-entropy; ratios to compiled cross-entropy), then eager.

Run from the repository root on the GPU machine (the report also goes to ``$OUT/gpu_report.md`` when ``$OUT``
is set):

    PYTHONPATH=src python benchmarks/gpu_check.py                 # everything, about 5 minutes on an H100
    PYTHONPATH=src python benchmarks/gpu_check.py --parts 1 2 3   # the quick checks only (about 1 minute)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F

import softseg
from softseg import set_value_checks
from softseg.benchmark import WORKLOADS, _inputs

DEVICE = "cuda"


def _losses():
    """(name, workload, loss) of the checked steps."""
    return [
        ("dice W2", "W2", lambda z, y: softseg.dice_loss(z, y)),
        ("dice_ce W5-3d", "W5-3d", lambda z, y: softseg.dice_ce_loss(z, y)),
        ("sigmoid dice W3", "W3", lambda z, y: softseg.dice_loss(z, y, activation="sigmoid")),
        ("dice dense W4-2d", "W4-2d", lambda z, y: softseg.dice_loss(z, y)),
        ("dice ignore_index image W2", "W2",
         lambda z, y: softseg.dice_loss(z, y.masked_fill(y == 3, 255), ignore_index=255, aggregation="image")),
    ]


def _median_ms(step, repeats: int = 20) -> float:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def part_no_sync(report):
    report("## 1. No host sync in a step (value checks off)\n")
    for name, workload, loss in _losses():
        logits, target = _inputs(WORKLOADS[workload], device=DEVICE)
        loss(logits, target).backward()  # one-time costs outside the check
        torch.cuda.synchronize()
        try:
            with set_value_checks(False):
                torch.cuda.set_sync_debug_mode("error")
                try:
                    loss(logits, target).backward()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            report(f"- {name}: no sync")
        except RuntimeError as error:
            report(f"- {name}: SYNC: {str(error).splitlines()[0][:160]}")


def part_graphs(report):
    report("\n## 2. CUDA graph capture of a step\n")
    for name, workload, loss in _losses():
        logits, target = _inputs(WORKLOADS[workload], device=DEVICE)
        with set_value_checks(False):
            logits.grad = None
            loss(logits, target).backward()
            expected = logits.grad.clone()
            eager_ms = _median_ms(lambda: (setattr(logits, "grad", None), loss(logits, target).backward()))
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph wants
                for _ in range(3):
                    logits.grad = None
                    loss(logits, target).backward()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            logits.grad = None
            try:
                with torch.cuda.graph(graph):
                    static_loss = loss(logits, target)
                    static_loss.backward()
            except Exception as error:  # noqa: BLE001 - the report says what failed
                report(f"- {name}: capture FAILED: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                continue
            graph.replay()
            torch.cuda.synchronize()
            same = torch.allclose(logits.grad, expected, rtol=1e-4, atol=1e-6)
            replay_ms = _median_ms(graph.replay)
            report(f"- {name}: captured; gradient {'equals' if same else 'DIFFERS FROM'} an ordinary step's; "
                   f"replay {replay_ms:.3f} ms, eager step {eager_ms:.3f} ms")
    counters = __import__("torch._dynamo.utils", fromlist=["counters"]).counters
    for name, workload, loss in _losses()[:3]:
        torch._dynamo.reset()
        counters.clear()
        logits, target = _inputs(WORKLOADS[workload], device=DEVICE)
        compiled = torch.compile(loss, mode="reduce-overhead", fullgraph=True)
        with set_value_checks(False):
            def step():
                logits.grad = None
                compiled(logits, target).backward()

            try:
                step_ms = _median_ms(step)
            except Exception as error:  # noqa: BLE001
                report(f"- reduce-overhead {name}: FAILED: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                continue
        skips = dict(counters["inductor"]).get("cudagraph_skips", 0)
        report(f"- torch.compile(mode='reduce-overhead') {name}: {step_ms:.3f} ms, cudagraph skips {skips}")


def _copy_bandwidth() -> float:
    source = torch.empty(1 << 28, dtype=torch.float32, device=DEVICE)
    target = torch.empty_like(source)
    ms = _median_ms(lambda: target.copy_(source))
    return 2 * source.numel() * 4 / (ms * 1e-3)


def part_floor(report):
    report("\n## 3. A Dice step against the memory-bandwidth floor\n")
    bandwidth = _copy_bandwidth()
    report(f"copy bandwidth {bandwidth / 1e12:.2f} TB/s (bytes read + written); floor = logits read twice + "
           "target read twice + gradient written once")
    report("| workload | eager ms | compiled ms | floor ms | eager x floor | compiled x floor | compiled CE ms |")
    report("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workload in ("W1", "W2", "W3", "W4-3d", "W5-3d"):
        spec = WORKLOADS[workload]
        logits, target = _inputs(spec, device=DEVICE)
        if spec.compound:
            loss = softseg.dice_ce_loss
        else:
            def loss(z, y, activation=spec.activation):
                return softseg.dice_loss(z, y, activation=activation)
        if spec.activation == "sigmoid":
            def ce(z, y):
                return F.binary_cross_entropy_with_logits(z, (y.unsqueeze(1) if y.ndim < z.ndim else y).float())
        else:
            ce = F.cross_entropy
        compiled, compiled_ce = torch.compile(loss, fullgraph=True), torch.compile(ce)
        logits_bytes = logits.numel() * 4
        floor_ms = (3 * logits_bytes + 2 * target.numel() * target.element_size()) / bandwidth * 1e3
        with set_value_checks(False):
            times = [_median_ms(lambda f=f: (setattr(logits, "grad", None), f(logits, target).backward()))
                     for f in (loss, compiled, compiled_ce)]
        report(f"| {workload} | {times[0]:.3f} | {times[1]:.3f} | {floor_ms:.3f} | {times[0] / floor_ms:.1f} "
               f"| {times[1] / floor_ms:.1f} | {times[2]:.3f} |")


def part_benchmark(report):
    report("\n## 4. softseg.benchmark on CUDA, compiled and eager\n")
    for extra in (["--compile"], []):
        command = [sys.executable, "-m", "softseg.benchmark", "--device", "cuda", "--process", "same", "--repeats", "30",
                   "--implementations", "softseg", "softseg-blocks", "monai", "cross_entropy", "--no-install", *extra]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        report(f"$ {' '.join(command[1:])}\n```\n{done.stdout.strip()}\n```")
        if done.returncode:
            report(f"(exit status {done.returncode}: {done.stderr.strip().splitlines()[-1:]})")


PARTS = {1: part_no_sync, 2: part_graphs, 3: part_floor, 4: part_benchmark}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", type=int, choices=sorted(PARTS), default=sorted(PARTS))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device; torch sees none here")
    lines = []

    def report(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    report(f"# softseg GPU checks: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
           f"Triton {softseg.kernels.triton_fused.triton_available()}\n")
    for number in args.parts:
        try:
            PARTS[number](report)
        except Exception:  # noqa: BLE001 - a failed part must not stop the others
            report(f"part {number} FAILED:\n```\n{traceback.format_exc()[-2000:]}\n```")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "gpu_report.md"), "w") as out:
            out.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
