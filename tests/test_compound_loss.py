"""CompoundLoss: the weighted sum of its terms (value and gradient) whether or not they share a pass over
the logits, how many passes run, the step counter (step(), step=, state_dict), weights at chosen steps,
the literature recipes, and bad input."""

import pytest
import torch
import torch.nn.functional as F

import softseg
from loss_checks import value_and_grad
from softseg import schedules
from softseg.cli.audit import audit_loss, make_problem
from softseg.losses import compound_loss as compound_loss_module
from softseg.losses.compound_loss import CompoundLoss
from softseg.losses.recipes import ce_warmup_recipe, jaccard_ce_recipe, l2_to_l1_recipe, region_ramp_recipe


def data(seed, classes=3, shape=(4, 5), batch=2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch, *shape), generator=g)
    soft = (torch.randn(batch, classes, *shape, generator=g, dtype=torch.float64) * 2).softmax(1)
    return logits, labels, soft




class Counter:
    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


def focal(input, target):
    return softseg.focal_loss(input, target, gamma=1.0)


# (terms, weights, target, passes over the logits that the shared terms take)
CASES = {
    "ce_dice_index_ignore": (
        lambda: dict(ce=torch.nn.CrossEntropyLoss(ignore_index=255), dice=softseg.DiceLoss(ignore_index=255)),
        {"ce": 0.4, "dice": 0.6}, "ignored", 1,
    ),
    "ce_dice_jaccard_soft": (
        lambda: dict(ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(aggregation="image"),
                     jaccard=softseg.JaccardLoss(active_classes="present", weight=[1.0, 2.0, 0.5])),
        {"ce": 0.25, "dice": 1.0, "jaccard": 0.75}, "soft", 1,
    ),
    "l2_and_l1_dice_and_ce": (
        lambda: dict(l2=softseg.DiceLoss(norm=2), l1=softseg.DiceLoss(), ce=torch.nn.CrossEntropyLoss(),
                     tversky=softseg.TverskyLoss(alpha=0.3, beta=0.7, norm=2, log_loss=True)),
        {"l2": 0.5, "l1": 0.5, "ce": 1.0, "tversky": 2.0}, "index", 1,  # l2 + tversky + ce; l1 on its own
    ),
    "sigmoid_terms_and_focal_and_function": (
        lambda: dict(dice=softseg.DiceLoss(activation="sigmoid"), mcc=softseg.MCCLoss(activation="sigmoid"),
                     jaccard=softseg.JaccardLoss(activation="sigmoid", reduction="sum"), focal=focal),
        {"dice": 1.0, "mcc": 0.5, "jaccard": 0.1, "focal": 2.0}, "soft", 1,
    ),
    "weighted_ce_is_not_fused": (
        lambda: dict(ce=torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)),
                     dice=softseg.DiceLoss()),
        {}, "index", 0,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_the_weighted_sum_of_its_terms(name, monkeypatch):
    make_terms, weights, kind, passes = CASES[name]
    logits, labels, soft = data(1)
    target = {"soft": soft, "index": labels, "ignored": labels.masked_fill(labels == 1, 255)}[kind]
    terms = make_terms()
    counter = Counter(compound_loss_module.fused_statistics)
    monkeypatch.setattr(compound_loss_module, "fused_statistics", counter)
    got, grad = value_and_grad(CompoundLoss(terms, weights=weights), logits, target)
    assert counter.calls == passes

    def separately(z, t):
        return sum(weights.get(n, 1.0) * term(z, t) for n, term in make_terms().items())

    expected, expected_grad = value_and_grad(separately, logits, target)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_shared_pass_calls_no_term_and_no_cross_entropy(monkeypatch):
    logits, labels, _ = data(2)
    loss = CompoundLoss(ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(), jaccard=softseg.JaccardLoss())
    for module in loss.modules_terms.values():
        monkeypatch.setattr(module, "forward", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: (_ for _ in ()).throw(AssertionError("called")))
    expected = (
        torch.nn.functional.log_softmax(logits, 1).gather(1, labels.unsqueeze(1)).neg().mean()
        + softseg.dice_loss(logits, labels) + softseg.jaccard_loss(logits, labels)
    )
    torch.testing.assert_close(loss(logits, labels), expected)


