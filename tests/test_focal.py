"""Native focal loss: hand values, limiting cases (cross entropy, KL divergence), references on hard labels
(the classic form, the formula of torchvision.ops.sigmoid_focal_loss, MONAI), minimised at every soft target,
index == one-hot, masks (non-finite logits at excluded pixels), gradients and bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from softseg.losses.compound import DiceCELoss, region_ce_loss
from softseg.losses.focal import FocalLoss, focal_loss
from softseg.losses.region import dice_loss


def torchvision_sigmoid_focal(logits, target, gamma, alpha):
    # The documented formula of torchvision.ops.sigmoid_focal_loss (torchvision does not import here).
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss


def one_hot(labels, channels):
    return F.one_hot(labels, channels).movedim(-1, 1).double()


def classic_softmax_focal(logits, labels, gamma, weight=None):
    # Lin et al.: -w_t (1 - p_t)^gamma log p_t per pixel, written out with the label's probability.
    log_pt = logits.log_softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    return loss if weight is None else loss * weight[labels]


def kl_divergence(logits, soft):
    # KL(y || softmax(logits)) per pixel, written out: sum_c y_c (log y_c - log p_c), 0 log 0 = 0.
    return (torch.xlogy(soft, soft) - soft * logits.log_softmax(1)).sum(1)


seeds = st.integers(0, 2**31 - 1)


# ---- hand-computed values -------------------------------------------------------------------------


def test_softmax_hand_value():
    # p = softmax(2, 0) = (0.8808, 0.1192); label 1: -(1 - 0.1192)^2 log 0.1192
    logits = torch.tensor([[[2.0], [0.0]]])
    p1 = 1 / (1 + math.e**2)
    expected = -((1 - p1) ** 2) * math.log(p1)
    assert focal_loss(logits, torch.tensor([[1]])).item() == pytest.approx(expected, rel=1e-6)
    assert focal_loss(logits, torch.tensor([[1]]), gamma=0.5).item() == pytest.approx(
        -((1 - p1) ** 0.5) * math.log(p1), rel=1e-6
    )


def test_soft_target_hand_value():
    # y = (0.3, 0.7), p = (0.5, 0.5): D = 0.3 log 0.6 + 0.7 log 1.4 = 0.082283, loss (1 - e^-D)^2 D
    divergence = 0.3 * math.log(0.6) + 0.7 * math.log(1.4)
    expected = (1 - math.exp(-divergence)) ** 2 * divergence
    loss = focal_loss(torch.zeros(1, 2, 1), torch.tensor([[[0.3], [0.7]]]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # At the target itself: 0 (the classwise form gives 0.25 log 2 here).
    assert focal_loss(torch.zeros(1, 2, 1), torch.tensor([[[0.5], [0.5]]])).item() == 0
    # Sigmoid, x = 0 (p = 1/2), y = 0.2: binary KL = 0.2 log 0.4 + 0.8 log 1.6, alpha_t = 0.25 * 0.2 + 0.75 * 0.8
    divergence = 0.2 * math.log(0.4) + 0.8 * math.log(1.6)
    expected = 0.65 * (1 - math.exp(-divergence)) ** 2 * divergence
    loss = focal_loss(torch.zeros(1, 1, 1), torch.full((1, 1, 1), 0.2), activation="sigmoid", alpha=0.25)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_unnormalised_soft_target_is_scored_against_its_cross_entropy_minimiser():
    # y = (0.2, 0.2) sums to 0.4: -sum y log p is minimised at p = y / 0.4 = (1/2, 1/2), where D = 0.
    logits = torch.zeros(1, 2, 1)
    assert focal_loss(logits, torch.tensor([[[0.2], [0.2]]])).item() == 0
    assert focal_loss(logits, torch.zeros(1, 2, 1)).item() == 0        # an all-zero vector: nothing to match
    # Elsewhere D = sum y log(y / (s p)) = 0.4 KL((1/2, 1/2) || p).
    shifted = torch.tensor([[[1.0], [0.0]]])
    p = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    divergence = 0.4 * float(0.5 * torch.log(0.5 / p).sum())
    loss = focal_loss(shifted, torch.tensor([[[0.2], [0.2]]]), gamma=0.0)
    assert loss.item() == pytest.approx(divergence, rel=1e-5)


def test_sigmoid_hand_value():
    # x = 1, y = 1: p = 0.7311, BCE = log(1 + e^-1) = 0.3133, (1 - p)^2 = 0.0723, alpha 0.25
    p = 1 / (1 + math.exp(-1))
    expected = 0.25 * (1 - p) ** 2 * -math.log(p)
    loss = focal_loss(torch.ones(1, 1, 1), torch.ones(1, 1, 1), activation="sigmoid", alpha=0.25)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# ---- limiting cases and references ----------------------------------------------------------------


@given(seeds)
def test_gamma_zero_is_cross_entropy(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 3, 5), generator=g)
    soft = torch.rand(2, 4, 3, 5, generator=g, dtype=torch.float64).softmax(1)
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0), F.cross_entropy(logits, labels))
    # Soft targets: the KL divergence, i.e. the cross-entropy minus the target's entropy (torch's kl_div).
    entropy = -torch.xlogy(soft, soft).sum(1).mean()
    torch.testing.assert_close(focal_loss(logits, soft, gamma=0.0), F.cross_entropy(logits, soft) - entropy)
    torch.testing.assert_close(
        focal_loss(logits, soft, gamma=0.0, reduction="sum"),
        F.kl_div(logits.log_softmax(1), soft, reduction="sum"),
    )
    torch.testing.assert_close(
        focal_loss(logits, labels, gamma=0.0, reduction="none"), F.cross_entropy(logits, labels, reduction="none")
    )
    labels[0, 0] = 255
    torch.testing.assert_close(
        focal_loss(logits, labels, gamma=0.0, ignore_index=255), F.cross_entropy(logits, labels, ignore_index=255)
    )
    weight = torch.rand(4, generator=g, dtype=torch.float64)
    # Weighted: softseg divides by the count of pixels (index == one-hot), torch by the sum of weights.
    expected = F.cross_entropy(logits, labels, weight=weight, ignore_index=255, reduction="sum") / (labels != 255).sum()
    torch.testing.assert_close(focal_loss(logits, labels, gamma=0.0, weight=weight, ignore_index=255), expected)


@given(seeds, st.sampled_from([0.0, 0.5, 2.0, 3.0]), st.sampled_from([None, 0.25, 0.9]))
def test_sigmoid_matches_torchvision_formula_on_hard_labels(seed, gamma, alpha):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 2, generator=g, dtype=torch.float64) * 3
    target = (torch.rand(2, 3, 4, 2, generator=g, dtype=torch.float64) > 0.5).double()
    expected = torchvision_sigmoid_focal(logits, target, gamma, alpha)
    got = focal_loss(logits, target, gamma=gamma, alpha=alpha, activation="sigmoid", reduction="none")
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(
        focal_loss(logits, target, gamma=gamma, alpha=alpha, activation="sigmoid"), expected.mean()
    )
    logits.requires_grad_(True)
    torch.testing.assert_close(
        torch.autograd.grad(focal_loss(logits, target, gamma=gamma, alpha=alpha, activation="sigmoid"), logits)[0],
        torch.autograd.grad(torchvision_sigmoid_focal(logits, target, gamma, alpha).mean(), logits)[0],
    )
    if gamma == 0 and alpha is None:
        torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(logits, target, reduction="none"))


@given(seeds, st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]))
def test_softmax_matches_classic_focal_on_hard_labels(seed, gamma):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    labels = torch.randint(0, 4, (2, 3, 3), generator=g)
    weight = torch.rand(4, generator=g, dtype=torch.float64)
    for target in (labels, one_hot(labels, 4)):
        for w in (None, weight):
            expected = classic_softmax_focal(logits, labels, gamma, w)
            got = focal_loss(logits, target, gamma=gamma, weight=w, reduction="none")
            torch.testing.assert_close(got, expected)
            torch.testing.assert_close(
                torch.autograd.grad(got.sum(), logits)[0], torch.autograd.grad(expected.sum(), logits)[0]
            )


@given(seeds, st.sampled_from([0.5, 1.0, 2.0, 3.0]), st.sampled_from(["softmax", "sigmoid"]))
def test_minimised_at_every_soft_target(seed, gamma, activation):
    # P2 for the focal loss: 0 at the soft target, no descent from it (a gradient step and random moves
    # all raise it), and the gradient there is 0.
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 4, 4)
    if activation == "softmax":
        soft = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).softmax(1)
        start = soft.log()
    else:
        soft = torch.rand(shape, generator=g, dtype=torch.float64) * 0.98 + 0.01
        start = torch.logit(soft)
    weight = torch.rand(3, generator=g, dtype=torch.float64) + 0.1
    alpha = 0.25 if activation == "sigmoid" else None
    options = dict(gamma=gamma, activation=activation, weight=weight, alpha=alpha)
    z = start.clone().requires_grad_(True)
    at_target = focal_loss(z, soft, **options)
    (gradient,) = torch.autograd.grad(at_target, z)
    assert at_target.item() < 1e-12
    assert gradient.abs().max().item() < 1e-9
    for _ in range(6):
        moved = start + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)
        assert focal_loss(moved, soft, **options).item() > at_target.item()


def test_classwise_soft_focal_is_not_minimised_at_the_target():
    # Why the classwise extension -sum y_c (1 - p_c)^gamma log p_c was replaced: for y = (0.8, 0.2) the
    # prediction (0.6, 0.4) scores 0.131 against 0.213 at the target (the reason the test above can fail).
    soft = torch.tensor([[[0.8], [0.2]]], dtype=torch.float64)

    def classwise(logits):
        log_p = logits.log_softmax(1)
        return -(soft * (1 - log_p.exp()) ** 2 * log_p).sum()

    at_target, moved = soft.log(), torch.tensor([[[0.6], [0.4]]], dtype=torch.float64).log()
    assert classwise(moved).item() == pytest.approx(0.131359, abs=1e-6)
    assert classwise(at_target).item() == pytest.approx(0.213149, abs=1e-6)
    assert focal_loss(moved, soft).item() > 1e-4 > 1e-30 > focal_loss(at_target, soft).item()


@given(seeds)
def test_index_equals_one_hot(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (2, 4, 4), generator=g)
    weight = torch.rand(3, generator=g, dtype=torch.float64)
    for activation in ("softmax", "sigmoid"):
        for reduction in ("mean", "sum", "none"):
            a = focal_loss(logits, labels, activation=activation, weight=weight, reduction=reduction)
            b = focal_loss(logits, one_hot(labels, 3), activation=activation, weight=weight, reduction=reduction)
            torch.testing.assert_close(a, b)
    binary = torch.randint(0, 2, (2, 4, 4), generator=g)
    torch.testing.assert_close(
        focal_loss(logits[:, :1], binary, activation="sigmoid", alpha=0.3),
        focal_loss(logits[:, :1], binary.unsqueeze(1).double(), activation="sigmoid", alpha=0.3),
    )


def test_matches_monai_on_hard_labels():
    monai_losses = pytest.importorskip("monai.losses")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(0, 3, (2, 4, 5), generator=g)
    dense = one_hot(labels, 3).float()
    softmax_monai = monai_losses.FocalLoss(use_softmax=True, gamma=2.0, reduction="none")(logits, dense)
    torch.testing.assert_close(focal_loss(logits, labels, reduction="none"), softmax_monai.sum(1))
    sigmoid_monai = monai_losses.FocalLoss(gamma=1.5, alpha=0.3, reduction="none")(logits, dense)
    torch.testing.assert_close(
        focal_loss(logits, labels, gamma=1.5, alpha=0.3, activation="sigmoid", reduction="none"), sigmoid_monai
    )


@given(seeds)
def test_focusing_lowers_the_loss(seed):
    # (1 - p_t)^gamma <= 1: every term decreases as gamma grows, and gamma = 0 is the cross entropy.
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 3, 6, generator=g)
    soft = torch.rand(1, 3, 6, generator=g).softmax(1)
    for activation in ("softmax", "sigmoid"):
        values = [focal_loss(logits, soft, gamma=k, activation=activation, reduction="none") for k in (0.0, 1.0, 2.0)]
        assert bool((values[1] <= values[0] + 1e-7).all()) and bool((values[2] <= values[1] + 1e-7).all())


# ---- ignored pixels, empty masks, dtypes ----------------------------------------------------------


def test_ignored_pixels_leave_the_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 6, generator=g)
    labels = torch.randint(0, 3, (1, 6), generator=g)
    keep = torch.tensor([[True, True, False, True, False, True]])
    with_ignore = labels.masked_fill(~keep, -1)
    for activation in ("softmax", "sigmoid"):
        reference = focal_loss(logits[..., keep[0]], labels[..., keep[0]], activation=activation)
        torch.testing.assert_close(focal_loss(logits, with_ignore, ignore_index=-1, activation=activation), reference)
        torch.testing.assert_close(focal_loss(logits, labels, mask=keep, activation=activation), reference)
        dense = one_hot(labels, 3).float()
        torch.testing.assert_close(focal_loss(logits, dense, mask=keep, activation=activation), reference)
    # A per-class mask (sigmoid): the mean runs over the counted (pixel, class) elements only.
    per_class = torch.rand(1, 3, 6, generator=g) > 0.5
    terms = focal_loss(logits, labels, activation="sigmoid", reduction="none")
    torch.testing.assert_close(
        focal_loss(logits, labels, activation="sigmoid", mask=per_class), terms[per_class].sum() / per_class.sum()
    )


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_logits_at_excluded_pixels_do_not_leak(activation, bad):
    # Padded volumes and out-of-view regions: the value and gradient equal those of the kept pixels alone,
    # and the excluded pixels get a gradient of exactly 0.
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 3, 6, generator=g)
    labels = torch.randint(0, 3, (2, 6), generator=g)
    soft = torch.rand(2, 3, 6, generator=g).softmax(1)
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[0, 2] = keep[1, 5] = False
    poisoned = logits.clone()
    poisoned[:, :, ~keep.any(0)] = 0  # (keeps the check below honest: only the excluded pixels change)
    poisoned[0, :, 2] = bad
    poisoned[1, 1, 5] = bad
    kept = torch.cat([logits[0, :, keep[0]], logits[1, :, keep[1]]], -1).unsqueeze(0)
    cases = [
        (labels.masked_fill(~keep, 255), dict(ignore_index=255),
         torch.cat([labels[0, keep[0]], labels[1, keep[1]]]).unsqueeze(0)),
        (labels, dict(mask=keep), torch.cat([labels[0, keep[0]], labels[1, keep[1]]]).unsqueeze(0)),
        (soft, dict(mask=keep), torch.cat([soft[0, :, keep[0]], soft[1, :, keep[1]]], -1).unsqueeze(0)),
    ]
    for target, options, kept_target in cases:
        z = poisoned.clone().requires_grad_(True)
        loss = focal_loss(z, target, activation=activation, **options)
        (gradient,) = torch.autograd.grad(loss, z)
        zk = kept.clone().requires_grad_(True)
        reference = focal_loss(zk, kept_target, activation=activation)
        (reference_gradient,) = torch.autograd.grad(reference, zk)
        torch.testing.assert_close(loss, reference)
        assert torch.isfinite(gradient).all()
        assert not gradient[0, :, 2].any() and not gradient[1, :, 5].any()
        got = torch.cat([gradient[0, :, keep[0]], gradient[1, :, keep[1]]], -1).unsqueeze(0)
        # The kept-only mean divides by the same count, so the gradients match entry by entry.
        torch.testing.assert_close(got, reference_gradient)


def test_empty_mask_gives_zero_and_finite_gradient():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    labels = torch.full((2, 4), 255)
    for activation in ("softmax", "sigmoid"):
        loss = focal_loss(logits, labels, ignore_index=255, activation=activation)
        (grad,) = torch.autograd.grad(loss, logits)
        assert loss.item() == 0 and torch.isfinite(grad).all() and not grad.any()
        empty = focal_loss(
            logits, torch.zeros(2, 3, 4), mask=torch.zeros(2, 4, dtype=torch.bool), activation=activation
        )
        assert empty.item() == 0


def test_half_precision_accumulates_in_float32():
    logits = torch.randn(1, 2, 64, 64).half()
    labels = torch.randint(0, 2, (1, 64, 64))
    loss = focal_loss(logits, labels, reduction="sum")
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, focal_loss(logits.float(), labels, reduction="sum"))


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    soft = torch.rand(2, 3, 4, generator=g, dtype=torch.float64).softmax(1)
    labels = torch.randint(0, 3, (2, 4), generator=g)
    assert torch.autograd.gradcheck(lambda x: focal_loss(x, soft, gamma=1.5), (logits,))
    assert torch.autograd.gradcheck(lambda x: focal_loss(x, labels, weight=[1.0, 2.0, 0.5]), (logits,))
    assert torch.autograd.gradcheck(lambda x: focal_loss(x, soft, activation="sigmoid", alpha=0.25), (logits,))
    weight = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    for gamma in (0.5, 3.0):
        assert torch.autograd.gradcheck(lambda x: focal_loss(x, soft, gamma=gamma, weight=weight), (logits,))
        binary = torch.rand(2, 3, 4, generator=g, dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda x: focal_loss(x, binary, gamma=gamma, activation="sigmoid"), (logits,))


def test_module_equals_function_and_holds_weight_buffer():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, generator=g)
    labels = torch.randint(0, 3, (2, 5), generator=g)
    module = FocalLoss(gamma=1.0, weight=[1.0, 2.0, 3.0], ignore_index=2)
    torch.testing.assert_close(
        module(logits, labels), focal_loss(logits, labels, gamma=1.0, weight=[1.0, 2.0, 3.0], ignore_index=2)
    )
    assert "weight" in module.state_dict() and "gamma=1.0" in repr(module)


# ---- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 0.25}, ValueError, "alpha balances positives and negatives of activation='sigmoid'"),
        ({"alpha": 1.5, "activation": "sigmoid"}, ValueError, r"alpha must lie in \[0, 1\]; got 1.5"),
        ({"gamma": -1.0}, ValueError, "gamma must be >= 0.0; got -1.0"),
        ({"activation": "none"}, ValueError, "activation must be one of 'softmax', 'sigmoid'; got 'none'"),
        ({"reduction": "batch"}, ValueError, "reduction must be one of 'mean', 'sum', 'none'; got 'batch'"),
        ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int or None; got float"),
        ({"weight": [1.0, 2.0]}, ValueError, "weight must have one value per scored class, 3; got 2"),
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        focal_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), **kwargs)
    if "weight" not in kwargs:
        with pytest.raises(error, match=match):
            FocalLoss(**kwargs)


def test_misspelt_options_name_the_loss_and_the_closest_option():
    with pytest.raises(TypeError, match="focal_loss\\(\\) got an unexpected keyword argument 'gama'; did you mean 'gamma'"):
        focal_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), gama=2.0)
    with pytest.raises(TypeError, match="FocalLoss\\(\\) got an unexpected keyword argument 'alpah'; did you mean 'alpha'"):
        FocalLoss(alpah=0.25)


def test_bad_targets_and_masks():
    logits = torch.zeros(1, 3, 2)
    with pytest.raises(ValueError, match="activation='softmax' needs at least 2 channels"):
        focal_loss(torch.zeros(1, 1, 2), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must be \\(B, \\*spatial\\) or \\(B, 1, \\*spatial\\)"):
        focal_loss(logits, torch.zeros(1, 2, dtype=torch.long), mask=torch.ones(1, 3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="ignore_index applies to index targets only"):
        focal_loss(logits, torch.zeros(1, 3, 2), ignore_index=0)
    with pytest.raises(TypeError, match="Float labels are not truncated"):
        focal_loss(logits, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 2\]"):
        focal_loss(logits, torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match=r"target must hold values in \[0, 1\]"):
        focal_loss(logits, torch.full((1, 3, 2), 2.0))
    with pytest.raises(ValueError, match=r"target holds class index 2; expected indices in \[0, 1\]"):
        focal_loss(torch.zeros(1, 1, 2), torch.tensor([[0, 2]]), activation="sigmoid")


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("target_kind", ["index", "dense"])
def test_empty_batch_gives_zero_and_zero_gradient(activation, target_kind):
    logits = torch.zeros(0, 3, 4, 4, requires_grad=True)
    target = torch.zeros(0, 4, 4, dtype=torch.long) if target_kind == "index" else torch.zeros(0, 3, 4, 4)
    loss = focal_loss(logits, target, activation=activation)
    loss.backward()
    assert loss.item() == 0
    assert logits.grad.shape == (0, 3, 4, 4)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_compound_losses_use_the_soft_correct_focal_term(activation):
    g = torch.Generator().manual_seed(8)
    soft = (torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2).softmax(1)
    start = soft.log() if activation == "softmax" else torch.logit(soft)
    options = dict(ce="focal", focal_gamma=2.0, activation=activation)
    assert region_ce_loss(start, soft, **options).item() < 1e-6          # both terms 0 at the target
    logits = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        DiceCELoss(lambda_ce=0.5, **options)(logits, soft),
        dice_loss(logits, soft, activation=activation) + 0.5 * focal_loss(logits, soft, activation=activation),
    )
