"""softseg.compat.smp: hand-computed values; value and gradient against segmentation_models_pytorch 0.6 itself
in float64 over every option (wherever smp accepts the input); the improvements (soft multiclass targets,
0 instead of NaN, NaN logits at ignored pixels); bad input."""

import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from peer_imports import smp_losses

import softseg.compat.smp as ours
from softseg.compat._arguments import ShapeMismatchError

seeds = st.integers(0, 2**31 - 1)
SHAPE = (2, 3, 4, 5)  # no dimension equals C, so smp's misplaced broadcasts fail instead of computing garbage
IGNORE = 255


def make(mode, seed, *, shape=SHAPE, soft=False, ignore=None, probabilities=False):
    g = torch.Generator().manual_seed(seed)
    if mode == "binary":
        shape = (shape[0], 1) + shape[2:]
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    if probabilities:
        logits = logits.softmax(1) if mode == "multiclass" else logits.sigmoid()
    if mode == "multiclass" and not soft:
        target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
        if ignore is not None:
            target[0, 0] = ignore
        return logits, target
    if mode == "multiclass":
        target = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).softmax(1)
    elif soft:
        target = torch.rand(shape, generator=g, dtype=torch.float64)
    else:
        target = (torch.rand(shape, generator=g) > 0.6).double()
    if shape[1] > 2 and mode != "multiclass":
        target[:, 2] = target[:, 2] * 1e-3  # a class with a tiny mass: smp's eps floor matters there
    if ignore is not None:
        target[0, 0, 0] = ignore
    return logits, target


# ---- hand-computed values -----------------------------------------------------------------------------------


PROBS = torch.tensor([[[0.8, 0.1], [0.2, 0.9], [0.0, 0.0]]])  # (B=1, C=3, N=2), class 2 never labelled
LABELS = torch.tensor([[0, 1]])


def test_multiclass_dice_by_hand():
    # class 0: tp .8 fp .1 fn .2 -> 1 - .8/.95; class 1: tp .9 fp .2 fn .1 -> 1 - .9/1.05; class 2 absent -> 0.
    loss0, loss1 = 1 - 0.8 / 0.95, 1 - 0.9 / 1.05
    dice = ours.DiceLoss("multiclass", from_logits=False)
    assert dice(PROBS, LABELS).item() == pytest.approx((loss0 + loss1) / 3, rel=1e-6)
    assert ours.DiceLoss("multiclass", classes=[0, 1], from_logits=False)(PROBS, LABELS).item() == pytest.approx(
        (loss0 + loss1) / 2, rel=1e-6
    )
    # classes counts from the end for negative entries, as smp's tensor indexing does.
    assert ours.DiceLoss("multiclass", classes=[-3], from_logits=False)(PROBS, LABELS).item() == pytest.approx(
        loss0, rel=1e-6
    )
    weighted = ours.DiceLoss("multiclass", from_logits=False, class_weights=[1.0, 3.0, 0.0])(PROBS, LABELS)
    assert weighted.item() == pytest.approx((loss0 + 3 * loss1) / 4, rel=1e-6)
    log_dice = ours.DiceLoss("multiclass", from_logits=False, log_loss=True)(PROBS, LABELS)
    assert log_dice.item() == pytest.approx((-math.log(0.8 / 0.95) - math.log(0.9 / 1.05)) / 3, rel=1e-6)
    # smooth is added once to tp and to the denominator (smp 0.4+: soft_tversky_score(0.5, 0.5)).
    smoothed = ours.DiceLoss("multiclass", from_logits=False, smooth=1.0)(PROBS, LABELS)
    assert smoothed.item() == pytest.approx((1 - 1.8 / 1.95 + 1 - 1.9 / 2.05) / 3, rel=1e-6)
    # eps floors the denominator: with eps = 1, class 0 scores .8 / 1 and class 1 .9 / 1.05.
    floored = ours.DiceLoss("multiclass", from_logits=False, eps=1.0)(PROBS, LABELS)
    assert floored.item() == pytest.approx((1 - 0.8 + 1 - 0.9 / 1.05) / 3, rel=1e-6)


