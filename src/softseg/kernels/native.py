r"""The native CPU kernels (``native_kernels.cpp``): built on first use with the system's C++ compiler.

One pass over the logits forward (the softmax or sigmoid, every sum, each pixel's max and 1 / sum of
exponentials kept for backward) and one pass backward (the probabilities recomputed bit for bit, the
gradient written once), 16 pixels per vector register with the classes in registers: the torch block path
(:mod:`softseg.kernels.fused`) makes about 24 passes of block operations instead. Same formulas, same
values to float32 rounding (sums in double per chunk of pixels), same handling of excluded pixels.

The library is compiled once per source, compiler and CPU (``-O3 -march=native -fopenmp``, about half a minute)
into ``$SOFTSEG_CACHE_DIR`` (default ``~/.cache/softseg``) and loaded with :mod:`ctypes`. Built with OpenMP it runs
its pixel ranges on torch's own OpenMP threads (it links the ``libgomp.so.1`` that torch has loaded), the threads
that compiled graphs' kernels use too: a second set of threads would compete with them while they spin after each
parallel region (W3 under ``torch.compile``: 1.2x compiled BCE's time on worker threads, 0.9x on torch's). Without
OpenMP the ranges run on the block path's worker threads (ctypes releases the GIL), and in a forked child
(OpenMP's threads do not survive fork) in the calling thread. Labels are read as uint8 or
int64 as they come (other integer dtypes through an int64 copy). Nothing of it is needed: without a C++ compiler
(``$CXX``, ``c++``, ``g++`` or ``clang++``), when the build fails, with ``SOFTSEG_NATIVE=0`` in the environment,
and for what it does not cover (:func:`native_applies`) the torch block path runs, with the same values.

A gradient of at least :data:`HUGE_PAGE_MIN_BYTES` is advised for transparent huge pages (Linux ``madvise``,
``MADV_HUGEPAGE``; kernels whose THP setting is ``madvise`` or ``always`` honour it): such a block is a fresh
mapping at every step (glibc maps blocks above 32 MiB apart and unmaps them when freed), and its 4 KiB page
faults took a third of the dense-target backward (W4, (16, 21, 256, 256): 63 -> 47 ms a compiled step). On
such pages the backward writes the gradient's tiles with streaming stores, which do not read each line in first.
``SOFTSEG_HUGE_PAGES=0`` in the environment turns both off; torch's own ``THP_MEM_ALLOC_ENABLE=1`` advises every
large tensor.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("native_kernels.cpp")
ENVIRONMENT_SWITCH = "SOFTSEG_NATIVE"  # "0" turns the native kernels off
CACHE_VARIABLE = "SOFTSEG_CACHE_DIR"
MAX_CHANNELS = 128  # classes the kernels hold per vector step (MAXC in the source); more take the torch blocks
CHUNK_PIXELS = 1024  # the unit of the threads' split of the pixels
HUGE_PAGES_SWITCH = "SOFTSEG_HUGE_PAGES"  # "0" leaves the gradient on the allocator's pages
# Smaller blocks come from glibc's heap, as a rule reused and already in memory: advising them cost more than it
# saved (W3's 8 MB gradient).
HUGE_PAGE_MIN_BYTES = 32 << 20
# The first the compiler takes; OpenMP where it can (see softseg_openmp in the source), else without.
_FLAG_SETS = tuple((*arch, *openmp) for openmp in (("-fopenmp",), ()) for arch in (("-march=native",), ("-mcpu=native",), ()))

_POINTER = ctypes.c_void_p
_INT64 = ctypes.c_int64
_INT = ctypes.c_int


def _cpu_identity() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = [line for line in cpuinfo if line.startswith(("model name", "flags", "Features", "CPU part"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler() -> str | None:
    return os.environ.get("CXX") or next(
        (path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None
    )


def _cache_directory() -> Path:
    configured = os.environ.get(CACHE_VARIABLE)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "softseg"


def _build(compiler: str, target: Path) -> str | None:
    """Compile the source into ``target`` (atomically); None, or why it failed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for flags in _FLAG_SETS:
        handle, temporary = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(handle)
        command = [compiler, "-std=c++17", "-O3", *flags, "-shared", "-fPIC", str(SOURCE), "-o", temporary]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            done, message = None, str(error)
        if done is not None and done.returncode == 0:
            os.replace(temporary, target)
            return None
        os.unlink(temporary)
        message = message if done is None else (done.stderr.strip().splitlines() or ["no message"])[-1]
        errors.append(f"{' '.join(flags) or 'no flags'}: {message[:200]}")
    return "; ".join(errors)


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    """(the loaded library or None, why not)."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler found ($CXX, c++, g++ or clang++)"
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + compiler.encode() + _cpu_identity().encode()).hexdigest()[:16]
    target = _cache_directory() / f"native_kernels_{key}.so"
    if not target.exists():
        try:
            error = _build(compiler, target)
        except OSError as os_error:
            error = str(os_error)
        if error is not None:
            return None, f"building {SOURCE.name} failed: {error}"
    try:
        library = ctypes.CDLL(str(target))
    except OSError as error:
        return None, f"loading {target} failed: {error}"
    library.softseg_max_channels.restype = _INT
    if library.softseg_max_channels() != MAX_CHANNELS:
        return None, f"{target} was built for {library.softseg_max_channels()} classes, not {MAX_CHANNELS}"
    library.softseg_openmp.restype = _INT
    library.softseg_advise_huge_pages.restype = _INT
    library.softseg_advise_huge_pages.argtypes = [_POINTER, _INT64]
    # logits, labels and their width, dense, weight; batch, channels, pixels, parts; bounds; threads
    inputs = [_POINTER, _POINTER, _INT, _POINTER, _POINTER] + [_INT64] * 4 + [_POINTER, _INT]
    library.softseg_forward.argtypes = inputs + [_INT] * 5 + [_POINTER] * 5
    library.softseg_finish.argtypes = [_POINTER] * 3 + [_INT64] * 2 + [_INT] + [_POINTER] * 6
    library.softseg_backward.argtypes = inputs + [_INT] * 4 + [_POINTER] * 7 + [_INT]
    return library, ""


def native_available() -> bool:
    """Whether the native kernels run here: ``SOFTSEG_NATIVE`` is not ``"0"`` and the library builds and loads.

    Convention:
        The first call builds the library (about half a minute, once per source, compiler and CPU, cached on
        disk); :func:`native_status` says why it is not available.

    Example:
        >>> isinstance(native_available(), bool)
        True
    """
    return os.environ.get(ENVIRONMENT_SWITCH, "1") != "0" and _library()[0] is not None


# Under torch.compile the answer is taken once, while tracing, and never goes into the graph: what
# torch.compiler.assume_constant_result does (it sets this attribute), without importing torch._dynamo (seconds)
# when softseg is imported.
native_available._dynamo_marked_constant = True


def native_status() -> str:
    """A line saying whether the native kernels run here, and if not, why.

    Convention:
        Builds the library if that was not tried yet (see :func:`native_available`).

    Example:
        >>> native_status().startswith(("native CPU kernels", "no native CPU kernels"))
        True
    """
    if os.environ.get(ENVIRONMENT_SWITCH, "1") == "0":
        return f"no native CPU kernels: {ENVIRONMENT_SWITCH}=0"
    library, reason = _library()
    return "native CPU kernels: built and loaded" if library is not None else f"no native CPU kernels: {reason}"


def native_applies(
    logits: Tensor, labels: Tensor | None, weight: Tensor | None, *, activation: str, with_ce: bool
) -> bool:
    """Whether the native kernels take these (B, C, N) inputs of the fused path.

    Convention:
        CPU float32 logits, at most the library's class limit (128), softmax (with or without
        cross-entropy) or sigmoid without it, a pixel mask with index targets; and :func:`native_available`.
        Called before validation of values; shapes are the fused path's, already checked.

    Example:
        >>> native_applies(torch.zeros(2, 3, 8, dtype=torch.float64), None, None, activation="softmax", with_ce=False)
        False
    """
    return (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and not (activation == "sigmoid" and with_ce)
        and not (labels is not None and weight is not None and weight.shape[1] > 1)
        and logits.shape[1] <= MAX_CHANNELS
        and native_available()
    )


@functools.cache
def _transparent_huge_pages() -> bool:
    """Whether the kernel hands out huge pages where they are advised (THP ``always`` or ``madvise``, Linux)."""
    try:
        setting = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


LABEL_DTYPES = (torch.uint8, torch.int64)  # read as they are; other integer dtypes as int64


def _prepared(logits, labels, dense, weight):
    """The contiguous float32 logits and target, labels (uint8 or int64) and uint8 weight the kernels read."""
    dense = None if dense is None else dense.to(torch.float32).contiguous()
    if labels is not None:
        labels = (labels if labels.dtype in LABEL_DTYPES else labels.long()).contiguous()
    weight = None if weight is None else weight.contiguous().view(torch.uint8)
    return logits.contiguous(), labels, dense, weight


def _label_arguments(labels: Tensor | None) -> tuple[int | None, int]:
    """The labels' pointer and width in bytes (1: uint8, 8: int64), as the kernels take them."""
    return (None, 8) if labels is None else (labels.data_ptr(), labels.element_size())


