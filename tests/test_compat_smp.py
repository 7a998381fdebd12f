"""softseg.compat.smp: hand-computed values, an independent literal re-statement of smp 0.6's documented
behaviour (dense one-hot, L1-difference intersection, absent classes kept as zeros) over modes and options,
the improvements (soft multiclass targets), bad input, and a direct comparison when smp imports."""

import importlib
import math

import pytest
import torch
import torch.linalg as LA
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import softseg.compat.smp as ours

seeds = st.integers(0, 2**31 - 1)


# ---- an independent statement of smp 0.6's region losses (dense, literal) ------------------------------


def reference_region(
    y_pred,
    y_true,
    *,
    mode,
    alpha=0.5,
    beta=0.5,
    gamma=1.0,
    classes=None,
    log_loss=False,
    from_logits=True,
    smooth=0.0,
    ignore_index=None,
    eps=1e-7,
):
    bs = y_true.shape[0]
    if from_logits:
        y_pred = y_pred.log_softmax(1).exp() if mode == "multiclass" else F.logsigmoid(y_pred).exp()
    if mode == "binary":
        y_true, y_pred = y_true.reshape(bs, 1, -1), y_pred.reshape(bs, 1, -1)
        if ignore_index is not None:
            keep = y_true != ignore_index
            y_pred, y_true = y_pred * keep, y_true * keep
    elif mode == "multiclass":
        channels = y_pred.shape[1]
        y_pred = y_pred.reshape(bs, channels, -1)
        if y_true.is_floating_point():
            y_true = y_true.reshape(bs, channels, -1)
        else:
            y_true = y_true.reshape(bs, -1)
            keep = torch.ones_like(y_true, dtype=torch.bool) if ignore_index is None else y_true != ignore_index
            y_pred = y_pred * keep.unsqueeze(1)
            y_true = F.one_hot((y_true * keep).long(), channels).permute(0, 2, 1) * keep.unsqueeze(1)
    else:
        channels = y_pred.shape[1]
        y_true, y_pred = y_true.reshape(bs, channels, -1), y_pred.reshape(bs, channels, -1)
        if ignore_index is not None:
            keep = y_true != ignore_index
            y_pred, y_true = y_pred * keep, y_true * keep
    y_true = y_true.to(y_pred.dtype)
    dims = (0, 2)
    out_sum, tgt_sum = y_pred.sum(dims), y_true.sum(dims)
    difference = LA.vector_norm(y_pred - y_true, ord=1, dim=dims)
    tp = (out_sum + tgt_sum - difference) / 2
    score = (tp + smooth) / (tp + alpha * (out_sum - tp) + beta * (tgt_sum - tp) + smooth).clamp_min(eps)
    loss = -torch.log(score.clamp_min(eps)) if log_loss else 1.0 - score
    loss = loss * (tgt_sum > 0).to(loss.dtype)
    if classes is not None:
        loss = loss[classes]
    return loss.mean() ** gamma


def reference_focal(
    y_pred,
    y_true,
    *,
    mode,
    alpha=None,
    gamma=2.0,
    ignore_index=None,
    reduction="mean",
    normalized=False,
    reduced_threshold=None,
):
    def binary(output, target):
        target = target.to(output.dtype)
        logpt = F.binary_cross_entropy_with_logits(output, target, reduction="none")
        pt = torch.exp(-logpt)
        if reduced_threshold is None:
            focal_term = (1.0 - pt).pow(gamma)
        else:
            focal_term = ((1.0 - pt) / reduced_threshold).pow(gamma)
            focal_term = torch.where(pt < reduced_threshold, torch.ones_like(focal_term), focal_term)
        loss = focal_term * logpt
        if alpha is not None:
            loss = loss * (alpha * target + (1 - alpha) * (1 - target))
        if normalized:
            loss = loss / focal_term.sum().clamp_min(1e-6)
        return {"mean": loss.mean, "sum": loss.sum, "none": lambda: loss, "batchwise_mean": lambda: loss.sum(0)}[
            reduction
        ]()

    if mode in ("binary", "multilabel"):
        y_true, y_pred = y_true.reshape(-1), y_pred.reshape(-1)
        if ignore_index is not None:
            keep = y_true != ignore_index
            y_true, y_pred = y_true[keep], y_pred[keep]
        return binary(y_pred, y_true)
    total = 0
    for cls in range(y_pred.shape[1]):
        cls_true, cls_pred = (y_true == cls).long(), y_pred[:, cls]
        if ignore_index is not None:
            keep = y_true != ignore_index
            cls_true, cls_pred = cls_true[keep], cls_pred[keep]
        total = total + binary(cls_pred, cls_true)
    return total


