"""The Triton kernels against the reference path (activate + region_statistics in float64): every
activation, target kind, ignore setting, norm and the cross-entropy; several tiles; half precision;
determinism; the dispatch. On CUDA where there is one; otherwise in Triton's interpreter on the CPU
(TRITON_INTERPRET=1, set by the repository's conftest.py). Skipped where Triton is not installed."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

import softseg.kernels.fused as fused_module  # noqa: E402
import softseg.kernels.triton_fused as triton_module  # noqa: E402
import softseg  # noqa: E402
from softseg import dice_ce_loss, dice_loss  # noqa: E402
from softseg.kernels import fused_statistics  # noqa: E402
from softseg.kernels.triton_fused import TritonRegionStatistics, triton_applies, triton_available  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
if not CUDA and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)


@pytest.fixture(autouse=True)
def triton_everywhere(monkeypatch):
    # Every fused call takes the kernels, on the CPU too (the interpreter), in small tiles: several per
    # image, a ragged last one, and forward programs that run past the last tile.
    monkeypatch.setattr(fused_module, "triton_applies", lambda logits: True)
    monkeypatch.setattr(triton_module, "TILE_ELEMENTS", 64)
    monkeypatch.setattr(triton_module, "TILES_PER_PROGRAM", 2)  # forward: two tiles per program, some ragged
    monkeypatch.setattr(triton_module, "MIN_PROGRAMS", 1)
    monkeypatch.delenv(triton_module.ENVIRONMENT_SWITCH, raising=False)


def _targets(kind: str, batch: int, channels: int, pixels: int, seed: int = 0):
    """(target, options) for one target/ignore setting, on DEVICE."""
    gen = torch.Generator().manual_seed(seed)
    classes = max(channels, 2)
    if kind == "index":
        target, options = torch.randint(0, classes, (batch, pixels), generator=gen), {}
    elif kind == "index_ignore":
        labels = torch.randint(0, classes + 1, (batch, pixels), generator=gen)
        target, options = labels.masked_fill(labels == classes, 255), {"ignore_index": 255}
    elif kind == "index_mask":
        target = torch.randint(0, classes, (batch, pixels), generator=gen)
        options = {"mask": torch.rand(batch, pixels, generator=gen) > 0.3}
    elif kind == "index_uint8":
        target, options = torch.randint(0, classes, (batch, pixels), generator=gen).to(torch.uint8), {}
    elif kind == "dense":
        target, options = torch.rand(batch, channels, pixels, generator=gen), {}
    elif kind == "dense_pixel_mask":
        target = torch.rand(batch, channels, pixels, generator=gen)
        options = {"mask": torch.rand(batch, 1, pixels, generator=gen) > 0.3}
    elif kind == "dense_class_mask":
        target = torch.rand(batch, channels, pixels, generator=gen)
        options = {"mask": torch.rand(batch, channels, pixels, generator=gen) > 0.3}
    else:
        raise AssertionError(kind)
    return target.to(DEVICE), {k: v.to(DEVICE) if torch.is_tensor(v) else v for k, v in options.items()}


def _reference(logits, target, activation, norm, options):
    """The reference path in float64: statistics, cross-entropy sums and the gradient of a random mix."""
    exact = logits.detach().double().requires_grad_()
    dense = target.double() if target.is_floating_point() else target
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused_module, "_fused_path_applies", lambda *args, **kwargs: False)
        stats, ce = fused_statistics(exact, dense, activation=activation, norm=norm, cross_entropy=True, **options)
    return exact, stats, ce


def _mix(stats, ce, seed=1):
    gen = torch.Generator().manual_seed(seed)
    coefs = [torch.randn(stats.tp.shape, generator=gen, dtype=torch.float64).to(DEVICE) for _ in range(4)]
    return sum((c * s.double()).sum() for c, s in zip(coefs, (stats.tp, stats.fp, stats.fn, ce)))


def _compare(logits, target, activation, norm, options, *, rtol=1e-5, atol=1e-5):
    fast_in = logits.detach().clone().requires_grad_()
    stats, ce = fused_statistics(fast_in, target, activation=activation, norm=norm, cross_entropy=True, **options)
    exact_in, ref, ref_ce = _reference(logits, target, activation, norm, options)
    for name, a, b in zip(stats._fields + ("ce",), (*stats, ce), (*ref, ref_ce)):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a.double(), b, rtol=rtol, atol=atol, msg=f"{name} differs")
    _mix(stats, ce).backward()
    _mix(ref, ref_ce).backward()
    assert fast_in.grad.dtype == logits.dtype
    torch.testing.assert_close(fast_in.grad.double(), exact_in.grad, rtol=rtol, atol=atol)
    return stats, ce


KINDS = ["index", "index_ignore", "index_mask", "index_uint8", "dense", "dense_pixel_mask", "dense_class_mask"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation,channels", [("softmax", 3), ("softmax", 5), ("sigmoid", 1), ("sigmoid", 3)])
@pytest.mark.parametrize("norm", [1, 2])
def test_kernels_equal_reference(kind, activation, channels, norm):
    logits = (torch.randn(2, channels, 67, generator=torch.Generator().manual_seed(2)) * 3).to(DEVICE)
    target, options = _targets(kind, 2, channels, 67)
    _compare(logits, target, activation, norm, options)


def test_cross_entropy_without_region_terms_matches_torch():
    logits = torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(3)).to(DEVICE)
    labels, options = _targets("index_ignore", 3, 4, 50)
    _, ce = fused_statistics(logits, labels, cross_entropy=True, **options)
    expected = F.cross_entropy(logits, labels, ignore_index=255, reduction="sum")
    torch.testing.assert_close(ce.sum(), expected, rtol=1e-5, atol=1e-4)


def test_many_classes_pad_to_a_power_of_two():
    # 20 classes: 32 rows per tile, 12 of them padding that must contribute nothing.
    logits = torch.randn(2, 20, 40, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    target, options = _targets("index_ignore", 2, 20, 40)
    _compare(logits, target, "softmax", 1, options)


def test_ties_use_torch_minimum_convention():
    # Zero logits: exact probabilities 1/4 (softmax over 4) and 1/2 (sigmoid), equal to the target.
    for activation, tie in (("softmax", 0.25), ("sigmoid", 0.5)):
        logits = torch.randn(1, 4, 40, generator=torch.Generator().manual_seed(5))
        target = torch.rand(1, 4, 40, generator=torch.Generator().manual_seed(6))
        logits[:, :, ::2] = 0
        target[:, :, ::2] = tie
        _compare(logits.to(DEVICE), target.to(DEVICE), activation, 1, {})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["index_ignore", "dense"])
def test_half_precision_logits(dtype, kind):
    logits = torch.randn(2, 3, 300, generator=torch.Generator().manual_seed(7)).to(DEVICE, dtype)
    target, options = _targets(kind, 2, 3, 300)
    if target.is_floating_point():
        target = target.to(dtype)
    # Sums run in float32 from the rounded logits; the gradient is rounded once to the logits' dtype.
    _compare(logits, target, "softmax", 1, options, rtol=2e-2, atol=2e-3)


def test_deterministic():
    logits = torch.randn(2, 5, 300, generator=torch.Generator().manual_seed(8)).to(DEVICE).requires_grad_()
    target, options = _targets("index", 2, 5, 300)
    runs = []
    for _ in range(2):
        logits.grad = None
        stats, ce = fused_statistics(logits, target, cross_entropy=True, **options)
        _mix(stats, ce).backward()
        runs.append((torch.stack([*stats, ce]), logits.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_empty_mask_gives_zero_sums_and_zero_gradient():
    logits = torch.randn(2, 3, 50, generator=torch.Generator().manual_seed(9)).to(DEVICE).requires_grad_()
    labels, _ = _targets("index", 2, 3, 50)
    mask = torch.zeros(2, 50, dtype=torch.bool, device=DEVICE)
    stats, ce = fused_statistics(logits, labels, mask=mask, cross_entropy=True)
    assert all(bool((s == 0).all()) for s in (*stats, ce))
    _mix(stats, ce).backward()
    assert bool((logits.grad == 0).all())


@pytest.mark.parametrize("aggregation", ["global", "image", "class"])
@pytest.mark.parametrize("kind", ["index_ignore", "dense_pixel_mask"])
def test_losses_equal_torch_block_path(aggregation, kind, monkeypatch):
    logits = torch.randn(3, 4, 90, generator=torch.Generator().manual_seed(10)).to(DEVICE)
    target, options = _targets(kind, 3, 4, 90)
    results = []
    for use_triton in (True, False):
        monkeypatch.setattr(fused_module, "triton_applies", lambda _logits, use=use_triton: use)
        for loss in (dice_loss, dice_ce_loss):
            z = logits.clone().requires_grad_()
            value = loss(z, target, aggregation=aggregation, **options)
            value.backward()
            results.append((value, z.grad))
    for (fast, fast_grad), (blocks, blocks_grad) in zip(results[:2], results[2:]):
        torch.testing.assert_close(fast, blocks, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(fast_grad, blocks_grad, rtol=1e-5, atol=1e-6)


def test_saved_tensors_are_the_inputs_only():
    logits = torch.randn(2, 3, 64, generator=torch.Generator().manual_seed(11)).to(DEVICE).requires_grad_()
    labels, _ = _targets("index", 2, 3, 64)
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fused_statistics(logits, labels)
    assert sorted(sizes) == [2 * 64, 2 * 3 * 64]  # the labels and the logits


def test_switch_and_applicability(monkeypatch):
    monkeypatch.undo()  # the real dispatch rules
    assert triton_available()
    monkeypatch.setenv(triton_module.ENVIRONMENT_SWITCH, "0")
    assert not triton_available()
    monkeypatch.delenv(triton_module.ENVIRONMENT_SWITCH)
    logits = torch.zeros(2, 3, 10, device=DEVICE)
    assert triton_applies(logits) == CUDA
    assert not triton_applies(logits.double())
    assert not triton_applies(torch.zeros(1, triton_module.MAX_CHANNELS + 1, 4, device=DEVICE))


@pytest.mark.skipif(not CUDA, reason="the real dispatch picks Triton for CUDA tensors only")
def test_cuda_dispatch_takes_triton(monkeypatch):
    monkeypatch.undo()
    calls = []
    for function in (TritonRegionStatistics, triton_module.TritonRegionLoss):
        original = function.apply
        monkeypatch.setattr(function, "apply", lambda *args, f=original, n=function.__name__: calls.append(n) or f(*args))
    logits = torch.randn(2, 3, 8, 8, device="cuda", requires_grad=True)
    labels = torch.randint(0, 3, (2, 8, 8), device="cuda")
    dice_loss(logits, labels).backward()  # the whole loss in the kernels
    softseg.logit_statistics(logits, labels).tp.sum().backward()  # the statistics alone
    dice_loss(logits, labels, reduction="none").sum().backward()  # statistics in the kernels, torch tail
    assert calls == ["TritonRegionLoss", "TritonRegionStatistics", "TritonRegionStatistics"]


# ---------------------------------------------------------------- the whole loss in the kernels


LOSS_OPTIONS = [
    {},
    {"aggregation": "image"},
    {"aggregation": "class", "active_classes": "present"},
    {"aggregation": {"image": 0.5, "class": 0.5}, "weight": [1.0, 2.0, 0.5, 1.0]},
    {"active_classes": "present", "presence_threshold": 0.5, "reduction": "sum"},
    {"include_background": False, "weight": [2.0, 1.0, 0.5], "aggregation": "image"},
    {"gamma": 0.5, "smooth": 1.0},
    {"gamma": 2.0, "log_loss": True, "aggregation": "class"},
    {"alpha": 0.3, "beta": 0.7, "norm": 2},
]


def _loss_both_ways(loss, logits, target, options, monkeypatch):
    """(value, gradient) with the whole loss in the kernels, and with the kernels' statistics + torch tail."""
    results = []
    calls = []
    original = triton_module.TritonRegionLoss.apply
    monkeypatch.setattr(triton_module.TritonRegionLoss, "apply", lambda *args: calls.append(1) or original(*args))
    for whole in (True, False):
        monkeypatch.setattr(triton_module, "MAX_TAIL_ENTRIES", 1 << 14 if whole else 0)
        z = logits.clone().requires_grad_()
        value = loss(z, target, **options)
        (value * 1.7).backward()  # an upstream gradient other than 1
        results.append((value, z.grad))
    assert len(calls) == 1  # the first way took the whole-loss kernels, the second did not
    return results


