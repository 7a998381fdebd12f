"""Excluded pixels are selected out, never multiplied by zero (issue #14, item 1).

A NaN, +inf or -inf logit (or probability) at a pixel left out by ``ignore_index`` or ``mask`` must change
nothing: on every path (the reference path, the fused CPU blocks, the cross-entropy sums, the losses and the
compound losses) the value and the gradient equal those computed on the kept pixels alone, and the excluded
pixels get exactly zero gradient. The Triton kernels have the same test in test_triton.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import softseg.kernels.fused as fused_module
from softseg import dice_ce_loss, dice_loss, region_ce_loss, region_statistics, tversky_loss
from softseg.kernels import fused_statistics
from softseg.statistics import product_statistics

POISON = (float("nan"), float("inf"), -float("inf"))
SETTINGS = ["index_ignore", "index_mask", "dense_pixel_mask"]


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # Several blocks per image, so a poisoned pixel shares its block (max, sums) with kept pixels.
    monkeypatch.setattr(fused_module, "BLOCK_ELEMENTS", 64)
    monkeypatch.setattr(fused_module, "MIN_BLOCK_PIXELS", 7)


def problem(setting: str, channels: int = 3, pixels: int = 60, seed: int = 0, dtype=torch.float64):
    """(logits with poison at excluded pixels, target, options, keep (B, N) bool) for one exclusion setting.

    The poison cycles through NaN, +inf and -inf, in one class or in all classes of the pixel.
    """
    gen = torch.Generator().manual_seed(seed)
    batch = 2
    logits = torch.randn(batch, channels, pixels, generator=gen, dtype=dtype) * 2
    keep = torch.rand(batch, pixels, generator=gen) > 0.3
    keep[:, :2] = True  # every image keeps pixels
    classes = max(channels, 2)
    if setting.startswith("index"):
        target = torch.randint(0, classes, (batch, pixels), generator=gen)
        if setting == "index_ignore":
            target = target.masked_fill(~keep, 255)
            options = {"ignore_index": 255}
        else:
            options = {"mask": keep}
    else:
        target = torch.rand(batch, channels, pixels, generator=gen, dtype=dtype)
        options = {"mask": keep.unsqueeze(1)}
    for k, (b, n) in enumerate((~keep).nonzero().tolist()):
        value = POISON[k % 3]
        if k % 2:
            logits[b, :, n] = value
        else:
            logits[b, k % channels, n] = value
    return logits, target, options, keep


def kept_only(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor, b: int):
    """Image b's kept pixels alone, as a batch of one: (1, C, n) logits and the matching target."""
    sub = logits[b : b + 1, :, keep[b]]
    sub_target = target[b : b + 1, keep[b]] if target.ndim == 2 else target[b : b + 1, :, keep[b]]
    return sub, sub_target


def kept_cross_entropy(z: torch.Tensor, y: torch.Tensor, activation: str) -> torch.Tensor:
    """(1, C) cross-entropy sums of all pixels of z, written out: softmax -sum y log p, sigmoid binary CE."""
    channels = z.shape[1]
    if not y.is_floating_point():
        y = (y.unsqueeze(1) == 1).to(z.dtype) if channels == 1 else F.one_hot(y, channels).movedim(-1, 1).to(z.dtype)
    if activation == "softmax":
        return -(y * z.log_softmax(1)).sum(-1)
    return F.binary_cross_entropy_with_logits(z, y, reduction="none").sum(-1)


def assert_equals_kept_only(logits, target, options, keep, compute, reference, **tolerance):
    """``compute`` on the poisoned logits against ``reference`` on each image's kept pixels alone: every output
    (B, C) and the gradient of a random mix of them; excluded pixels get exactly zero gradient."""
    poisoned = logits.clone().requires_grad_()
    outputs = compute(poisoned, target, options)
    pieces = []
    for b in range(logits.shape[0]):
        sub, sub_target = kept_only(logits, target, keep, b)
        sub = sub.detach().clone().requires_grad_()
        pieces.append((sub, reference(sub, sub_target)))
    expected = [torch.cat([piece[1][k] for piece in pieces]) for k in range(len(outputs))]
    for k, (value, wanted) in enumerate(zip(outputs, expected)):
        assert torch.isfinite(value).all(), f"output {k} is not finite"
        torch.testing.assert_close(value, wanted, msg=f"output {k} differs", **tolerance)
    gen = torch.Generator().manual_seed(3)
    coefs = [torch.randn(value.shape, generator=gen, dtype=value.dtype) for value in expected]
    sum((c * v).sum() for c, v in zip(coefs, outputs)).backward()
    for b, (sub, values) in enumerate(pieces):
        sum((c[b : b + 1] * v).sum() for c, v in zip(coefs, values)).backward()
        torch.testing.assert_close(poisoned.grad[b][:, keep[b]], sub.grad[0], **tolerance)
    assert bool((poisoned.grad.transpose(1, 2)[~keep] == 0).all()), "an excluded pixel has a gradient"


