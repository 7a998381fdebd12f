"""The native CPU kernels (softseg/kernels/native_kernels.cpp) against the torch block path and float64: every
activation, target kind, weight kind, norm and the cross-entropy; several chunks and threads, ragged tails;
large logits, underflow to exact zeros, non-finite values; the fallback when no compiler builds them.
Skipped where no C++ compiler builds the library (the block path runs there; its tests cover it)."""

from __future__ import annotations

import itertools
import os

import pytest
import torch

import softseg.dispatch as dispatch
import softseg.kernels.native as native
from softseg import dice_ce_loss, dice_loss
from softseg.dispatch import fused_statistics
from softseg.kernels.fused import block_gradient, block_statistics

if not native.native_available():
    pytest.skip(native.native_status(), allow_module_level=True)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    # Chunks of 48 pixels: several per call (one per thread and more), a ragged last vector in each image.
    monkeypatch.setattr(native, "CHUNK_PIXELS", 48)


def _case(activation, kind, weight_kind, *, channels=5, pixels=203, seed=0):
    gen = torch.Generator().manual_seed(seed)
    c = 1 if kind == "binary" else channels
    logits = torch.randn(2, c, pixels, generator=gen) * 3
    labels = torch.randint(0, max(c, 2), (2, pixels), generator=gen) if kind != "dense" else None
    dense = torch.rand(2, c, pixels, generator=gen) if kind == "dense" else None
    weight = None if weight_kind == 0 else torch.rand(2, 1 if weight_kind == 1 else c, pixels, generator=gen) > 0.3
    if weight is not None and labels is not None:
        labels = labels.masked_fill(~weight[:, 0], 0)  # as the dispatcher passes them: ignored pixels on class 0
    return logits, labels, dense, weight


CASES = [
    (activation, kind, norm, with_ce, weight_kind)
    for activation, kind, norm, with_ce, weight_kind in itertools.product(
        ["softmax", "sigmoid"], ["index", "dense", "binary"], [1, 2], [False, True], [0, 1, 2]
    )
    if not (activation == "sigmoid" and with_ce)
    and not (kind != "dense" and weight_kind == 2)
    and not (kind == "binary" and activation == "softmax")
]