def make(mode, seed, *, shape=(2, 3, 4, 5), soft=False, ignore=None):
    g = torch.Generator().manual_seed(seed)
    if mode == "binary":
        shape = (shape[0], 1) + shape[2:]
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    if mode == "multiclass":
        target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
        if ignore is not None:
            target[0, 0] = ignore
        return logits, target
    target = (
        torch.rand(shape, generator=g, dtype=torch.float64) if soft else (torch.rand(shape, generator=g) > 0.6).double()
    )
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
    log_dice = ours.DiceLoss("multiclass", from_logits=False, log_loss=True)(PROBS, LABELS)
    assert log_dice.item() == pytest.approx((-math.log(0.8 / 0.95) - math.log(0.9 / 1.05)) / 3, rel=1e-6)
    # smooth is added once to tp and to the denominator (smp 0.4+: soft_tversky_score(0.5, 0.5)).
    smoothed = ours.DiceLoss("multiclass", from_logits=False, smooth=1.0)(PROBS, LABELS)
    assert smoothed.item() == pytest.approx((1 - 1.8 / 1.95 + 1 - 1.9 / 2.05) / 3, rel=1e-6)


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
    ignored = ours.DiceLoss("binary", from_logits=False, ignore_index=255)(x, y3)
    assert ignored.item() == pytest.approx(1 - 1.0 / (1.0 + 0.5 * 0.2 + 0.5 * 0.5), abs=1e-6)


