"""MCC loss: equal to MONAI's and smp's MCCLoss on hard labels (value and gradient), 0 and minimal at every
soft target, hand values, aggregation, empty classes and batches, ignored pixels, half precision, gradcheck,
the audit and bad input."""

import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import softseg
from loss_checks import assert_zero_and_minimal_at, value_and_grad
from softseg.cli.audit import audit_loss, make_problem
from softseg.losses.mcc import MCCLoss, mcc_loss
from softseg.scores import matthews_correlation

seeds = st.integers(0, 2**31 - 1)


def one_hot(labels, channels, dtype=torch.float64):
    return F.one_hot(labels, channels).movedim(-1, 1).to(dtype)


def problem(seed, batch=3, classes=4, shape=(5, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, classes, (batch, *shape), generator=g)
    soft = (torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64) * 2).softmax(1)
    return logits, labels, soft




def smp_mcc_module():
    # smp's package __init__ needs torchvision; its MCC loss file needs only torch, so load that file alone.
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or spec.origin is None:
        pytest.skip("segmentation_models_pytorch is not installed")
    path = os.path.join(os.path.dirname(spec.origin), "losses", "mcc.py")
    module_spec = importlib.util.spec_from_file_location("smp_losses_mcc", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.MCCLoss


# ---- peers on hard labels ---------------------------------------------------------------------------


@given(seeds, st.booleans(), st.booleans(), st.sampled_from(["softmax", "sigmoid"]))
def test_equals_monai_on_hard_labels(seed, batch, include_background, activation):
    monai_losses = pytest.importorskip("monai.losses")
    logits, labels, _ = problem(seed)
    monai = monai_losses.MCCLoss(
        include_background=include_background, softmax=activation == "softmax", sigmoid=activation == "sigmoid",
        batch=batch, smooth_dr=0.0, reduction="none",
    )
    options = dict(activation=activation, include_background=include_background,
                   aggregation="global" if batch else "image")
    expected, expected_grad = value_and_grad(monai, logits, one_hot(labels, 4))
    for target in (labels, one_hot(labels, 4)):
        got, grad = value_and_grad(lambda z, t: mcc_loss(z, t, reduction="none", **options), logits, target)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(grad, expected_grad)
    mean, _ = value_and_grad(lambda z, t: mcc_loss(z, t, **options), logits, labels)
    torch.testing.assert_close(mean, expected.mean())


@given(seeds)
def test_equals_smp_on_hard_labels(seed):
    SmpMCCLoss = smp_mcc_module()
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(3, 1, 5, 6, generator=g, dtype=torch.float64)
    target = (torch.rand(3, 1, 5, 6, generator=g) > 0.6).double()
    expected, expected_grad = value_and_grad(SmpMCCLoss(eps=1e-5), probs, target)
    # smp adds eps to every count; softseg's own loss has none: equal up to that.
    got, grad = value_and_grad(lambda z, t: mcc_loss(z, t, activation="none"), probs, target)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-3, atol=1e-6)
    exact, _ = value_and_grad(SmpMCCLoss(eps=0.0), probs, target)
    torch.testing.assert_close(got, exact)


def test_peers_are_not_zero_at_a_soft_target_ours_is():
    monai_losses = pytest.importorskip("monai.losses")
    _, _, soft = problem(1)
    assert monai_losses.MCCLoss(smooth_dr=0.0)(soft, soft).item() > 0.1
    assert mcc_loss(soft, soft, activation="none", aggregation="image").item() == 0


# ---- hand values and conventions ------------------------------------------------------------------------


def test_hand_value():
    # One class, N = 4: x = (0.9, 0.6, 0.2, 0.0), y = (1, 0.5, 0, 0)
    # tp = 0.9 + 0.5 = 1.4, fp = 1.7 - 1.4 = 0.3, fn = 1.5 - 1.4 = 0.1, tn = min(0.1, 0) + min(0.4, 0.5) + 0.8 + 1 = 2.2
    x = torch.tensor([[[0.9, 0.6, 0.2, 0.0]]])
    y = torch.tensor([[[1.0, 0.5, 0.0, 0.0]]])
    mcc = (1.4 * 2.2 - 0.3 * 0.1) / ((1.7 * 1.5 * 2.5 * 2.3) ** 0.5)
    assert mcc_loss(x, y, activation="none").item() == pytest.approx(1 - mcc, rel=1e-6)
    assert matthews_correlation(*(torch.tensor(v) for v in (1.4, 0.3, 0.1, 2.2))).item() == pytest.approx(mcc, rel=1e-6)
    # Opposite prediction: MCC = -1, loss 2.
    assert mcc_loss(1 - y.round(), y.round(), activation="none").item() == pytest.approx(2.0)


