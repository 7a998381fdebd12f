"""Training of softseg compare: folds, the same batches for every configuration, augmentation, targets, hooks."""

import math

import pytest
import torch

import softseg.cli.train as train_module
from softseg.cli.configs import LOSS_CONFIGURATIONS, LossConfiguration, cross_entropy
from softseg.cli.dataset import MultiRaterData, generate_multirater
from softseg.cli.model import CompactUNet
from softseg.cli.train import (
    TrainingData,
    TrainingError,
    TrainSettings,
    case_metrics,
    last_tenth_gain,
    make_folds,
    padded_forward,
    prepare_data,
    train_run,
)


class Recorder:
    """A loss that records what it is given: cross-entropy on hard targets, soft cross-entropy on soft ones."""

    def __init__(self):
        self.targets, self.masks, self.steps = [], [], 0

    def __call__(self, logits, target, mask=None):
        self.targets.append(target.clone())
        self.masks.append(None if mask is None else mask.clone())
        return cross_entropy(logits, target, mask=mask)

    def step(self):
        self.steps += 1

    @property
    def weights(self):
        return {"region": 1.0 - self.steps / 100, "ce": torch.tensor(self.steps / 100)}


def _configuration(target, recorders):
    def build():
        recorders.append(Recorder())
        return recorders[-1]

    return LossConfiguration(f"recorder-{target}", build, target, "records its inputs")


@pytest.fixture
def seen_images(monkeypatch):
    """The image batches of the optimisation steps (not of evaluation), in order."""
    seen = []

    def spy(model, images):
        if torch.is_grad_enabled():
            seen.append(images.clone())
        return padded_forward(model, images)

    monkeypatch.setattr(train_module, "padded_forward", spy)
    return seen


def _sign_data(cases=3, size=8, raters=2):
    """Every rater marks the pixels where the image is positive, so the target is a function of the image."""
    torch.manual_seed(1)
    images = torch.randn(cases, 1, size, size)
    masks = (images > 0).long().expand(cases, raters, size, size).clone()
    return prepare_data(MultiRaterData(images, masks, 2, tuple(f"c{i}" for i in range(cases))))


def test_folds_partition_the_cases():
    folds = make_folds(10, folds=3, seed=4)
    tested = torch.cat([f.test for f in folds]).sort().values
    assert tested.tolist() == list(range(10)) and [len(f.test) for f in folds] == [4, 3, 3]
    for fold in folds:
        assert set(fold.train.tolist()) | set(fold.test.tolist()) == set(range(10))
        assert not set(fold.train.tolist()) & set(fold.test.tolist())
    single = make_folds(8, seed=0)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    assert single[0].test.tolist() == order[:2].tolist() and single[0].train.tolist() == order[2:].tolist()
    with pytest.raises(ValueError, match=r"--folds must be at least 2 \(k-fold cross-validation\); got 1"):
        make_folds(8, folds=1)
    with pytest.raises(ValueError, match=r"--folds 9 is larger than the number of cases \(8\)"):
        make_folds(8, folds=9)


def test_every_configuration_sees_the_same_augmented_batches(seen_images):
    data = _sign_data()
    settings = TrainSettings(1, 2, 1e-3, 2, 0, steps=12, patch=4, evaluations=2)
    recorders = []
    fold = make_folds(3, folds=3)[0]
    for target in ("hard", "soft"):
        train_run(_configuration(target, recorders), data, fold, settings, run_seed=7)
    hard_images, soft_images = seen_images[:12], seen_images[12:]
    assert len(seen_images) == 24 and all(torch.equal(a, b) for a, b in zip(hard_images, soft_images, strict=True))
    # The crops are augmented together with their targets: the target is still the sign of the image.
    for images, hard, soft in zip(hard_images, recorders[0].targets, recorders[1].targets, strict=True):
        assert torch.equal(hard, (images[:, 0] > 0).long()) and torch.equal(soft[:, 1], (images[:, 0] > 0).float())

    # Some crops are flipped or turned: they match a transformed crop of a training image but no plain one.
    def placements(sample, transforms):
        found = 0
        for case in fold.train.tolist():
            for top in range(5):
                for left in range(5):
                    crop = data.images[case, 0, top : top + 4, left : left + 4]
                    found += any(torch.equal(t(crop), sample) for t in transforms)
        return found

    identity = [lambda x: x]
    dihedral = [lambda x, k=k, f=f: (x.flip(-1) if f else x).rot90(k) for k in range(4) for f in (0, 1)]
    samples = [images[i, 0] for images in hard_images for i in range(len(images))]
    assert all(placements(s, dihedral) for s in samples)
    assert any(not placements(s, identity) for s in samples)


def test_hard_targets_majority_rater1_and_random_rater():
    torch.manual_seed(0)
    raters = torch.randint(0, 2, (4, 3, 8, 8))
    data = prepare_data(MultiRaterData(torch.randn(4, 1, 8, 8), raters, 2, ("a", "b", "c", "d")))
    fold = make_folds(4, folds=2)[0]
    for hard_target in ("majority", "rater1", "random-rater"):
        recorders = []
        settings = TrainSettings(3, 1, 1e-3, 2, 0, hard_target=hard_target)  # whole images, batches of one case
        train_run(_configuration("hard", recorders), data, fold, settings, run_seed=0)
        chosen = []
        for target in recorders[0].targets:
            case = next(
                c
                for c in fold.train.tolist()
                if any(torch.equal(target[0], raters[c, r]) for r in range(3))
                or torch.equal(target[0], data.majority[c])
            )
            if hard_target == "majority":
                assert torch.equal(target[0], data.majority[case])
            matches = [r for r in range(3) if torch.equal(target[0], raters[case, r])]
            if hard_target == "rater1":
                assert 0 in matches
            chosen.extend(matches)
        if hard_target == "random-rater":
            assert len(set(chosen)) > 1  # not always the same rater