def test_focal_by_hand():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere: every element 0.25 * log 2
    labels = torch.tensor([[0, 1]])
    quarter = 0.25 * math.log(2)
    # Multiclass is one-vs-rest: the mean of each class, summed over the 2 classes.
    assert ours.FocalLoss("multiclass")(logits, labels).item() == pytest.approx(2 * quarter, rel=1e-6)
    assert ours.FocalLoss("multiclass", reduction="sum")(logits, labels).item() == pytest.approx(4 * quarter, rel=1e-6)
    assert ours.FocalLoss("binary", alpha=0.25)(logits[:, :1], labels.unsqueeze(1).float()).item() == pytest.approx(
        0.5 * quarter, rel=1e-6
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


# ---- against the literal statement over modes and options --------------------------------------------


REGION_OPTIONS = [
    {},
    {"smooth": 1.0},
    {"log_loss": True},
    {"classes": [0, 2]},
    {"eps": 1e-3, "log_loss": True},
    {"from_logits": False},
]


REGION_GRID = [
    (name, mode, options)
    for name in ("DiceLoss", "JaccardLoss", "TverskyLoss")
    for mode in ("binary", "multiclass", "multilabel")
    for options in REGION_OPTIONS
    if not (mode == "binary" and "classes" in options)  # classes selects channels; binary has one
]


@pytest.mark.parametrize(("name", "mode", "options"), REGION_GRID, ids=[f"{n}-{m}-{o}" for n, m, o in REGION_GRID])
def test_region_losses_match_reference(name, mode, options):
    weights = {"DiceLoss": {}, "JaccardLoss": {"alpha": 1.0, "beta": 1.0}, "TverskyLoss": {"alpha": 0.3, "beta": 0.7}}[
        name
    ]
    extra = {"alpha": 0.3, "beta": 0.7, "gamma": 1.5} if name == "TverskyLoss" else {}
    for seed, shape in ((0, (2, 3, 4, 5)), (1, (2, 3, 3, 2, 2))):
        for soft in (False, True):
            logits, target = make(mode, seed, shape=shape, soft=soft)
            y_pred = logits.softmax(1) if options.get("from_logits") is False and mode == "multiclass" else logits
            y_pred = y_pred.sigmoid() if options.get("from_logits") is False and mode != "multiclass" else y_pred
            x = y_pred.clone().requires_grad_(True)
            value = getattr(ours, name)(mode, **options, **extra)(x, target)
            (grad,) = torch.autograd.grad(value, x)
            x_ref = y_pred.clone().requires_grad_(True)
            ref_options = dict(options, **weights, **({"gamma": 1.5} if name == "TverskyLoss" else {}))
            expected = reference_region(x_ref, target, mode=mode, **ref_options)
            (ref_grad,) = torch.autograd.grad(expected, x_ref)
            torch.testing.assert_close(value, expected)
            torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_ignore_index_matches_reference(mode):
    logits, target = make(mode, 3, ignore=255)
    for name, weights in (("DiceLoss", {}), ("TverskyLoss", {"alpha": 0.2, "beta": 0.8})):
        value = getattr(ours, name)(mode, ignore_index=255, **weights)(logits, target)
        torch.testing.assert_close(value, reference_region(logits, target, mode=mode, ignore_index=255, **weights))


FOCAL_OPTIONS = [
    {},
    {"alpha": 0.25},
    {"gamma": 0.0},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"reduction": "batchwise_mean"},
    {"normalized": True},
    {"reduced_threshold": 0.5, "reduction": "sum"},
    {"ignore_index": 255},
    {"ignore_index": 255, "reduction": "none", "alpha": 0.6},
    {"ignore_index": 255, "normalized": True, "reduction": "batchwise_mean"},
]


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("options", FOCAL_OPTIONS, ids=str)
def test_focal_matches_reference(mode, options):
    for soft in (False, True):
        logits, target = make(mode, 4, soft=soft, ignore=options.get("ignore_index"))
        x = logits.clone().requires_grad_(True)
        value = ours.FocalLoss(mode, **options)(x, target)
        (grad,) = torch.autograd.grad(value.sum(), x)
        x_ref = logits.clone().requires_grad_(True)
        expected = reference_focal(x_ref, target, mode=mode, **options)
        (ref_grad,) = torch.autograd.grad(expected.sum(), x_ref)
        torch.testing.assert_close(value, expected)
        torch.testing.assert_close(grad, ref_grad)


@given(seeds, st.sampled_from([None, 0.1]), st.sampled_from(["mean", "sum", "none"]))
def test_soft_ce_matches_label_smoothed_cross_entropy(seed, smooth_factor, reduction):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (2, 3, 3), generator=g)
    epsilon = smooth_factor or 0.0
    # Without ignored pixels smp's rule equals torch's label smoothing.
    expected = F.cross_entropy(logits, labels, label_smoothing=epsilon, reduction=reduction)
    torch.testing.assert_close(
        ours.SoftCrossEntropyLoss(reduction, smooth_factor, ignore_index=None)(logits, labels), expected
    )
    # Ignored pixels are zeros that stay in smp's mean, and "none" keeps the channel dimension then.
    labels[0, 0, 0] = -100
    value = ours.SoftCrossEntropyLoss(reduction, smooth_factor)(logits, labels)
    terms = F.cross_entropy(logits, labels.clamp_min(0), label_smoothing=epsilon, reduction="none") * (labels != -100)
    if reduction == "none":
        torch.testing.assert_close(value, terms.unsqueeze(1))
    else:
        torch.testing.assert_close(value, terms.mean() if reduction == "mean" else terms.sum())