def test_empty_and_undefined_entries():
    # Exactly empty in prediction and target (fp = fn = 0): 0. Absent from the target but predicted, however
    # little (MCC undefined): 1 with a zero, finite gradient, as the Dice loss of such a class.
    probs = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    labels = torch.zeros(1, 4, dtype=torch.long)
    torch.testing.assert_close(mcc_loss(probs, labels, activation="none", reduction="none"),
                               torch.zeros(2, dtype=torch.float64))
    logits = torch.tensor([[[30.0] * 4, [-30.0] * 4, [-30.0, -30.0, 0.0, -30.0]]], dtype=torch.float64)
    per_class, grad = value_and_grad(lambda z, t: mcc_loss(z, t, reduction="none"), logits, labels)
    torch.testing.assert_close(per_class[1:], softseg.dice_loss(logits, labels, reduction="none")[1:])
    assert per_class[2].item() == 1.0 and torch.isfinite(grad).all()
    assert mcc_loss(probs[:, :1] * 0, torch.zeros(1, 1, 4), activation="none").item() == 0    # nothing anywhere
    # Every pixel ignored.
    value, grad = value_and_grad(lambda z, t: mcc_loss(z, t, ignore_index=255), torch.randn(2, 3, 4),
                                 torch.full((2, 4), 255))
    assert value.item() == 0 and torch.isfinite(grad).all()


@pytest.mark.parametrize("aggregation", ["global", "image", "class"])
@pytest.mark.parametrize("kind", ["index", "dense"])
def test_empty_batch(aggregation, kind):
    logits = torch.zeros(0, 3, 4, 4, requires_grad=True)
    target = torch.zeros(0, 4, 4, dtype=torch.long) if kind == "index" else torch.zeros(0, 3, 4, 4)
    loss = mcc_loss(logits, target, aggregation=aggregation)
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == (0, 3, 4, 4)


def test_aggregation_weights_and_presence():
    logits, labels, _ = problem(4)
    per_image = mcc_loss(logits, labels, aggregation="image", reduction="none")   # (B, C)
    assert per_image.shape == (3, 4)
    torch.testing.assert_close(mcc_loss(logits, labels, aggregation="image"), per_image.mean())
    torch.testing.assert_close(mcc_loss(logits, labels, aggregation="class"), per_image.mean())  # all present
    weight = torch.tensor([0.0, 1.0, 2.0, 1.0], dtype=torch.float64)
    per_class = mcc_loss(logits, labels, reduction="none")
    torch.testing.assert_close(mcc_loss(logits, labels, weight=weight), (weight * per_class).sum() / weight.sum())
    no_background = mcc_loss(logits, labels, include_background=False, reduction="none")
    torch.testing.assert_close(no_background, mcc_loss(logits, labels, reduction="none")[1:])
    labels[labels == 3] = 0
    present = mcc_loss(logits, labels, active_classes="present", reduction="none")
    assert present[3] == 0 and present[:3].gt(0).all()


# ---- soft labels: zero and minimal at the target --------------------------------------------------------


@given(seeds, st.sampled_from(["global", "image", "class"]), st.sampled_from(["softmax", "sigmoid"]))
def test_zero_and_minimal_at_every_soft_target(seed, aggregation, activation):
    _, _, soft = problem(seed)
    if activation == "sigmoid":
        soft = soft.clamp(0.01, 0.99)
    start = soft.log() if activation == "softmax" else torch.logit(soft)
    assert_zero_and_minimal_at(lambda z, t: mcc_loss(z, t, aggregation=aggregation, activation=activation), start,
                               soft, seed)


def test_audit_at_target_descent_and_finiteness():
    verdict = audit_loss(
        "MCCLoss", MCCLoss(), make_problem(classes=3, size=6, seed=0), input_kind="logits", hard_target="onehot",
        reference="auto", value_range=(0.0, 2.0), steps=5, tolerance=1e-4, seed=0,
    )
    assert verdict.passed, verdict
    assert verdict.at_target == (True, "0.0000")