def test_mask_reaches_every_term_and_cross_entropy_runs_fused_alone(monkeypatch):
    logits, labels, soft = data(11)
    keep = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(11)) > 0.3
    kept = logits.movedim(1, -1)[keep].T.unsqueeze(0)                       # (1, C, kept pixels)

    def kept_target(target):
        return target[keep].unsqueeze(0) if target.ndim == 3 else target.movedim(1, -1)[keep].T.unsqueeze(0)

    loss = CompoundLoss(ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(), focal=softseg.FocalLoss(gamma=1.0),
                        weights={"dice": schedules.step([0.0, 1.0], boundaries=[1])})
    for target in (labels, soft):
        for step in (0, 1):
            expected = sum(w * term(kept, kept_target(target)) for w, term in zip(
                loss.weights_at(step).values(), (torch.nn.CrossEntropyLoss(), softseg.DiceLoss(),
                                                 softseg.FocalLoss(gamma=1.0))))
            torch.testing.assert_close(loss(logits, target, keep, step=step), expected)
    # Step 0: the cross-entropy has no region term to share with, and still runs in the fused kernels,
    # so it takes a mask and (B, 1, *spatial) class indices, which torch's loss does not.
    counter = Counter(compound_loss_module.fused_statistics)
    monkeypatch.setattr(compound_loss_module, "fused_statistics", counter)
    ce_only = CompoundLoss(ce=torch.nn.CrossEntropyLoss())
    torch.testing.assert_close(ce_only(logits, labels.unsqueeze(1)), F.cross_entropy(logits, labels))
    torch.testing.assert_close(ce_only(logits, labels, keep), F.cross_entropy(kept, kept_target(labels)))
    assert counter.calls == 2
    with pytest.raises(TypeError, match="term 'f' takes no mask= argument, but a mask was given"):
        CompoundLoss(f=lambda z, t: F.cross_entropy(z, t))(logits, labels, keep)


def test_default_is_cross_entropy_plus_dice():
    logits, labels, soft = data(3)
    loss = CompoundLoss()
    assert loss.names == ("ce", "dice") and loss.weights_at() == {"ce": 1.0, "dice": 1.0}
    for target in (labels, soft):
        torch.testing.assert_close(loss(logits, target), F.cross_entropy(logits, target) + softseg.dice_loss(logits, target))
    torch.testing.assert_close(loss(logits, labels), softseg.DiceCELoss()(logits, labels))


# ---- the step counter and the weights ---------------------------------------------------------------------


def test_weights_follow_the_counter():
    logits, labels, _ = data(4)
    ce, dice = F.cross_entropy(logits, labels), softseg.dice_loss(logits, labels)
    loss = CompoundLoss(
        ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(),
        weights={"ce": schedules.linear(1.0, 0.25, steps=100), "dice": schedules.step([0.0, 0.75], boundaries=[50])},
    )
    expected = {0: (1.0, 0.0), 49: (1.0 - 0.75 * 0.49, 0.0), 50: (0.625, 0.75), 100: (0.25, 0.75), 500: (0.25, 0.75)}
    for step, (w_ce, w_dice) in expected.items():
        assert loss.weights_at(step) == pytest.approx({"ce": w_ce, "dice": w_dice})
        torch.testing.assert_close(loss(logits, labels, step=step), w_ce * ce + w_dice * dice)
        assert loss.step_count == step  # step= sets the counter
    loss.step_count = 0
    for _ in range(50):
        loss.step()
    assert loss.step_count == 50 and loss.weights_at() == pytest.approx({"ce": 0.625, "dice": 0.75})
    assert loss.weights == loss.weights_at()                 # the weights in use, for logging
    assert set(loss.weight_schedules) == {"ce", "dice"}
    assert loss.step(10) == 60
    torch.testing.assert_close(loss(logits, labels), loss.weights_at()["ce"] * ce + 0.75 * dice)
    assert loss.step_count == 60  # forward does not advance it