def test_soft_bce_matches_torch():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 4, generator=g)
    target = torch.rand(2, 3, 4, generator=g)
    weight, pos_weight = torch.rand(3, 1, generator=g), torch.rand(3, 1, generator=g) + 0.5
    loss = ours.SoftBCEWithLogitsLoss(weight=weight, pos_weight=pos_weight, reduction="none", ignore_index=None)
    expected = F.binary_cross_entropy_with_logits(logits, target, weight, pos_weight=pos_weight, reduction="none")
    torch.testing.assert_close(loss(logits, target), expected)
    assert "weight" in loss.state_dict() and "pos_weight" in loss.state_dict()


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
    torch.testing.assert_close(
        ours.DiceLoss("multiclass")(logits, soft), reference_region(logits, soft, mode="multiclass")
    )


def test_index_targets_are_not_one_hot_encoded(monkeypatch):
    logits, labels = make("multiclass", 5)
    expected = ours.DiceLoss("multiclass", ignore_index=2)(logits, labels)

    def no_one_hot(*args, **kwargs):
        raise AssertionError("a dense one-hot was built")

    monkeypatch.setattr(F, "one_hot", no_one_hot)
    torch.testing.assert_close(ours.DiceLoss("multiclass", ignore_index=2)(logits, labels), expected)
    ours.SoftCrossEntropyLoss()(logits, labels)


def test_nothing_counted_gives_zero_not_nan():
    logits = torch.randn(1, 1, 4, requires_grad=True)
    target = torch.full((1, 1, 4), 255.0)
    loss = ours.FocalLoss("binary", ignore_index=255)(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert loss.item() == 0 and torch.isfinite(grad).all()
    assert ours.DiceLoss("binary", ignore_index=255)(logits, target).item() == 0


# ---- bad input -------------------------------------------------------------------------------------------


def test_bad_input_messages():
    logits, labels = make("multiclass", 0)
    with pytest.raises(ValueError, match="mode must be one of 'binary', 'multiclass', 'multilabel'; got 'multi'"):
        ours.DiceLoss("multi")
    with pytest.raises(ValueError, match="classes selects channels, which mode='binary' does not have"):
        ours.JaccardLoss("binary", classes=[0])
    with pytest.raises(ValueError, match=r"classes must index the 3 channels of y_pred; got \[0, 3\]"):
        ours.DiceLoss("multiclass", classes=[0, 3])(logits, labels)
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 2\]"):
        ours.DiceLoss("multiclass")(logits, labels + 1)
    with pytest.raises(
        ValueError, match=r"y_pred \(from_logits=False expects probabilities\) must hold values in \[0, 1\]"
    ):
        ours.DiceLoss("multiclass", from_logits=False)(logits, labels)
    with pytest.raises(ValueError, match="mode='multilabel' expects y_true of y_pred's shape"):
        ours.DiceLoss("multilabel")(logits, labels)
    with pytest.raises(ValueError, match="mode='binary' expects y_true with as many elements as y_pred"):
        ours.FocalLoss("binary")(logits[:, :1], labels[:, :2])
    with pytest.raises(ValueError, match="share the batch size"):
        ours.DiceLoss("multiclass")(logits, labels[:1])
    with pytest.raises(ValueError, match="ignore_index applies to class-index targets"):
        ours.DiceLoss("multiclass", ignore_index=0)(logits, logits.softmax(1))
    with pytest.raises(TypeError, match="mode='multiclass' expects class indices of an integer dtype"):
        ours.FocalLoss("multiclass")(logits, labels.double())
    with pytest.raises(TypeError, match="Float labels are not truncated"):
        ours.DiceLoss("multiclass")(logits, labels.double())
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]; got 2.0"):
        ours.FocalLoss("binary", alpha=2.0)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', 'batchwise_mean'; got 'avg'"):
        ours.FocalLoss("binary", reduction="avg")
    with pytest.raises(ValueError, match=r"smooth_factor must lie in \[0, 1\]; got 1.5"):
        ours.SoftCrossEntropyLoss(smooth_factor=1.5)
    with pytest.raises(TypeError, match="y_true must hold class indices of an integer dtype"):
        ours.SoftCrossEntropyLoss()(logits, labels.double())
    with pytest.raises(ValueError, match="y_true must have y_pred's shape"):
        ours.SoftBCEWithLogitsLoss()(logits, labels)
    with pytest.raises(ValueError, match=r"y_true must hold values in \[0, 1\]"):
        ours.SoftBCEWithLogitsLoss()(logits, logits)
    with pytest.raises(TypeError, match="weight must be a tensor or None; got list"):
        ours.SoftBCEWithLogitsLoss(weight=[1.0])