@pytest.mark.parametrize("options", LOSS_OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("kind", ["index_ignore", "dense_pixel_mask"])
def test_whole_loss_equals_statistics_and_torch_tail(options, kind, monkeypatch):
    from softseg import tversky_loss

    logits = (torch.randn(3, 4, 70, generator=torch.Generator().manual_seed(12)) * 2).to(DEVICE)
    target, target_options = _targets(kind, 3, 4, 70)
    options = dict(options, **target_options)
    options.setdefault("alpha", 0.5)
    options.setdefault("beta", 0.5)
    (fast, fast_grad), (tail, tail_grad) = _loss_both_ways(tversky_loss, logits, target, options, monkeypatch)
    assert fast.dtype == torch.float32 and fast.shape == ()
    torch.testing.assert_close(fast, tail, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, tail_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"lambda_ce": 0.3, "aggregation": "image"}, {"lambda_region": 0.0}])
@pytest.mark.parametrize("kind", ["index_ignore", "dense_pixel_mask"])
def test_whole_compound_loss_equals_statistics_and_torch_tail(options, kind, monkeypatch):
    logits = torch.randn(2, 3, 60, generator=torch.Generator().manual_seed(13)).to(DEVICE)
    target, target_options = _targets(kind, 2, 3, 60)
    (fast, fast_grad), (tail, tail_grad) = _loss_both_ways(
        dice_ce_loss, logits, target, dict(options, **target_options), monkeypatch
    )
    torch.testing.assert_close(fast, tail, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, tail_grad, rtol=1e-4, atol=1e-6)


