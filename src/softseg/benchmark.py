r"""Time and memory of softseg's losses against their peers, fresh processes per configuration.

Workloads (float32 logits, forward + backward):

- ``W1``: 3D multi-class, logits (2, 14, 96, 96, 96), index target, softmax Dice.
- ``W2``: 2D multi-class, logits (16, 21, 256, 256), index target, softmax Dice.
- ``W3``: binary, logits (8, 1, 512, 512), 0/1 index target, sigmoid Dice.
- ``W4-3d``, ``W4-2d``: W1 and W2 with dense soft targets (class probabilities).
- ``W5-3d``, ``W5-2d``: Dice + cross-entropy on W1 and W2.

Implementations: ``softseg`` (the fused path: Triton kernels on CUDA, the native kernels on CPU where a C++
compiler built them, else the torch blocks), ``softseg-blocks`` (the torch block path: Triton and the native
kernels turned off), ``softseg-unfused`` (activate +
region_statistics, the reference path), ``monai`` (DiceLoss with ``soft_label=True``, DiceCELoss for W5), ``smp``
(segmentation_models_pytorch's DiceLoss, where installed), ``torch-reference`` (the soft Dice formula
in plain torch with a dense one-hot), and ``cross_entropy`` (``F.cross_entropy``; binary cross-entropy
for W3), the baseline of every ratio.

Method: each configuration runs in two interpreters of its own. The first times it: one forward +
backward for the one-time costs (thread pools, lazy imports), ``--warmup`` untimed and ``--repeats``
timed steps, more while the timed steps add up to less than ``--min-time`` seconds (so a 3 ms step
gets a median of about 150 steps, not 5: its ratios otherwise moved by ±0.2 between runs), and the
median wall time. The second takes the memory: before anything else glibc is told to map every block
of 64 KiB or more on its own and to trim its heap, so the resident set size (RSS) follows the live
blocks, not what the allocator keeps for reuse; after one step for the one-time costs it frees the
gradient, hands free memory back (``malloc_trim``), records the RSS, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), runs one forward + backward and reads the peak (``VmHWM``). "Extra
memory" is that peak minus the RSS before the step minus the logits' gradient, i.e. what the loss
needs beyond the logits and their gradient. (On CUDA the allocator's peak counter is exact in the
timing process.)

``--compile`` wraps every implementation in ``torch.compile`` (inductor, the default backend; graph breaks
allowed, as a user would compile a peer) and times the compiled steps: the first step, untimed, compiles.

The table's ratios are ``median time / median time of cross_entropy`` on the same workload and
``extra peak memory / logits bytes``. ``main`` is the command line (``benchmarks/run.py``, ``softseg bench``);
:func:`run_benchmark` returns the rows as dicts. Peers that are not installed are skipped with the line
that installs them; nothing is installed unless asked (``--install-peers``, MONAI only).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softseg._peers import import_without_package_init

MONAI_REQUIREMENT = "monai>=1.6,<1.7"
# Each peer: the module its rows import, and how a user gets it. Only MONAI is ever installed for the user
# (--install-peers): smp brings torchvision, whose build must match the installed torch.
PEERS = {
    "monai": ("monai", f"pip install '{MONAI_REQUIREMENT}' (or rerun with --install-peers)"),
    "smp": ("segmentation_models_pytorch",
            "pip install segmentation-models-pytorch (with a torchvision that matches your torch)"),
}


@dataclass(frozen=True)
class Workload:
    r"""One benchmark case: logits shape, target kind and loss family.

    Convention:
        ``shape`` is the logits' (B, C, \*spatial), float32; ``target`` ``"index"`` (class indices
        (B, \*spatial), int64) or ``"dense"`` (class probabilities of the logits' shape); ``activation``
        ``"softmax"`` or ``"sigmoid"``; ``compound``: Dice + cross-entropy instead of Dice.
        :meth:`scaled` multiplies every spatial side by ``scale`` (at least 4 pixels).

    Example:
        >>> WORKLOADS["W1"].scaled(0.1).shape
        (2, 14, 10, 10, 10)
    """

    name: str
    shape: tuple[int, ...]
    target: str  # "index" or "dense"
    activation: str  # "softmax" or "sigmoid"
    compound: bool  # Dice + cross-entropy
    description: str

    def scaled(self, scale: float) -> Workload:
        """The same case with every spatial side multiplied by ``scale`` (at least 4 pixels)."""
        if scale == 1:
            return self
        spatial = tuple(max(4, round(side * scale)) for side in self.shape[2:])
        return Workload(self.name, self.shape[:2] + spatial, self.target, self.activation, self.compound, self.description)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("W1", (2, 14, 96, 96, 96), "index", "softmax", False, "3D multi-class, index target"),
        Workload("W2", (16, 21, 256, 256), "index", "softmax", False, "2D multi-class, index target"),
        Workload("W3", (8, 1, 512, 512), "index", "sigmoid", False, "binary, sigmoid"),
        Workload("W4-3d", (2, 14, 96, 96, 96), "dense", "softmax", False, "W1 with dense soft targets"),
        Workload("W4-2d", (16, 21, 256, 256), "dense", "softmax", False, "W2 with dense soft targets"),
        Workload("W5-3d", (2, 14, 96, 96, 96), "index", "softmax", True, "Dice + CE on W1"),
        Workload("W5-2d", (16, 21, 256, 256), "index", "softmax", True, "Dice + CE on W2"),
    )
}
IMPLEMENTATIONS = ("softseg", "softseg-blocks", "softseg-unfused", "monai", "smp", "torch-reference", "cross_entropy")
DEVICES = ("cpu", "cuda")
QUICK_SCALE = 0.1
DEFAULT_MIN_TIME = 0.5  # seconds of timed steps per configuration, at least (--min-time)
MAX_TIMED_STEPS = 1000


# ------------------------------------------------------------------------------------------ losses


def _inputs(workload: Workload, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)  # drawn on the CPU: the same numbers on every device
    logits = torch.randn(workload.shape, generator=gen).to(device).requires_grad_()
    batch, channels, *spatial = workload.shape
    if workload.target == "index":
        target = torch.randint(0, max(channels, 2), (batch, *spatial), generator=gen).to(device)
    else:
        target = torch.rand(workload.shape, generator=gen).to(device)
        target /= target.sum(1, keepdim=True)  # in place: no second tensor of the logits' size
    return logits, target


def _one_hot(target: torch.Tensor, channels: int) -> torch.Tensor:
    if channels == 1:
        return target.unsqueeze(1).float()
    return F.one_hot(target, channels).movedim(-1, 1).float()


def _blocks_only(loss: Callable) -> Callable:
    """``loss`` with the Triton and native kernels turned off for its forward (backward follows its choice)."""
    from softseg.kernels.native import ENVIRONMENT_SWITCH as NATIVE_SWITCH
    from softseg.kernels.triton_fused import ENVIRONMENT_SWITCH as TRITON_SWITCH

    def blocks(z, y):
        saved = {name: os.environ.get(name) for name in (TRITON_SWITCH, NATIVE_SWITCH)}
        os.environ.update({name: "0" for name in saved})
        try:
            return loss(z, y)
        finally:
            for name, value in saved.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value

    return blocks


def _loss_function(
    workload: Workload, implementation: str, device: str = "cpu"
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss of ``implementation`` on ``workload``; ImportError when the peer is missing."""
    channels = workload.shape[1]
    act = workload.activation
    if implementation == "softseg-blocks":
        return _blocks_only(_loss_function(workload, "softseg"))
    if implementation == "softseg":
        from softseg.losses.compound import dice_ce_loss
        from softseg.losses.region import dice_loss

        if workload.compound:
            return lambda z, y: dice_ce_loss(z, y, activation=act)
        return lambda z, y: dice_loss(z, y, activation=act)
    if implementation == "softseg-unfused":
        from softseg.activation import activate
        from softseg.losses.region import loss_from_statistics
        from softseg.statistics import region_statistics

        def unfused(z, y):
            stats = region_statistics(activate(z, act), y)
            dice = loss_from_statistics(
                stats, alpha=0.5, beta=0.5, smooth=0.0, gamma=1.0, log_loss=False, weight=None,
                include_background=True, aggregation="global", active_classes="all", presence_threshold=0.01,
                reduction="mean",
            )
            return dice + F.cross_entropy(z, y) if workload.compound else dice

        return unfused
    if implementation == "cross_entropy":
        if act == "sigmoid":
            return lambda z, y: F.binary_cross_entropy_with_logits(z, (y.unsqueeze(1) if y.ndim < z.ndim else y).float())
        return lambda z, y: F.cross_entropy(z, y)
    if implementation == "torch-reference":
        # The soft Dice formula written out in plain torch: dense one-hot, sum min / sums, global mean.
        def reference(z, y):
            probs = z.sigmoid() if act == "sigmoid" else z.softmax(1)
            dense = _one_hot(y, channels) if y.ndim < z.ndim else y
            dims = (0, *range(2, z.ndim))
            tp = torch.minimum(probs, dense).sum(dims)
            dice = (1 - 2 * tp / (probs.sum(dims) + dense.sum(dims)).clamp_min(1e-12)).mean()
            return dice + F.cross_entropy(z, y) if workload.compound else dice

        return reference
    if implementation == "monai":
        monai_losses = importlib.import_module("monai.losses")
        if workload.compound:  # DiceCELoss cannot pass soft_label (DESIGN.md section 6)
            loss = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, batch=True)
        elif act == "sigmoid":
            loss = monai_losses.DiceLoss(sigmoid=True, soft_label=True, batch=True)
        elif workload.target == "index":
            loss = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, soft_label=True, batch=True)
        else:
            loss = monai_losses.DiceLoss(softmax=True, soft_label=True, batch=True)
        # MONAI wants index targets as (B, 1, *spatial) and, for sigmoid, float labels.
        if workload.target == "index" and act == "sigmoid":
            return lambda z, y: loss(z, y.unsqueeze(1).float())
        if workload.target == "index":
            return lambda z, y: loss(z, y.unsqueeze(1))
        return loss
    if implementation == "smp":
        # smp's top level imports torchvision (its models), which need not load beside this torch.
        smp_losses = import_without_package_init("segmentation_models_pytorch", "losses")
        if workload.target == "dense" or workload.compound:
            raise NotImplementedError("smp's multiclass DiceLoss takes index targets only and has no Dice + CE")
        mode = "binary" if act == "sigmoid" else "multiclass"
        loss = smp_losses.DiceLoss(mode, from_logits=True)
        return lambda z, y: loss(z, y.unsqueeze(1).float() if mode == "binary" else y)
    raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}; got {implementation!r}")