# ---- smp itself, where it imports -------------------------------------------------------------------------


def _import_smp():
    try:
        return importlib.import_module("segmentation_models_pytorch.losses")
    except Exception as error:  # smp needs torchvision, which may be absent or fail to import
        pytest.skip(f"segmentation_models_pytorch is not importable here ({type(error).__name__}: {error})")


@pytest.mark.parametrize("mode", ["binary", "multiclass", "multilabel"])
def test_matches_installed_smp(mode):
    smp = _import_smp()
    for soft in (False, True):
        if soft and mode == "multiclass":
            continue  # smp rejects soft multiclass targets
        logits, target = make(mode, 6, soft=soft)
        for name, options in (
            ("DiceLoss", {"smooth": 0.5, "log_loss": True}),
            ("JaccardLoss", {}),
            ("TverskyLoss", {"alpha": 0.3, "beta": 0.7, "gamma": 1.5}),
            ("FocalLoss", {"alpha": 0.25}),
        ):
            torch.testing.assert_close(
                getattr(ours, name)(mode, **options)(logits, target),
                getattr(smp, name)(mode, **options)(logits, target),
            )
    if mode == "multiclass":
        torch.testing.assert_close(
            ours.SoftCrossEntropyLoss(smooth_factor=0.1)(logits, target),
            smp.SoftCrossEntropyLoss(smooth_factor=0.1)(logits, target),
        )
    else:
        torch.testing.assert_close(
            ours.SoftBCEWithLogitsLoss(smooth_factor=0.1)(logits, target),
            smp.SoftBCEWithLogitsLoss(smooth_factor=0.1)(logits, target),
        )


def test_more_bad_input_messages():
    logits, labels = make("multiclass", 0)
    cases = [
        (lambda: ours.DiceLoss("multiclass")(logits.tolist(), labels), TypeError, "y_pred must be a torch.Tensor"),
        (lambda: ours.DiceLoss("multiclass")(labels, labels), TypeError, "y_pred must hold floating-point logits"),
        (lambda: ours.DiceLoss("multiclass", ignore_index=1.5), TypeError, "ignore_index must be an int or None"),
        (
            lambda: ours.DiceLoss("multiclass")(logits, labels[:, :2]),
            ValueError,
            r"mode='multiclass' expects class indices \(B, \*spatial\) or class probabilities",
        ),
        (lambda: ours.TverskyLoss("binary", gamma=0.0), ValueError, "gamma must be > 0.0; got 0.0"),
        (lambda: ours.FocalLoss("binary", reduced_threshold=0.0), ValueError, "reduced_threshold must be > 0.0"),
        (
            lambda: ours.FocalLoss("multiclass", ignore_index=0)(logits, logits.softmax(1)),
            ValueError,
            "ignore_index applies to class-index targets",
        ),
        (lambda: ours.SoftBCEWithLogitsLoss(smooth_factor=2.0), ValueError, r"smooth_factor must lie in \[0, 1\]"),
        (lambda: ours.SoftBCEWithLogitsLoss(reduction="avg"), ValueError, "reduction must be one of 'mean', 'sum'"),
        (lambda: ours.SoftCrossEntropyLoss(dim=1.0), TypeError, "dim must be an int; got float"),
        (lambda: ours.SoftCrossEntropyLoss()(labels, labels), TypeError, "y_pred must hold floating-point logits"),
        (
            lambda: ours.SoftCrossEntropyLoss()(logits, labels[:, :2]),
            ValueError,
            r"y_true must have shape \(2, 1, 4, 5\)",
        ),
        (
            lambda: ours.SoftCrossEntropyLoss()(logits, labels + 1),
            ValueError,
            r"target holds class index 3; expected indices in \[0, 2\]",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
