"""Several raters: mean, majority vote, Dice-weighted mean (binary and multi-class)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from softseg.labels import dice_weighted_mean, majority_vote, rater_agreement, rater_mean

RATERS = torch.tensor([[[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]]])  # B=1, R=3, N=4, binary


def test_rater_mean_binary_exact():
    target = rater_mean(RATERS, 2)
    assert torch.allclose(target[0, 1], torch.tensor([0.0, 2 / 3, 2 / 3, 1.0]))
    assert torch.allclose(target.sum(1), torch.ones(()))


def test_majority_vote_multiclass_and_ties():
    masks = torch.tensor([[[0, 1, 2, 2], [1, 1, 0, 1], [1, 2, 2, 0]]])
    assert torch.equal(majority_vote(masks, 3), torch.tensor([[1, 1, 2, 0]]))  # last pixel: 3-way tie -> 0
    assert majority_vote(masks, 3).dtype == torch.int64
    assert torch.equal(majority_vote(torch.tensor([[[2, 1], [1, 2]]]), 3), torch.tensor([[1, 1]]))


def test_rater_agreement_hand_computed():
    # Rater 3 vs the mean of raters 1, 2 (= their mask): class 0 tp 1 fp 0 fn 2 -> 1/2, class 1 tp 1 fp 2 -> 1/2.
    # Rater 1 vs mean of 2, 3 = (0, .5, .5, 1): class 0: 2/3; class 1: tp 2, fn 1 -> 4/5.
    agreement = rater_agreement(RATERS, 2)
    assert torch.allclose(agreement, torch.tensor([[(2 / 3 + 0.8) / 2, (2 / 3 + 0.8) / 2, 0.5]]))


def test_dice_weighted_mean_hand_computed():
    w = torch.tensor([(2 / 3 + 0.8) / 2, (2 / 3 + 0.8) / 2, 0.5])
    expected_fg = torch.tensor([0.0, (w[0] + w[1]) / w.sum(), (w[0] + w[1]) / w.sum(), 1.0])
    target = dice_weighted_mean(RATERS, 2)
    assert torch.allclose(target[0, 1], expected_fg)
    assert torch.allclose(target.sum(1), torch.ones(()))


@given(st.integers(2, 4), st.integers(0, 2**31 - 1))
def test_two_raters_or_identical_raters_give_the_mean(num_classes, seed):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, num_classes, (2, 2, 3, 4), generator=generator)
    assert torch.allclose(dice_weighted_mean(masks, num_classes), rater_mean(masks, num_classes), atol=1e-6)
    same = masks[:, :1].expand(2, 3, 3, 4)
    assert torch.allclose(dice_weighted_mean(same, num_classes), rater_mean(same, num_classes))
    assert torch.equal(majority_vote(same, num_classes), same[:, 0].long())


@given(st.integers(2, 4), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_rater_outputs_are_distributions(num_classes, raters, seed):
    generator = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, num_classes, (2, raters, 5), generator=generator)
    for target in (rater_mean(masks, num_classes), dice_weighted_mean(masks, num_classes)):
        assert target.shape == (2, num_classes, 5)
        assert torch.allclose(target.sum(1), torch.ones(()), atol=1e-6)
        assert bool(((target >= 0) & (target <= 1 + 1e-6)).all())
    # the majority class has the largest mean
    vote = majority_vote(masks, num_classes)
    mean = rater_mean(masks, num_classes)
    assert torch.allclose(mean.gather(1, vote.unsqueeze(1)).squeeze(1), mean.amax(1))


def test_rater_bad_input():
    with pytest.raises(ValueError, match="masks must have shape \\(B, R, \\*spatial\\).*got shape \\(3, 4\\)"):
        rater_mean(torch.zeros(3, 4, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="masks must hold class indices of an integer dtype; got dtype torch.float32"):
        majority_vote(torch.zeros(1, 2, 3), 2)
    with pytest.raises(ValueError, match="masks holds class index 2; expected indices in \\[0, 1\\]"):
        dice_weighted_mean(torch.tensor([[[0, 2], [1, 1]]]), 2)
    with pytest.raises(ValueError, match="masks must hold at least one rater"):
        rater_mean(torch.zeros(1, 0, 3, dtype=torch.long), 2)