def test_loss_schedule_hooks_and_field_of_view_mask():
    data = _sign_data(cases=4)
    fov = torch.zeros(4, 8, 8, dtype=torch.bool)
    fov[:, 1:7, 1:7] = True
    data = data._replace(fov=fov)
    recorders = []
    settings = TrainSettings(1, 2, 1e-3, 2, 0, steps=10, patch=4, evaluations=5)
    result = train_run(_configuration("soft", recorders), data, make_folds(4, folds=2)[0], settings, run_seed=0)
    recorder = recorders[0]
    assert recorder.steps == 10  # step() after every optimisation step
    assert [h["step"] for h in result.history] == [2, 4, 6, 8, 10]
    assert result.history[-1]["loss_weights"] == {"region": pytest.approx(0.9), "ce": pytest.approx(0.1)}
    assert all(mask is not None and mask.shape == (2, 4, 4) for mask in recorder.masks)
    assert any(not mask.all() for mask in recorder.masks)  # crops at the border meet the outside of the view


def test_non_finite_loss_names_the_step():
    data = _sign_data()
    config = LossConfiguration("nan-loss", lambda: lambda logits, target: logits.sum() * math.nan, "hard", "")
    with pytest.raises(TrainingError, match=r"loss configuration 'nan-loss' gave a non-finite loss \(nan\) at step 1"):
        train_run(config, data, make_folds(3)[0], TrainSettings(1, 2, 1e-3, 2, 0, steps=3, patch=4), run_seed=0)


def test_case_metrics_count_only_the_field_of_view():
    probs = torch.tensor([[[0.9, 0.1, 0.2, 0.1]], [[0.1, 0.9, 0.8, 0.9]]])  # (C=2, H=1, W=4): argmax 0, 1, 1, 1
    majority = torch.tensor([[0, 1, 1, 0]])
    raters = torch.stack([majority, torch.tensor([[0, 1, 0, 0]])])
    soft = torch.nn.functional.one_hot(majority, 2).permute(2, 0, 1).float()
    everything = case_metrics(probs, soft, majority, raters, None)
    # Foreground: predicted {1, 2, 3}, majority {1, 2}: Dice 4/5; rater 2 {1}: Dice 2/4.
    assert everything["dice_majority"] == pytest.approx(0.8) and everything["dice_raters"] == pytest.approx(0.65)
    inside = case_metrics(probs, soft, majority, raters, torch.tensor([[True, True, True, False]]))
    assert inside["dice_majority"] == pytest.approx(1.0) and inside["dice_raters"] == pytest.approx((1 + 2 / 3) / 2)
    # Brier over the three kept pixels: (2 * 0.01 + 2 * 0.01 + 2 * 0.04) / 3.
    assert inside["brier"] == pytest.approx(0.12 / 3)


def test_padded_forward_any_size_and_identity_when_divisible():
    torch.manual_seed(0)
    net = CompactUNet(in_channels=1, num_classes=2, width=2, depth=3).eval()
    image = torch.randn(1, 1, 16, 8)
    assert torch.equal(padded_forward(net, image), net(image))
    assert padded_forward(net, torch.randn(2, 1, 13, 9)).shape == (2, 2, 13, 9)


def test_last_tenth_gain():
    history = [{"step": s, "test_soft_dice": v} for s, v in ((10, 0.2), (20, 0.5), (30, 0.55))]
    assert last_tenth_gain(history, 30) == pytest.approx(0.05)
    assert last_tenth_gain(history, 40) is None  # the last evaluation is before 90%: nothing to judge
    assert last_tenth_gain(history[:1], 10) is None


def test_default_embedded_run_matches_a_direct_training():
    """The epoch mode reproduces the plain loop: same weights from the seed, same order of cases."""
    data = prepare_data(generate_multirater(6, size=16, raters=3, seed=0))
    fold = make_folds(6, seed=0)[0]
    config = LOSS_CONFIGURATIONS["ce"]
    result = train_run(config, data, fold, TrainSettings(2, 2, 3e-3, 4, 0), run_seed=0)
    torch.manual_seed(0)
    model = CompactUNet(in_channels=1, num_classes=3, width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        order = fold.train[torch.randperm(4, generator=generator)]
        for first in (0, 2):
            cases = order[first : first + 2]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(data.images[cases]), data.majority[cases]).backward()
            optimizer.step()
            schedule.step()
    probs = train_module.predict(model, data.images[fold.test], 2)
    expected = case_metrics(
        probs[0], data.soft[fold.test[0]], data.majority[fold.test[0]], data.raters[fold.test[0]], None
    )
    assert result.case_metrics["soft_dice"][0] == pytest.approx(expected["soft_dice"], abs=1e-6)
    assert isinstance(data, TrainingData)