# ------------------------------------------------------------------------------------------ measuring


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM, the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _release_free_memory() -> None:
    """Hand memory that the allocator keeps after frees back to the system, so the next peak counts it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the figure may then be lower than the true need
        pass


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def _rss_follows_live_memory() -> None:
    """From here on glibc maps every block of 64 KiB or more on its own and trims its heap above 128 KiB.

    By default it keeps freed blocks for reuse, by thresholds that adapt to the sizes it has seen, so
    the peak RSS of one step counted them or not by chance (W3's extra memory read 0.1x to 1.4x the
    logits in repeated runs of the same code). With these settings the RSS follows the live blocks and
    its peak is the step's. They change what allocation costs, so the timed steps run in another process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # not glibc: the figure may count blocks kept for reuse
        pass


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("VmHWM not found in /proc/self/status")


def _extra_cuda_bytes(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> int:
    """Peak of the CUDA allocator during one step, beyond what was allocated before and the gradient."""
    logits.grad = None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    loss_fn(logits, target).backward()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before - logits.numel() * logits.element_size()


def _extra_cpu_bytes(loss_fn: Callable, logits: torch.Tensor, target: torch.Tensor) -> int:
    """Peak RSS during one step, beyond the RSS before it and the gradient (Linux; a fresh process)."""
    logits.grad = None
    _release_free_memory()
    before = _rss_bytes()
    _reset_peak_rss()
    loss_fn(logits, target).backward()
    return _peak_rss_bytes() - before - logits.numel() * logits.element_size()


def _measure(
    workload: Workload,
    implementation: str,
    *,
    repeats: int,
    warmup: int,
    threads: int | None,
    device: str = "cpu",
    min_time: float = 0.0,
    compile: bool = False,
) -> dict:
    """Run one configuration in this process: the median time of the timed steps (and CUDA's extra memory).

    At least ``repeats`` timed steps, more until they add up to ``min_time`` seconds (at most
    ``MAX_TIMED_STEPS``). On CUDA the allocator's own peak counter gives the extra memory of one more
    step; on CPU ``extra_bytes`` is None: :func:`_measure_memory` takes it, in a process of its own.
    ``compile``: the loss under ``torch.compile``; its first (untimed) step compiles.
    """
    row, loss_fn = _configuration(workload, implementation, threads, device, compile)
    if loss_fn is None:
        return row
    logits, target = _inputs(workload, device=device)
    logits_bytes = logits.numel() * logits.element_size()
    loss_fn(logits, target).backward()  # one-time costs (thread pools, lazy imports) stay out of the figures
    cuda = device == "cuda"
    for _ in range(warmup):
        logits.grad = None
        loss_fn(logits, target).backward()
    times = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < MAX_TIMED_STEPS):
        logits.grad = None
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss_fn(logits, target).backward()
        if cuda:
            torch.cuda.synchronize()  # the kernels run asynchronously: wait for them before reading the clock
        times.append(time.perf_counter() - start)
    extra = _extra_cuda_bytes(loss_fn, logits, target) if cuda else None
    return dict(
        row,
        status="ok",
        median_s=statistics.median(times),
        steps=len(times),
        extra_bytes=extra,
        logits_bytes=logits_bytes,
        loss=float(loss_fn(logits, target).detach()),
    )