def reference_statistics(activation, norm, with_ce):
    def reference(sub, sub_target):
        probs = sub.softmax(1) if activation == "softmax" else sub.sigmoid()
        stats = region_statistics(probs, sub_target, norm=norm)
        return [*stats[:3], kept_cross_entropy(sub, sub_target, activation)] if with_ce else list(stats[:3])

    return reference


def fused_outputs(activation, norm, with_ce):
    def compute(z, target, options):
        stats, ce = fused_statistics(z, target, activation=activation, norm=norm, cross_entropy=with_ce, **options)
        return [*stats[:3], ce] if with_ce else list(stats[:3])

    return compute


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("with_ce", [False, True])
def test_fused_blocks_equal_kept_pixels_only(setting, activation, norm, with_ce):
    logits, target, options, keep = problem(setting)
    mask = options.get("mask")
    assert fused_module._fused_path_applies(logits, target, activation=activation, kind=setting.split("_")[0],
                                            mask=None if mask is None else mask.reshape(2, -1, 60))
    assert_equals_kept_only(logits, target, options, keep, fused_outputs(activation, norm, with_ce),
                            reference_statistics(activation, norm, with_ce))


@pytest.mark.parametrize("setting", ["index_ignore", "index_mask"])
@pytest.mark.parametrize("norm", [1, 2])
def test_fused_binary_sigmoid_equals_kept_pixels_only(setting, norm):
    # C = 1 with 0/1 labels: the closed-form sigmoid kernel (no CE) and the dense blocks (with CE).
    logits, target, options, keep = problem(setting, channels=1, pixels=90)
    for with_ce in (False, True):
        assert_equals_kept_only(logits, target, options, keep, fused_outputs("sigmoid", norm, with_ce),
                                reference_statistics("sigmoid", norm, with_ce))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("with_ce", [False, True])
def test_reference_path_equals_kept_pixels_only(monkeypatch, setting, activation, with_ce):
    monkeypatch.setattr(fused_module, "_fused_path_applies", lambda *args, **kwargs: False)
    logits, target, options, keep = problem(setting)
    assert_equals_kept_only(logits, target, options, keep, fused_outputs(activation, 1, with_ce),
                            reference_statistics(activation, 1, with_ce))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("norm", [1, 2])
def test_region_statistics_of_probabilities_equal_kept_pixels_only(setting, norm):
    # The probabilities API (activation="none", metrics): NaN and inf probabilities at excluded pixels.
    logits, target, options, keep = problem(setting)
    probs = logits.sigmoid()  # poison stays: sigmoid(nan) = nan; sigmoid(+-inf) = 1, 0, so put NaN back there
    probs.transpose(1, 2)[~keep] = float("nan")

    def compute(x, y, opts):
        return list(region_statistics(x, y, norm=norm, **opts)[:3])

    def reference(sub, sub_target):
        return list(region_statistics(sub, sub_target, norm=norm)[:3])

    assert_equals_kept_only(probs, target, options, keep, compute, reference)
    # and through the loss with activation="none" (its [0, 1] check looks at counted pixels only)
    value = dice_loss(probs, target, activation="none", **options)
    kept = torch.cat([region_statistics(*kept_only(probs, target, keep, b)).tp for b in range(2)])
    assert torch.isfinite(value) and torch.isfinite(kept).all()


def test_region_statistics_per_class_mask_equals_finite_values():
    # A per-class mask excludes (pixel, class) entries: their values, NaN or inf, change nothing.
    gen = torch.Generator().manual_seed(4)
    probs = torch.rand(2, 3, 50, generator=gen, dtype=torch.float64)
    target = torch.rand(2, 3, 50, generator=gen, dtype=torch.float64)
    mask = torch.rand(2, 3, 50, generator=gen) > 0.4
    labels = torch.randint(0, 3, (2, 50), generator=gen)
    poisoned = probs.masked_fill(~mask, float("nan"))
    clean = probs.masked_fill(~mask, 0.3)
    for y in (target, labels):
        for norm in (1, 2):
            x_poison, x_clean = poisoned.clone().requires_grad_(), clean.clone().requires_grad_()
            got = region_statistics(x_poison, y, norm=norm, mask=mask)
            want = region_statistics(x_clean, y, norm=norm, mask=mask)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b)
            (got.tp.sum() + 2 * got.fp.sum() - got.fn.sum()).backward()
            (want.tp.sum() + 2 * want.fp.sum() - want.fn.sum()).backward()
            torch.testing.assert_close(x_poison.grad, x_clean.grad)
            assert bool((x_poison.grad[~mask] == 0).all())


