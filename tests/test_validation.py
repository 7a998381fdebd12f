"""Bad input raises ValueError or TypeError naming the argument, what was seen and what was expected."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import torch.utils._python_dispatch
from hypothesis import given
from hypothesis import strategies as st

import softseg
import softseg.compat.monai
import softseg.compat.smp

from softseg import (
    DiceLoss,
    JaccardLoss,
    TverskyLoss,
    activate,
    aggregate,
    dice_loss,
    jaccard_loss,
    region_statistics,
    tversky_index,
    tversky_loss,
)

LOGITS = torch.zeros(2, 3, 4, 4)
LABELS = torch.zeros(2, 4, 4, dtype=torch.long)
SOFT = torch.full((2, 3, 4, 4), 1 / 3)


def _raises(error, pattern, fn, *args, **kwargs):
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)


# ---------------------------------------------------------------- input


@pytest.mark.parametrize(
    ("input", "error", "pattern"),
    [
        ([[0.0]], TypeError, r"input must be a torch\.Tensor; got list"),
        (torch.zeros(2, 3, 4, dtype=torch.long), TypeError, r"input must hold floating-point .*got dtype torch\.int64"),
        (torch.zeros(2, 3), ValueError, r"input must have shape \(B, C, \*spatial\).*got shape \(2, 3\)"),
    ],
)
def test_bad_input(input, error, pattern):
    _raises(error, pattern, dice_loss, input, LABELS)


def test_softmax_needs_two_channels():
    _raises(
        ValueError,
        r"activation='softmax' needs at least 2 channels; input has shape \(2, 1, 4, 4\).*activation='sigmoid'",
        dice_loss,
        torch.zeros(2, 1, 4, 4),
        torch.zeros(2, 4, 4, dtype=torch.long),
    )


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_probabilities_outside_unit_interval_with_activation_none(bad):
    probs = SOFT.clone()
    probs[0, 0, 0, 0] = bad
    pattern = r"input \(activation='none' expects probabilities\) must hold values in \[0, 1\]; found"
    _raises(ValueError, pattern, dice_loss, probs, LABELS, activation="none")


# ---------------------------------------------------------------- target


def test_target_not_a_tensor():
    _raises(TypeError, r"target must be a torch\.Tensor; got ndarray", dice_loss, LOGITS, LABELS.numpy())


@pytest.mark.parametrize(
    "target",
    [
        torch.zeros(2, 4, 5, dtype=torch.long),  # wrong spatial size
        torch.zeros(3, 4, 4, dtype=torch.long),  # wrong batch
        torch.zeros(2, 2, 4, 4, dtype=torch.long),  # two channels of indices
        torch.zeros(2, 2, 4, 4),  # probabilities for 2 classes, input has 3
        torch.zeros(2, 3, 4),  # missing a spatial dim
    ],
)
def test_wrong_target_shape(target):
    pattern = (
        rf"target of shape {re.escape(str(tuple(target.shape)))} and dtype {target.dtype} does not fit input of "
        r"shape \(2, 3, 4, 4\); expected class indices of an integer dtype with shape \(2, 4, 4\) or "
        r"\(2, 1, 4, 4\), or class probabilities of a float dtype with shape \(2, 3, 4, 4\)"
    )
    _raises(ValueError, pattern, dice_loss, LOGITS, target)


@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 1, 4, 4)])
def test_float_target_of_index_shape_is_not_truncated(shape):
    pattern = r"target has the shape of class indices .* but dtype torch\.float32.*Float labels are not truncated"
    _raises(TypeError, pattern, dice_loss, LOGITS, torch.ones(shape))


@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.uint8])
def test_integer_target_of_dense_shape(dtype):
    pattern = rf"target has the shape of class probabilities \(2, 3, 4, 4\) but dtype {dtype}.*\.float\(\)"
    _raises(TypeError, pattern, dice_loss, LOGITS, torch.zeros(2, 3, 4, 4, dtype=dtype))


@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 1, 4, 4)])
def test_bool_target_of_index_shape_says_how_to_convert_it(shape):
    pattern = r"target is a bool mask of shape .*; expected class indices.*target\.long\(\).*view\(torch\.uint8\)"
    _raises(TypeError, pattern, dice_loss, LOGITS, torch.ones(shape, dtype=torch.bool))


@pytest.mark.parametrize(("label", "seen"), [(3, 3), (-1, -1), (100, 100)])
def test_label_out_of_range(label, seen):
    labels = LABELS.clone()
    labels[1, 2, 3] = label
    _raises(ValueError, rf"target holds class index {seen}; expected indices in \[0, 2\]", dice_loss, LOGITS, labels)


def test_label_out_of_range_names_the_ignore_index():
    labels = LABELS.clone()
    labels[0, 0, 0] = 255
    labels[0, 0, 1] = 7
    pattern = r"target holds class index 7; expected indices in \[0, 2\] \(ignore_index=255 is excluded\)"
    _raises(ValueError, pattern, dice_loss, LOGITS, labels, ignore_index=255)


def test_binary_label_out_of_range():
    labels = torch.tensor([[0, 1, 2]])
    _raises(
        ValueError,
        r"class index 2; expected indices in \[0, 1\]",
        dice_loss,
        torch.zeros(1, 1, 3),
        labels,
        activation="sigmoid",
    )


@pytest.mark.parametrize(("bad", "pattern"), [(1.5, r"\[0, 1.5\]"), (-0.25, r"\[-0.25, 1\]"), (float("nan"), "NaN")])
def test_dense_target_outside_unit_interval(bad, pattern):
    target = torch.ones(2, 3, 4, 4) / 3
    target[1, 1, 1, 1] = bad
    target[0, 0, 0, 0] = 1.0
    target[0, 0, 0, 1] = 0.0
    _raises(ValueError, rf"target must hold values in \[0, 1\]; found.*{pattern}", dice_loss, LOGITS, target)


def test_ignore_index_with_dense_target():
    pattern = r"ignore_index applies to index targets only; pass mask="
    _raises(ValueError, pattern, dice_loss, LOGITS, SOFT, ignore_index=0)


# ---------------------------------------------------------------- mask


@pytest.mark.parametrize(
    ("mask", "error", "pattern"),
    [
        (
            torch.ones(2, 4, 4),
            TypeError,
            r"mask must be a bool tensor \(True = pixel counts\); got dtype torch\.float32",
        ),
        (torch.ones(2, 4, 4, dtype=torch.long), TypeError, r"mask must be a bool tensor.*torch\.int64"),
        (
            torch.ones(2, 2, 4, 4, dtype=torch.bool),
            ValueError,
            r"mask must have shape \(2, 4, 4\), \(2, 1, 4, 4\) or \(2, 3, 4, 4\); got \(2, 2, 4, 4\)",
        ),
        (torch.ones(4, 4, dtype=torch.bool), ValueError, r"mask must have shape .*; got \(4, 4\)"),
        ([[True]], TypeError, r"mask must be a torch\.Tensor; got list"),
    ],
)
def test_bad_mask(mask, error, pattern):
    for target in (LABELS, SOFT):
        _raises(error, pattern, dice_loss, LOGITS, target, mask=mask)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"activation": "relu"}, ValueError, r"activation must be one of 'softmax', 'sigmoid', 'none'; got 'relu'"),
        ({"reduction": "avg"}, ValueError, r"reduction must be one of 'mean', 'sum', 'none'; got 'avg'"),
        ({"aggregation": "batch"}, ValueError, r"aggregation must be one of 'global', 'image', 'class'; got 'batch'"),
        ({"aggregation": {"pixel": 1.0}}, ValueError, r"aggregation key must be one of .*; got 'pixel'"),
        ({"aggregation": {"image": -1.0}}, ValueError, r"aggregation\['image'\] must be >= 0.0; got -1.0"),
        ({"aggregation": {"image": 0.0}}, ValueError, r"aggregation weights must not all be zero"),
        ({"aggregation": {}}, TypeError, r"aggregation must be .* or a non-empty mapping.*; got \{\}"),
        ({"aggregation": {"image": None}}, TypeError, r"aggregation\['image'\] must be a real number; got NoneType"),
        ({"aggregation": {"image": "0.5"}}, TypeError, r"aggregation\['image'\] must be a real number; got str"),
        ({"aggregation": {"class": float("nan")}}, ValueError, r"aggregation\['class'\] must be finite; got nan"),
        ({"aggregation": {1: 0.5}}, ValueError, r"aggregation key must be one of 'global', 'image', 'class'; got 1"),
        ({"aggregation": 3}, TypeError, r"aggregation must be 'global', 'image', 'class' or .*; got 3"),
        ({"active_classes": "some"}, ValueError, r"active_classes must be one of 'all', 'present'; got 'some'"),
        ({"presence_threshold": -0.5}, ValueError, r"presence_threshold must be >= 0.0; got -0.5"),
        ({"norm": 3}, ValueError, r"norm must be 1 or 2; got 3"),
        ({"norm": True}, ValueError, r"norm must be 1 or 2; got True"),
        ({"smooth": -1.0}, ValueError, r"smooth must be >= 0.0; got -1.0"),
        ({"smooth": float("nan")}, ValueError, r"smooth must be finite; got nan"),
        ({"smooth": "1"}, TypeError, r"smooth must be a real number; got str"),
        ({"gamma": 0.0}, ValueError, r"gamma must be > 0.0; got 0.0"),
        ({"gamma": float("inf")}, ValueError, r"gamma must be finite; got inf"),
        ({"log_loss": 1}, TypeError, r"log_loss must be a bool; got int"),
        ({"include_background": "no"}, TypeError, r"include_background must be a bool; got str"),
        ({"ignore_index": 1.5}, TypeError, r"ignore_index must be an int or None; got float"),
        ({"ignore_index": True}, TypeError, r"ignore_index must be an int or None; got bool"),
        (
            {"reduction": "none", "aggregation": {"image": 0.5, "class": 0.5}},
            ValueError,
            r"reduction='none' needs a single aggregation level; got the mix",
        ),
    ],
)
def test_bad_options(options, error, pattern):
    _raises(error, pattern, dice_loss, LOGITS, LABELS, **options)
    _raises(error, pattern, DiceLoss, **options)  # modules fail at construction


@pytest.mark.parametrize(
    ("alpha", "beta", "error", "pattern"),
    [
        (-0.5, 0.5, ValueError, r"alpha must be >= 0.0; got -0.5"),
        (0.5, -1, ValueError, r"beta must be >= 0.0; got -1.0"),
        (0.0, 0.0, ValueError, r"alpha and beta must not both be 0.*got 0.0, 0.0"),
        (None, 0.5, TypeError, r"alpha must be a real number; got NoneType"),
    ],
)
def test_bad_tversky_weights(alpha, beta, error, pattern):
    _raises(error, pattern, tversky_loss, LOGITS, LABELS, alpha=alpha, beta=beta)
    _raises(error, pattern, TverskyLoss, alpha=alpha, beta=beta)


def test_unknown_option_is_a_type_error():
    for fn in (dice_loss, jaccard_loss, tversky_loss):
        pattern = rf"{fn.__name__}\(\) got an unexpected keyword argument 'smoothing'; did you mean 'smooth'\?"
        _raises(TypeError, pattern, fn, LOGITS, LABELS, smoothing=1.0)
    for module in (DiceLoss, JaccardLoss, TverskyLoss):
        pattern = rf"{module.__name__}\(\) got an unexpected keyword argument 'smoothing'; did you mean 'smooth'\?"
        _raises(TypeError, pattern, module, smoothing=1.0)


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: DiceLoss(smoth=1), r"^DiceLoss\(\) got an unexpected keyword argument 'smoth'; did you mean 'smooth'\?$"),
        (lambda: softseg.DiceCELoss(lamda_ce=1), r"^DiceCELoss\(\) .* 'lamda_ce'; did you mean 'lambda_ce'\?$"),
        (lambda: softseg.RegionCELoss(regoin="dice"), r"^RegionCELoss\(\) .* 'regoin'; did you mean 'region'\?$"),
        (lambda: softseg.FocalLoss(gama=1.0), r"^FocalLoss\(\) .* 'gama'; did you mean 'gamma'\?$"),
        (lambda: softseg.dice_ce_loss(LOGITS, LABELS, ignore=255), r"^dice_ce_loss\(\) .* 'ignore'; did you mean 'ignore_index'\?$"),
        (lambda: JaccardLoss(zzz=1), r"^JaccardLoss\(\) .* 'zzz'; its options: activation, smooth, norm, gamma, .*process_group$"),
    ],
)
def test_a_typo_blames_the_class_or_function_called_and_suggests_the_option(make, pattern):
    with pytest.raises(TypeError, match=pattern):
        make()


@pytest.mark.parametrize(
    ("callable_", "general"),
    [
        (dice_loss, tversky_loss),
        (jaccard_loss, tversky_loss),
        (DiceLoss, tversky_loss),
        (JaccardLoss, tversky_loss),
        (TverskyLoss, tversky_loss),
        (tversky_loss, tversky_loss),
        (softseg.dice_ce_loss, softseg.region_ce_loss),
        (softseg.DiceCELoss, softseg.region_ce_loss),
        (softseg.RegionCELoss, softseg.region_ce_loss),
        (softseg.region_ce_loss, softseg.region_ce_loss),
    ],
)
def test_every_option_is_in_the_signature_keyword_only_with_a_default_and_a_type(callable_, general):
    import inspect

    parameters = {p.name: p for p in inspect.signature(callable_).parameters.values()}
    assert not [p for p in parameters.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]  # no **options
    options = {name: p for name, p in parameters.items() if name not in ("input", "target")}
    for option in options.values():
        assert option.kind == option.KEYWORD_ONLY, option
        assert option.default is not option.empty and option.annotation is not option.empty, option
    # A specialised loss or a module keeps every option of the general function with the same default
    # and type, except those it fixes (and mask, which a module takes in forward).
    left_out = {"alpha", "beta", "region", "mask"}
    general_options = {p.name: p for p in inspect.signature(general).parameters.values()}
    general_options = {name: p for name, p in general_options.items() if name not in ("input", "target")}
    assert set(general_options) - left_out == set(options) - left_out
    for name in set(options) - left_out:
        assert (options[name].default, options[name].annotation) == (
            general_options[name].default, general_options[name].annotation), name


@pytest.mark.parametrize("fixed", ["alpha", "beta"])
def test_dice_and_jaccard_fix_alpha_and_beta(fixed):
    for fn, name in ((dice_loss, "dice_loss"), (jaccard_loss, "jaccard_loss")):
        pattern = rf"{name}\(\) got an unexpected keyword argument '{fixed}'; {name} fixes alpha = beta = .* \(tversky_loss"
        _raises(TypeError, pattern, fn, LOGITS, LABELS, **{fixed: 0.3})
    for module, name in ((DiceLoss, "DiceLoss"), (JaccardLoss, "JaccardLoss")):
        _raises(TypeError, rf"{name}\(\) got .* '{fixed}'; {name} fixes alpha = beta = .* \(TverskyLoss", module,
                **{fixed: 0.3})


def test_specialised_losses_equal_the_general_one_with_every_option():
    options = dict(activation="softmax", smooth=0.5, norm=2, gamma=2.0, log_loss=True, weight=[1.0, 2.0],
                   include_background=False, aggregation="image", active_classes="present",
                   presence_threshold=0.2, ignore_index=7, reduction="sum")
    logits, labels = torch.randn(2, 3, 5), torch.tensor([[0, 1, 2, 7, 1], [2, 2, 0, 1, 7]])
    for specialised, alpha in ((dice_loss, 0.5), (jaccard_loss, 1.0)):
        expected = tversky_loss(logits, labels, alpha=alpha, beta=alpha, **options)
        torch.testing.assert_close(specialised(logits, labels, **options), expected)
    modules = {DiceLoss: 0.5, JaccardLoss: 1.0}
    for module, alpha in modules.items():
        expected = TverskyLoss(alpha=alpha, beta=alpha, **options)(logits, labels)
        torch.testing.assert_close(module(**options)(logits, labels), expected)
    compound = dict(options, lambda_ce=0.5, lambda_region=2.0)
    del compound["reduction"]
    expected = softseg.region_ce_loss(logits, labels, region="dice", **compound)
    torch.testing.assert_close(softseg.dice_ce_loss(logits, labels, **compound), expected)
    torch.testing.assert_close(softseg.DiceCELoss(**compound)(logits, labels), expected)


def test_include_background_false_with_one_channel():
    _raises(
        ValueError,
        r"include_background=False drops class 0, but input has a single channel",
        dice_loss,
        torch.zeros(2, 1, 4),
        torch.zeros(2, 4, dtype=torch.long),
        activation="sigmoid",
        include_background=False,
    )


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize(
    ("weight", "options", "error", "pattern"),
    [
        ([1.0, 2.0], {}, ValueError, r"weight must have one value per scored class, 3; got 2"),
        ([1.0, 2.0, 3.0, 4.0], {}, ValueError, r"weight must have one value per scored class, 3; got 4"),
        (
            [1.0, 2.0, 3.0],
            {"include_background": False},
            ValueError,
            r"weight must have one value per scored class, 2 \(include_background=False: leave out class 0\); got 3",
        ),
        (torch.ones(3, 1), {}, ValueError, r"weight must be 1-D, one value per class; got shape \(3, 1\)"),
        ([1.0, -2.0, 3.0], {}, ValueError, r"weight\[1\] must be >= 0.0; got -2.0"),
        ([1.0, float("nan"), 3.0], {}, ValueError, r"weight\[1\] must be finite; got nan"),
        ([1.0, 1.0, float("inf")], {}, ValueError, r"weight\[2\] must be finite; got inf"),
        (torch.tensor([1.0, -2.0, 3.0]), {}, ValueError, r"weight\[1\] must be >= 0.0; got -2.0"),
        (torch.tensor([1.0, 1.0, float("nan")]), {}, ValueError, r"weight\[2\] must be finite; got nan"),
        (torch.tensor([-1, 1, 1]), {}, ValueError, r"weight\[0\] must be >= 0.0; got -1"),
        (torch.tensor([True, True, False]), {}, TypeError, r"weight must hold real numbers.*got dtype torch\.bool"),
        (torch.ones(3, dtype=torch.complex64), {}, TypeError, r"weight must hold real numbers.*torch\.complex64"),
        # sequences: checked entry by entry, the message names the entry
        (["a", 1, 1], {}, TypeError, r"weight\[0\] must be a real number; got str"),
        ([1, None, 2], {}, TypeError, r"weight\[1\] must be a real number; got NoneType"),
        ([1, 1, True], {}, TypeError, r"weight\[2\] must be a real number; got bool"),
        ([[1, 2, 3]], {}, TypeError, r"weight\[0\] must be a real number; got list"),
        ((1, 2, torch.tensor(3.0)), {}, TypeError, r"weight\[2\] must be a real number; got Tensor"),
        (np.array([1.0, -1.0, 1.0]), {}, ValueError, r"weight\[1\] must be >= 0.0; got -1.0"),
        (np.array([1.0, np.nan, 1.0]), {}, ValueError, r"weight\[1\] must be finite; got nan"),
        (np.ones((3, 1)), {}, ValueError, r"weight must be 1-D; got an array of shape \(3, 1\)"),
        (np.array([True, False, True]), {}, TypeError, r"weight\[0\] must be a real number; got bool"),
        (np.array(["a", "b", "c"]), {}, TypeError, r"weight\[0\] must be a real number; got str"),
        ("abc", {}, TypeError, r"weight must be a 1-D tensor or a sequence of numbers; got str"),
        (2.0, {}, TypeError, r"weight must be a 1-D tensor or a sequence of numbers; got float"),
        ({"a": 1.0}, {}, TypeError, r"weight must be a 1-D tensor or a sequence of numbers; got dict"),
    ],
)
def test_bad_weight(weight, options, error, pattern):
    _raises(error, pattern, dice_loss, LOGITS, LABELS, weight=weight, **options)


@pytest.mark.parametrize(
    "loss",
    [
        functools.partial(dice_loss, aggregation="image"),
        softseg.dice_ce_loss,
        softseg.focal_loss,
        lambda *args, **kwargs: softseg.metrics.soft_dice_score(*args, activation="softmax", **kwargs),
    ],
)
def test_weight_sequences_of_any_kind_give_the_same_value(loss):
    logits, labels = torch.randn(2, 3, 5), torch.tensor([[0, 1, 2, 1, 1], [2, 2, 0, 1, 0]])
    reference = loss(logits, labels, weight=torch.tensor([1.0, 2.0, 0.5]))
    for weight in ([1, 2, 0.5], (1.0, 2.0, 0.5), np.array([1.0, 2.0, 0.5]), np.array([1, 2, 0.5], dtype=np.float32),
                   [np.float32(1), np.int64(2), 0.5]):
        torch.testing.assert_close(loss(logits, labels, weight=weight), reference, check_dtype=False)


def test_module_weight_of_wrong_length_fails_at_forward_and_bad_values_at_construction():
    module = DiceLoss(weight=[1.0, 2.0])  # the number of classes is only known from the input
    _raises(ValueError, r"weight must have one value per scored class, 3; got 2", module, LOGITS, LABELS)
    _raises(ValueError, r"weight\[1\] must be finite; got nan", DiceLoss, weight=[1.0, float("nan")])
    _raises(ValueError, r"weight must be 1-D", DiceLoss, weight=torch.ones(2, 2))


# ------------------------------------------------ weights changed after the check (issue: a cached check bypassed)


_WEIGHTED_MODULES = [
    lambda weight: softseg.DiceLoss(weight=weight),
    lambda weight: softseg.TverskyLoss(alpha=0.3, beta=0.7, weight=weight),
    lambda weight: softseg.DiceCELoss(weight=weight),
    lambda weight: softseg.FocalLoss(weight=weight),
]


@pytest.mark.parametrize("make", _WEIGHTED_MODULES)
@pytest.mark.parametrize("write", ["data", "in_place", "shared_storage"])
def test_a_weight_changed_after_construction_is_checked_at_the_next_call(make, write):
    logits, labels = torch.randn(1, 3, 4), torch.tensor([[0, 1, 2, 1]])
    loss = make([1.0, 2.0, 1.0])
    assert torch.isfinite(loss(logits, labels))
    bad = torch.tensor([1.0, -5.0, 1.0])
    if write == "data":  # no version bump: the write that bypassed the old once-per-version check
        loss.weight.data.copy_(bad)
    elif write == "in_place":
        with torch.no_grad():
            loss.weight.copy_(bad)
    else:  # another tensor on the same storage, with a version counter of its own
        torch.Tensor().set_(loss.weight.untyped_storage()).copy_(bad)
    with pytest.raises(ValueError, match=r"weight\[1\] must be >= 0.0; got -5.0"):
        loss(logits, labels)
    with softseg.set_value_checks(False):  # the switch still turns the check off
        loss(logits, labels)


def test_a_weight_tensor_changed_between_calls_is_checked_at_every_call():
    logits, labels = torch.randn(1, 3, 4), torch.tensor([[0, 1, 2, 1]])
    weight = torch.tensor([1.0, 2.0, 0.5])
    functions = (softseg.dice_loss, softseg.dice_ce_loss, softseg.focal_loss, softseg.metrics.soft_dice_score)
    for function in functions:
        function(logits.softmax(1), labels, weight=weight)
    weight.data[2] = float("nan")
    for function in functions:
        with pytest.raises(ValueError, match=r"weight\[2\] must be finite; got nan"):
            function(logits.softmax(1), labels, weight=weight)


def test_metric_class_weight_changed_after_construction_is_checked_at_compute():
    metric = softseg.metrics.SoftDiceScore(num_classes=3, weight=torch.tensor([1.0, 2.0, 1.0]))
    metric.update(torch.full((1, 3, 4), 1 / 3), torch.tensor([[0, 1, 2, 1]]))
    metric.weight.data[0] = -1.0
    with pytest.raises(ValueError, match=r"weight\[0\] must be >= 0.0; got -1.0"):
        metric.compute()


def test_weight_checks_on_an_accelerator_read_once_per_version_and_guard_every_call_on_the_device(monkeypatch):
    # The accelerator path, run on the CPU: a host read only when the version changed, a device-side
    # assertion (no host read) at every call; torch._assert_async raises at once on the CPU.
    from softseg import _checks

    monkeypatch.setattr(_checks, "_host_reads_are_free", lambda tensor: False)
    logits, labels = torch.randn(1, 3, 4), torch.tensor([[0, 1, 2, 1]])
    loss = softseg.DiceLoss(weight=torch.tensor([1.0, 2.0, 1.0]))
    loss(logits, labels)
    with _RecordOps() as again:
        loss(logits, labels)
    assert "isfinite" not in again.names  # the same version: no host check
    assert again.names.count("_assert_async") == 1  # ... but the device-side guard
    loss.weight.data.copy_(torch.tensor([1.0, -5.0, 1.0]))  # no version bump
    with pytest.raises(RuntimeError, match=r"softseg: weight must hold finite values >= 0"):
        loss(logits, labels)
    with torch.no_grad():
        loss.weight[1] = float("inf")  # a version bump: the clear host-side message
    with pytest.raises(ValueError, match=r"weight\[1\] must be finite; got inf"):
        loss(logits, labels)


def test_weight_guard_compiles_without_a_graph_break():
    from softseg._checks import check_weight_values

    def weighted_sum(x, weight):
        check_weight_values("weight", weight)
        return (x * weight).sum()

    compiled = torch.compile(weighted_sum, fullgraph=True, backend="eager")
    assert float(compiled(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))) == 6.0
    with pytest.raises(RuntimeError, match=r"softseg: weight must hold finite values >= 0"):
        compiled(torch.ones(3), torch.tensor([1.0, float("nan"), 3.0]))


# ---------------------------------------------------------------- devices


def _loss_functions():
    return [
        softseg.dice_loss,
        softseg.jaccard_loss,
        functools.partial(softseg.tversky_loss, alpha=0.3, beta=0.7),
        softseg.dice_ce_loss,
        softseg.region_ce_loss,
        softseg.focal_loss,
        softseg.DiceLoss(),
        softseg.DiceCELoss(),
        softseg.FocalLoss(),
        softseg.metrics.soft_dice_score,
        softseg.metrics.soft_jaccard_score,
        softseg.metrics.brier_score,
        softseg.metrics.expected_calibration_error,
        softseg.region_statistics,
    ]


@pytest.mark.parametrize("function", _loss_functions())
@pytest.mark.parametrize("target", [LABELS, SOFT], ids=["index", "dense"])
def test_target_or_mask_on_another_device_is_named_with_both_devices(function, target):
    probs = SOFT  # probabilities are also fine logits
    pattern = r"target is on device meta but input is on device cpu; expected both on one device"
    _raises(ValueError, pattern, function, probs, target.to("meta"))
    pattern = r"target is on device cpu but input is on device meta"
    _raises(ValueError, pattern, function, probs.to("meta"), target)
    mask = torch.ones(2, 4, 4, dtype=torch.bool, device="meta")
    _raises(ValueError, r"mask is on device meta but input is on device cpu", function, probs, target, mask=mask)


@pytest.mark.parametrize(
    "function", [softseg.dice_loss, softseg.tversky_loss, softseg.dice_ce_loss, softseg.focal_loss]
)
def test_weight_tensor_on_another_device_is_named_with_both_devices(function):
    weight = torch.ones(3, device="meta")
    pattern = r"weight is on device meta but input is on device cpu; expected both on one device \(move weight"
    _raises(ValueError, pattern, function, LOGITS, LABELS, weight=weight)


def test_module_weight_buffer_on_another_device_names_the_module():
    loss = softseg.DiceLoss(weight=[1.0, 2.0, 1.0]).to("meta")
    pattern = r"weight is on device meta but input is on device cpu.*or the loss module that holds it"
    _raises(ValueError, pattern, loss, LOGITS, LABELS)
    with softseg.set_value_checks(False):  # the label check reads values, which meta tensors lack
        assert loss(LOGITS.to("meta"), LABELS.to("meta")).is_meta  # input and weight on one device


def test_everything_on_the_meta_device_gives_shapes():
    logits = torch.zeros(2, 3, 4, 4, device="meta")
    labels = torch.zeros(2, 4, 4, dtype=torch.long, device="meta")
    with softseg.set_value_checks(False):  # the label check reads values, which meta tensors lack
        loss = softseg.dice_loss(logits, labels, weight=torch.ones(3, device="meta"), aggregation="image")
    assert loss.device.type == "meta" and loss.shape == ()


# ---------------------------------------------------------------- lower layers


def test_lower_layers_validate_too():
    _raises(ValueError, r"norm must be 1 or 2; got 0", region_statistics, SOFT, LABELS, norm=0)
    _raises(ValueError, r"activation must be one of", activate, LOGITS, "tanh")
    stats = region_statistics(SOFT, LABELS)
    entry = lambda s: 1 - tversky_index(s, alpha=0.5, beta=0.5)  # noqa: E731
    _raises(ValueError, r"reduction='none' needs a single aggregation level", aggregate, stats, entry,
            aggregation={"global": 1.0, "image": 1.0}, reduction="none")
    _raises(ValueError, r"presence_threshold must be finite; got nan", aggregate, stats, entry,
            presence_threshold=float("nan"))


# ---------------------------------------------------------------- fuzz: only ValueError / TypeError


_DTYPES = [torch.float32, torch.float16, torch.float64, torch.int64, torch.int32, torch.uint8, torch.bool]


@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=5),
    st.lists(st.integers(0, 3), min_size=0, max_size=5),
    st.sampled_from(_DTYPES),
    st.sampled_from(_DTYPES),
    st.sampled_from(["softmax", "sigmoid", "none"]),
    st.sampled_from([None, 0, 255]),
)
def test_arbitrary_input_gives_a_value_or_a_clear_error(
    input_shape, target_shape, input_dtype, target_dtype, activation, ignore_index
):
    input = torch.rand(input_shape).to(input_dtype)
    target = (torch.rand(target_shape) * 3).to(target_dtype)
    try:
        loss = dice_loss(input, target, activation=activation, ignore_index=ignore_index)
    except (ValueError, TypeError) as error:
        assert str(error)  # a message, not a bare exception
    else:
        assert bool(torch.isfinite(loss))


# ---------------------------------------------------------------- set_value_checks


class _RecordOps(torch.utils._python_dispatch.TorchDispatchMode):
    """The names of the aten ops run inside the block."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