def test_multiclass_jaccard_and_tversky_by_hand():
    jaccard = ours.JaccardLoss("multiclass", from_logits=False)(PROBS, LABELS)
    assert jaccard.item() == pytest.approx((1 - 0.8 / 1.1 + 1 - 0.9 / 1.2) / 3, rel=1e-6)
    tversky = ours.TverskyLoss("multiclass", from_logits=False, alpha=0.3, beta=0.7, gamma=2.0)(PROBS, LABELS)
    t0, t1 = 0.8 / (0.8 + 0.03 + 0.14), 0.9 / (0.9 + 0.06 + 0.07)
    assert tversky.item() == pytest.approx(((1 - t0 + 1 - t1) / 3) ** 2, rel=1e-6)


def test_binary_and_multilabel_by_hand():
    x = torch.tensor([[[0.2, 0.7, 0.5]]])
    y = torch.tensor([[[0.5, 0.5, 1.0]]])
    assert ours.DiceLoss("binary", from_logits=False)(x, y).item() == pytest.approx(0.294118, abs=1e-6)
    assert ours.JaccardLoss("binary", from_logits=False)(x, y).item() == pytest.approx(0.454545, abs=1e-6)
    # Binary targets may come without the channel dimension.
    assert ours.DiceLoss("binary", from_logits=False)(x, y[:, 0]).item() == pytest.approx(0.294118, abs=1e-6)
    # Multilabel: channel 0 as above, channel 1 has an empty target and counts as 0.
    x2, y2 = torch.cat([x, x], 1), torch.cat([y, torch.zeros_like(y)], 1)
    assert ours.DiceLoss("multilabel", from_logits=False)(x2, y2).item() == pytest.approx(0.294118 / 2, abs=1e-6)
    # ignore_index: the first element leaves every sum: tp = .5 + .5, fp = 1.2 - 1, fn = 1.5 - 1.
    y3 = torch.tensor([[[255.0, 0.5, 1.0]]])
    ignored = ours.JaccardLoss("binary", from_logits=False, ignore_index=255)(x, y3)
    assert ignored.item() == pytest.approx(1 - 1.0 / (1.0 + 0.2 + 0.5), abs=1e-6)


def test_focal_by_hand():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere: every element 0.25 * log 2
    labels = torch.tensor([[0, 1]])
    quarter = 0.25 * math.log(2)
    # smp 0.6: each class reduced over its elements, then the mean over classes.
    assert ours.FocalLoss("multiclass")(logits, labels).item() == pytest.approx(quarter, rel=1e-6)
    assert ours.FocalLoss("multiclass", reduction="sum")(logits, labels).item() == pytest.approx(2 * quarter, rel=1e-6)
    assert ours.FocalLoss("binary", alpha=0.25)(logits[:, :1], labels.unsqueeze(1).float()).item() == pytest.approx(
        0.5 * quarter, rel=1e-6
    )
    # from_logits=False: probabilities 0.5 are log-odds 0 (binary) and log 0.5 (multiclass, as smp).
    probs = torch.full((1, 1, 2), 0.5)
    assert ours.FocalLoss("binary", from_logits=False)(probs, labels.unsqueeze(1).float()).item() == pytest.approx(
        quarter, rel=1e-6
    )


def test_soft_bce_and_soft_ce_by_hand():
    logits = torch.tensor([[[2.0, -1.0]]])
    target = torch.tensor([[[1.0, -100.0]]])
    # element 0: BCE(2, 0.9) with smoothing 0.1; element 1 ignored (0), mean over both elements.
    expected = (math.log1p(math.exp(-2.0)) + 0.1 * 2.0) / 2
    assert ours.SoftBCEWithLogitsLoss(smooth_factor=0.1)(logits, target).item() == pytest.approx(expected, rel=1e-6)
    ce_logits = torch.tensor([[[math.log(3.0), 0.0]]]).transpose(1, 2)  # (B=1, C=2, N=1): p = (0.75, 0.25)
    labels = torch.tensor([[1]])
    expected = 0.9 * -math.log(0.25) + 0.05 * -(math.log(0.75) + math.log(0.25))
    assert ours.SoftCrossEntropyLoss(smooth_factor=0.1)(ce_logits, labels).item() == pytest.approx(expected, rel=1e-6)


