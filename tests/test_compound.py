"""Region + cross-entropy compound losses: equal to the sum of their parts (softseg region loss + torch's
cross-entropy), on every target kind and ignore setting; MONAI's DiceCELoss on hard labels; options and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import softseg.dispatch as dispatch
from softseg import dice_loss, jaccard_loss, tversky_loss
from softseg.losses.compound import DiceCELoss, RegionCELoss, dice_ce_loss, region_ce_loss


def _pair(seed=0, shape=(2, 4, 6, 7)):
    logits = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * 2
    return logits.clone().requires_grad_(), logits.clone().requires_grad_()


def _assert_same(fast_in, fast, ref_in, ref):
    torch.testing.assert_close(fast, ref, atol=1e-12, rtol=1e-10)
    fast.backward()
    ref.backward()
    torch.testing.assert_close(fast_in.grad, ref_in.grad, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("aggregation", ["global", "image", "class"])
def test_dice_ce_index_with_ignore_equals_sum_of_parts(aggregation):
    fast_in, ref_in = _pair()
    labels = torch.randint(0, 5, (2, 6, 7), generator=torch.Generator().manual_seed(1)).masked_fill_(
        torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(2)) < 0.2, 255
    )
    labels[labels == 4] = 3
    fast = dice_ce_loss(fast_in, labels, ignore_index=255, aggregation=aggregation, lambda_region=0.7, lambda_ce=0.4)
    ref = 0.7 * dice_loss(ref_in, labels, ignore_index=255, aggregation=aggregation) + 0.4 * F.cross_entropy(
        ref_in, labels, ignore_index=255
    )
    _assert_same(fast_in, fast, ref_in, ref)


def test_dice_ce_soft_target_uses_probability_cross_entropy():
    fast_in, ref_in = _pair(3)
    soft = torch.rand(2, 4, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).softmax(1)
    fast = dice_ce_loss(fast_in, soft)
    ref = dice_loss(ref_in, soft) + F.cross_entropy(ref_in, soft)
    _assert_same(fast_in, fast, ref_in, ref)


def test_dice_ce_soft_target_with_pixel_mask():
    fast_in, ref_in = _pair(5)
    soft = torch.rand(2, 4, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).softmax(1)
    mask = torch.rand(2, 6, 7, generator=torch.Generator().manual_seed(7)) > 0.4
    fast = dice_ce_loss(fast_in, soft, mask=mask)
    per_pixel = F.cross_entropy(ref_in, soft, reduction="none")
    ref = dice_loss(ref_in, soft, mask=mask) + per_pixel[mask].sum() / mask.sum()
    _assert_same(fast_in, fast, ref_in, ref)


@pytest.mark.parametrize("kind", ["binary_index", "dense_class_mask"])
def test_sigmoid_uses_binary_cross_entropy(kind):
    if kind == "binary_index":
        fast_in, ref_in = _pair(8, (3, 1, 5, 9))
        target = torch.randint(0, 2, (3, 5, 9), generator=torch.Generator().manual_seed(9))
        mask = None
        dense = target.unsqueeze(1).double()
    else:
        fast_in, ref_in = _pair(8, (3, 3, 5, 9))
        target = torch.rand(3, 3, 5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        mask = torch.rand(3, 3, 5, 9, generator=torch.Generator().manual_seed(10)) > 0.3
        dense = target
    fast = region_ce_loss(fast_in, target, region="jaccard", activation="sigmoid", mask=mask)
    bce = F.binary_cross_entropy_with_logits(ref_in, dense, reduction="none")
    bce = bce.mean() if mask is None else bce[mask].sum() / mask.sum()
    ref = jaccard_loss(ref_in, target, activation="sigmoid", mask=mask) + bce
    _assert_same(fast_in, fast, ref_in, ref)


def test_tversky_variant_and_region_options_pass_through():
    fast_in, ref_in = _pair(11)
    labels = torch.randint(0, 4, (2, 6, 7), generator=torch.Generator().manual_seed(12))
    options = dict(smooth=0.5, norm=2, gamma=1.5, log_loss=False, weight=[1.0, 0.5, 2.0],
                   include_background=False, active_classes="present")
    fast = region_ce_loss(fast_in, labels, region="tversky", alpha=0.2, beta=0.8, **options)
    ref = tversky_loss(ref_in, labels, alpha=0.2, beta=0.8, **options) + F.cross_entropy(ref_in, labels)
    _assert_same(fast_in, fast, ref_in, ref)


def test_activation_none_cross_entropy_of_probabilities():
    probs = torch.rand(2, 3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(13)).softmax(1)
    labels = torch.randint(0, 3, (2, 20), generator=torch.Generator().manual_seed(14))
    value = dice_ce_loss(probs, labels, activation="none")
    expected = dice_loss(probs, labels, activation="none") + F.nll_loss(probs.log(), labels)
    torch.testing.assert_close(value, expected)


def test_fallback_path_equals_fused_path(monkeypatch):
    logits = torch.randn(2, 3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(15))
    labels = torch.randint(0, 4, (2, 50), generator=torch.Generator().manual_seed(16))
    fused_in, plain_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    fused = dice_ce_loss(fused_in, labels, ignore_index=3)
    monkeypatch.setattr(dispatch, "_fused_path_applies", lambda *args, **kwargs: False)
    plain = dice_ce_loss(plain_in, labels, ignore_index=3)
    _assert_same(fused_in, fused, plain_in, plain)


def test_focal_variant_adds_the_focal_loss():
    from softseg.losses.focal import focal_loss

    logits = torch.randn(2, 3, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(17))
    labels = torch.randint(0, 3, (2, 30), generator=torch.Generator().manual_seed(18))
    value = region_ce_loss(logits, labels, ce="focal", focal_gamma=2.0, lambda_ce=2.0)
    expected = dice_loss(logits, labels) + 2.0 * focal_loss(logits, labels, gamma=2.0)
    torch.testing.assert_close(value, expected.to(value.dtype))


def test_hand_computed_value():
    # p = 1/2 everywhere: per-class Dice |x - y| / (|x| + |y|) = 2 / 4, CE = log 2.
    value = dice_ce_loss(torch.zeros(1, 2, 4), torch.tensor([[0, 0, 1, 1]]))
    assert value.item() == pytest.approx(0.5 + torch.log(torch.tensor(2.0)).item(), abs=1e-6)


def test_zero_at_a_soft_target_up_to_its_entropy():
    # The region term vanishes at the target; the CE term is then the target's entropy.
    soft = torch.rand(2, 3, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(19)).softmax(1)
    value = dice_ce_loss(soft.log(), soft)
    entropy = -(soft * soft.log()).sum(1).mean()
    torch.testing.assert_close(value, entropy)


def test_nothing_counted_gives_zero_not_nan():
    logits = torch.randn(2, 3, 10, requires_grad=True)
    labels = torch.full((2, 10), 255)
    loss = dice_ce_loss(logits, labels, ignore_index=255, active_classes="present")
    assert loss.item() == 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_matches_monai_dice_ce_on_hard_labels():
    monai_losses = pytest.importorskip("monai.losses")
    logits = torch.randn(2, 3, 8, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(20))
    labels = torch.randint(0, 3, (2, 8, 9), generator=torch.Generator().manual_seed(21))
    monai = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=0.0, smooth_dr=0.0)
    expected = monai(logits, labels.unsqueeze(1))
    # MONAI's default: one Dice per (image, class), mean over all of them = image aggregation, all classes.
    torch.testing.assert_close(dice_ce_loss(logits, labels, aggregation="image"), expected)


def test_module_equals_function_and_weight_is_a_buffer():
    logits = torch.randn(2, 3, 20)
    labels = torch.randint(0, 3, (2, 20))
    module = DiceCELoss(weight=[1.0, 2.0, 3.0], lambda_ce=0.5)
    assert "weight" in dict(module.named_buffers())
    torch.testing.assert_close(module(logits, labels), dice_ce_loss(logits, labels, weight=[1.0, 2.0, 3.0], lambda_ce=0.5))
    generic = RegionCELoss(region="tversky", alpha=0.4, beta=0.6)
    torch.testing.assert_close(
        generic(logits, labels), region_ce_loss(logits, labels, region="tversky", alpha=0.4, beta=0.6)
    )
    assert "region='tversky'" in repr(generic)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dice_ce_loss(torch.randn(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), alpha=0.3), TypeError,
         r"dice_ce_loss\(\) got an unexpected keyword argument 'alpha'; dice_ce_loss fixes the region term to Dice"),
        (lambda: region_ce_loss(torch.randn(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), region="iou"), ValueError,
         "region must be one of 'dice', 'jaccard', 'tversky'; got 'iou'"),
        (lambda: region_ce_loss(torch.randn(1, 2, 3), torch.zeros(1, 3, dtype=torch.long), region="jaccard", beta=2.0),
         TypeError, "region='jaccard' fixes alpha and beta; got beta"),
        (lambda: RegionCELoss(lambda_ce=-1.0), ValueError, "lambda_ce must be >= 0.0; got -1.0"),
        (lambda: RegionCELoss(ce="bce"), ValueError, "ce must be one of 'cross_entropy', 'focal'; got 'bce'"),
        (lambda: RegionCELoss(focal_alpha=1.5), ValueError, r"focal_alpha must be None or in \[0, 1\]; got 1.5"),
        (lambda: DiceCELoss(region="jaccard"), TypeError,
         r"DiceCELoss\(\) got an unexpected keyword argument 'region'; DiceCELoss fixes the region term to Dice"),
        (lambda: dice_ce_loss(torch.randn(1, 2, 3), torch.rand(1, 2, 3), mask=torch.ones(1, 2, 3, dtype=torch.bool)),
         ValueError, r"the softmax cross-entropy is one term per pixel, so mask must be \(B, \*spatial\)"),
        (lambda: dice_ce_loss(torch.randn(1, 2, 3), torch.rand(1, 3)), TypeError,
         "target has the shape of class indices"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()