def test_whole_loss_sigmoid_binary_and_empty_mask(monkeypatch):
    logits = torch.randn(2, 1, 80, generator=torch.Generator().manual_seed(14)).to(DEVICE)
    labels = torch.randint(0, 2, (2, 80), generator=torch.Generator().manual_seed(15)).to(DEVICE)
    (fast, fast_grad), (tail, tail_grad) = _loss_both_ways(
        dice_loss, logits, labels, {"activation": "sigmoid", "aggregation": "image"}, monkeypatch
    )
    torch.testing.assert_close(fast, tail, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad, tail_grad, rtol=1e-4, atol=1e-6)
    empty = torch.zeros(2, 80, dtype=torch.bool, device=DEVICE)
    (fast, fast_grad), (tail, _) = _loss_both_ways(dice_ce_loss, logits.expand(2, 2, 80).contiguous(), labels,
                                                   {"mask": empty}, monkeypatch)
    assert float(fast.detach()) == 0.0 == float(tail.detach()) and bool((fast_grad == 0).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_whole_loss_half_precision(dtype, monkeypatch):
    logits = torch.randn(2, 4, 90, generator=torch.Generator().manual_seed(16)).to(DEVICE, dtype)
    labels, options = _targets("index_ignore", 2, 4, 90)
    (fast, fast_grad), (tail, tail_grad) = _loss_both_ways(dice_ce_loss, logits, labels, options, monkeypatch)
    assert fast.dtype == tail.dtype == torch.float32 and fast_grad.dtype == dtype
    torch.testing.assert_close(fast, tail, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_grad.float(), tail_grad.float(), rtol=1e-2, atol=1e-4)


# ---------------------------------------------------------------- excluded pixels (issue #14, item 1)


@pytest.mark.parametrize("setting", ["index_ignore", "index_mask", "dense_pixel_mask"])
@pytest.mark.parametrize("activation,channels", [("softmax", 3), ("sigmoid", 1), ("sigmoid", 3)])
@pytest.mark.parametrize("norm", [1, 2])
def test_kernels_select_excluded_pixels_out(setting, activation, channels, norm):
    # NaN, +inf and -inf logits at ignored or masked-out pixels: the sums, cross-entropy and gradient equal
    # those of each image's kept pixels alone; the excluded pixels get exactly zero gradient.
    from test_excluded_pixels import assert_equals_kept_only, fused_outputs, problem, reference_statistics

    if setting.startswith("dense") and channels == 1:
        pytest.skip("a one-channel dense target is the same kernel as three channels")
    logits, target, options, keep = problem(setting, channels=channels, pixels=67, dtype=torch.float32)
    move = lambda t: t.to(DEVICE) if torch.is_tensor(t) else t  # noqa: E731
    assert_equals_kept_only(
        move(logits), move(target), {k: move(v) for k, v in options.items()}, move(keep),
        fused_outputs(activation, norm, True), reference_statistics(activation, norm, True), rtol=1e-5, atol=1e-5,
    )


def test_kernels_per_class_mask_poison_at_fully_excluded_pixels():
    gen = torch.Generator().manual_seed(17)
    logits = torch.randn(2, 3, 70, generator=gen)
    target = torch.rand(2, 3, 70, generator=gen)
    mask = torch.rand(2, 3, 70, generator=gen) > 0.4
    mask[:, :, ::5] = False
    poisoned = logits.clone()
    poisoned[0, 1, ::5] = float("nan")
    poisoned[1, :, ::5] = float("inf")
    for activation in ("softmax", "sigmoid"):
        results = []
        for z in (poisoned, logits):
            z = z.to(DEVICE).requires_grad_()
            stats, ce = fused_statistics(z, target.to(DEVICE), activation=activation, mask=mask.to(DEVICE),
                                         cross_entropy=True)
            _mix(stats, ce).backward()
            results.append(([*stats, ce], z.grad))
        for a, b in zip(results[0][0], results[1][0]):
            torch.testing.assert_close(a, b)
        torch.testing.assert_close(results[0][1][:, :, 1::5], results[1][1][:, :, 1::5])
        assert bool((results[0][1][:, :, ::5] == 0).all())


def test_whole_loss_kernels_select_excluded_pixels_out(monkeypatch):
    logits = torch.randn(2, 3, 60, generator=torch.Generator().manual_seed(18)).to(DEVICE)
    labels, options = _targets("index_ignore", 2, 3, 60)
    poisoned = logits.clone()
    ignored = (labels == 255).nonzero()
    poisoned[ignored[:, 0], :, ignored[:, 1]] = float("nan")
    (fast, fast_grad), _ = _loss_both_ways(dice_ce_loss, poisoned, labels, options, monkeypatch)
    (clean, clean_grad), _ = _loss_both_ways(dice_ce_loss, logits, labels, options, monkeypatch)
    torch.testing.assert_close(fast, clean)
    torch.testing.assert_close(fast_grad, clean_grad)
    assert bool((fast_grad[ignored[:, 0], :, ignored[:, 1]] == 0).all())