# ---- against smp 0.6 itself, value and gradient in float64 --------------------------------------------------


def _value_and_grad(loss, y_pred, y_true):
    x = y_pred.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss(x, y_true)
    (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    return value.detach(), torch.zeros_like(x) if grad is None else grad


def _compare(make_ours, make_theirs, y_pred, y_true):
    """True when smp accepts the input and gives a finite result, which ours must then equal."""
    try:
        expected, expected_grad = _value_and_grad(make_theirs(), y_pred, y_true)
    except Exception:  # smp rejects the input (assertion, one-hot of soft targets, a failing broadcast)
        return False
    if not (torch.isfinite(expected).all() and torch.isfinite(expected_grad).all()):
        return False  # smp's NaN or inf: ours gives 0 there (tested separately)
    value, grad = _value_and_grad(make_ours(), y_pred, y_true)
    assert value.shape == expected.shape
    torch.testing.assert_close(value, expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    return True


REGION_OPTIONS = {
    "classes": [None, [0, 2], [-1]],
    "log_loss": [False, True],
    "from_logits": [True, False],
    "smooth": [0.0, 0.5],
    "ignore_index": [None, IGNORE],
    "eps": [1e-7, 0.02],
    "class_weights": [None, [1.0, 2.0, 0.5]],
}
REGION_EXTRA = {"DiceLoss": [{}], "JaccardLoss": [{}], "TverskyLoss": [{}, {"alpha": 0.3, "beta": 0.7, "gamma": 2.0}]}


@pytest.mark.parametrize("name", ["DiceLoss", "JaccardLoss", "TverskyLoss"])
@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_region_losses_match_smp(name, mode):
    smp = smp_losses()
    compared = 0
    for values in itertools.product(*REGION_OPTIONS.values()):
        options = dict(zip(REGION_OPTIONS, values, strict=True))
        if mode == "binary" and (options["classes"] is not None or options["class_weights"] is not None):
            continue  # smp refuses both in binary mode (tested below)
        for extra in REGION_EXTRA[name]:
            for soft in (False, True):
                y_pred, y_true = make(
                    mode,
                    compared,
                    soft=soft,
                    ignore=options["ignore_index"],
                    probabilities=not options["from_logits"],
                )
                compared += _compare(
                    lambda: getattr(ours, name)(mode, **options, **extra),
                    lambda: getattr(smp, name)(mode, **options, **extra),
                    y_pred,
                    y_true,
                )
    assert compared >= (40 if mode == "binary" else 150)


FOCAL_OPTIONS = {
    "alpha": [None, 0.25],
    "gamma": [2.0, 0.0],
    "ignore_index": [None, IGNORE],
    "from_logits": [True, False],
    "reduction": ["mean", "sum", "none", "batchwise_mean"],
    "normalized": [False, True],
    "reduced_threshold": [None, 0.5],
    "class_weights": [None, [1.0, 2.0, 0.5]],
}


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_focal_matches_smp(mode):
    smp = smp_losses()
    compared = 0
    for values in itertools.product(*FOCAL_OPTIONS.values()):
        options = dict(zip(FOCAL_OPTIONS, values, strict=True))
        if mode == "binary" and options["class_weights"] is not None:
            continue
        for soft in (False, True):
            y_pred, y_true = make(
                mode, compared, soft=soft, ignore=options["ignore_index"], probabilities=not options["from_logits"]
            )
            compared += _compare(
                lambda: ours.FocalLoss(mode, **options), lambda: smp.FocalLoss(mode, **options), y_pred, y_true
            )
    assert compared >= {"binary": 250, "multiclass": 200, "multilabel": 150}[mode]


def test_soft_bce_matches_smp():
    smp = smp_losses()
    g = torch.Generator().manual_seed(1)
    weight, pos_weight = torch.rand(3, 1, 1, generator=g, dtype=torch.float64), torch.rand(3, 1, 1, dtype=torch.float64)
    compared = 0
    for ignore_index, reduction, smooth_factor, use_weight, use_pos_weight in itertools.product(
        [None, -100], ["mean", "sum", "none"], [None, 0.1], [False, True], [False, True]
    ):
        for soft in (False, True):
            y_pred, y_true = make("multilabel", compared, soft=soft, ignore=None if ignore_index is None else -100)
            options = {
                "weight": weight if use_weight else None,
                "ignore_index": ignore_index,
                "reduction": reduction,
                "smooth_factor": smooth_factor,
                "pos_weight": pos_weight + 0.5 if use_pos_weight else None,
            }
            compared += _compare(
                lambda: ours.SoftBCEWithLogitsLoss(**options),
                lambda: smp.SoftBCEWithLogitsLoss(**options),
                y_pred,
                y_true,
            )
    assert compared == 96


def test_soft_ce_matches_smp():
    smp = smp_losses()
    compared = 0
    for reduction, smooth_factor, ignore_index, dim in itertools.product(
        ["mean", "sum", "none"], [0.0, 0.1], [None, -100], [1, -1]
    ):
        y_pred, y_true = make("multiclass", compared, ignore=None if ignore_index is None else -100)
        if dim == -1:  # classes last: (B, H, W, C) logits, (B, H, W) labels
            y_pred = y_pred.movedim(1, -1)
        options = {"reduction": reduction, "smooth_factor": smooth_factor, "ignore_index": ignore_index, "dim": dim}
        compared += _compare(
            lambda: ours.SoftCrossEntropyLoss(**options), lambda: smp.SoftCrossEntropyLoss(**options), y_pred, y_true
        )
    assert compared == 24


def test_positional_arguments_follow_smp():
    smp = smp_losses()
    import inspect

    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss", "FocalLoss", "SoftBCEWithLogitsLoss", "SoftCrossEntropyLoss"):
        theirs = list(inspect.signature(getattr(smp, name)).parameters.values())
        mine = list(inspect.signature(getattr(ours, name)).parameters.values())
        positional = [p for p in mine if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs], name


def test_smp_refusals_are_kept():
    smp = smp_losses()
    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss", "FocalLoss"):
        with pytest.raises(ValueError):
            getattr(smp, name)("binary", class_weights=[1.0, 2.0])
        with pytest.raises(ValueError, match="class_weights are not supported with mode='binary'"):
            getattr(ours, name)("binary", class_weights=[1.0, 2.0])


# ---- improvements ----------------------------------------------------------------------------------------


@given(seeds)
def test_multiclass_accepts_soft_targets(seed):
    logits, labels = make("multiclass", seed)
    onehot = F.one_hot(labels, 3).movedim(-1, 1).double()
    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss"):
        loss = getattr(ours, name)("multiclass")
        torch.testing.assert_close(loss(logits, onehot), loss(logits, labels))
    torch.testing.assert_close(
        ours.FocalLoss("multiclass")(logits, onehot), ours.FocalLoss("multiclass")(logits, labels)
    )
    torch.testing.assert_close(ours.SoftCrossEntropyLoss()(logits, onehot), ours.SoftCrossEntropyLoss()(logits, labels))
    soft = (
        torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64) * 2
    ).softmax(1)
    # Zero exactly at a soft target (the loss smp's one-hot encoding cannot take).
    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss"):
        assert getattr(ours, name)("multiclass", from_logits=False)(soft, soft).item() == pytest.approx(0, abs=1e-12)
        assert getattr(ours, name)("multiclass")(logits, soft).item() > 0


def test_index_targets_are_not_one_hot_encoded(monkeypatch):
    logits, labels = make("multiclass", 5)
    expected = ours.DiceLoss("multiclass", ignore_index=2)(logits, labels)

    def no_one_hot(*args, **kwargs):
        raise AssertionError("a dense one-hot was built")

    monkeypatch.setattr(F, "one_hot", no_one_hot)
    torch.testing.assert_close(ours.DiceLoss("multiclass", ignore_index=2)(logits, labels), expected)
    ours.SoftCrossEntropyLoss()(logits, labels)


def _all_classes(mode):
    """One instance of every class for ``mode`` (SoftBCE for binary/multilabel, SoftCE for multiclass)."""
    region = [ours.DiceLoss(mode), ours.JaccardLoss(mode), ours.TverskyLoss(mode), ours.FocalLoss(mode)]
    return region + ([ours.SoftCrossEntropyLoss()] if mode == "multiclass" else [ours.SoftBCEWithLogitsLoss()])


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_empty_batch_gives_zero(mode):
    # smp: NaN from the focal and cross-entropy means; 0 here, with a finite (empty) gradient.
    logits, target = make(mode, 0)
    logits, target = logits[:0], target[:0]
    for loss in _all_classes(mode):
        value, grad = _value_and_grad(loss, logits, target)
        assert value.item() == 0, type(loss).__name__
        assert grad.shape == logits.shape
    for reduction in ("sum", "none", "batchwise_mean"):
        assert torch.isfinite(ours.FocalLoss(mode, reduction=reduction)(logits, target)).all()


def test_nothing_counted_gives_zero_not_nan():
    logits = torch.randn(1, 1, 4, requires_grad=True)
    target = torch.full((1, 1, 4), 255.0)
    loss = ours.FocalLoss("binary", ignore_index=255)(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == 0 and torch.isfinite(grad).all()
    assert ours.DiceLoss("binary", ignore_index=255)(logits, target).item() == 0
    # eps = 0 and an absent class: smp's 0 / 0 is NaN; the class counts 0 here, value and gradient.
    loss = ours.DiceLoss("multilabel", eps=0.0, from_logits=False)
    probs = torch.zeros(1, 2, 3, requires_grad=True)
    value = loss(probs, torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]))
    (grad,) = torch.autograd.grad(value, probs)
    assert value.item() == pytest.approx(0.5) and torch.isfinite(grad).all()