def test_product_statistics_mask_selects():
    gen = torch.Generator().manual_seed(5)
    probs = torch.rand(2, 3, 40, generator=gen, dtype=torch.float64)
    target = torch.rand(2, 3, 40, generator=gen, dtype=torch.float64)
    keep = torch.rand(2, 40, generator=gen) > 0.3
    poisoned = probs.clone()
    poisoned.transpose(1, 2)[~keep] = float("inf")
    x = poisoned.requires_grad_()
    stats = product_statistics(x, target, mask=keep)
    for b in range(2):
        sub = product_statistics(probs[b : b + 1, :, keep[b]], target[b : b + 1, :, keep[b]])
        for a, expected in zip(stats, sub):
            torch.testing.assert_close(a[b : b + 1], expected)
    (stats.tp.sum() + stats.fp.sum() * 2).backward()
    assert bool((x.grad.transpose(1, 2)[~keep] == 0).all()) and torch.isfinite(x.grad).all()


def test_per_class_mask_with_softmax_poison_at_fully_excluded_pixels(monkeypatch):
    # Softmax couples a pixel's classes, so a pixel leaves the activation where no class of it counts:
    # poison there changes nothing (fused blocks and reference path alike).
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 3, 70, generator=gen, dtype=torch.float64)
    target = torch.rand(2, 3, 70, generator=gen, dtype=torch.float64)
    mask = torch.rand(2, 3, 70, generator=gen) > 0.4
    mask[:, :, ::5] = False  # whole pixels out
    clean = logits.clone()
    for k, n in enumerate(range(0, 70, 5)):
        logits[:, k % 3, n] = POISON[k % 3]
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(fused_module, "_fused_path_applies", lambda *args, **kwargs: False)
        x_poison, x_clean = logits.clone().requires_grad_(), clean.clone().requires_grad_()
        got, got_ce = fused_statistics(x_poison, target, mask=mask, cross_entropy=True)
        want, want_ce = fused_statistics(x_clean, target, mask=mask, cross_entropy=True)
        for a, b in zip([*got[:3], got_ce], [*want[:3], want_ce]):
            torch.testing.assert_close(a, b)
        (got.tp.sum() - got.fp.sum() + got_ce.sum()).backward()
        (want.tp.sum() - want.fp.sum() + want_ce.sum()).backward()
        torch.testing.assert_close(x_poison.grad[:, :, 1::5], x_clean.grad[:, :, 1::5])
        assert bool((x_poison.grad[:, :, ::5] == 0).all())


LOSSES = [
    ("dice", lambda z, y, **o: dice_loss(z, y, **o)),
    ("tversky_image", lambda z, y, **o: tversky_loss(z, y, alpha=0.3, beta=0.7, aggregation="image", **o)),
    ("dice_class_present", lambda z, y, **o: dice_loss(z, y, aggregation="class", active_classes="present", **o)),
    ("dice_ce", lambda z, y, **o: dice_ce_loss(z, y, **o)),
    ("jaccard_ce", lambda z, y, **o: region_ce_loss(z, y, region="jaccard", lambda_ce=0.5, **o)),
]


@pytest.mark.parametrize(("name", "loss"), LOSSES, ids=[name for name, _ in LOSSES])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_losses_equal_finite_values_at_excluded_pixels(name, loss, setting, activation):
    # The whole loss (region term, aggregation, cross-entropy mean) on poisoned logits equals the loss on
    # the same logits with finite values there; with global aggregation also the loss of the kept pixels
    # alone, pooled into one image.
    logits, target, options, keep = problem(setting)
    clean = logits.clone()
    clean.transpose(1, 2)[~keep] = 0.5
    x_poison, x_clean = logits.clone().requires_grad_(), clean.requires_grad_()
    got = loss(x_poison, target, activation=activation, **options)
    want = loss(x_clean, target, activation=activation, **options)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    torch.testing.assert_close(x_poison.grad, x_clean.grad)
    assert bool((x_poison.grad.transpose(1, 2)[~keep] == 0).all())
    if name in ("dice", "dice_ce"):
        pooled_z = torch.cat([kept_only(logits, target, keep, b)[0] for b in range(2)], dim=2)
        pooled_y = torch.cat([kept_only(logits, target, keep, b)[1] for b in range(2)], dim=-1)
        torch.testing.assert_close(got, loss(pooled_z, pooled_y, activation=activation))


@pytest.mark.parametrize("poison", POISON)
def test_dice_ce_ignore_index_matches_cross_entropy_and_kept_dice(poison):
    # The example: F.cross_entropy(ignore_index=...) stays finite at a poisoned ignored pixel; so
    # does dice_ce_loss, and it equals Dice on the kept pixels + F.cross_entropy.
    logits = torch.randn(1, 4, 5, 6, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(0, 4, (1, 5, 6), generator=torch.Generator().manual_seed(8))
    labels[0, 2, 3] = 255
    logits[0, :, 2, 3] = poison
    x = logits.clone().requires_grad_()
    value = dice_ce_loss(x, labels, ignore_index=255)
    kept = (labels != 255).reshape(-1)
    flat_z, flat_y = logits.reshape(1, 4, -1)[:, :, kept], labels.reshape(1, -1)[:, kept]
    expected = dice_loss(flat_z, flat_y) + F.cross_entropy(flat_z, flat_y)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert torch.isfinite(x.grad).all() and bool((x.grad[0, :, 2, 3] == 0).all())