def test_counter_is_saved_and_restored():
    loss = ce_warmup_recipe(steps=1000)
    loss.step(400)
    state = loss.state_dict()
    assert state["_extra_state"] == {"step": 400}
    resumed = ce_warmup_recipe(steps=1000)
    resumed.load_state_dict(state)
    assert resumed.step_count == 400 and resumed.weights_at() == loss.weights_at()
    logits, labels, _ = data(5)
    torch.testing.assert_close(resumed(logits, labels), loss(logits, labels))
    with pytest.raises(ValueError, match="CompoundLoss state must be a mapping with a 'step' entry; got 3"):
        resumed.set_extra_state(3)
    with pytest.raises(ValueError, match="the schedule's step must be >= 0; got -5"):
        resumed.set_extra_state({"step": -5})


def test_module_terms_are_submodules():
    loss = CompoundLoss(dice=softseg.DiceLoss(weight=[1.0, 2.0, 3.0]), ce=lambda z, t: F.cross_entropy(z, t))
    assert "modules_terms.dice.weight" in loss.state_dict()
    loss.to(torch.float64)
    assert loss.term("dice").weight.dtype == torch.float64
    with pytest.raises(KeyError, match=r"no term 'focal'; the terms are \['dice', 'ce'\]"):
        loss.term("focal")


def test_zero_weight_terms_are_not_computed():
    logits, labels, _ = data(6)

    def broken(input, target):
        raise AssertionError("computed")

    loss = CompoundLoss(dice=softseg.DiceLoss(), other=broken, weights={"other": schedules.step([0.0, 1.0], boundaries=[5])})
    torch.testing.assert_close(loss(logits, labels), softseg.dice_loss(logits, labels))
    with pytest.raises(AssertionError, match="computed"):
        loss(logits, labels, step=5)
    nothing = CompoundLoss(dice=softseg.DiceLoss(), weights={"dice": schedules.linear(0.0, 1.0, steps=10)})
    z = logits.clone().requires_grad_(True)
    value = nothing(z, labels)
    value.backward()
    assert value.item() == 0 and value.requires_grad


def test_half_precision_and_empty_batch():
    logits, labels, soft = data(7, shape=(16, 16))
    loss = jaccard_ce_recipe()
    low = loss(logits.to(torch.bfloat16), labels)
    assert torch.isfinite(low)
    torch.testing.assert_close(low.float(), loss(logits.float(), labels), rtol=3e-2, atol=3e-2)
    empty = torch.zeros(0, 3, 4, 4, requires_grad=True)
    value = CompoundLoss(dice=softseg.DiceLoss(), jaccard=softseg.JaccardLoss())(empty, torch.zeros(0, 4, 4, dtype=torch.long))
    value.backward()
    assert value.item() == 0


def test_audit():
    problem = make_problem(classes=3, size=6, seed=0)
    options = dict(input_kind="logits", hard_target="onehot", reference="auto", steps=3, tolerance=1e-4, seed=0)
    regions = CompoundLoss(dice=softseg.DiceLoss(), jaccard=softseg.JaccardLoss(), weights={"dice": 0.5, "jaccard": 0.5})
    assert audit_loss("regions", regions, problem, value_range=(0.0, 1.0), **options).passed
    staged = l2_to_l1_recipe(steps=10)
    staged.step(5)
    assert audit_loss("l2-to-l1", staged, problem, value_range=(0.0, 1.0), **options).passed
    assert audit_loss("default", CompoundLoss(), problem, value_range=(0.0, float("inf")), **options).passed


# ---- recipes -------------------------------------------------------------------------------------------