def _part_bounds(pixels: int) -> list[int]:
    """The threads' pixel ranges' bounds: whole chunks of CHUNK_PIXELS, as evenly as they split over torch's threads."""
    chunks = -(-pixels // CHUNK_PIXELS) if pixels else 0
    count = max(1, min(torch.get_num_threads(), chunks))
    return [min(pixels, round(k * chunks / count) * CHUNK_PIXELS) for k in range(count + 1)]


# GNU OpenMP's threads do not survive fork(): a parallel region in a forked child of a process that ran one hangs
# (torch's own operators too, pytorch#17199; DataLoader workers escape by running one thread). In a forked child the
# ranges run in the calling thread.
_IN_FORKED_CHILD = False


def _mark_forked_child() -> None:
    global _IN_FORKED_CHILD
    _IN_FORKED_CHILD = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_mark_forked_child)


def _runs_on_openmp(library) -> bool:
    """Whether the library was built with OpenMP (it then runs its pixel ranges on torch's threads itself)."""
    return bool(library.softseg_openmp())


def _run_parts(library, kernel, bounds: list[int], part_arguments) -> None:
    """``kernel`` over the pixel ranges of ``bounds``, in parallel.

    Built with OpenMP: one call, on torch's own threads (``softseg_openmp`` in the source says why). Without: one call
    per range on the torch block path's worker threads (ctypes releases the GIL). ``part_arguments(k)``: the
    arguments after the thread count, for the ranges from range ``k`` on (the outputs' slices of part ``k``).
    """
    from softseg.kernels.fused import _run_blocks  # the block path's worker threads

    parts = len(bounds) - 1
    table = torch.tensor(bounds, dtype=torch.int64)
    if _runs_on_openmp(library) or _IN_FORKED_CHILD:
        kernel(parts, _pointer(table), 1 if _IN_FORKED_CHILD else parts, *part_arguments(0))
        return

    def run(indices):
        (index,) = indices
        kernel(1, _pointer(table) + 8 * index, 1, *part_arguments(index))

    _run_blocks(torch.device("cpu"), list(range(parts)), run)