def _nan_at_ignored(mode, ignore):
    logits, target = make(mode, 11, ignore=ignore)
    poisoned = logits.clone()
    if mode == "multiclass":
        poisoned[0, :, 0] = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=torch.float64)[:, None]
        ignored = (target == ignore).unsqueeze(1).expand_as(logits)
    else:
        poisoned[0, 0, 0] = float("nan")
        ignored = (target == ignore).expand_as(logits) if mode == "binary" else target == ignore
    return logits, poisoned, target, ignored


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_nan_logit_at_an_ignored_pixel_changes_nothing(mode):
    losses = [ours.DiceLoss, ours.JaccardLoss, ours.TverskyLoss, ours.FocalLoss]
    for make_loss in losses:
        logits, poisoned, target, ignored = _nan_at_ignored(mode, IGNORE)
        loss = make_loss(mode, ignore_index=IGNORE)
        value, grad = _value_and_grad(loss, logits, target)
        poisoned_value, poisoned_grad = _value_and_grad(loss, poisoned, target)
        torch.testing.assert_close(poisoned_value, value)
        torch.testing.assert_close(poisoned_grad, grad)
        assert (poisoned_grad[ignored] == 0).all()
    logits, poisoned, target, ignored = _nan_at_ignored(mode, -100)
    loss = ours.SoftCrossEntropyLoss(smooth_factor=0.1) if mode == "multiclass" else ours.SoftBCEWithLogitsLoss()
    value, grad = _value_and_grad(loss, logits, target)
    poisoned_value, poisoned_grad = _value_and_grad(loss, poisoned, target)
    torch.testing.assert_close(poisoned_value, value)
    torch.testing.assert_close(poisoned_grad, grad)
    assert (poisoned_grad[ignored] == 0).all()