# ---- ignored pixels, dtypes, gradients, module ------------------------------------------------------------


def test_ignored_pixels_equal_the_kept_pixels():
    logits, labels, soft = problem(5, batch=1, shape=(12,))
    keep = torch.rand(1, 12, generator=torch.Generator().manual_seed(5)) > 0.3
    kept_logits, kept_labels = logits[..., keep[0]], labels[..., keep[0]]
    for aggregation in ("global", "image"):
        reference = mcc_loss(kept_logits, kept_labels, aggregation=aggregation)
        torch.testing.assert_close(
            mcc_loss(logits, labels.masked_fill(~keep, -1), ignore_index=-1, aggregation=aggregation), reference
        )
        torch.testing.assert_close(mcc_loss(logits, labels, mask=keep, aggregation=aggregation), reference)
        torch.testing.assert_close(
            mcc_loss(logits, soft, mask=keep, aggregation=aggregation),
            mcc_loss(kept_logits, soft[..., keep[0]], aggregation=aggregation),
        )
    # A per-class mask: each class counts its own pixels (its true negatives too).
    per_class = torch.rand(1, 4, 12, generator=torch.Generator().manual_seed(6)) > 0.3
    expected = torch.stack([
        mcc_loss(logits.softmax(1)[:, c : c + 1, per_class[0, c]], soft[:, c : c + 1, per_class[0, c]],
                 activation="none") for c in range(4)
    ])
    torch.testing.assert_close(mcc_loss(logits, soft, mask=per_class, reduction="none"), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    logits, labels, soft = problem(6, batch=2, shape=(16, 16))
    for target in (labels, soft.to(dtype)):
        low = mcc_loss(logits.to(dtype), target)
        assert low.dtype == torch.float32 and torch.isfinite(low)
        reference = mcc_loss(logits.float(), target if target is labels else target.float())
        torch.testing.assert_close(low, reference, rtol=2e-2, atol=2e-3)


def test_gradcheck():
    logits, labels, soft = problem(7, batch=2, classes=3, shape=(4,))
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: mcc_loss(x, labels), (z,))
    assert torch.autograd.gradcheck(lambda x: mcc_loss(x, soft, aggregation="image", weight=[1.0, 2.0, 0.5]), (z,))
    assert torch.autograd.gradcheck(lambda x: mcc_loss(x, soft.clamp(0.1, 0.9), activation="sigmoid"), (z,))


def test_module_equals_function_and_is_exported():
    logits, labels, _ = problem(8)
    module = softseg.MCCLoss(aggregation="class", weight=[1.0, 2.0, 3.0, 4.0], ignore_index=3)
    torch.testing.assert_close(
        module(logits, labels),
        softseg.mcc_loss(logits, labels, aggregation="class", weight=[1.0, 2.0, 3.0, 4.0], ignore_index=3),
    )
    assert "weight" in module.state_dict() and "aggregation='class'" in repr(module)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"activation": "relu"}, ValueError, "activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"),
        ({"aggregation": "batch"}, ValueError, "aggregation must be one of 'global', 'image', 'class'; got 'batch'"),
        ({"active_classes": "some"}, ValueError, "active_classes must be one of 'all', 'present'; got 'some'"),
        ({"reduction": "batch"}, ValueError, "reduction must be one of 'mean', 'sum', 'none'; got 'batch'"),
        ({"ignore_index": 1.0}, TypeError, "ignore_index must be an int or None; got float"),
        ({"distributed": "yes"}, TypeError, "distributed must be a bool; got str"),
    ],
)
def test_bad_options(options, error, match):
    with pytest.raises(error, match=match):
        mcc_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), **options)
    with pytest.raises(error, match=match):
        MCCLoss(**options)


def test_misspelt_options_name_the_loss_and_the_closest_option():
    with pytest.raises(TypeError, match=r"mcc_loss\(\) got an unexpected keyword argument 'smooth'; its options: activation"):
        mcc_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), smooth=1.0)
    with pytest.raises(TypeError, match=r"MCCLoss\(\) got an unexpected keyword argument 'agregation'; did you mean 'aggregation'"):
        MCCLoss(agregation="image")