def native_statistics(
    logits: Tensor, labels: Tensor | None, dense: Tensor | None, weight: Tensor | None, *, activation: str,
    norm: int, with_ce: bool, with_range: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""The forward half in the native kernels: (tp, fp, fn, target_max, ce, target_range, shift, inverse).

    .. math::

        tp = \sum_i m_i \min(x_i, y_i),\quad fp = \sum_i m_i x_i^p - tp,\quad fn = \sum_i m_i y_i^p - tp,
        \quad CE = -\sum_i m_i\, y_i \log x_i

    Convention:
        - Inputs as :func:`softseg.kernels.fused.block_statistics`, for which :func:`native_applies`; labels of
          any integer dtype (uint8 and int64 read as they are; an int64 label beyond int32's range saturates,
          so it lands in no class and the range shows it).
        - The sums are (B, C) float32 (summed in double); ``target_range`` (min, max) of the dense target or
          of the labels with ``with_range``, else empty; for softmax each pixel's
          max and 1 / sum of exponentials, (B, 1, N) float32 each, for :func:`native_gradient` (empty for sigmoid).

    Example:
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [-2.0, 1.0, 0.0]]])
        >>> if native_available():
        ...     tp = native_statistics(logits, torch.tensor([[0, 1, 1]]), None, None, activation="softmax", norm=1,
        ...                            with_ce=False, with_range=False)[0]
        ... else:
        ...     tp = torch.tensor([[0.9820, 1.3808]])
        >>> tp
        tensor([[0.9820, 1.3808]])
    """
    library = _library()[0]
    logits, labels, dense, weight = _prepared(logits, labels, dense, weight)
    batch, channels, pixels = logits.shape
    softmax = activation == "softmax"
    shift = logits.new_empty(batch, 1, pixels) if softmax else logits.new_zeros(0)
    inverse = logits.new_empty(batch, 1, pixels) if softmax else logits.new_zeros(0)
    flags = (int(softmax), int(norm == 2), int(with_ce), 0 if weight is None else 1 + (weight.shape[1] > 1), int(with_range))
    bounds = _part_bounds(pixels)
    parts, entries = len(bounds) - 1, batch * channels
    # One buffer per kind for every thread's part (a few host operations per call: at W3's size each costs
    # about as much as a percent of the step), summed in double by softseg_finish into the outputs.
    sums = torch.zeros(parts, 4, entries, dtype=torch.float64)
    maxima = torch.zeros(parts, entries)
    ranges = torch.tensor([[math.inf, -math.inf]]).expand(parts, 2).contiguous()
    inputs = (_pointer(logits), *_label_arguments(labels), _pointer(dense), _pointer(weight), batch, channels, pixels)
    _run_parts(
        library,
        lambda *arguments: library.softseg_forward(*inputs, *arguments),
        bounds,
        lambda k: (
            *flags, _pointer(sums) + 8 * 4 * entries * k, _pointer(maxima) + 4 * entries * k, _pointer(ranges) + 8 * k,
            _pointer(shift) if softmax else None, _pointer(inverse) if softmax else None,
        ),
    )
    tp, fp, fn, target_max, ce = (logits.new_empty(batch, channels) for _ in range(5))
    target_range = logits.new_empty(2 if with_range else 0)
    library.softseg_finish(
        _pointer(sums), _pointer(maxima), _pointer(ranges), parts, entries, int(labels is not None),
        *(_pointer(t) for t in (tp, fp, fn, target_max, ce)), _pointer(target_range) if with_range else None,
    )
    return tp, fp, fn, target_max, ce, target_range, shift, inverse


def native_gradient(
    logits: Tensor, labels: Tensor | None, dense: Tensor | None, weight: Tensor | None, shift: Tensor,
    inverse: Tensor, grad_tp: Tensor, grad_fp: Tensor, grad_fn: Tensor, grad_ce: Tensor, *, activation: str,
    norm: int, with_ce: bool,
) -> Tensor:
    r"""The backward half in the native kernels: dL/dlogits from the gradients of (tp, fp, fn, ce).

    .. math::

        \frac{\partial L}{\partial x_i} = m_i (A' + B h_i),\quad A = G_{fp},\ B = G_{tp} - G_{fp} - G_{fn}

    then the softmax or sigmoid backward and the cross-entropy's term (:mod:`softseg.kernels.fused`).

    Convention:
        Arguments as :func:`native_statistics`, with its ``shift`` and ``inverse``; ``grad_*`` (B, C) each.
        Returns a contiguous float32 tensor of the logits' shape; excluded pixels get exactly 0. From
        :data:`HUGE_PAGE_MIN_BYTES` on, its memory is advised for transparent huge pages (module docstring).

    Example:
        >>> native_gradient.__name__
        'native_gradient'
    """
    library = _library()[0]
    logits, labels, dense, weight = _prepared(logits, labels, dense, weight)
    batch, channels, pixels = logits.shape
    softmax = activation == "softmax"
    grads = [g.to(torch.float32).contiguous() for g in (grad_tp, grad_fp, grad_fn, grad_ce)]  # (no-ops as a rule)
    grad = torch.empty_like(logits)
    # Advised before the first write faults the pages in; on huge pages the tiles are streamed out (in the source).
    stream = 0
    if grad.nbytes >= HUGE_PAGE_MIN_BYTES and os.environ.get(HUGE_PAGES_SWITCH, "1") != "0":
        stream = int(library.softseg_advise_huge_pages(_pointer(grad), grad.nbytes) == 1 and _transparent_huge_pages())
    flags = (int(softmax), int(norm == 2), int(with_ce), 0 if weight is None else 1 + (weight.shape[1] > 1))
    inputs = (_pointer(logits), *_label_arguments(labels), _pointer(dense), _pointer(weight), batch, channels, pixels)
    _run_parts(
        library,
        lambda *arguments: library.softseg_backward(*inputs, *arguments),
        _part_bounds(pixels),
        lambda k: (
            *flags, *(_pointer(g) for g in grads), _pointer(shift) if softmax else None,
            _pointer(inverse) if softmax else None, _pointer(grad), stream,
        ),
    )
    return grad