def test_multilabel_focal_with_ignore_index():
    # smp fails here (its per-class selection indexes with a mask of another shape); elements leave their class.
    logits, target = make("multilabel", 3, ignore=IGNORE)
    kept = target != IGNORE
    binary = ours.FocalLoss("binary", reduction="none")
    per_class = [binary(logits[:, c][kept[:, c]].reshape(1, 1, -1), target[:, c][kept[:, c]].reshape(1, 1, -1)) for c in range(3)]
    value, grad = _value_and_grad(ours.FocalLoss("multilabel", ignore_index=IGNORE), logits, target)
    torch.testing.assert_close(value, torch.stack([terms.mean() for terms in per_class]).mean())
    assert (grad[~kept] == 0).all() and (grad[kept] != 0).all()
    summed = ours.FocalLoss("multilabel", ignore_index=IGNORE, reduction="sum")(logits, target)
    torch.testing.assert_close(summed, torch.stack([terms.sum() for terms in per_class]).mean())


# ---- bad input -------------------------------------------------------------------------------------------


def test_bad_input_messages():
    logits, labels = make("multiclass", 0)
    cases = [
        (lambda: ours.DiceLoss("multi"), ValueError, "mode must be one of 'binary', 'multiclass', 'multilabel'; got 'multi'"),
        (lambda: ours.JaccardLoss("binary", classes=[0]), ValueError, "classes selects channels, which mode='binary'"),
        (lambda: ours.DiceLoss("multiclass", classes=[0, 3])(logits, labels), ValueError, r"classes must index the 3 channels of y_pred; got \[0, 3\]"),
        (lambda: ours.DiceLoss("multiclass")(logits, labels + 1), ValueError, r"target holds class index 3; expected indices in \[0, 2\]"),
        (lambda: ours.DiceLoss("multiclass", from_logits=False)(logits, labels), ValueError, r"y_pred \(from_logits=False expects probabilities\) must hold values in \[0, 1\]"),
        (lambda: ours.FocalLoss("multiclass", from_logits=False)(logits, labels), ValueError, r"y_pred \(from_logits=False expects probabilities\) must hold values in \[0, 1\]"),
        (lambda: ours.DiceLoss("multilabel")(logits, labels), ShapeMismatchError, "mode='multilabel' expects y_true of y_pred's shape"),
        (lambda: ours.FocalLoss("binary")(logits[:, :1], labels[:, :2]), ShapeMismatchError, "mode='binary' expects y_true with as many elements as y_pred"),
        (lambda: ours.DiceLoss("multiclass")(logits, labels[:1]), AssertionError, "share the batch size"),
        (lambda: ours.DiceLoss("multiclass", ignore_index=0)(logits, logits.softmax(1)), ValueError, "ignore_index applies to class-index targets"),
        (lambda: ours.FocalLoss("multiclass")(logits, labels.double()), TypeError, "mode='multiclass' expects class indices of an integer dtype"),
        (lambda: ours.DiceLoss("multiclass")(logits, labels.double()), TypeError, "Float labels are not truncated"),
        (lambda: ours.FocalLoss("binary", alpha=2.0), ValueError, r"alpha must lie in \[0, 1\]; got 2.0"),
        (lambda: ours.FocalLoss("binary", reduction="avg"), ValueError, "reduction must be one of 'mean', 'sum', 'none', 'batchwise_mean'; got 'avg'"),
        (lambda: ours.FocalLoss("binary", from_logits=False, eps=0.0), ValueError, r"eps must lie in \(0, 0.5\) with from_logits=False"),
        (lambda: ours.SoftCrossEntropyLoss(smooth_factor=1.5), ValueError, r"smooth_factor must lie in \[0, 1\]; got 1.5"),
        (lambda: ours.SoftCrossEntropyLoss()(logits, labels.double()), TypeError, "y_true must hold class indices of an integer dtype"),
        (lambda: ours.SoftBCEWithLogitsLoss()(logits, labels), ShapeMismatchError, "y_true must have y_pred's shape"),
        (lambda: ours.SoftBCEWithLogitsLoss()(logits, logits), ValueError, r"y_true must hold values in \[0, 1\]"),
        (lambda: ours.SoftBCEWithLogitsLoss(weight=[1.0]), TypeError, "weight must be a tensor or None; got list"),
        (lambda: ours.DiceLoss("multiclass")(logits.tolist(), labels), TypeError, "y_pred must be a torch.Tensor"),
        (lambda: ours.DiceLoss("multiclass")(labels, labels), TypeError, "y_pred must hold floating-point logits"),
        (lambda: ours.DiceLoss("multiclass", ignore_index=1.5), TypeError, "ignore_index must be an int or None"),
        (lambda: ours.DiceLoss("multiclass")(logits, labels[:, :2]), ShapeMismatchError, r"mode='multiclass' expects class indices \(B, \*spatial\) or class probabilities"),
        (lambda: ours.TverskyLoss("binary", gamma=0.0), ValueError, "gamma must be > 0.0; got 0.0"),
        (lambda: ours.FocalLoss("binary", reduced_threshold=0.0), ValueError, "reduced_threshold must be > 0.0"),
        (lambda: ours.FocalLoss("multiclass", ignore_index=0)(logits, logits.softmax(1)), ValueError, "ignore_index applies to class-index targets"),
        (lambda: ours.SoftBCEWithLogitsLoss(smooth_factor=2.0), ValueError, r"smooth_factor must lie in \[0, 1\]"),
        (lambda: ours.SoftBCEWithLogitsLoss(reduction="avg"), ValueError, "reduction must be one of 'mean', 'sum'"),
        (lambda: ours.SoftCrossEntropyLoss(dim=1.0), TypeError, "dim must be an int; got float"),
        (lambda: ours.SoftCrossEntropyLoss()(labels, labels), TypeError, "y_pred must hold floating-point logits"),
        (lambda: ours.SoftCrossEntropyLoss()(logits, labels[:, :2]), ShapeMismatchError, r"y_true must have shape \(2, 1, 4, 5\)"),
        (lambda: ours.SoftCrossEntropyLoss()(logits, labels + 1), ValueError, r"target holds class index 3; expected indices in \[0, 2\]"),
        # Silent reinterpretations in smp: an out-of-range dim, float classes, strings for flags.
        (lambda: ours.SoftCrossEntropyLoss(dim=5)(logits, labels), ValueError, r"dim=5 is not a dimension of y_pred of shape \(2, 3, 4, 5\)"),
        (lambda: ours.SoftCrossEntropyLoss(dim=-5)(logits, labels), ValueError, r"expected a dimension in \[-4, 3\]"),
        (lambda: ours.DiceLoss("multiclass", classes=[1.7]), TypeError, r"classes\[0\] must be an int; got float 1.7"),
        (lambda: ours.DiceLoss("multiclass", classes=["a"]), TypeError, r"classes\[0\] must be an int; got str 'a'"),
        (lambda: ours.DiceLoss("multiclass", classes=[0, True]), TypeError, r"classes\[1\] must be an int; got bool True"),
        (lambda: ours.DiceLoss("multiclass", classes="01"), TypeError, "classes must be a sequence, one class index per entry; got str"),
        (lambda: ours.DiceLoss("multiclass", classes=[]), ValueError, "classes must select at least one class"),
        (lambda: ours.DiceLoss("multiclass", class_weights=[1, None, 2]), TypeError, r"class_weights\[1\] must be a real number; got NoneType None"),
        (lambda: ours.FocalLoss("multiclass", class_weights=["a", 1]), TypeError, r"class_weights\[0\] must be a real number; got str 'a'"),
        (lambda: ours.TverskyLoss("multiclass", class_weights=[1.0, -1.0]), ValueError, r"class_weights\[1\] must be >= 0.0; got -1.0"),
        (lambda: ours.JaccardLoss("multiclass", class_weights=[1.0, float("nan")]), ValueError, r"class_weights\[1\] must be finite"),
        (lambda: ours.DiceLoss("multiclass", class_weights=[0.0, 0.0]), ValueError, "class_weights must have one non-negative weight per class, not all 0"),
        (lambda: ours.DiceLoss("multiclass", class_weights=[1.0, 2.0])(logits, labels), ValueError, "class_weights must have one weight per channel of y_pred, 3; got 2"),
        (lambda: ours.FocalLoss("multiclass", class_weights=[1.0, 2.0])(logits, labels), ValueError, "class_weights must have one weight per channel of y_pred, 3; got 2"),
        (lambda: ours.DiceLoss("multiclass", classes=[0], class_weights=[0.0, 1.0, 1.0])(logits, labels), ValueError, r"class_weights of the selected classes \[0\] are all 0"),
    ]
    for flag in ("log_loss", "from_logits"):
        cases.append((lambda flag=flag: ours.DiceLoss("binary", **{flag: "False"}), TypeError, f"{flag} must be a bool"))
    for flag in ("from_logits", "normalized"):
        cases.append((lambda flag=flag: ours.FocalLoss("binary", **{flag: "False"}), TypeError, f"{flag} must be a bool"))
    for name in ("JaccardLoss", "TverskyLoss"):
        cases.append((lambda name=name: getattr(ours, name)("binary", log_loss=0), TypeError, "log_loss must be a bool"))
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