@pytest.mark.parametrize(("activation", "kind", "norm", "with_ce", "weight_kind"), CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_native_equals_blocks(activation, kind, norm, with_ce, weight_kind, threads):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        logits, labels, dense, weight = _case(activation, kind, weight_kind)
        with_range = kind in ("dense", "binary")
        options = dict(activation=activation, norm=norm, with_ce=with_ce)
        ours = native.native_statistics(logits, labels, dense, weight, with_range=with_range, **options)
        theirs = block_statistics(logits, labels, dense, weight, with_range=with_range, **options)
        for k, (a, b) in enumerate(zip(ours[:6], theirs[:6])):
            assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape, k
            torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-5, msg=f"output {k} differs")
        grads = [torch.randn(logits.shape[:2], generator=torch.Generator().manual_seed(k)) for k in range(4)]
        ours_grad = native.native_gradient(logits, labels, dense, weight, ours[6], ours[7], *grads, **options)
        theirs_grad = block_gradient(logits, labels, dense, weight, theirs[6], theirs[7], *grads, **options)
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-5, atol=2e-6)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("kind", ["index_ignore", "dense_mask"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_losses_take_the_native_kernels_and_equal_float64(monkeypatch, kind, activation):
    calls = []
    original = native.native_statistics
    monkeypatch.setattr(native, "native_statistics", lambda *a, **k: calls.append(1) or original(*a, **k))
    import softseg.kernels.ops as ops

    monkeypatch.setattr(ops, "native_statistics", native.native_statistics)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 4, 9, 31, generator=gen) * 2
    if kind == "index_ignore":
        target = torch.randint(0, 5, (3, 9, 31), generator=gen).masked_fill_(torch.rand(3, 9, 31, generator=gen) < 0.2, 255)
        target = target.clamp_max(3).where(target != 255, 255)
        options = {"ignore_index": 255}
    else:
        target = torch.rand(3, 4, 9, 31, generator=gen)
        options = {"mask": torch.rand(3, 9, 31, generator=gen) > 0.3}
    loss = dice_ce_loss if activation == "softmax" else dice_loss
    results = []
    for dtype in (torch.float32, torch.float64):
        z = logits.to(dtype).clone().requires_grad_()
        value = loss(z, target.to(dtype) if target.is_floating_point() else target, activation=activation,
                     aggregation="image", **options)
        value.backward()
        results.append((value, z.grad))
    assert calls  # float32 took the native kernels (float64 the blocks)
    torch.testing.assert_close(results[0][0].double(), results[1][0].double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[0][1].double(), results[1][1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("offset", [0.0, 1e3, -3e3])
def test_large_logits_keep_float32_precision(offset):
    # The saved max and 1 / sum recompute the forward's probabilities bit for bit: around 1e3 the sums, the
    # cross-entropy and the gradient match float64 to float32 precision.
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 6, 500, generator=gen) * 4 + offset
    labels = torch.randint(0, 6, (2, 500), generator=gen)
    z32 = logits.clone().requires_grad_()
    z64 = logits.double().requires_grad_()
    (s32, ce32), (s64, ce64) = (fused_statistics(z, labels, cross_entropy=True) for z in (z32, z64))
    for a, b in zip([*s32[:3], ce32], [*s64[:3], ce64]):
        torch.testing.assert_close(a.double(), b, rtol=2e-6, atol=2e-5)
    coefs = torch.randn(4, 2, 6, generator=gen)
    for stats, ce, z in ((s32, ce32, z32), (s64, ce64, z64)):
        sum((c.to(s.dtype) * s).sum() for c, s in zip(coefs, [*stats[:3], ce])).backward()
    torch.testing.assert_close(z32.grad.double(), z64.grad, rtol=1e-5, atol=2e-6)


def test_underflow_gives_exact_zeros_and_empty_classes():
    # A class at -1e4 has probability exactly 0 (softmax) and a sigmoid at -1e4 is exactly 0: its Dice is the
    # empty class's 0, not 1.
    logits = torch.randn(2, 3, 50)
    logits[:, 2] = -1e4
    labels = torch.randint(0, 2, (2, 50))
    stats, _ = fused_statistics(logits, labels)
    assert bool((stats.tp[:, 2] == 0).all() and (stats.fp[:, 2] == 0).all())
    sigmoid, _ = fused_statistics(logits, torch.zeros(2, 3, 50), activation="sigmoid")
    assert bool((sigmoid.fp[:, 2] == 0).all())
    assert float(dice_loss(logits, labels, reduction="none")[2]) == 0.0


def test_non_finite_kept_logits_propagate_as_in_torch():
    # NaN or +inf at a counted pixel: NaN out, as on the reference path (excluded pixels: test_excluded_pixels).
    logits = torch.randn(1, 3, 40)
    labels = torch.randint(0, 3, (1, 40))
    for value in (float("nan"), float("inf")):
        poisoned = logits.clone()
        poisoned[0, 1, 7] = value
        assert torch.isnan(dice_loss(poisoned, labels))
        monkey = dispatch._fused_path_applies
        try:
            dispatch._fused_path_applies = lambda *args, **kwargs: False
            assert torch.isnan(dice_loss(poisoned, labels))
        finally:
            dispatch._fused_path_applies = monkey


def test_excluded_pixels_are_selected_out():
    # The float32 counterpart of test_excluded_pixels.py (float64 runs the blocks): poison at ignored pixels.
    from test_excluded_pixels import assert_equals_kept_only, fused_outputs, problem, reference_statistics

    for setting, activation in itertools.product(["index_ignore", "index_mask", "dense_pixel_mask"], ["softmax", "sigmoid"]):
        logits, target, options, keep = problem(setting, dtype=torch.float32)
        with_ce = activation == "softmax"
        assert_equals_kept_only(logits, target, options, keep, fused_outputs(activation, 1, with_ce),
                                reference_statistics(activation, 1, with_ce), rtol=1e-5, atol=1e-5)


def test_what_the_native_kernels_do_not_take_runs_the_blocks():
    z = torch.zeros(1, 3, 8)
    assert native.native_applies(z, None, None, activation="softmax", with_ce=True)
    assert not native.native_applies(z.double(), None, None, activation="softmax", with_ce=False)
    assert not native.native_applies(z.half(), None, None, activation="softmax", with_ce=False)
    assert not native.native_applies(z, None, None, activation="sigmoid", with_ce=True)
    assert not native.native_applies(torch.zeros(1, native.MAX_CHANNELS + 1, 4), None, None, activation="softmax",
                                     with_ce=False)
    labels, per_class = torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 3, 8, dtype=torch.bool)
    assert not native.native_applies(z, labels, per_class, activation="softmax", with_ce=False)


def test_switched_off_or_without_a_compiler_the_blocks_give_the_same_values(monkeypatch, tmp_path):
    logits = torch.randn(2, 4, 300, generator=torch.Generator().manual_seed(5))
    labels = torch.randint(0, 4, (2, 300), generator=torch.Generator().manual_seed(6))

    def value_and_grad():
        z = logits.clone().requires_grad_()
        value = dice_ce_loss(z, labels)
        value.backward()
        return value, z.grad

    fast = value_and_grad()
    monkeypatch.setenv(native.ENVIRONMENT_SWITCH, "0")
    assert not native.native_available()
    assert native.native_status() == "no native CPU kernels: SOFTSEG_NATIVE=0"
    blocks = value_and_grad()
    torch.testing.assert_close(fast[0], blocks[0], rtol=2e-6, atol=1e-7)
    torch.testing.assert_close(fast[1], blocks[1], rtol=1e-5, atol=1e-7)
    monkeypatch.delenv(native.ENVIRONMENT_SWITCH)
    # No compiler, or one that fails: not available, a status that says why, and the blocks run.
    monkeypatch.setenv(native.CACHE_VARIABLE, str(tmp_path))
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    native._library.cache_clear()
    try:
        assert not native.native_available()
        assert native.native_status() == "no native CPU kernels: no C++ compiler found ($CXX, c++, g++ or clang++)"
        torch.testing.assert_close(value_and_grad()[0], blocks[0])
        monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
        native._library.cache_clear()
        assert native.native_status().startswith("no native CPU kernels: building native_kernels.cpp failed: ")
        assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    finally:
        monkeypatch.undo()
        native._library.cache_clear()
    assert native.native_available()


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_label_range_comes_from_the_forward_pass(activation):
    # The labels' (min, max) for the value check comes off the kernel's pass (no separate pass over them): a bad
    # label anywhere is found and named; ignored pixels may hold anything.
    logits = torch.randn(2, 4, 300)
    labels = torch.randint(0, 4, (2, 300), generator=torch.Generator().manual_seed(7))
    outputs = native.native_statistics(logits, labels, None, None, activation=activation, norm=1, with_ce=False,
                                       with_range=True)
    assert outputs[5].tolist() == [float(labels.min()), float(labels.max())]
    labels[1, 297] = 9
    with pytest.raises(ValueError, match=r"target holds class index 9; expected indices in \[0, 3\]"):
        fused_statistics(logits, labels, activation=activation)
    stats, _ = fused_statistics(logits, labels.masked_fill(labels == 9, 255), activation=activation, ignore_index=255)
    assert torch.isfinite(stats.tp).all()


@pytest.mark.parametrize("channels", [2, 37, 128])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_many_classes_and_narrow_tiles(channels, kind):
    # The backward's tile narrows with the classes (4096 floats a buffer): 16 pixels at 128 classes.
    logits, labels, dense, weight = _case("softmax", kind, 1, channels=channels, pixels=150, seed=8)
    options = dict(activation="softmax", norm=1, with_ce=True)
    ours = native.native_statistics(logits, labels, dense, weight, with_range=True, **options)
    theirs = block_statistics(logits, labels, dense, weight, with_range=True, **options)
    for a, b in zip(ours[:6], theirs[:6]):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-5)
    grads = [torch.randn(2, channels, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    torch.testing.assert_close(native.native_gradient(logits, labels, dense, weight, ours[6], ours[7], *grads, **options),
                               block_gradient(logits, labels, dense, weight, theirs[6], theirs[7], *grads, **options),
                               rtol=1e-5, atol=2e-6)


LABEL_CASES = [case for case in CASES if case[1] != "dense"]


@pytest.mark.parametrize(("activation", "kind", "norm", "with_ce", "weight_kind"), LABEL_CASES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_labels_of_any_integer_dtype_give_the_int64_values(activation, kind, norm, with_ce, weight_kind, dtype):
    # uint8 labels are read as bytes (int8, int16, int32 through an int64 copy): the same numbers, bit for bit,
    # ragged tails included (203 pixels, chunks of 48).
    logits, labels, dense, weight = _case(activation, kind, weight_kind, seed=9)
    options = dict(activation=activation, norm=norm, with_ce=with_ce)
    wide = native.native_statistics(logits, labels, None, weight, with_range=True, **options)
    narrow = native.native_statistics(logits, labels.to(dtype), None, weight, with_range=True, **options)
    for k, (a, b) in enumerate(zip(wide, narrow)):
        assert torch.equal(a, b), f"output {k} differs"
    grads = [torch.randn(logits.shape[:2], generator=torch.Generator().manual_seed(k)) for k in range(4)]
    assert torch.equal(
        native.native_gradient(logits, labels, None, weight, wide[6], wide[7], *grads, **options),
        native.native_gradient(logits, labels.to(dtype), None, weight, narrow[6], narrow[7], *grads, **options),
    )


def test_uint8_labels_reach_the_kernels_without_an_int64_copy(monkeypatch):
    import softseg.kernels.ops as ops

    seen = []
    original = ops.native_statistics
    monkeypatch.setattr(ops, "native_statistics", lambda logits, labels, *a, **k: seen.append(labels.dtype) or original(logits, labels, *a, **k))
    logits = torch.randn(2, 3, 5, 7, requires_grad=True)
    labels = torch.randint(0, 3, (2, 5, 7), generator=torch.Generator().manual_seed(10))
    dice_ce_loss(logits, labels.to(torch.uint8), ignore_index=255).backward()
    grad = logits.grad
    logits.grad = None
    dice_ce_loss(logits, labels, ignore_index=255).backward()
    assert seen == [torch.uint8, torch.int64]
    assert torch.equal(grad, logits.grad)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_labels_beyond_int32_are_named_and_never_wrap_into_a_class(activation):
    # The kernels hold labels in int32 lanes: 2**32 + 1 must not become class 1 (nor -2**32 + 1 class 1).
    logits = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(11))
    labels = torch.randint(0, 3, (2, 40), generator=torch.Generator().manual_seed(12))
    for bad in (2**32 + 1, -(2**32) + 1, 2**62):
        wrapped = labels.clone()
        wrapped[1, 17] = bad
        with pytest.raises(ValueError, match=f"target holds class index {bad}; expected indices in"):
            fused_statistics(logits, wrapped, activation=activation)
        outputs = native.native_statistics(logits, wrapped, None, None, activation=activation, norm=1,
                                           with_ce=False, with_range=True)
        assert outputs[5][0].item() < 0 or outputs[5][1].item() > 2  # the range shows it (saturated)
        if activation == "softmax":  # with the checks off it counts in no class, as an out-of-range label 3 would
            outside = labels.clone()
            outside[1, 17] = 3 if bad > 0 else -1
            expected = native.native_statistics(logits, outside, None, None, activation=activation, norm=1,
                                                with_ce=False, with_range=False)
            got = native.native_statistics(logits, wrapped, None, None, activation=activation, norm=1,
                                           with_ce=False, with_range=False)
            for a, b in zip(got[:5], expected[:5]):
                assert torch.equal(a, b)


@pytest.mark.parametrize(("activation", "kind", "norm", "with_ce", "weight_kind"), CASES[::5])
def test_openmp_and_worker_threads_give_the_same_values(monkeypatch, activation, kind, norm, with_ce, weight_kind):
    # Built with OpenMP the library runs the ranges on torch's threads; without, the Python workers call it once per
    # range. The same ranges either way, so the same sums bit for bit.
    logits, labels, dense, weight = _case(activation, kind, weight_kind, seed=13)
    options = dict(activation=activation, norm=norm, with_ce=with_ce, with_range=kind != "index")
    grads = [torch.randn(logits.shape[:2], generator=torch.Generator().manual_seed(k)) for k in range(4)]

    def run():
        outputs = native.native_statistics(logits, labels, dense, weight, **options)
        gradient = native.native_gradient(logits, labels, dense, weight, outputs[6], outputs[7], *grads,
                                          activation=activation, norm=norm, with_ce=with_ce)
        return (*outputs, gradient)

    first = run()
    built_with_openmp = native._runs_on_openmp(native._library()[0])
    monkeypatch.setattr(native, "_runs_on_openmp", lambda library: not built_with_openmp)
    for k, (a, b) in enumerate(zip(first, run())):
        assert torch.equal(a, b), f"output {k} differs"


def _loss_in_a_forked_child(queue):
    logits = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(14))
    labels = torch.randint(0, 3, (2, 64, 64), generator=torch.Generator().manual_seed(15))
    queue.put(dice_loss(logits, labels).item())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_runs_the_kernels_after_the_parent_did():
    # OpenMP's threads do not survive fork: with torch's default thread count a forked child would hang in its
    # first parallel region (as torch's own operators do); the kernels run in the child's calling thread instead.
    import multiprocessing
    import queue

    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # (the child inherits it: more than one thread)
    try:
        in_parent = queue.Queue()
        _loss_in_a_forked_child(in_parent)  # the parent runs the kernels first
        expected = in_parent.get()
        context = multiprocessing.get_context("fork")
        results = context.Queue()
        child = context.Process(target=_loss_in_a_forked_child, args=(results,))
        child.start()
        child.join(60)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung and child.exitcode == 0
        assert results.get(timeout=10) == expected
    finally:
        torch.set_num_threads(previous)


class _AdviceSpy:
    """The loaded library, with the calls of softseg_advise_huge_pages recorded as (address, bytes, result)."""

    def __init__(self, library):
        self.library, self.calls = library, []

    def softseg_advise_huge_pages(self, address, length):
        result = self.library.softseg_advise_huge_pages(address, length)
        self.calls.append((address, length, result))
        return result

    def __getattr__(self, name):
        return getattr(self.library, name)


def _vm_flags(address):
    """The VmFlags of the mapping that holds `address` (/proc/self/smaps)."""
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(part, 16) for part in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("switch", ["1", "0"])
def test_a_large_gradient_is_advised_for_huge_pages_unless_switched_off(monkeypatch, switch):
    monkeypatch.setenv(native.HUGE_PAGES_SWITCH, switch)
    monkeypatch.setattr(native, "HUGE_PAGE_MIN_BYTES", 4 << 20)  # (the default, 32 MiB, at a smaller size)
    monkeypatch.setattr(native, "_transparent_huge_pages", lambda: True)  # advised: streaming stores (AVX-512)
    spy = _AdviceSpy(native._library()[0])
    monkeypatch.setattr(native, "_library", lambda: (spy, "spied"))
    small, _, dense, _ = _case("softmax", "dense", 0, channels=3, pixels=(4 << 20) // 24 - 1)  # just under 4 MiB
    large, _, large_dense, _ = _case("softmax", "dense", 0, channels=3, pixels=(4 << 20) // 24 + 4096)
    grads = [torch.randn(2, 3, generator=torch.Generator().manual_seed(k)) for k in range(4)]
    gradients = []
    for logits, target in ((small, dense), (large, large_dense)):
        outputs = native.native_statistics(logits, None, target, None, activation="softmax", norm=1, with_ce=False,
                                           with_range=False)

        def gradient():
            return native.native_gradient(logits, None, target, None, outputs[6], outputs[7], *grads,
                                          activation="softmax", norm=1, with_ce=False)

        gradients.append(gradient())
        with monkeypatch.context() as plain:
            plain.setenv(native.HUGE_PAGES_SWITCH, "0")
            assert torch.equal(gradients[-1], gradient())  # neither the pages nor the stores change a value
    if switch == "0":
        assert spy.calls == []
        return
    ((address, length, result),) = spy.calls  # the large gradient only
    assert (address, length) == (gradients[1].data_ptr(), gradients[1].nbytes)
    if result == 1 and os.path.exists("/proc/self/smaps"):
        inside = (address + (2 << 20) - 1) & ~((2 << 20) - 1)  # the first 2 MiB boundary in the gradient
        assert "hg" in _vm_flags(inside)