class _HostReads(_RecordOps):
    """The reads of tensor values back to the host inside the block (a sync on a GPU): ``.tolist()`` calls
    (they dispatch no op) and ``_local_scalar_dense`` ops (``.item()``, ``int()``, ``bool()``)."""

    def __enter__(self):
        self.tolist_calls = 0
        self._tolist = torch.Tensor.tolist
        reads = self

        def tolist(tensor):
            reads.tolist_calls += 1
            return reads._tolist(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    @property
    def count(self) -> int:
        return self.tolist_calls + self.names.count("_local_scalar_dense")


@pytest.mark.parametrize(
    "loss, target",
    [
        (softseg.dice_loss, torch.tensor([[0, 1, 2, 1]])),
        (softseg.dice_ce_loss, torch.tensor([[0, 1, 2, 1]])),
        (softseg.dice_loss, torch.full((1, 3, 4), 1 / 3)),
        (functools.partial(softseg.dice_loss, activation="sigmoid"), torch.tensor([[0, 1, 1, 0]])),
    ],
)
def test_value_checks_off_leaves_no_host_sync(loss, target):
    logits = torch.randn(1, 3 if target.ndim == 3 or target.max() > 1 else 1, 4, requires_grad=True)
    with _HostReads() as checked:
        loss(logits, target).backward()
    assert checked.count > 0  # the checks do read values back by default
    with softseg.set_value_checks(False), _HostReads() as unchecked:
        loss(logits, target).backward()
    assert unchecked.count == 0


def test_value_checks_switch_call_and_block():
    bad = torch.tensor([[0, 5]])
    logits = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="class index 5"):
        softseg.dice_loss(logits, bad)
    with softseg.set_value_checks(False):
        assert not softseg.value_checks_enabled()
        softseg.region_statistics(logits.softmax(1), torch.tensor([[0, 1]]))
        with pytest.raises(TypeError, match="enabled must be a bool"):
            softseg.set_value_checks("no")
    assert softseg.value_checks_enabled()
    softseg.set_value_checks(False)  # a plain call stays in force
    try:
        assert not softseg.value_checks_enabled()
        softseg.dice_loss(logits, torch.full((1, 2, 2), 0.5) * 3)  # a target above 1 passes unchecked
    finally:
        softseg.set_value_checks(True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        softseg.dice_loss(logits, torch.full((1, 2, 2), 1.5))


@pytest.mark.parametrize(
    "make",
    [
        lambda: softseg.compat.monai.DiceLoss(softmax=True, to_onehot_y=True, weight=[1.0, 2.0, 1.0]),
        lambda: softseg.compat.monai.DiceCELoss(softmax=True, to_onehot_y=True, weight=torch.tensor([1.0, 2.0, 1.0])),
        lambda: softseg.compat.monai.FocalLoss(to_onehot_y=True, weight=[1.0, 2.0, 1.0]),
        lambda: softseg.compat.smp.DiceLoss("multiclass", class_weights=[1.0, 2.0, 1.0]),
        lambda: softseg.compat.smp.TverskyLoss("multiclass", class_weights=[1.0, 2.0, 1.0]),
    ],
)
def test_compat_weight_changed_after_construction_is_checked_at_the_next_call(make):
    loss = make()
    smp = isinstance(getattr(loss, "class_weights", None), torch.Tensor)
    logits = torch.randn(1, 3, 4)
    labels = torch.tensor([[0, 1, 2, 1]]) if smp else torch.tensor([[[0, 1, 2, 1]]])
    assert torch.isfinite(loss(logits, labels))
    if smp:  # smp keeps class_weights as a plain attribute
        weights = loss.class_weights
    else:
        weights = next(b for name, b in loss.named_buffers() if name.endswith("class_weight"))
    weights.data.copy_(torch.tensor([1.0, -5.0, 1.0]))
    with pytest.raises(ValueError, match=r"weight(s)?\[1\] must be >= 0.0; got -5.0"):
        loss(logits, labels)


def test_numpy_scalars_are_numbers():
    expected = dice_loss(LOGITS, LABELS, smooth=0.5, gamma=2.0)
    torch.testing.assert_close(dice_loss(LOGITS, LABELS, smooth=np.float32(0.5), gamma=np.int64(2)), expected)
    _raises(TypeError, r"smooth must be a real number; got bool_?", dice_loss, LOGITS, LABELS, smooth=np.bool_(True))
