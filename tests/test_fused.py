"""The fused statistics path against the reference path (activate + region_statistics): values, gradients,
every target kind, ignore setting, norm, aggregation and dtype; gradcheck; saved memory; fallbacks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import softseg.dispatch as dispatch
import softseg.kernels.fused as fused_module
from softseg import activate, dice_ce_loss, region_statistics, set_value_checks, tversky_loss
from softseg.dispatch import fused_statistics
from softseg.losses.region import loss_from_statistics
from softseg.dispatch import logit_statistics


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Tiny blocks, so every test runs several blocks and a ragged last one.
    monkeypatch.setattr(fused_module, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(fused_module, "MIN_BLOCK_PIXELS", 7)


def _targets(kind: str, batch: int, channels: int, spatial: tuple, dtype=torch.float64, seed: int = 0):
    """(target, options) for one target/ignore setting."""
    gen = torch.Generator().manual_seed(seed)
    index_shape = (batch, *spatial)
    dense_shape = (batch, channels, *spatial)
    if kind == "index":
        return torch.randint(0, max(channels, 2), index_shape, generator=gen), {}
    if kind == "index_ignore":
        labels = torch.randint(0, max(channels, 2) + 1, index_shape, generator=gen)
        return labels.masked_fill(labels == max(channels, 2), 255), {"ignore_index": 255}
    if kind == "index_mask":
        mask = torch.rand(index_shape, generator=gen) > 0.3
        return torch.randint(0, max(channels, 2), index_shape, generator=gen), {"mask": mask}
    if kind == "index_uint8":
        return torch.randint(0, max(channels, 2), index_shape, generator=gen).to(torch.uint8), {}
    if kind == "dense":
        return torch.rand(dense_shape, generator=gen, dtype=dtype), {}
    if kind == "dense_pixel_mask":
        mask = torch.rand(batch, 1, *spatial, generator=gen) > 0.3
        return torch.rand(dense_shape, generator=gen, dtype=dtype), {"mask": mask}
    if kind == "dense_class_mask":
        mask = torch.rand(dense_shape, generator=gen) > 0.3
        return torch.rand(dense_shape, generator=gen, dtype=dtype), {"mask": mask}
    raise AssertionError(kind)


KINDS = ["index", "index_ignore", "index_mask", "index_uint8", "dense", "dense_pixel_mask", "dense_class_mask"]


def _reference_statistics(logits, target, activation, **options):
    return region_statistics(activate(logits, activation), target, **options)


def _compare(logits, target, activation, norm, options, *, atol=1e-12, rtol=1e-10):
    """Values and gradient (of a random combination of tp, fp, fn) of the fused and reference paths."""
    fast_in = logits.clone().requires_grad_()
    ref_in = logits.clone().requires_grad_()
    fast = logit_statistics(fast_in, target, activation=activation, norm=norm, **options)
    ref = _reference_statistics(ref_in, target, activation, norm=norm, **options)
    for name, a, b in zip(fast._fields, fast, ref):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol, msg=f"{name} differs")
    gen = torch.Generator().manual_seed(1)
    coefs = [torch.randn(ref.tp.shape, generator=gen, dtype=ref.tp.dtype) for _ in range(3)]
    sum(((c * s).sum() for c, s in zip(coefs, fast[:3]))).backward()
    sum(((c * s).sum() for c, s in zip(coefs, ref[:3]))).backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, atol=atol, rtol=rtol)
    return fast


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("norm", [1, 2])
def test_fused_equals_reference(kind, activation, norm):
    logits = torch.randn(2, 3, 9, 61, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    target, options = _targets(kind, 2, 3, (9, 61))
    _compare(logits, target, activation, norm, options)


@pytest.mark.parametrize("kind", ["index", "index_ignore", "index_mask"])
@pytest.mark.parametrize("norm", [1, 2])
def test_fused_binary_sigmoid_equals_reference(kind, norm):
    logits = torch.randn(3, 1, 700, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 4
    target, options = _targets(kind, 3, 1, (700,))
    _compare(logits, target, "sigmoid", norm, options)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_tie_gradient_convention_matches_reference(activation):
    # Where the prediction equals the soft target exactly, d min(x, y)/dx = 1/2 (torch.minimum's rule).
    # Zero logits give exact probabilities (1/4 for a 4-class softmax, 1/2 for sigmoid) whatever the
    # vectorisation, so these ties are ties on both paths.
    logits = torch.randn(2, 4, 600, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.rand(2, 4, 600, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    logits[:, :, ::2] = 0
    target[:, :, ::2] = 0.25 if activation == "softmax" else 0.5
    assert bool((activate(logits, activation)[:, :, ::2] == target[:, :, ::2]).all())
    _compare(logits, target, activation, 1, {})


def test_tie_gradient_hand_computed():
    # One pixel, sigmoid(0) = 1/2 = y: tp = min(x, y) has slope 1/2, so d tp/dz = 1/2 * sigmoid' = 1/8.
    logits = torch.zeros(1, 1, 1, dtype=torch.float64, requires_grad=True)
    stats = logit_statistics(logits, torch.full((1, 1, 1), 0.5, dtype=torch.float64), activation="sigmoid")
    stats.tp.sum().backward()
    assert logits.grad.item() == pytest.approx(0.125, abs=1e-15)


@pytest.mark.parametrize("aggregation", ["global", "image", "class", {"image": 0.5, "class": 0.5}])
@pytest.mark.parametrize("active_classes", ["all", "present"])
@pytest.mark.parametrize("kind", ["index_ignore", "dense_pixel_mask"])
def test_tversky_loss_fused_equals_reference_over_aggregations(aggregation, active_classes, kind):
    logits = torch.randn(3, 4, 5, 70, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    target, options = _targets(kind, 3, 4, (5, 70))
    options = dict(options, alpha=0.3, beta=0.7, aggregation=aggregation, active_classes=active_classes,
                   weight=[1.0, 2.0, 0.5, 1.0])
    fast_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fast = tversky_loss(fast_in, target, **options)
    stats = _reference_statistics(ref_in, target, "softmax", ignore_index=options.get("ignore_index"),
                                  mask=options.get("mask"))
    ref = loss_from_statistics(
        stats, alpha=0.3, beta=0.7, smooth=0.0, gamma=1.0, log_loss=False, weight=options["weight"],
        include_background=True, aggregation=aggregation, active_classes=active_classes,
        presence_threshold=0.01, reduction="mean",
    )
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-10)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, atol=1e-12, rtol=1e-10)


@given(
    batch=st.integers(1, 3),
    channels=st.integers(2, 5),
    pixels=st.integers(1, 900),
    activation=st.sampled_from(["softmax", "sigmoid"]),
    norm=st.sampled_from([1, 2]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_equals_reference_property(batch, channels, pixels, activation, norm, kind, seed):
    logits = torch.randn(batch, channels, pixels, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    target, options = _targets(kind, batch, channels, (pixels,), seed=seed)
    _compare(logits, target, activation, norm, options)


@given(
    channels=st.integers(2, 6),
    pixels=st.integers(1, 400),
    offset=st.floats(-3e3, 3e3),
    spread=st.floats(0.1, 30.0),
    kind=st.sampled_from(["index", "index_ignore", "dense", "dense_pixel_mask"]),
    norm=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**31 - 1),
)
def test_float32_softmax_blocks_match_float64_property(channels, pixels, offset, spread, kind, norm, seed):
    # The float32 exp2 softmax (per-pixel max shift, log-sum-exp head + tail) against the float64 reference
    # on the same float32 logits, at any offset and spread: values, cross-entropy and gradient to float32
    # precision, relative to each quantity's own scale.
    gen = torch.Generator().manual_seed(seed)
    fast_in = (torch.randn(2, channels, pixels, generator=gen) * spread + offset).requires_grad_()
    exact_in = fast_in.detach().double().requires_grad_()
    target, options = _targets(kind, 2, channels, (pixels,), dtype=torch.float64, seed=seed)
    fast_stats, fast_ce = fused_statistics(fast_in, target.float() if kind.startswith("dense") else target,
                                           norm=norm, cross_entropy=True, **options)
    mask = options.get("mask")
    exact_stats, exact_ce = dispatch._reference_statistics(
        exact_in, target, kind=kind.split("_")[0], activation="softmax", norm=norm, cross_entropy=True,
        ignore_index=options.get("ignore_index"), mask=mask,
    )
    values, reference = [*fast_stats[:3], fast_ce], [*exact_stats[:3], exact_ce]
    for value, expected in zip(values, reference):
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-5 * (1 + expected.abs().max().item()))
    coefs = [torch.randn(expected.shape, generator=gen, dtype=torch.float64) for expected in reference]
    sum((c * v).sum() for c, v in zip(coefs, values)).backward()
    sum((c * v).sum() for c, v in zip(coefs, reference)).backward()
    scale = exact_in.grad.abs().max().item()
    torch.testing.assert_close(fast_in.grad.double(), exact_in.grad, rtol=0, atol=5e-5 * scale + 5e-7)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("kind", ["index_ignore", "dense_class_mask"])
def test_gradcheck_float64(activation, norm, kind):
    logits = torch.randn(2, 3, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(7), requires_grad=True)
    target, options = _targets(kind, 2, 3, (25,), seed=8)
    coefs = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(9))

    def combined(z):
        stats, ce = fused_statistics(z, target, activation=activation, norm=norm, cross_entropy=True, **options)
        return (coefs[0] * stats.tp + coefs[1] * stats.fp + coefs[2] * stats.fn + coefs[3] * ce).sum()

    assert torch.autograd.gradcheck(combined, (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["index_ignore", "dense"])
def test_half_precision_sums_in_float32(dtype, kind):
    logits = torch.randn(2, 3, 4000, generator=torch.Generator().manual_seed(10))
    target, options = _targets(kind, 2, 3, (4000,), dtype=torch.float32)
    half = logits.to(dtype).requires_grad_()
    stats = logit_statistics(half, target.to(dtype) if target.is_floating_point() else target, **options)
    assert stats.tp.dtype == torch.float32
    exact_in = half.detach().float().requires_grad_()
    exact = _reference_statistics(exact_in, target.to(dtype).float() if target.is_floating_point() else target,
                                  "softmax", **options)
    # 4000 pixels: a float16 sum would round at 2048; the float32 sums agree to the input's rounding.
    torch.testing.assert_close(stats.tp, exact.tp, rtol=1e-5, atol=1e-3)
    (stats.tp.sum() - stats.fp.sum()).backward()
    (exact.tp.sum() - exact.fp.sum()).backward()
    assert half.grad.dtype == dtype
    torch.testing.assert_close(half.grad.float(), exact_in.grad, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("kind", ["index_ignore", "index_mask", "dense"])
@pytest.mark.parametrize("norm", [1, 2])
def test_float32_softmax_keeps_precision_for_large_logits(kind, norm):
    # The blocks subtract each pixel's max logit before exp2 and keep the log-sum-exp as a float32 head and
    # a bfloat16 tail: around 1e3 the statistics, cross-entropy and gradient match float64 to float32
    # precision (a float32 log-sum-exp alone would put every recomputed probability off by up to 3e-5).
    gen = torch.Generator().manual_seed(12)
    fast_in = (torch.randn(2, 4, 300, generator=gen) * 4 + 1000).requires_grad_()
    exact_in = fast_in.detach().double().requires_grad_()
    target, options = _targets(kind, 2, 4, (300,), dtype=torch.float64)
    fast = fused_statistics(fast_in, target.float() if kind == "dense" else target, norm=norm,
                            cross_entropy=True, **options)
    exact = dispatch._reference_statistics(exact_in, target, kind=kind.split("_")[0], activation="softmax",
                                               norm=norm, cross_entropy=True, ignore_index=options.get("ignore_index"),
                                               mask=options["mask"].unsqueeze(1) if "mask" in options else None)
    values = [*fast[0][:3], fast[1]]
    reference = [*exact[0][:3], exact[1]]
    for value, expected in zip(values, reference):
        torch.testing.assert_close(value.double(), expected, rtol=2e-6, atol=1e-5)
    coefs = [torch.randn(expected.shape, generator=gen, dtype=torch.float64) for expected in reference]
    sum((c * v).sum() for c, v in zip(coefs, values)).backward()
    sum((c * v).sum() for c, v in zip(coefs, reference)).backward()
    torch.testing.assert_close(fast_in.grad.double(), exact_in.grad, rtol=1e-5, atol=2e-6)


def test_cross_entropy_sums_match_torch():
    logits = torch.randn(2, 4, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    labels, _ = _targets("index_ignore", 2, 4, (7, 9))
    _, ce = fused_statistics(logits, labels, ignore_index=255, cross_entropy=True)
    expected = F.cross_entropy(logits, labels, ignore_index=255, reduction="sum")
    torch.testing.assert_close(ce.sum(), expected)
    soft = torch.rand(2, 4, 7, 9, dtype=torch.float64).softmax(1)
    _, ce_soft = fused_statistics(logits, soft, cross_entropy=True)
    torch.testing.assert_close(ce_soft.sum(), F.cross_entropy(logits, soft, reduction="sum"))
    _, ce_sigmoid = fused_statistics(logits, soft, activation="sigmoid", cross_entropy=True)
    per_class = F.binary_cross_entropy_with_logits(logits, soft, reduction="none").sum((2, 3))
    torch.testing.assert_close(ce_sigmoid, per_class)


def test_saves_only_logits_labels_and_log_sum_exp():
    # The autograd graph of the fused loss keeps the logits, the labels and, per pixel, what backward's
    # softmax needs (the blocks: a float32 log-sum-exp head and bfloat16 tail; the native kernels: the max and
    # 1 / sum of exponentials in float32; at most 2/C of the logits), nothing of the logits' size more (the
    # reference path keeps the softmax).
    logits = torch.randn(2, 5, 40, 40, requires_grad=True)
    labels = torch.randint(0, 5, (2, 40, 40))
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = tversky_loss(logits, labels)
    large = [t for t in saved if t.numel() >= labels.numel()]
    assert sum(t.untyped_storage().nbytes() for t in {t.untyped_storage().data_ptr(): t for t in large}.values()) <= (
        logits.numel() * 4 + labels.numel() * 8 + labels.numel() * 8
    )
    assert any(t.data_ptr() == logits.data_ptr() for t in large)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        region_statistics(activate(logits, "softmax"), labels)
    assert sum(t.numel() for t in saved if t.numel() >= logits.numel()) >= logits.numel()  # the reference keeps more
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_backward_twice_with_retain_graph():
    logits = torch.randn(2, 3, 500, requires_grad=True)
    labels = torch.randint(0, 3, (2, 500))
    loss = tversky_loss(logits, labels)
    (first,) = torch.autograd.grad(loss, logits, retain_graph=True)
    (second,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_empty_mask_gives_zero_and_finite_gradient():
    logits = torch.randn(2, 3, 300, requires_grad=True)
    labels = torch.randint(0, 3, (2, 300))
    loss = tversky_loss(logits, labels, mask=torch.zeros(2, 300, dtype=torch.bool), active_classes="present")
    assert loss.item() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() == 0


def test_fallbacks_take_the_reference_path(monkeypatch):
    calls = []
    monkeypatch.setattr(
        dispatch, "_reference_statistics",
        lambda *args, **kwargs: calls.append(kwargs["activation"]) or (region_statistics(args[0], args[1]), None),
    )
    probs = torch.rand(1, 2, 10)
    labels = torch.randint(0, 2, (1, 10))
    logit_statistics(probs, labels, activation="none")
    soft = torch.rand(1, 2, 10, requires_grad=True)  # a target that needs a gradient (distillation)
    logit_statistics(probs, soft, activation="softmax")
    logit_statistics(probs, labels, activation="softmax", mask=torch.ones(1, 2, 10, dtype=torch.bool))
    assert calls == ["none", "softmax", "softmax"]
    logit_statistics(probs, labels, activation="softmax")
    assert len(calls) == 3  # the common case is fused


@pytest.mark.parametrize("kind", ["index_ignore", "dense_class_mask", "dense_pixel_mask"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("norm", [1, 2])
def test_double_backward_equals_reference_path(monkeypatch, kind, activation, norm):
    # create_graph=True through the fused operator (issue #14, item 8): the gradient is differentiable again,
    # and its derivative (a gradient penalty's) equals the reference path's.
    logits = torch.randn(2, 3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(20)) * 2
    target, options = _targets(kind, 2, 3, (40,), seed=21)
    coefs = torch.randn(4, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(22))

    def penalty(fused):
        monkeypatch.setattr(dispatch, "_fused_path_applies", lambda *args, **kwargs: fused)
        z = logits.clone().requires_grad_()
        stats, ce = fused_statistics(z, target, activation=activation, norm=norm, cross_entropy=True, **options)
        # a smooth function of the sums, so the second derivative is not zero
        value = (coefs[0] * stats.tp.square() + coefs[1] * stats.fp * stats.fn + coefs[2] * stats.fn + coefs[3] * ce).sum()
        (grad,) = torch.autograd.grad(value, z, create_graph=True)
        (grad.square().sum() + (grad * z).sum()).backward()
        return grad.detach(), z.grad

    fused_grad, fused_second = penalty(True)
    reference_grad, reference_second = penalty(False)
    torch.testing.assert_close(fused_grad, reference_grad)
    torch.testing.assert_close(fused_second, reference_second)
    assert fused_second.abs().sum() > 0


@pytest.mark.parametrize("kind", ["index_ignore", "dense"])
def test_gradgradcheck_fused_operator(kind):
    logits = torch.randn(2, 3, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(23), requires_grad=True)
    target, options = _targets(kind, 2, 3, (12,), seed=24)

    def combined(z):
        stats, ce = fused_statistics(z, target, cross_entropy=True, **options)
        return stats.tp.square().sum() - (stats.fp * stats.fn).sum() + ce.sum()

    assert torch.autograd.gradgradcheck(combined, (logits,))


def test_double_backward_of_the_losses_equals_reference(monkeypatch):
    logits = torch.randn(2, 3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(25))
    labels = torch.randint(0, 3, (2, 5, 6), generator=torch.Generator().manual_seed(26))
    results = []
    for fused in (True, False):
        monkeypatch.setattr(dispatch, "_fused_path_applies", lambda *args, fused=fused, **kwargs: fused)
        z = logits.clone().requires_grad_()
        loss = dice_ce_loss(z, labels, ignore_index=2, aggregation="image") + tversky_loss(z, labels, gamma=2.0)
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)
        grad.square().sum().backward()
        results.append(z.grad)
    torch.testing.assert_close(results[0], results[1])


def test_softmax_single_channel_is_rejected():
    with pytest.raises(ValueError, match="activation='softmax' needs at least 2 channels"):
        logit_statistics(torch.randn(1, 1, 5), torch.randint(0, 2, (1, 5)))


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"cross_entropy": 1}, TypeError, "cross_entropy must be a bool; got int"),
        ({"norm": 3}, ValueError, "norm must be 1 or 2; got 3"),
        ({"activation": "relu"}, ValueError, "activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"),
        ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int or None; got float"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        fused_statistics(torch.randn(1, 2, 5), torch.randint(0, 2, (1, 5)), **options)


def test_bad_targets():
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 1\]"):
        fused_statistics(torch.randn(1, 2, 5), torch.tensor([[0, 1, 3, 0, 1]]))
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        fused_statistics(torch.randn(1, 2, 5), torch.full((1, 2, 5), 1.5))
    with pytest.raises(ValueError, match="ignore_index applies to index targets only"):
        fused_statistics(torch.randn(1, 2, 5), torch.rand(1, 2, 5), ignore_index=0)


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("kind", ["index_ignore", "dense_class_mask"])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_worker_threads_equal_reference(two_threads, kind, activation):
    # The conftest runs one torch thread; here the blocks are split over two worker threads.
    logits = torch.randn(2, 3, 8, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    target, options = _targets(kind, 2, 3, (8, 50))
    assert len(fused_module._block_ranges(2, 3, 400, device=torch.device("cpu"))) > 2
    _compare(logits, target, activation, 1, options)
    _, ce = fused_statistics(logits, target, activation=activation, cross_entropy=True, **options)
    assert torch.isfinite(ce).all()


def test_worker_threads_survive_fork(two_threads):
    import multiprocessing

    logits = torch.randn(2, 3, 400)
    labels = torch.randint(0, 3, (2, 400))
    expected = tversky_loss(logits, labels)  # starts the worker pool in this process
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        value = pool.apply_async(tversky_loss, (logits, labels)).get(timeout=60)
    torch.testing.assert_close(value, expected)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("kind", ["index", "index_ignore", "index_mask"])
def test_sigmoid_index_gradcheck_without_cross_entropy(channels, norm, kind):
    # The closed-form sigmoid + index kernel (no cross-entropy): C = 1 (0/1 labels) and C > 1 (gather/scatter).
    logits = torch.randn(2, channels, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(13))
    logits.requires_grad_()
    target, options = _targets(kind, 2, channels, (25,), seed=14)
    coefs = torch.randn(3, 2, channels, dtype=torch.float64, generator=torch.Generator().manual_seed(15))

    def combined(z):
        stats, _ = fused_statistics(z, target, activation="sigmoid", norm=norm, **options)
        return (coefs[0] * stats.tp + coefs[1] * stats.fp + coefs[2] * stats.fn).sum()

    assert torch.autograd.gradcheck(combined, (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
def test_sigmoid_index_half_precision(dtype, channels):
    logits = torch.randn(2, channels, 4000, generator=torch.Generator().manual_seed(16))
    target, options = _targets("index_ignore", 2, channels, (4000,))
    half = logits.to(dtype).requires_grad_()
    stats = logit_statistics(half, target, activation="sigmoid", **options)
    assert stats.tp.dtype == torch.float32
    exact_in = half.detach().float().requires_grad_()
    exact = _reference_statistics(exact_in, target, "sigmoid", **options)
    torch.testing.assert_close(stats.tp, exact.tp, rtol=1e-5, atol=1e-3)
    (stats.tp.sum() - stats.fp.sum() + 0.5 * stats.fn.sum()).backward()
    (exact.tp.sum() - exact.fp.sum() + 0.5 * exact.fn.sum()).backward()
    assert half.grad.dtype == dtype
    torch.testing.assert_close(half.grad.float(), exact_in.grad, rtol=2e-2, atol=2e-3)


def test_sigmoid_binary_bad_label():
    with pytest.raises(ValueError, match=r"target holds class index 2; expected indices in \[0, 1\]"):
        fused_statistics(torch.randn(1, 1, 5), torch.tensor([[0, 1, 2, 0, 1]]), activation="sigmoid")
    with pytest.raises(ValueError, match=r"target holds class index -1"):
        fused_statistics(torch.randn(1, 1, 5), torch.tensor([[0, 1, -1, 0, 1]]), activation="sigmoid", ignore_index=255)


def test_sigmoid_binary_label_range_is_checked_on_the_forward_blocks():
    # The binary sigmoid blocks check the labels' range on the blocks they convert anyway (no separate
    # pass): a bad label in the last block is found; ignored or masked-out pixels may hold anything.
    logits = torch.randn(2, 1, 300)
    labels = torch.randint(0, 2, (2, 300), generator=torch.Generator().manual_seed(3))
    labels[1, 290] = 3
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 1\]"):
        fused_statistics(logits, labels, activation="sigmoid")
    ignored, _ = fused_statistics(logits, labels.masked_fill(labels == 3, 255), activation="sigmoid", ignore_index=255)
    masked, _ = fused_statistics(logits, labels, activation="sigmoid", mask=labels != 3)
    expected = region_statistics(logits.sigmoid(), labels.clamp_max(1), mask=labels != 3)
    for value in (ignored, masked):
        torch.testing.assert_close(value.tp, expected.tp)
        torch.testing.assert_close(value.fn, expected.fn)
    with set_value_checks(False):  # unchecked: no error, the label counts as its value
        unchecked, _ = fused_statistics(logits, labels, activation="sigmoid")
    assert torch.isfinite(unchecked.tp).all()


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # the blocks, the native kernels
def test_dense_target_range_is_checked_on_the_forward_pass(activation, dtype):
    # The forward pass takes the target's (min, max) while it reads it; the [0, 1] check sees every counted
    # entry, in any block, and NaN; an excluded entry is never read (anything may stand there); checks off: no error.
    target = torch.rand(2, 3, 300, generator=torch.Generator().manual_seed(4), dtype=dtype)
    mask = torch.rand(2, 1, 300, generator=torch.Generator().manual_seed(5)) > 0.5
    mask[1, 0, 290] = True
    logits = torch.randn(2, 3, 300, dtype=dtype)
    for value, message in ((1.25, r"found values in \[0.\d+, 1.25\]"), (-0.5, r"found values in \[-0.5, "),
                           (math.nan, "found NaN")):
        bad = target.clone()
        bad[1, 2, 290] = value
        for options in ({}, {"mask": mask}):
            with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]; " + message):
                fused_statistics(logits, bad, activation=activation, **options)
            with set_value_checks(False):
                fused_statistics(logits, bad, activation=activation, **options)
        excluded = mask.clone()
        excluded[1, 0, 290] = False  # the bad entry left out: no error, the statistics of a valid value there
        stats, _ = fused_statistics(logits, bad, activation=activation, mask=excluded)
        clean, _ = fused_statistics(logits, target, activation=activation, mask=excluded)
        for a, b in zip(stats, clean):
            torch.testing.assert_close(a, b)