def _configuration(workload: Workload, implementation: str, threads: int | None, device: str, compile: bool = False):
    """The row's keys and the loss function, or a finished row ("not installed", "not supported") and None.

    ``compile`` wraps the loss in ``torch.compile`` (inductor; graph breaks allowed, as for any peer).
    """
    if threads:
        torch.set_num_threads(threads)
    row = {"workload": workload.name, "implementation": implementation, "shape": list(workload.shape)}
    try:
        loss_fn = _loss_function(workload, implementation, device)
        if compile:
            torch._dynamo.reset()  # each configuration compiles afresh (in one process, shared code would recompile)
            loss_fn = torch.compile(loss_fn)
        return row, loss_fn
    except (ImportError, NotImplementedError) as error:
        status = "not installed" if isinstance(error, ImportError) else "not supported"
        note = str(error).splitlines()[0][:120]
        if isinstance(error, ImportError) and implementation in PEERS:  # installed, but it does not import
            note = f"{PEERS[implementation][0]} does not import ({note}): {PEERS[implementation][1]}"
        return dict(row, status=status, note=note), None


def _measure_memory(workload: Workload, implementation: str, threads: int | None, compile: bool = False) -> dict:
    """CPU extra peak memory of one step, in a fresh process whose allocator maps big blocks on their own.

    :func:`_rss_follows_live_memory` comes first, before any input exists, so the RSS follows the live
    blocks all along (set later, blocks kept from earlier steps were reused uncounted); then one step for
    the one-time costs and the measured one (:func:`_extra_cpu_bytes`). ``extra_bytes`` is None off Linux.
    """
    if sys.platform.startswith("linux"):
        _rss_follows_live_memory()
    row, loss_fn = _configuration(workload, implementation, threads, "cpu", compile)
    if loss_fn is None:
        return row
    logits, target = _inputs(workload)
    loss_fn(logits, target).backward()
    linux = sys.platform.startswith("linux") and _reset_peak_rss()
    extra = _extra_cpu_bytes(loss_fn, logits, target) if linux else None
    return dict(row, status="ok", extra_bytes=extra, logits_bytes=logits.numel() * logits.element_size())