def test_other_devices_are_named():
    logits, labels = make("multiclass", 0)
    meta = labels.to("meta")
    for loss in (ours.DiceLoss("multiclass"), ours.FocalLoss("multiclass"), ours.SoftCrossEntropyLoss()):
        with pytest.raises(ValueError, match="y_true is on device meta but y_pred is on device cpu"):
            loss(logits, meta)
    bce = ours.SoftBCEWithLogitsLoss(weight=torch.ones(3, 1, 1, device="meta"))
    target = torch.rand(logits.shape, dtype=torch.float64)
    with pytest.raises(ValueError, match="weight is on device meta but y_pred is on device cpu"):
        bce(logits, target)
    with pytest.raises(ValueError, match="pos_weight is on device meta but y_pred is on device cpu"):
        ours.SoftBCEWithLogitsLoss(pos_weight=torch.ones(1, device="meta"))(logits, target)
    with pytest.raises(ValueError, match="y_true is on device meta"):
        bce(logits, target.to("meta"))


def test_missing_peer_class_says_where_to_get_it():
    with pytest.raises(ImportError, match="softseg.compat.smp has no LovaszLoss.*from segmentation_models_pytorch.losses"):
        from softseg.compat.smp import LovaszLoss  # noqa: F401
    with pytest.raises(AttributeError, match="has no attribute 'NotALoss'"):
        ours.NotALoss  # noqa: B018
    # Outside an import, an AttributeError (PEP 562) with the same message: feature checks work.
    assert not hasattr(ours, "LovaszLoss") and getattr(ours, "LovaszLoss", None) is None
    with pytest.raises(AttributeError, match="softseg.compat.smp has no LovaszLoss.*from segmentation_models_pytorch"):
        ours.LovaszLoss  # noqa: B018


def test_tversky_gamma_below_one_has_a_finite_gradient_at_zero_loss():
    # smp: d(loss ** 0.5) at loss 0 is NaN; here 0.
    probs = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    value, grad = _value_and_grad(ours.TverskyLoss("multiclass", gamma=0.5, from_logits=False), probs, torch.tensor([[0, 1]]))
    assert value.item() == 0 and torch.equal(grad, torch.zeros_like(grad))
