"""Where one forward + backward of a loss spends its time: host ops, kernel time, launches and syncs.

For each (workload, implementation) of softseg.benchmark it runs a few steps under torch.profiler and
prints per step: wall time, the device's kernel time (CUDA), the number of kernel launches, host ops and
host-device syncs, then the host ops that cost most. Use it to tell a launch- or host-bound loss from a
memory-bound one before tuning a kernel.

    PYTHONPATH=src python benchmarks/profile_step.py --device cuda --workloads W1 --implementations softseg
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from softseg.benchmark import DEVICES, IMPLEMENTATIONS, WORKLOADS, _inputs, _loss_function

SYNC_EVENTS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "aten::_local_scalar_dense")


def profile_step(workload_name: str, implementation: str, device: str, steps: int, top: int) -> None:
    workload = WORKLOADS[workload_name]
    loss_fn = _loss_function(workload, implementation, device)
    logits, target = _inputs(workload, device=device)

    def step():
        logits.grad = None
        loss_fn(logits, target).backward()

    for _ in range(3):
        step()
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - start) / steps * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    host_ops = sum(e.count for e in events if e.key.startswith("aten::")) / steps
    syncs = sum(e.count for e in events if e.key in SYNC_EVENTS) / steps
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx")) / steps
    kernel_ms = 0.0
    if cuda:
        kernel_ms = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA") / steps / 1e3
    print(f"\n## {workload_name} {implementation} on {device}: {wall_ms:.3f} ms per step; kernels {kernel_ms:.3f} ms, "
          f"{launches:.0f} launches, {host_ops:.0f} aten ops, {syncs:.1f} syncs per step")
    print(events.table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60))
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1"], choices=list(WORKLOADS))
    parser.add_argument("--implementations", nargs="+", default=["softseg", "cross_entropy"], choices=IMPLEMENTATIONS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=DEVICES)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for name in args.workloads:
        for implementation in args.implementations:
            profile_step(name, implementation, args.device, args.steps, args.top)


if __name__ == "__main__":
    main()