def test_recipes():
    logits, labels, soft = data(8)
    torch.testing.assert_close(
        jaccard_ce_recipe()(logits, soft), 0.25 * F.cross_entropy(logits, soft) + 0.75 * softseg.jaccard_loss(logits, soft)
    )
    warmup = ce_warmup_recipe(steps=100, begin=50, region=softseg.JaccardLoss())
    assert warmup.weights_at(0) == {"ce": 1.0, "region": 0.0}
    assert warmup.weights_at(100) == pytest.approx({"ce": 0.5, "region": 0.5})
    torch.testing.assert_close(warmup(logits, labels, step=150), softseg.jaccard_loss(logits, labels))
    l2_l1 = l2_to_l1_recipe(steps=10)
    torch.testing.assert_close(l2_l1(logits, soft, step=0), softseg.dice_loss(logits, soft, norm=2))
    torch.testing.assert_close(l2_l1(logits, soft, step=10), softseg.dice_loss(logits, soft))
    ramp = region_ramp_recipe(steps=99)
    assert ramp.weights_at(33) == pytest.approx({"ce": 0.67, "region": 0.33})
    with pytest.raises(ValueError, match=r"floor must lie in \[0, 1\]; got 1.5"):
        region_ramp_recipe(steps=10, floor=1.5)


# ---- bad input ------------------------------------------------------------------------------------------


def test_bad_construction():
    dice = softseg.DiceLoss()
    with pytest.raises(ValueError, match="term names must be identifiers such as 'ce' or 'dice'; got 'my dice'"):
        CompoundLoss({"my dice": dice})
    with pytest.raises(ValueError, match=r"term names given twice \(in the mapping and as keywords\): \['dice'\]"):
        CompoundLoss({"dice": dice}, dice=dice)
    with pytest.raises(TypeError, match="term 'dice' must be callable as loss\\(input, target\\); got str"):
        CompoundLoss(dice="dice")
    with pytest.raises(TypeError, match="terms must be a mapping {name: loss}; got list"):
        CompoundLoss([dice])
    with pytest.raises(ValueError, match=r"weights names \['jaccard'\], which are not terms; the terms are \['dice'\]"):
        CompoundLoss(dice=dice, weights={"jaccard": 1.0})
    with pytest.raises(ValueError, match=r"weights\['dice'\] at step 0 must be >= 0.0; got -1.0"):
        CompoundLoss(dice=dice, weights={"dice": -1.0})
    with pytest.raises(TypeError, match=r"weights\['dice'\] at step 0 must be a real number; got str"):
        CompoundLoss(dice=dice, weights={"dice": "0.5"})


def test_bad_use():
    logits, labels, _ = data(9)
    loss = CompoundLoss(dice=softseg.DiceLoss(), weights={"dice": lambda t: 1.0 - t})
    with pytest.raises(ValueError, match=r"weights\['dice'\] at step 2 must be >= 0.0; got -1.0"):
        loss(logits, labels, step=2)
    with pytest.raises(TypeError, match="the schedule's step must be an int; got float"):
        loss(logits, labels, step=1.0)
    with pytest.raises(ValueError, match="the schedule's step must be >= 0; got -1"):
        loss.step(-1)
    per_class = CompoundLoss(dice=softseg.DiceLoss(reduction="none"))
    with pytest.raises(ValueError, match=r"term 'dice' must return a scalar tensor; got \(3,\)"):
        per_class(logits, labels)
    with pytest.raises(ValueError, match="term 'f' must return a scalar tensor; got float"):
        CompoundLoss(f=lambda z, t: 1.0)(logits, labels)


@pytest.mark.parametrize(
    "make",
    [
        lambda: softseg.GeneralizedDiceLoss(aggregation="image"),
        lambda: softseg.MCCLoss(active_classes="present"),
        lambda: softseg.FocalLoss(gamma=1.5),
        lambda: CompoundLoss(ce=torch.nn.CrossEntropyLoss(), dice=softseg.DiceLoss(), weights={"ce": 0.5}),
    ],
)
def test_torch_compile_gives_the_same_values_and_gradients(make):
    logits, labels, soft = data(10)
    loss = make()
    compiled = torch.compile(loss, backend="aot_eager")
    for target in (labels, soft):
        expected, expected_grad = value_and_grad(loss, logits, target)
        got, grad = value_and_grad(compiled, logits, target)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(grad, expected_grad)
