"""softseg.compat.monai against the installed MONAI 1.6: values, shapes and gradients over a grid of
constructor options x 2D/3D x index/one-hot/soft targets x reductions; then the documented improvements."""

import warnings

import pytest
import torch
import torch.nn.functional as F

import softseg.compat.monai as ours

monai_losses = pytest.importorskip("monai.losses")

CHANNELS = 3
SHAPES = {"2d": (2, CHANNELS, 4, 5), "3d": (2, CHANNELS, 3, 2, 3)}
TARGETS = ("index", "onehot", "soft")
REDUCTIONS = ("mean", "sum", "none")
SENTINEL = 255  # an ignore label outside [0, C): all-zero pixels of a one-hot target


def make_data(shape, kind, *, ignore=None, seed=0):
    """Logits (float64) and a target of the requested kind for ours and for MONAI (the same tensor)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    labels = torch.randint(0, shape[1], (shape[0], 1) + shape[2:], generator=g)
    if ignore == SENTINEL:
        labels[:, :, 0] = SENTINEL
    if kind == "index":
        return logits, labels
    onehot = F.one_hot(labels.clamp_max(shape[1] - 1)[:, 0], shape[1]).movedim(-1, 1).double()
    if ignore == SENTINEL:
        onehot = onehot * (labels != SENTINEL)
    if kind == "onehot":
        return logits, onehot
    soft = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).softmax(1)
    return logits, soft


def run(loss, logits, target, *extra):
    x = logits.detach().clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = loss(x, target, *extra)
    value.sum().backward()
    return value.detach(), x.grad


def assert_same(mine, theirs, atol=1e-6):
    (value, grad), (ref_value, ref_grad) = mine, theirs
    assert value.shape == ref_value.shape
    torch.testing.assert_close(value, ref_value.to(value.dtype), atol=atol, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=atol, rtol=1e-5)


# Every constructor option that changes the result, alone or in the combinations that matter.
DICE = [
    {},
    {"softmax": True},
    {"sigmoid": True},
    {"other_act": torch.tanh},
    {"softmax": True, "include_background": False},
    {"softmax": True, "squared_pred": True},
    {"softmax": True, "jaccard": True},
    {"softmax": True, "batch": True},
    {"softmax": True, "smooth_nr": 0.0, "smooth_dr": 1e-3},
    {"softmax": True, "weight": [0.5, 1.0, 2.0]},
    {"softmax": True, "weight": 2.0, "batch": True},
    {"softmax": True, "weight": [1.0, 3.0], "include_background": False},
    {"softmax": True, "soft_label": True},
    {"sigmoid": True, "soft_label": True, "jaccard": True, "batch": True},
    {"softmax": True, "soft_label": True, "squared_pred": True},
    {"softmax": True, "ignore_index": 1},
    {"softmax": True, "ignore_index": SENTINEL, "soft_label": True},
]
TVERSKY = [
    {},
    {"softmax": True, "alpha": 0.3, "beta": 0.7},
    {"sigmoid": True, "alpha": 0.8, "beta": 0.2, "batch": True},
    {"softmax": True, "include_background": False},
    {"softmax": True, "smooth_nr": 0.0, "smooth_dr": 1e-4},
    {"softmax": True, "soft_label": True, "alpha": 0.3, "beta": 0.7},
    {"softmax": True, "ignore_index": 1},
    {"softmax": True, "ignore_index": SENTINEL, "include_background": False},
]
GENERALIZED = [
    {"softmax": True},
    {"softmax": True, "w_type": "simple"},
    {"softmax": True, "w_type": "uniform"},
    {"softmax": True, "batch": True},
    {"sigmoid": True, "include_background": False},
    {"softmax": True, "soft_label": True},
    {"softmax": True, "soft_label": True, "batch": True, "smooth_nr": 0.0, "smooth_dr": 1e-3},
    {"other_act": torch.sigmoid, "w_type": "simple"},
]
FOCAL = [
    {},
    {"use_softmax": True},
    {"gamma": 0.0},
    {"gamma": 1.5, "alpha": 0.25},
    {"use_softmax": True, "alpha": 0.25},
    {"use_softmax": True, "alpha": [0.2, 0.3, 0.5]},
    {"alpha": [0.2, 0.3, 0.5]},
    {"weight": [0.5, 1.0, 2.0]},
    {"use_softmax": True, "weight": 2.0},
    {"include_background": False},
    {"use_softmax": True, "include_background": False, "alpha": 0.25},
    {"ignore_index": 1},
    {"use_softmax": True, "ignore_index": SENTINEL},
]
DICE_CE = [
    {"softmax": True},
    {"softmax": True, "weight": torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)},
    {"softmax": True, "weight": torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), "include_background": False},
    {"softmax": True, "lambda_dice": 0.3, "lambda_ce": 2.0},
    {"softmax": True, "label_smoothing": 0.1},
    {"softmax": True, "jaccard": True, "batch": True, "squared_pred": True},
    {"sigmoid": True},
    {"other_act": torch.sigmoid, "include_background": False, "smooth_nr": 0.0},
]
DICE_FOCAL = [
    {"softmax": True},
    {"sigmoid": True, "gamma": 1.0, "alpha": 0.3},
    {"softmax": True, "weight": [0.5, 1.0, 2.0]},
    {"softmax": True, "include_background": False, "lambda_focal": 0.5, "lambda_dice": 2.0},
    {"softmax": True, "jaccard": True, "batch": True},
    {"softmax": True, "squared_pred": True, "gamma": 0.5},
    {"other_act": torch.sigmoid, "smooth_nr": 0.0, "smooth_dr": 1e-4},
]
GENERALIZED_FOCAL = [
    {"softmax": True},
    {"sigmoid": True, "w_type": "simple", "weight": [0.5, 1.0, 2.0], "gamma": 1.0},
    {"softmax": True, "batch": True, "lambda_gdl": 0.5, "lambda_focal": 2.0},
    {"softmax": True, "include_background": False, "gamma": 0.5, "w_type": "uniform"},
]

GRID = (
    [("DiceLoss", o) for o in DICE]
    + [("TverskyLoss", o) for o in TVERSKY]
    + [("GeneralizedDiceLoss", o) for o in GENERALIZED]
    + [("FocalLoss", o) for o in FOCAL]
    + [("DiceCELoss", o) for o in DICE_CE]
    + [("DiceFocalLoss", o) for o in DICE_FOCAL]
    + [("GeneralizedDiceFocalLoss", o) for o in GENERALIZED_FOCAL]
)


def _grid_id(case):
    name, options = case
    parts = [f"{k}={v.__name__ if callable(v) else v}" for k, v in options.items() if not isinstance(v, torch.Tensor)]
    parts += [f"{k}=tensor" for k, v in options.items() if isinstance(v, torch.Tensor)]
    return name + "[" + ",".join(parts) + "]"


@pytest.mark.parametrize("case", GRID, ids=[_grid_id(c) for c in GRID])
def test_matches_monai(case):
    name, options = case
    reductions = ("mean", "sum") if name == "DiceCELoss" else REDUCTIONS
    ignore = options.get("ignore_index")
    # MONAI's focal terms run in float32 whatever the input dtype.
    atol = 1e-5 if "Focal" in name else 1e-7
    for dims, shape in SHAPES.items():
        for kind in TARGETS:
            logits, target = make_data(shape, kind, ignore=ignore)
            for reduction in reductions:
                kwargs = dict(options, reduction=reduction, to_onehot_y=kind == "index")
                mine = run(getattr(ours, name)(**kwargs), logits, target)
                theirs = run(getattr(monai_losses, name)(**kwargs), logits, target)
                assert_same(mine, theirs, atol=atol), (dims, kind, reduction)


@pytest.mark.parametrize(
    "name",
    [
        "DiceLoss",
        "TverskyLoss",
        "GeneralizedDiceLoss",
        "FocalLoss",
        "DiceCELoss",
        "DiceFocalLoss",
        "GeneralizedDiceFocalLoss",
    ],
)
def test_float32_matches_monai(name):
    # The usual training dtype: float32 logits, float32 targets (MONAI's MetaTensor labels are float).
    for kind in TARGETS:
        logits, target = make_data(SHAPES["3d"], kind, ignore=SENTINEL if name in ("DiceLoss", "FocalLoss") else None)
        logits, target = logits.float(), target.float()
        options = {"to_onehot_y": kind == "index"}
        if name in ("DiceLoss", "FocalLoss"):
            options["ignore_index"] = SENTINEL
        if name != "FocalLoss":
            options["softmax"] = True
        mine = run(getattr(ours, name)(**options), logits, target)
        theirs = run(getattr(monai_losses, name)(**options), logits, target)
        assert mine[0].dtype == torch.float32
        assert_same(mine, theirs, atol=1e-5)


MASKED = [
    {},
    {"softmax": True},
    {"softmax": True, "include_background": False, "batch": True},
    {"sigmoid": True, "soft_label": True},
]


@pytest.mark.parametrize("options", MASKED, ids=[_grid_id(("MaskedDiceLoss", o)) for o in MASKED])
def test_masked_dice_matches_monai(options):
    for shape in SHAPES.values():
        mask_shape = (shape[0], 1) + shape[2:]
        g = torch.Generator().manual_seed(5)
        bool_mask = torch.rand(mask_shape, generator=g) > 0.3
        float_mask = torch.rand(mask_shape, generator=g, dtype=torch.float64)
        for kind in ("onehot", "soft"):
            logits, target = make_data(shape, kind)
            for mask in (bool_mask, float_mask):
                for reduction in REDUCTIONS:
                    kwargs = dict(options, reduction=reduction)
                    mine = run(ours.MaskedDiceLoss(**kwargs), logits, target, mask)
                    theirs = run(monai_losses.MaskedDiceLoss(**kwargs), logits, target, mask)
                    assert_same(mine, theirs)
        # Index targets: masked pixels leave every class, as MONAI does for the equivalent one-hot target.
        labels = make_data(shape, "index")[1]
        onehot = make_data(shape, "onehot")[1]
        mine = run(ours.MaskedDiceLoss(to_onehot_y=True, **options), logits, labels, bool_mask)
        theirs = run(monai_losses.MaskedDiceLoss(**options), logits, onehot, bool_mask)
        assert_same(mine, theirs)


STATE = [
    ("DiceLoss", {"weight": [1.0, 2.0, 3.0]}),
    ("FocalLoss", {"weight": [1.0, 2.0, 3.0]}),
    ("DiceCELoss", {"weight": torch.tensor([1.0, 2.0, 3.0])}),
    ("DiceFocalLoss", {"weight": [1.0, 2.0, 3.0]}),
    ("GeneralizedDiceFocalLoss", {"weight": [1.0, 2.0, 3.0]}),
    ("MaskedDiceLoss", {"weight": 2.0}),
]


@pytest.mark.parametrize(("name", "options"), STATE, ids=[name for name, _ in STATE])
def test_state_dicts_load_both_ways(name, options):
    # Loss modules often sit inside a LightningModule: checkpoints must load across the import change.
    mine, theirs = getattr(ours, name)(**options), getattr(monai_losses, name)(**options)
    assert set(mine.state_dict()) == set(theirs.state_dict())
    mine.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(mine.state_dict())


# ---- warnings, product form, single channel -------------------------------------------------------


SINGLE_CHANNEL = [
    ("DiceLoss", {"softmax": True}, "`softmax=True` ignored"),
    ("DiceLoss", {"to_onehot_y": True}, "`to_onehot_y=True` ignored"),
    ("DiceLoss", {"include_background": False}, "`include_background=False` ignored"),
    ("TverskyLoss", {"sigmoid": True, "include_background": False}, "`include_background=False` ignored"),
    ("GeneralizedDiceLoss", {"softmax": True}, "`softmax=True` ignored"),
    ("FocalLoss", {"to_onehot_y": True}, "`to_onehot_y=True` ignored"),
    ("FocalLoss", {"include_background": False}, "`include_background=False` ignored"),
    ("DiceFocalLoss", {"softmax": True}, "`softmax=True` ignored"),
    ("DiceCELoss", {"include_background": False}, "`include_background=False` ignored"),
]


@pytest.mark.parametrize(("name", "options", "message"), SINGLE_CHANNEL)
def test_single_channel_warnings_and_values(name, options, message):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 1, 4, 4, generator=g, dtype=torch.float64)
    target = (torch.rand(2, 1, 4, 4, generator=g) > 0.5).double()
    with pytest.warns(UserWarning, match=message):
        value = getattr(ours, name)(**options)(logits, target)
    messages = []
    for module in (ours, monai_losses):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = getattr(module, name)(**options)(logits, target)
        messages.append(sorted(str(w.message) for w in caught if "single channel" in str(w.message)))
    assert messages[0] == messages[1]  # the same warnings, as often
    torch.testing.assert_close(value, result.to(value.dtype), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["DiceFocalLoss", "GeneralizedDiceFocalLoss", "DiceLoss"])
def test_single_channel_warning_count_matches_monai(name):
    logits = torch.zeros(1, 1, 4, dtype=torch.float64)
    target = torch.ones(1, 1, 4, dtype=torch.float64)
    counts = []
    for module in (ours, monai_losses):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            getattr(module, name)(to_onehot_y=True, sigmoid=True)(logits, target)
        counts.append(sum("`to_onehot_y=True` ignored" in str(w.message) for w in caught))
    assert counts[0] == counts[1] >= 1


def test_focal_softmax_scalar_alpha_without_background_warns():
    logits, target = make_data(SHAPES["2d"], "onehot")
    with pytest.warns(UserWarning, match="scalar `alpha` ignored when using softmax"):
        ours.FocalLoss(use_softmax=True, include_background=False, alpha=0.3)(logits, target)


def test_masked_dice_without_mask_warns_like_monai():
    logits, target = make_data(SHAPES["2d"], "onehot")
    with pytest.warns(UserWarning, match="No mask value specified for the MaskedLoss"):
        value = ours.MaskedDiceLoss(softmax=True)(logits, target)
    torch.testing.assert_close(value, ours.DiceLoss(softmax=True)(logits, target))


def test_legacy_product_form_on_soft_labels():
    # The golden case of DESIGN.md: product form 0.441176, min form 0.294118, squared form 1 - 2<x,y>/(|x|^2+|y|^2).
    x = torch.tensor([[[0.2, 0.7, 0.5]]])
    y = torch.tensor([[[0.5, 0.5, 1.0]]])
    plain = dict(smooth_nr=0.0, smooth_dr=0.0)
    assert ours.DiceLoss(**plain)(x, y).item() == pytest.approx(0.441176, abs=1e-6)
    assert ours.DiceLoss(soft_label=True, **plain)(x, y).item() == pytest.approx(0.294118, abs=1e-6)
    assert ours.DiceLoss(jaccard=True, soft_label=True, **plain)(x, y).item() == pytest.approx(0.454545, abs=1e-6)
    assert ours.DiceLoss(squared_pred=True, **plain)(x, y).item() == pytest.approx(1 - 1.9 / (0.78 + 1.5), abs=1e-6)
    assert ours.TverskyLoss(alpha=0.3, beta=0.7, soft_label=True, **plain)(x, y).item() == pytest.approx(
        0.340659, abs=1e-6
    )
    # soft_label=True is zero at the soft target; the legacy form is not (so existing runs reproduce).
    assert ours.DiceLoss(soft_label=True, **plain)(y, y).item() == 0
    assert ours.DiceLoss(**plain)(y, y).item() > 0.1


# ---- improvements over MONAI ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DiceCELoss", "DiceFocalLoss", "GeneralizedDiceFocalLoss"])
def test_soft_label_on_compound_losses(name):
    logits, soft = make_data(SHAPES["2d"], "soft", seed=3)
    compound = getattr(ours, name)(softmax=True, soft_label=True)
    region = (
        ours.GeneralizedDiceLoss(softmax=True, soft_label=True)
        if "Generalized" in name
        else ours.DiceLoss(softmax=True, soft_label=True)
    )
    if name == "DiceCELoss":
        other = F.cross_entropy(logits, soft)
    else:
        other = ours.FocalLoss()(logits, soft)
    torch.testing.assert_close(compound(logits, soft), region(logits, soft) + other)
    # And the soft-label term is really used: it differs from the legacy product form on soft targets.
    assert not torch.allclose(compound(logits, soft), getattr(ours, name)(softmax=True)(logits, soft))


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_integer_one_hot_with_soft_label(dtype):
    logits, onehot = make_data(SHAPES["3d"], "onehot")
    for name in ("DiceLoss", "TverskyLoss", "GeneralizedDiceLoss"):
        mine = getattr(ours, name)(softmax=True, soft_label=True)(logits, onehot.to(dtype))
        reference = getattr(monai_losses, name)(softmax=True, soft_label=True)(logits, onehot)
        torch.testing.assert_close(mine, reference)
    with pytest.raises(Exception):  # noqa: B017 - MONAI itself crashes here (vector_norm of an integer tensor)
        monai_losses.DiceLoss(softmax=True, soft_label=True)(logits, onehot.long())


def test_index_targets_are_not_one_hot_encoded(monkeypatch):
    logits, labels = make_data(SHAPES["2d"], "index")
    expected = ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, labels)

    def no_one_hot(*args, **kwargs):
        raise AssertionError("a dense one-hot was built")

    monkeypatch.setattr(F, "one_hot", no_one_hot)
    monkeypatch.setattr(torch.Tensor, "scatter_", no_one_hot)
    torch.testing.assert_close(ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, labels), expected)
    ours.TverskyLoss(softmax=True, to_onehot_y=True, ignore_index=1)(logits, labels)
    ours.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)(logits, labels)
    ours.DiceCELoss(softmax=True, to_onehot_y=True)(logits, labels)


def test_float_class_indices_are_checked_not_truncated():
    logits, labels = make_data(SHAPES["2d"], "index")
    whole = ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, labels.double())
    torch.testing.assert_close(whole, monai_losses.DiceLoss(softmax=True, to_onehot_y=True)(logits, labels.double()))
    fractional = labels.double()
    fractional[0, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match="expects whole-number class indices; target holds 1.5"):
        ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, fractional)
    with pytest.raises(ValueError, match="expects whole-number class indices"):
        ours.DiceCELoss(softmax=True, to_onehot_y=True)(logits, fractional)


def test_empty_class_without_denominator_smoothing_is_finite():
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    target = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    target[:, 0] = 1  # classes 1 and 2 are empty in the target
    loss = ours.DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=0.0)(logits, target)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # Empty in prediction and target: 0 (MONAI gives 0/0 = NaN there).
    empty = ours.DiceLoss(smooth_nr=0.0, smooth_dr=0.0, reduction="none")(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
    assert empty.item() == 0
    assert torch.isnan(monai_losses.DiceLoss(smooth_nr=0.0, smooth_dr=0.0)(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))


def test_gradcheck_float64():
    logits, soft = make_data((1, 3, 3, 2), "soft")
    labels = make_data((1, 3, 3, 2), "index")[1]
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ours.DiceLoss(softmax=True)(v, soft), (x,))
    assert torch.autograd.gradcheck(lambda v: ours.TverskyLoss(softmax=True, alpha=0.2, beta=0.8)(v, soft), (x,))
    assert torch.autograd.gradcheck(lambda v: ours.GeneralizedDiceLoss(softmax=True, to_onehot_y=True)(v, labels), (x,))
    assert torch.autograd.gradcheck(lambda v: ours.DiceFocalLoss(softmax=True, to_onehot_y=True)(v, labels), (x,))


# ---- bad input: ValueError/TypeError with clear messages (MONAI: AssertionError) ------------------------


def test_bad_input_messages():
    logits, onehot = make_data(SHAPES["2d"], "onehot")
    labels = make_data(SHAPES["2d"], "index")[1]
    with pytest.raises(ValueError, match=r"does not match input of shape .*pass to_onehot_y=True for class indices"):
        ours.DiceLoss(softmax=True)(logits, labels.double())
    with pytest.raises(AssertionError):  # what MONAI raises for the same mistake
        monai_losses.DiceLoss(softmax=True)(logits, labels.double())
    with pytest.raises(ValueError, match=r"to_onehot_y=True expects class indices of shape \(2, 1, 4, 5\)"):
        ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, onehot)
    with pytest.raises(ValueError, match=r"target holds class index 3; expected indices in \[0, 2\]"):
        ours.DiceLoss(softmax=True, to_onehot_y=True)(logits, labels + 1)
    with pytest.raises(ValueError, match="sigmoid=True, softmax=True and other_act are exclusive"):
        ours.DiceLoss(sigmoid=True, softmax=True)
    with pytest.raises(TypeError, match="other_act must be None or callable; got int"):
        ours.TverskyLoss(other_act=3)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum'; got 'none'"):
        ours.DiceCELoss(reduction="none")
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none'; got 'avg'"):
        ours.FocalLoss(reduction="avg")
    with pytest.raises(ValueError, match="w_type must be one of 'square', 'simple', 'uniform'; got 'cubic'"):
        ours.GeneralizedDiceLoss(w_type="cubic")
    with pytest.raises(ValueError, match="lambda_dice must be >= 0.0; got -1.0"):
        ours.DiceFocalLoss(lambda_dice=-1.0)
    with pytest.raises(ValueError, match=r"weight\[1\] must be >= 0.0; got -1.0"):
        ours.DiceLoss(weight=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="weight must have one value per class, 2 \\(include_background=False"):
        ours.DiceLoss(softmax=True, include_background=False, weight=[1.0, 1.0, 1.0])(logits, onehot)
    with pytest.raises(ValueError, match="alpha must have one value per class, 3; got 2"):
        ours.FocalLoss(use_softmax=True, alpha=[0.5, 0.5])(logits, onehot)
    with pytest.raises(ValueError, match="target must have 1 channel \\(class indices\\) or as many as input"):
        ours.DiceCELoss()(logits, onehot[:, :2])
    with pytest.raises(ValueError, match="target must have as many dimensions as input"):
        ours.DiceFocalLoss()(logits, labels[:, 0])
    with pytest.raises(ValueError, match="soft_label=True needs non-negative predictions; found -"):
        ours.DiceLoss(other_act=torch.tanh, soft_label=True)(logits, onehot)
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got float"):
        ours.DiceLoss(ignore_index=1.0)
    with pytest.raises(TypeError, match="input must hold floating-point logits or probabilities"):
        ours.DiceLoss()(labels, onehot)


def test_masked_dice_bad_masks():
    logits, onehot = make_data(SHAPES["2d"], "onehot")
    labels = make_data(SHAPES["2d"], "index")[1]
    with pytest.raises(
        ValueError, match=r"mask must have one channel, shape \(B, 1, \*spatial\); got shape \(2, 3, 4, 5\)"
    ):
        ours.MaskedDiceLoss()(logits, onehot, torch.ones_like(onehot))
    with pytest.raises(ValueError, match="mask must have batch size 1 or 2"):
        ours.MaskedDiceLoss()(logits, onehot, torch.ones(3, 1, 4, 5))
    with pytest.raises(ValueError, match="mask holds fractional weights, which class-index targets"):
        ours.MaskedDiceLoss(to_onehot_y=True)(logits, labels, torch.full((2, 1, 4, 5), 0.5))


def test_more_bad_input_messages():
    logits, onehot = make_data(SHAPES["2d"], "onehot")
    labels = make_data(SHAPES["2d"], "index")[1]
    cases = [
        (lambda: ours.DiceLoss(weight="abc"), TypeError, "weight must be a number, a sequence of numbers or a tensor"),
        (lambda: ours.DiceLoss(weight=[[1.0]]), TypeError, r"weight\[0\] must be a real number; got list \[1.0\]"),
            (lambda: ours.DiceLoss(weight=torch.ones(1, 3)), ValueError, "weight must be a number or 1-D, one value per class"),
        (lambda: ours.FocalLoss(alpha=[0.5, -0.5]), ValueError, r"alpha\[1\] must lie in \[0, 1\]; got -0.5"),
        (lambda: ours.DiceCELoss(weight=[1.0, 2.0, 3.0]), TypeError, "weight must be a tensor or None"),
        (lambda: ours.DiceCELoss(label_smoothing=1.5), ValueError, r"label_smoothing must lie in \[0, 1\]; got 1.5"),
        (lambda: ours.GeneralizedDiceFocalLoss(lambda_gdl=-0.5), ValueError, "lambda_gdl must be >= 0.0; got -0.5"),
        (lambda: ours.DiceLoss()(logits.tolist(), onehot), TypeError, "input must be a torch.Tensor; got list"),
        (
            lambda: ours.DiceLoss()(logits[:, :, 0, 0], onehot),
            ValueError,
            "input must have shape \\(B, C, \\*spatial\\)",
        ),
        (lambda: ours.DiceLoss()(logits, onehot.tolist()), TypeError, "target must be a torch.Tensor; got list"),
        (lambda: ours.DiceCELoss()(logits, onehot.tolist()), TypeError, "target must be a torch.Tensor; got list"),
        (lambda: ours.DiceLoss()(logits, onehot.to(torch.complex64)), TypeError, "target must be real"),
        (lambda: ours.DiceLoss(to_onehot_y=True)(logits, labels.to(torch.complex64)), TypeError, "target must be real"),
        (lambda: ours.DiceLoss()(logits, onehot * 2), ValueError, r"target must hold values in \[0, 1\]"),
        (
            lambda: ours.FocalLoss(weight=[1.0, 2.0])(logits[:, :1], onehot[:, :1]),
            ValueError,
            "weight with one value per class needs more than one channel",
        ),
        (lambda: ours.MaskedDiceLoss()(logits, onehot, [1.0]), TypeError, "mask must be a torch.Tensor; got list"),
        (
            lambda: ours.MaskedDiceLoss()(logits, onehot, torch.ones(2, 1, 4, 5, dtype=torch.complex64)),
            TypeError,
            "mask must be real",
        ),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


# ---- reliability: empty batches, excluded pixels, options, devices --------------------------------------------

ALL_CLASSES = [
    "DiceLoss",
    "MaskedDiceLoss",
    "TverskyLoss",
    "GeneralizedDiceLoss",
    "FocalLoss",
    "DiceCELoss",
    "DiceFocalLoss",
    "GeneralizedDiceFocalLoss",
]


@pytest.mark.parametrize("name", ALL_CLASSES)
@pytest.mark.parametrize("kind", ["index", "onehot"])
def test_empty_batch_gives_zero(name, kind):
    # MONAI: NaN for DiceLoss, DiceCELoss, FocalLoss and the compound losses ("mean" of nothing); 0 here.
    logits, target = make_data(SHAPES["2d"], kind)
    logits, target = logits[:0], target[:0]
    reductions = ("mean", "sum") if name == "DiceCELoss" else REDUCTIONS
    for reduction in reductions:
        options = {"to_onehot_y": kind == "index", "reduction": reduction}
        if name != "FocalLoss":
            options["softmax"] = True
        extra = (torch.ones(0, 1, 4, 5, dtype=torch.bool),) if name == "MaskedDiceLoss" else ()
        value, grad = run(getattr(ours, name)(**options), logits, target, *extra)
        assert grad.shape == logits.shape
        if reduction == "none":
            assert value.numel() == 0 or torch.equal(value, torch.zeros_like(value))
        else:
            assert value.item() == 0, (name, reduction)


def _poisoned(logits, excluded):
    """logits with NaN, inf and -inf at the excluded pixels ((B, 1, *spatial) bool)."""
    poisoned = logits.clone()
    values = torch.tensor([float("nan"), float("inf"), -float("inf")], dtype=logits.dtype)
    fill = values.repeat(logits.shape[1] // 3 + 1)[: logits.shape[1]].reshape(1, -1, *([1] * (logits.ndim - 2)))
    return torch.where(excluded, fill, poisoned)


EXCLUDED_CASES = [
    ("DiceLoss", {"softmax": True, "ignore_index": SENTINEL}, "index"),
    ("DiceLoss", {"softmax": True, "ignore_index": SENTINEL, "soft_label": True}, "onehot"),
    ("DiceLoss", {"sigmoid": True, "ignore_index": SENTINEL, "squared_pred": True, "batch": True}, "onehot"),
    ("TverskyLoss", {"softmax": True, "ignore_index": SENTINEL, "alpha": 0.3, "beta": 0.7}, "index"),
    ("TverskyLoss", {"softmax": True, "ignore_index": SENTINEL}, "onehot"),
    ("FocalLoss", {"ignore_index": SENTINEL}, "index"),
    ("FocalLoss", {"ignore_index": SENTINEL, "use_softmax": True, "alpha": 0.25}, "onehot"),
]


@pytest.mark.parametrize(("name", "options", "kind"), EXCLUDED_CASES)
def test_non_finite_logits_at_ignored_pixels_change_nothing(name, options, kind):
    logits, target = make_data(SHAPES["2d"], kind, ignore=SENTINEL)
    excluded = (target == SENTINEL) if kind == "index" else (target.sum(1, keepdim=True) == 0)
    assert excluded.any()
    for reduction in REDUCTIONS:
        loss = getattr(ours, name)(**options, to_onehot_y=kind == "index", reduction=reduction)
        value, grad = run(loss, logits, target)
        poisoned_value, poisoned_grad = run(loss, _poisoned(logits, excluded), target)
        torch.testing.assert_close(poisoned_value, value)
        torch.testing.assert_close(poisoned_grad, grad)
        assert (poisoned_grad * excluded == 0).all() and torch.isfinite(poisoned_grad).all()


@pytest.mark.parametrize("kind", ["index", "onehot", "soft"])
def test_non_finite_logits_at_masked_pixels_change_nothing(kind):
    logits, target = make_data(SHAPES["3d"], kind)
    mask = torch.rand((2, 1) + SHAPES["3d"][2:], generator=torch.Generator().manual_seed(3)) > 0.4
    loss = ours.MaskedDiceLoss(softmax=True, to_onehot_y=kind == "index")
    value, grad = run(loss, logits, target, mask)
    poisoned_value, poisoned_grad = run(loss, _poisoned(logits, ~mask), target, mask)
    torch.testing.assert_close(poisoned_value, value)
    torch.testing.assert_close(poisoned_grad, grad)
    assert (poisoned_grad * ~mask == 0).all()


FLAGS = {
    "DiceLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "squared_pred", "jaccard", "batch", "soft_label"],
    "MaskedDiceLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "squared_pred", "jaccard", "batch", "soft_label"],
    "TverskyLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "batch", "soft_label"],
    "GeneralizedDiceLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "batch", "soft_label"],
    "FocalLoss": ["include_background", "to_onehot_y", "use_softmax"],
    "DiceCELoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "squared_pred", "jaccard", "batch", "soft_label"],
    "DiceFocalLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "squared_pred", "jaccard", "batch", "soft_label"],
    "GeneralizedDiceFocalLoss": ["include_background", "to_onehot_y", "sigmoid", "softmax", "batch", "soft_label"],
}


@pytest.mark.parametrize("name", ALL_CLASSES)
def test_boolean_flags_refuse_strings_and_numbers(name):
    # A value read from a config file: 'False' is truthy, so MONAI would switch the option on.
    for flag in FLAGS[name] + ["distributed"] * (name != "FocalLoss"):
        for value in ("False", 0, None):
            with pytest.raises(TypeError, match=f"{flag} must be a bool"):
                getattr(ours, name)(**{flag: value})
        getattr(ours, name)(**{flag: False})


def test_alpha_outside_the_unit_interval_is_refused():
    cases = [
        (lambda: ours.TverskyLoss(alpha=1.5), r"alpha must lie in \[0, 1\]; got 1.5"),
        (lambda: ours.TverskyLoss(beta=-0.1), r"beta must lie in \[0, 1\]; got -0.1"),
        (lambda: ours.FocalLoss(alpha=-0.2), r"alpha must lie in \[0, 1\]; got -0.2"),
        (lambda: ours.FocalLoss(alpha=1.2, use_softmax=True), r"alpha must lie in \[0, 1\]; got 1.2"),
        (lambda: ours.FocalLoss(alpha=[0.2, 1.5]), r"alpha\[1\] must lie in \[0, 1\]; got 1.5"),
        (lambda: ours.FocalLoss(alpha=torch.tensor([0.2, -0.5])), r"alpha\[1\] must lie in \[0, 1\]; got -0.5"),
        (lambda: ours.DiceFocalLoss(alpha=2.0), r"alpha must lie in \[0, 1\]; got 2.0"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()


def test_sequence_options_are_checked_entry_by_entry():
    cases = [
        (lambda: ours.DiceLoss(weight=["a", 1]), TypeError, r"weight\[0\] must be a real number; got str 'a'"),
        (lambda: ours.DiceLoss(weight=[1, None, 2]), TypeError, r"weight\[1\] must be a real number; got NoneType None"),
        (lambda: ours.FocalLoss(weight=[1, True]), TypeError, r"weight\[1\] must be a real number; got bool True"),
        (lambda: ours.FocalLoss(alpha=[0.2, "x"]), TypeError, r"alpha\[1\] must be a real number; got str 'x'"),
        (lambda: ours.DiceFocalLoss(weight=[1.0, float("inf")]), ValueError, r"weight\[1\] must be finite; got inf"),
        (lambda: ours.MaskedDiceLoss(weight=torch.tensor([1.0, float("nan")])), ValueError, r"weight\[1\] must be finite"),
        (lambda: ours.GeneralizedDiceFocalLoss(weight=[-1.0]), ValueError, r"weight\[0\] must be >= 0.0; got -1.0"),
        (lambda: ours.DiceLoss(weight=torch.tensor([True, False])), TypeError, "weight must hold real numbers"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


@pytest.mark.filterwarnings("ignore:No mask value specified")
def test_other_devices_are_named():
    logits, onehot = make_data(SHAPES["2d"], "onehot")
    labels = make_data(SHAPES["2d"], "index")[1]
    for name in ALL_CLASSES:
        with pytest.raises(ValueError, match="target is on device meta but input is on device cpu"):
            getattr(ours, name)()(logits, onehot.to("meta"))
    with pytest.raises(ValueError, match="target is on device meta"):
        ours.DiceLoss(to_onehot_y=True)(logits, labels.to("meta"))
    mask = torch.ones(2, 1, 4, 5, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="mask is on device meta but input is on device cpu"):
        ours.MaskedDiceLoss()(logits, onehot, mask)
    meta_weight = torch.ones(3, device="meta")
    for name in ("DiceLoss", "FocalLoss", "DiceCELoss", "DiceFocalLoss"):
        with pytest.raises(ValueError, match="weight is on device meta but input is on device cpu"):
            getattr(ours, name)(weight=meta_weight)(logits, onehot)
    # Weights given as numbers are the layer's own: they follow the input, as MONAI moves them.
    torch.testing.assert_close(
        ours.DiceLoss(weight=[1.0, 2.0, 3.0])(logits, onehot),
        ours.DiceLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))(logits, onehot),
    )


@pytest.mark.filterwarnings("ignore:No mask value specified")
def test_shape_mismatch_is_a_value_error_and_an_assertion_error():
    logits, onehot = make_data(SHAPES["2d"], "onehot")
    for name in ALL_CLASSES:
        with pytest.raises(ValueError, match="does not match|must have"):
            getattr(ours, name)()(logits, onehot[:, :, :2])
        with pytest.raises(AssertionError):  # what MONAI raises, so `except AssertionError` keeps working
            getattr(ours, name)()(logits, onehot[:, :, :2])


@pytest.mark.parametrize("options", [{}, {"use_softmax": True, "alpha": 0.25}, {"weight": [1.0, 2.0, 0.5]}, {"gamma": 0.5}])
def test_focal_takes_inputs_without_spatial_dims(options):
    # (B, C) classification logits, as MONAI accepts them.
    logits = torch.randn(4, 3, dtype=torch.float64)
    target = F.one_hot(torch.tensor([0, 2, 1, 1]), 3).double()
    for reduction in REDUCTIONS:
        kwargs = dict(options, reduction=reduction)
        assert_same(
            run(ours.FocalLoss(**kwargs), logits, target), run(monai_losses.FocalLoss(**kwargs), logits, target), atol=1e-6
        )


def test_missing_peer_classes_say_where_to_get_them():
    for name in ("GeneralizedWassersteinDiceLoss", "HausdorffDTLoss", "SoftclDiceLoss", "SoftDiceclDiceLoss"):
        with pytest.raises(ImportError, match=f"softseg.compat.monai has no {name}: .*from monai.losses import {name}"):
            exec(f"from softseg.compat.monai import {name}", {})
        assert not hasattr(ours, name) and getattr(ours, name, None) is None  # (PEP 562: an AttributeError here)
        with pytest.raises(AttributeError, match=f"softseg.compat.monai has no {name}: .*from monai.losses"):
            getattr(ours, name)
    with pytest.raises(AttributeError, match="has no attribute 'NotALoss'"):
        ours.NotALoss  # noqa: B018