def _measure_in_fresh_process(spec: dict, timeout: float) -> dict:
    command = [sys.executable, "-m", "softseg.benchmark", "--worker", json.dumps(spec)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"workload": spec["workload"], "implementation": spec["implementation"], "status": "timed out",
                "note": f"more than {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        message = (done.stderr.strip().splitlines() or ["no output"])[-1][:160]
        return {"workload": spec["workload"], "implementation": spec["implementation"], "status": "failed",
                "note": message}
    return json.loads(lines[-1])


def missing_peers(implementations: Sequence[str]) -> dict[str, str]:
    """The peers among ``implementations`` that are not installed, each with how to install it.

    Convention:
        - ``implementations``: names from ``IMPLEMENTATIONS``; only ``"monai"`` and ``"smp"`` are peers.
        - Returns ``{implementation: install hint}``; looks the modules up without importing them.

    Example:
        >>> missing_peers(["softseg", "cross_entropy"])
        {}
    """
    return {
        name: hint
        for name, (module, hint) in PEERS.items()
        if name in implementations and importlib.util.find_spec(module) is None
    }


def _install_monai() -> str | None:
    """pip-install MONAI into this interpreter's environment (asked for by ``--install-peers``); None or why not."""
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", MONAI_REQUIREMENT],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"installing {MONAI_REQUIREMENT} failed: {(done.stderr.strip().splitlines() or [''])[-1][:120]}"
    importlib.invalidate_caches()
    return None


def run_benchmark(
    *,
    workloads: Sequence[str] = tuple(WORKLOADS),
    implementations: Sequence[str] = IMPLEMENTATIONS,
    scale: float = 1.0,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    fresh_process: bool = True,
    install_peers: bool = False,
    timeout: float = 900.0,
    progress: Callable[[dict], None] | None = None,
    device: str = "cpu",
    min_time: float = 0.0,
    compile: bool = False,
) -> list[dict]:
    r"""Measure every (workload, implementation): median forward + backward time and extra peak memory.

    extra = peak RSS during one step - RSS before it - bytes of the logits' gradient (Linux; module
    docstring; on CUDA the allocator's peak instead of the RSS); the table's ratios divide by the
    cross_entropy row's time and by the logits' bytes.

    Convention:
        - ``workloads``: names in ``WORKLOADS``; ``implementations``: from ``IMPLEMENTATIONS``.
        - ``scale`` multiplies every spatial side (1 = the sizes above); ``repeats`` timed steps after
          ``warmup`` untimed ones, more until they add up to ``min_time`` seconds (at most
          ``MAX_TIMED_STEPS``); torch's thread count unless ``threads`` is given.
        - ``fresh_process=True``: one interpreter per configuration (the CPU memory figure needs it; with
          ``False`` it is None on CPU). A peer that is not installed (:func:`missing_peers`) gets "not
          installed" rows with the line that installs it; ``install_peers=True`` pip-installs a missing
          MONAI first (never smp, never without being asked).
        - ``device``: ``"cpu"`` or ``"cuda"`` (inputs drawn on the CPU, then moved; each step is
          synchronized before the clock is read). ``compile``: every implementation under ``torch.compile``.
        - Returns one dict per row: ``workload``, ``implementation``, ``status`` (``"ok"``, ``"not
          installed"``, ``"not supported"``, ``"skipped"``, ``"failed"``, ``"timed out"``) and, when ok,
          ``median_s``, ``steps`` (timed), ``extra_bytes``, ``logits_bytes`` and the ``loss`` value.

    Example:
        >>> rows = run_benchmark(workloads=["W3"], implementations=["softseg"], scale=0.02, repeats=1,
        ...                      warmup=0, fresh_process=False, install_peers=False)
        >>> rows[0]["workload"], rows[0]["implementation"], rows[0]["status"], rows[0]["extra_bytes"]
        ('W3', 'softseg', 'ok', None)
    """
    missing = missing_peers(implementations)
    if install_peers and "monai" in missing:
        failure = _install_monai()
        missing = missing_peers(implementations) if failure is None else dict(missing, monai=failure)
    rows = []
    for name in workloads:
        workload = WORKLOADS[name].scaled(scale)
        for implementation in implementations:
            if implementation in missing:
                row = {"workload": name, "implementation": implementation, "status": "not installed",
                       "note": missing[implementation]}
            elif fresh_process:
                spec = {"workload": name, "implementation": implementation, "scale": scale, "repeats": repeats,
                        "warmup": warmup, "threads": threads, "device": device, "min_time": min_time,
                        "compile": compile}
                row = _measure_in_fresh_process(dict(spec, part="time"), timeout)
                if row["status"] == "ok" and device == "cpu":  # the memory figure in a process of its own
                    memory = _measure_in_fresh_process(dict(spec, part="memory"), timeout)
                    row["extra_bytes"] = memory.get("extra_bytes") if memory["status"] == "ok" else None
            else:
                row = _measure(workload, implementation, repeats=repeats, warmup=warmup, threads=threads,
                               device=device, min_time=min_time, compile=compile)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


# ------------------------------------------------------------------------------------------ report


def _machine_description(device: str = "cpu") -> str:
    """CPU model, cores, torch version and load (and the GPU and Triton for CUDA), for the record."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    text = (f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, load average {load}")
    if device == "cuda":
        try:
            triton_version = importlib.import_module("triton").__version__
        except ImportError:
            triton_version = "not installed"
        text += f"; GPU {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, Triton {triton_version}"
    else:
        from softseg.kernels.native import native_status

        text += f"; {native_status()}"
    return text


def _baseline(rows: list[dict], workload: str) -> float | None:
    for row in rows:
        if row["workload"] == workload and row["implementation"] == "cross_entropy" and row["status"] == "ok":
            return row["median_s"]
    return None


def _format_table(rows: list[dict]) -> str:
    """A Markdown table: median time, its ratio to cross-entropy, extra peak memory and its ratio to the logits."""
    header = "| workload | implementation | median ms | x cross-entropy | extra peak MiB | x logits size | note |"
    lines = [header, "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        name, impl = row["workload"], row["implementation"]
        if row["status"] != "ok":
            lines.append(f"| {name} | {impl} | - | - | - | - | {row['status']}: {row.get('note', '')} |")
            continue
        base = _baseline(rows, name)
        ratio = f"{row['median_s'] / base:.2f}" if base else "-"
        extra = row["extra_bytes"]
        extra_mib = "-" if extra is None else f"{extra / 2**20:.0f}"
        extra_ratio = "-" if extra is None else f"{extra / row['logits_bytes']:.2f}"
        lines.append(f"| {name} | {impl} | {row['median_s'] * 1e3:.1f} | {ratio} | {extra_mib} | {extra_ratio} | |")
    return "\n".join(lines)


def _summary(rows: list[dict], compile: bool = False) -> str:
    """softseg against cross-entropy (and MONAI) per workload, each ratio beside the figure softseg aims at.

    Eagerly the aims of issue #4 (and #13's: no slower than the torch block path); with ``compile``, issue
    #13's against compiled cross-entropy.
    """
    by_key = {(r["workload"], r["implementation"]): r for r in rows if r["status"] == "ok"}
    lines = []

    def ratio(workload: str, numerator: str, denominator: str) -> float | None:
        top, bottom = by_key.get((workload, numerator)), by_key.get((workload, denominator))
        return top["median_s"] / bottom["median_s"] if top and bottom else None

    def add(what: str, value: float | None, unit: str, aim: float, higher_is_better: bool = False) -> None:
        if value is None:
            lines.append(f"- {what}: not measured")
            return
        reached = value >= aim if higher_is_better else value <= aim
        bound = ">=" if higher_is_better else "<="
        figure = f"{value:.2f}x {unit}".rstrip()
        lines.append(f"- {what}: {figure} (aim {bound} {aim:g}x: {'reached' if reached else 'missed'})")

    if compile:
        return _compiled_summary(by_key, ratio, add, lines)
    for workload in WORKLOADS:
        if (workload, "softseg") in by_key:
            loss = "Dice + CE" if WORKLOADS[workload].compound else "Dice"
            aim = 1.2 if WORKLOADS[workload].compound else 0.8
            add(f"{workload} softseg {loss} time", ratio(workload, "softseg", "cross_entropy"), "cross-entropy's time", aim)
    for (workload, impl), row in by_key.items():
        if impl == "softseg" and row.get("extra_bytes") is not None:
            add(f"{workload} softseg extra peak memory", row["extra_bytes"] / row["logits_bytes"], "the logits' size", 1.0)
    if ("W1", "softseg") in by_key and ("W1", "monai") in by_key:
        add("W1 speed-up over MONAI DiceLoss(soft_label=True)", ratio("W1", "monai", "softseg"), "", 3.0, True)
    for workload in WORKLOADS:  # issue #13: eagerly no slower than the torch block path (issue #4's softseg)
        if (workload, "softseg") in by_key and (workload, "softseg-blocks") in by_key:
            add(f"{workload} softseg time", ratio(workload, "softseg", "softseg-blocks"), "the torch block path's time",
                1.0)
    return "\n".join(lines)


def _compiled_summary(by_key: dict, ratio: Callable, add: Callable, lines: list[str]) -> str:
    """Issue #13's aims under torch.compile: time against compiled cross-entropy, memory against the logits."""
    for workload in WORKLOADS:
        if (workload, "softseg") not in by_key:
            continue
        aim = 1.2 if WORKLOADS[workload].compound else 1.0
        loss = "Dice + CE" if WORKLOADS[workload].compound else "Dice"
        add(f"{workload} compiled softseg {loss} time", ratio(workload, "softseg", "cross_entropy"),
            "compiled cross-entropy's time", aim)
        ours, baseline = by_key[(workload, "softseg")], by_key.get((workload, "cross_entropy"))
        if ours.get("extra_bytes") is not None:
            ce_share = 0.0
            if baseline and baseline.get("extra_bytes") is not None:
                ce_share = baseline["extra_bytes"] / baseline["logits_bytes"]
            add(f"{workload} compiled softseg extra peak memory (aim: the larger of 0.25x and compiled "
                f"cross-entropy's {ce_share:.2f}x)", ours["extra_bytes"] / ours["logits_bytes"], "the logits' size",
                max(0.25, ce_share))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, *, prog: str = "softseg-benchmark") -> int:
    """Command line: print the machine, a Markdown table of every configuration and a summary against the aims.

    The ratios are time / cross-entropy's time and extra peak memory / logits size (see :func:`run_benchmark`).

    Convention:
        ``argv`` as ``sys.argv[1:]`` (None: the real command line): ``--workloads``, ``--implementations``,
        ``--quick`` (spatial sides x 0.1, 2 timed steps), ``--scale``, ``--repeats``, ``--min-time``, ``--warmup``,
        ``--threads``, ``--device``, ``--compile``, ``--install-peers``, ``--process fresh|same``
        (``--in-process``: same), ``--json PATH``.
        ``prog``: the name in messages (``softseg bench`` from the command). Missing peers are named with
        the line that installs them, before any timing. Returns the exit status 0; bad arguments (an
        unwritable ``--json`` too) exit with argparse's message (status 2). The JSON file is written
        whole at the end or not at all.

    Example:
        >>> main(["--quick", "--workloads", "W3", "--implementations", "softseg",
        ...       "--repeats", "1"])                                         # doctest: +ELLIPSIS
        machine: ...
        | W3 | softseg | ... | - | - | - | |
        ...
        0
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Forward + backward time and extra peak memory of softseg's losses, MONAI, smp, a plain "
        "torch reference and F.cross_entropy, in fresh processes per configuration (one times, one measures memory).",
    )
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS),
                        metavar="NAME", help=f"workloads to run (default: all of {', '.join(WORKLOADS)})")
    parser.add_argument("--implementations", nargs="+", choices=IMPLEMENTATIONS, default=None, metavar="NAME",
                        help=f"implementations to run (default: all of {', '.join(IMPLEMENTATIONS)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny inputs (spatial sides x {QUICK_SCALE}), 2 timed steps, in this process: "
                        "checks that every configuration runs, in seconds (the figures mean nothing)")
    parser.add_argument("--scale", type=float, default=None, help="multiply every spatial side by this (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per configuration (default 5)")
    parser.add_argument("--min-time", type=float, default=None, metavar="SECONDS",
                        help=f"more timed steps until they add up to this (default {DEFAULT_MIN_TIME}, 0 with "
                        f"--quick; at most {MAX_TIMED_STEPS} steps)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where the losses run (default cpu); cuda takes 20 timed steps by default")
    parser.add_argument("--compile", action="store_true",
                        help="every implementation under torch.compile (inductor); the first step compiles, untimed")
    parser.add_argument("--install-peers", action="store_true",
                        help=f"pip-install a missing MONAI ({MONAI_REQUIREMENT}) into this environment first; without "
                        "it, missing peers are skipped and named with the line that installs them")
    parser.add_argument("--no-install", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for scripts
    parser.add_argument("--process", choices=("fresh", "same"), default=None,
                        help="'fresh': one interpreter per configuration, with the memory figure (default); "
                        "'same': all in this process, no memory figure (default with --quick)")
    parser.add_argument("--in-process", dest="process", action="store_const", const="same",
                        help="the same as --process same")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one configuration, JSON in, JSON out
    args = parser.parse_args(argv)

    if args.worker:
        spec = json.loads(args.worker)
        workload = WORKLOADS[spec["workload"]].scaled(spec["scale"])
        if spec.get("part") == "memory":
            row = _measure_memory(workload, spec["implementation"], spec["threads"], spec.get("compile", False))
        else:
            row = _measure(workload, spec["implementation"], repeats=spec["repeats"], warmup=spec["warmup"],
                           threads=spec["threads"], device=spec.get("device", "cpu"),
                           min_time=spec.get("min_time", 0.0), compile=spec.get("compile", False))
        print(json.dumps(row))
        return 0

    scale = args.scale if args.scale is not None else (QUICK_SCALE if args.quick else 1.0)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 20 if cuda else 5)
    min_time = args.min_time if args.min_time is not None else (0.0 if args.quick else DEFAULT_MIN_TIME)
    implementations = args.implementations or list(IMPLEMENTATIONS)
    fresh = args.process == "fresh" if args.process else not args.quick
    if args.json:
        _check_writable(parser, "--json", args.json)  # before minutes of timing, not after
    for name, value, minimum in (
        ("--scale", scale, 0), ("--repeats", repeats, 1), ("--warmup", args.warmup, 0), ("--min-time", min_time, 0)
    ):
        if not (value > minimum if name == "--scale" else value >= minimum):
            parser.error(f"{name} must be {'>' if name == '--scale' else '>='} {minimum}; got {value}")
    print(f"machine: {_machine_description(args.device)}", flush=True)
    for name, hint in missing_peers(implementations).items():
        if not (args.install_peers and name == "monai"):
            print(f"{name} is not installed, its rows are skipped: {hint}", flush=True)
    print(f"scale {scale}, {repeats} timed steps (more up to {min_time:g} s) after {args.warmup} warm-up, "
          f"{'fresh processes per configuration' if fresh else 'all in this process'}"
          f"{'' if fresh or cuda else ', no memory figure'}, on {args.device}"
          f"{', compiled (torch.compile, inductor)' if args.compile else ', eager'}",
          flush=True)

    def progress(row: dict) -> None:
        timing = f"{row['median_s'] * 1e3:.1f} ms" if row["status"] == "ok" else row["status"]
        print(f"  {row['workload']:6s} {row['implementation']:16s} {timing}", file=sys.stderr, flush=True)

    rows = run_benchmark(
        workloads=args.workloads,
        implementations=implementations,
        scale=scale,
        repeats=repeats,
        warmup=args.warmup,
        threads=args.threads,
        fresh_process=fresh,
        install_peers=args.install_peers,
        progress=progress,
        device=args.device,
        min_time=min_time,
        compile=args.compile,
    )
    print()
    print(_format_table(rows))
    print()
    note = "" if scale == 1 else f"; at scale {scale} the ratios do not carry over to the full sizes the aims are for"
    against = "compiled cross-entropy" if args.compile else "cross-entropy"
    print(f"softseg against {against} (medians of this run{note}):")
    print(_summary(rows, compile=args.compile))
    if args.json:
        report = {"machine": _machine_description(args.device), "scale": scale, "compile": args.compile, "rows": rows}
        partial = f"{args.json}.partial"
        with open(partial, "w") as out:
            json.dump(report, out, indent=1)
        os.replace(partial, args.json)  # whole or not at all (Ctrl-C while writing leaves no half file)
    return 0


def _check_writable(parser: argparse.ArgumentParser, option: str, path: str) -> None:
    """Exit with argparse's message when ``path`` cannot be written (a missing folder, no permission, a folder)."""
    if os.path.isdir(path):
        parser.error(f"{option} {path}: is a folder; expected a file name")
    probe = f"{path}.partial"  # the name the report is written under before it is moved into place
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        parser.error(f"{option} {path}: cannot write there ({(error.strerror or str(error)).lower()})")

if __name__ == "__main__":
    sys.exit(main())