def test_bad_targets_and_weights():
    with pytest.raises(TypeError, match="Float labels are not truncated"):
        mcc_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 2\]"):
        mcc_loss(torch.zeros(1, 3, 2), torch.tensor([[0, 3]]))
    with pytest.raises(ValueError, match="weight must have one value per scored class, 3; got 2"):
        mcc_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"mask must have shape \(1, 2\), \(1, 1, 2\) or \(1, 3, 2\); got \(1, 5\)"):
        mcc_loss(torch.zeros(1, 3, 2), torch.zeros(1, 2, dtype=torch.long), mask=torch.ones(1, 5, dtype=torch.bool))


# ---- the compatibility layers ------------------------------------------------------------------------------


@given(seeds, st.booleans(), st.booleans(), st.sampled_from(["mean", "sum", "none"]), st.booleans())
def test_compat_monai_equals_monai(seed, batch, include_background, reduction, index_target):
    monai_losses = pytest.importorskip("monai.losses")
    from softseg.compat.monai import MCCLoss as CompatMCCLoss

    logits, labels, soft = problem(seed)
    options = dict(include_background=include_background, softmax=True, batch=batch, reduction=reduction,
                   smooth_nr=0.5, smooth_dr=1e-3)
    target = labels.unsqueeze(1) if index_target else one_hot(labels, 4)
    expected, expected_grad = value_and_grad(
        monai_losses.MCCLoss(to_onehot_y=index_target, **options), logits, target.double()
    )
    got, grad = value_and_grad(CompatMCCLoss(to_onehot_y=index_target, **options), logits, target)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad, expected_grad)
    # Soft labels: MONAI's product form by default (its values), the min/max form with soft_label=True.
    probs = soft.clamp(0.05, 0.95)
    torch.testing.assert_close(CompatMCCLoss(sigmoid=False)(probs, soft), monai_losses.MCCLoss()(probs, soft))
    assert CompatMCCLoss(soft_label=True, smooth_dr=0.0)(soft, soft).item() == 0


def test_compat_smp_equals_smp():
    SmpMCCLoss = smp_mcc_module()
    from softseg.compat.smp import MCCLoss as CompatMCCLoss

    g = torch.Generator().manual_seed(9)
    probs = torch.rand(3, 1, 5, 6, generator=g, dtype=torch.float64)
    hard = (torch.rand(3, 1, 5, 6, generator=g) > 0.6).double()
    soft = torch.rand(3, 1, 5, 6, generator=g, dtype=torch.float64)
    for target in (hard, soft, hard[:, 0]):
        expected, expected_grad = value_and_grad(SmpMCCLoss(), probs, target.reshape(probs.shape))
        got, grad = value_and_grad(CompatMCCLoss(), probs if target.ndim == 4 else probs[:, 0], target)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(grad.reshape(expected_grad.shape), expected_grad)
    assert CompatMCCLoss(soft_label=True)(soft, soft).item() < 1e-4 < SmpMCCLoss()(soft, soft).item()
    assert CompatMCCLoss(eps=0.0, soft_label=True)(soft, soft).item() == 0
    assert CompatMCCLoss()(torch.zeros(0, 1, 4), torch.zeros(0, 1, 4)).item() == 0   # empty batch


def test_compat_bad_input():
    from softseg.compat.monai import MCCLoss as MonaiMCCLoss
    from softseg.compat.smp import MCCLoss as SmpMCCLoss

    with pytest.raises(ValueError, match=r"y_pred must hold values in \[0, 1\]"):
        SmpMCCLoss()(torch.full((1, 1, 2), 2.0), torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="mode='binary' expects y_true with as many elements as y_pred"):
        SmpMCCLoss()(torch.zeros(1, 1, 2), torch.zeros(1, 1, 3))
    with pytest.raises(ValueError, match="eps must be >= 0.0; got -1.0"):
        SmpMCCLoss(eps=-1.0)
    with pytest.raises(TypeError, match="soft_label must be a bool \\(True or False\\); got str 'False'"):
        SmpMCCLoss(soft_label="False")
    with pytest.raises(ValueError, match="sigmoid=True, softmax=True and other_act are exclusive"):
        MonaiMCCLoss(sigmoid=True, softmax=True)
    with pytest.raises(ValueError, match=r"target of shape \(1, 2, 2\) does not match input of shape \(1, 3, 2\)"):
        MonaiMCCLoss()(torch.zeros(1, 3, 2), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none'; got 'batch'"):
        MonaiMCCLoss(reduction="batch")
