"""Tile shapes of the Triton kernels on a CUDA device: kernel time per setting, against the memory floor.

For each workload of issue #4 it times the forward and the backward kernel of
:func:`softseg.kernels.triton_fused.triton_statistics` and :func:`~softseg.kernels.triton_fused.triton_gradient` alone (launched back to back, so the host
stays ahead and the figure is the device's time) at several settings of ``TILE_ELEMENTS`` (classes x
pixels per program), ``NUM_WARPS`` and ``TILES_PER_PROGRAM`` (forward), and prints them next to the
memory floor: the logits and target read once per pass and the gradient written once, at the
device-to-device copy bandwidth measured here. Then the whole loss step (forward + backward, host
included) and ``F.cross_entropy``'s. Timing: ``triton.testing.do_bench``, median.

    PYTHONPATH=src python benchmarks/tune_triton.py [--workloads W1 W3] [--tiles 2048 4096] [--warps 4 8]
"""

from __future__ import annotations

import argparse
import itertools

import torch
import torch.nn.functional as F
import triton.testing

import softseg.kernels.triton_fused as triton_module
from softseg import dice_ce_loss, dice_loss, set_value_checks
from softseg.benchmark import WORKLOADS, _inputs


def _copy_bandwidth() -> float:
    """Bytes per second of a large device-to-device copy, counting bytes read and written."""
    source = torch.empty(1 << 28, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    ms = triton.testing.do_bench(lambda: target.copy_(source), return_mode="median")
    return 2 * source.numel() * 4 / (ms * 1e-3)


def _kernel_times(logits, labels, dense, activation, with_ce) -> tuple[float, float]:
    """Median ms of the forward kernel and of the backward kernel at the module's current settings."""
    kernels = triton_module._kernels()
    batch, channels, pixels = logits.shape
    pointers, strides, flags, tiles = triton_module._launch_options(
        logits, labels, dense, None, activation, 1, with_ce
    )
    programs, per_program = triton_module._forward_split(tiles, batch)
    partial = torch.empty(5, batch, channels, programs, device="cuda")
    coef = torch.randn(3, batch, channels, device="cuda")
    grad = torch.empty_like(logits)

    def forward():
        kernels.statistics_forward[(programs, batch)](
            *pointers, partial, batch * channels * programs, channels, pixels, programs, per_program, *strides, **flags
        )

    def backward():
        kernels.statistics_backward[(tiles, batch)](
            *pointers, coef, grad, batch * channels, channels, pixels, *strides, **flags
        )

    return (triton.testing.do_bench(forward, return_mode="median"),
            triton.testing.do_bench(backward, return_mode="median"))


def _step_ms(loss, logits, target) -> float:
    def run():
        logits.grad = None
        loss(logits, target).backward()

    return triton.testing.do_bench(run, return_mode="median")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "W4-3d", "W5-3d"])
    parser.add_argument("--tiles", nargs="+", type=int, default=[2048, 4096, 8192])
    parser.add_argument("--warps", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--per-program", nargs="+", type=int, default=[1, 4, 8])
    args = parser.parse_args()
    bandwidth = _copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e12:.2f} TB/s (read + write)")
    defaults = (triton_module.TILE_ELEMENTS, triton_module.NUM_WARPS, triton_module.TILES_PER_PROGRAM)
    for name in args.workloads:
        workload = WORKLOADS[name]
        logits, target = _inputs(workload, device="cuda")
        flat = logits.detach().reshape(*logits.shape[:2], -1)
        labels = target.reshape(target.shape[0], -1) if workload.target == "index" else None
        dense = None if labels is not None else target.reshape(flat.shape)
        target_bytes = target.numel() * target.element_size()
        logits_bytes = flat.numel() * flat.element_size()
        floor_forward = (logits_bytes + target_bytes) / bandwidth * 1e3
        floor_backward = (2 * logits_bytes + target_bytes) / bandwidth * 1e3
        print(f"\n{name} {tuple(workload.shape)}: floor forward {floor_forward:.3f} ms, backward {floor_backward:.3f} ms")
        print("| tile | warps | tiles per program | forward ms | x floor | backward ms | x floor |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for tile, warps, per_program in itertools.product(args.tiles, args.warps, args.per_program):
            triton_module.TILE_ELEMENTS, triton_module.NUM_WARPS, triton_module.TILES_PER_PROGRAM = tile, warps, per_program
            forward, backward = _kernel_times(flat, labels, dense, workload.activation, workload.compound)
            print(f"| {tile} | {warps} | {per_program} | {forward:.3f} | {forward / floor_forward:.1f} "
                  f"| {backward:.3f} | {backward / floor_backward:.1f} |")
        triton_module.TILE_ELEMENTS, triton_module.NUM_WARPS, triton_module.TILES_PER_PROGRAM = defaults
        if workload.compound:
            loss = dice_ce_loss
        else:
            def loss(z, y, act=workload.activation):
                return dice_loss(z, y, activation=act)
        if workload.activation == "sigmoid":
            def baseline(z, y):
                return F.binary_cross_entropy_with_logits(z, (y.unsqueeze(1) if y.ndim < z.ndim else y).float())
        else:
            baseline = F.cross_entropy
        step, ce = _step_ms(loss, logits, target), _step_ms(baseline, logits, target)
        with set_value_checks(False):
            unchecked = _step_ms(loss, logits, target)
        print(f"whole step (defaults {defaults}): softseg {step:.3f} ms ({unchecked:.3f} ms with value checks off), "
              f"cross-entropy {ce:.3f} ms, ratio {step / ce:.2f} ({unchecked / ce:.2f})")
        del logits, target, flat, labels, dense
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
