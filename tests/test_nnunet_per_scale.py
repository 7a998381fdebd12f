"""The nnU-Net integration's parts that need no nnU-Net: the per-scale loss on nnU-Net's target formats and
the area deep-supervision targets, against softseg's own functions and hand-computed values; bad options.
(Equality with nnU-Net's losses: tests/test_nnunet_losses.py, in the nnU-Net environment.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from softseg import region_ce_loss
from softseg.integrations.nnunet.losses import NNUNET_SMOOTH, NNUNetRegionCELoss
from softseg.integrations.nnunet.targets import area_target


def _logits(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_softmax_index_target_with_ignore_label_is_region_ce_minus_the_region_weight():
    logits = _logits(2, 3, 5, 6)
    labels = torch.randint(0, 4, (2, 1, 5, 6), generator=torch.Generator().manual_seed(1), dtype=torch.int16)
    loss = NNUNetRegionCELoss(region="tversky", alpha=0.3, beta=0.7, lambda_region=0.6, lambda_ce=0.4, ignore_label=3,
                              batch_dice=False)
    expected = region_ce_loss(logits, labels.long(), region="tversky", alpha=0.3, beta=0.7, lambda_region=0.6,
                              lambda_ce=0.4, smooth=NNUNET_SMOOTH, include_background=False, aggregation="image",
                              ignore_index=3) - 0.6
    torch.testing.assert_close(loss(logits, labels), expected)


def test_softmax_soft_target_leaves_cells_without_counted_pixels_out():
    logits = _logits(1, 3, 4, 4, seed=2)
    soft = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64).softmax(1)
    soft[0, :, 0, :2] = 0  # two cells whose pixels were all ignored
    counted = soft.sum(1, keepdim=True) > 0
    value = NNUNetRegionCELoss(region="jaccard", ignore_label=9)(logits, soft)
    expected = region_ce_loss(logits, soft, region="jaccard", smooth=NNUNET_SMOOTH, include_background=False,
                              mask=counted) - 1
    torch.testing.assert_close(value, expected)
    per_pixel_ce = -(soft * logits.log_softmax(1)).sum(1, keepdim=True)
    dice_free = NNUNetRegionCELoss(region="jaccard", lambda_region=0.0, ignore_label=9)(logits, soft)
    torch.testing.assert_close(dice_free, per_pixel_ce[counted].mean())  # CE over the 14 counted cells


def test_region_target_with_ignore_channel_weighs_bce_by_the_number_of_regions_as_nnunet():
    logits = _logits(2, 2, 3, 3, seed=4)
    regions = torch.rand(2, 2, 3, 3, generator=torch.Generator().manual_seed(5)) > 0.5
    ignored = torch.rand(2, 1, 3, 3, generator=torch.Generator().manual_seed(6)) > 0.7
    target = torch.cat((regions, ignored), 1)
    value = NNUNetRegionCELoss(region_based=True, ignore_label=3)(logits, target)
    counted = ~ignored
    bce = F.binary_cross_entropy_with_logits(logits, regions.double(), reduction="none")
    nnunet_bce = (bce * counted).sum() / counted.sum()  # nnU-Net: summed over regions, divided by pixels
    probs = logits.sigmoid()
    y = regions.double()
    dice = [
        (2 * (probs[:, c] * y[:, c] * counted[:, 0]).sum() + 1e-5)
        / ((probs[:, c] * counted[:, 0]).sum() + (y[:, c] * counted[:, 0]).sum() + 1e-5)
        for c in range(2)
    ]
    torch.testing.assert_close(value, -torch.stack(dice).mean() + nnunet_bce)


def test_zero_region_term_and_entropy_at_a_soft_target():
    # Correct for soft labels: at p = y the region term is exactly its minimum -1, for every region kind.
    soft = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64).softmax(1)
    entropy = -(soft * soft.log()).sum(1).mean()
    for region in ("dice", "jaccard", "tversky"):
        value = NNUNetRegionCELoss(region=region)(soft.log(), soft)
        torch.testing.assert_close(value, entropy - 1)


def test_area_target_of_an_index_map_by_hand():
    labels = torch.tensor([[[0, 1, 2, 2], [0, 0, 2, 2], [1, 1, 0, 0], [1, 1, 0, 3]]], dtype=torch.int16)[:, None]
    soft = area_target(labels, (2, 2), num_classes=3, ignore_label=3)
    expected = torch.tensor([[[[0.75, 0.0], [0.0, 1.0]], [[0.25, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]])
    torch.testing.assert_close(soft, expected)
    without_channel = area_target(labels[:, 0], (2, 2), num_classes=3, ignore_label=3)  # (B, *spatial) too
    torch.testing.assert_close(without_channel, expected)


def test_area_region_target_averages_over_counted_pixels_and_marks_empty_cells_ignored():
    # 2 regions + ignore channel, (B=1, 3, 2, 4): cell 0 has one ignored pixel, cell 1 only ignored pixels.
    whole = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    core = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    ignored = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    target = torch.stack((whole, core, ignored))[None]
    soft = area_target(target, (1, 2), num_classes=2, region_based=True, ignore_label=3)
    expected = torch.tensor([[[[2 / 3, 0.0]], [[1 / 3, 0.0]], [[0.0, 1.0]]]])
    torch.testing.assert_close(soft, expected)
    plain = area_target(target[:, :2], (1, 2), num_classes=2, region_based=True)
    torch.testing.assert_close(plain, torch.tensor([[[[0.75, 0.0]], [[0.25, 0.0]]]]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(region="iou"), ValueError, r"region must be one of 'dice', 'jaccard', 'tversky'; got 'iou'"),
        (dict(region="dice", alpha=0.3), TypeError, r"region='dice' fixes alpha and beta; got alpha=0.3, beta=None"),
        (dict(region_based="True"), TypeError, r"region_based must be a bool; got str"),
        (dict(batch_dice=1), TypeError, r"batch_dice must be a bool; got int"),
        (dict(distributed=None), TypeError, r"distributed must be a bool; got NoneType"),
        (dict(ignore_label=2.0), TypeError, r"ignore_label must be an int or None; got float"),
        (dict(ignore_label=True), TypeError, r"ignore_label must be an int or None; got bool"),
        (dict(lambda_ce=-0.5), ValueError, r"lambda_ce must be >= 0.0; got -0.5"),
        (dict(smooth=float("nan")), ValueError, r"smooth must be finite; got nan"),
        (dict(region="tversky", alpha=-1.0), ValueError, r"alpha must be >= 0.0; got -1.0"),
    ],
)
def test_bad_options_name_the_argument(kwargs, error, message):
    with pytest.raises(error, match=message):
        NNUNetRegionCELoss(**kwargs)


def test_area_target_region_channels_must_match():
    target = torch.zeros(1, 3, 2, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"a region target for 3 regions plus the ignore channel must have 4 channels; "
                       r"got shape \(1, 3, 2, 4\)"):
        area_target(target, (1, 2), num_classes=3, region_based=True, ignore_label=3)
    with pytest.raises(ValueError, match=r"a region target for 2 regions must have 2 channels; got shape \(1, 3, 2, 4\)"):
        area_target(target, (1, 2), num_classes=2, region_based=True)
