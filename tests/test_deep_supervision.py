"""Deep supervision: nnU-Net's and MONAI's weights, area and nearest target downsampling (equal to MONAI's
DeepSupervisionLoss with nearest), index targets never expanded at full size, ignored pixels, soft-label
correctness at the downsampled targets, and bad input."""

import pytest
import torch
import torch.nn.functional as F

import softseg
from softseg.cli.audit import audit_loss, make_problem
from softseg.labels import downsample_target
from softseg.losses.deep_supervision import DeepSupervisionLoss, deep_supervision_weights, scale_target


def outputs_and_labels(seed, batch=2, classes=3, size=8, levels=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (batch, size, size), generator=g)
    outputs = [
        torch.randn(batch, classes, size >> i, size >> i, generator=g, dtype=torch.float64) for i in range(levels)
    ]
    return outputs, labels


class Recorder:
    """A loss that records the targets it gets and returns the Dice loss."""

    def __init__(self):
        self.calls = []

    def __call__(self, input, target, mask=None):
        self.calls.append((tuple(input.shape), target, mask))
        return softseg.dice_loss(input, target, mask=mask)


def test_weights():
    # nnU-Net v2: 1, 1/2, 1/4, 1/8, 0 normalised (the lowest scale 0).
    expected = [1, 0.5, 0.25, 0.125, 0]
    assert deep_supervision_weights(5) == pytest.approx([w / sum(expected) for w in expected])
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(2) == [1.0, 0.0]
    assert deep_supervision_weights(3, "same") == [1.0, 1.0, 1.0]
    assert deep_supervision_weights(3, "two") == [1.0, 0.5, 0.5]
    assert deep_supervision_weights(7, "exp") == [1.0, 0.5, 0.25, 0.125, 0.0625, 0.0625, 0.0625]


def test_monai_weight_modes_match_monai():
    monai_losses = pytest.importorskip("monai.losses")
    for mode in ("exp", "same", "two"):
        assert deep_supervision_weights(6, mode) == monai_losses.DeepSupervisionLoss(lambda a, b: a, mode).get_weights(6)


def test_sum_of_weighted_losses_with_area_targets():
    outputs, labels = outputs_and_labels(0)
    got = DeepSupervisionLoss(softseg.DiceLoss())(outputs, labels)
    # nnU-Net weights for 3 outputs: (1, 1/2, 0) / 1.5.
    expected = 2 / 3 * softseg.dice_loss(outputs[0], labels) + 1 / 3 * softseg.dice_loss(
        outputs[1], downsample_target(labels, (4, 4), num_classes=3)
    )
    torch.testing.assert_close(got, expected)
    explicit = DeepSupervisionLoss(softseg.DiceLoss(), weights=[1.0, 0.5, 0.25])(outputs, labels)
    torch.testing.assert_close(
        explicit,
        sum(w * softseg.dice_loss(o, downsample_target(labels, tuple(o.shape[2:]), num_classes=3) if i else labels)
            for i, (w, o) in enumerate(zip([1.0, 0.5, 0.25], outputs))),
    )


def test_equals_monai_with_nearest_downsampling():
    monai_losses = pytest.importorskip("monai.losses")
    outputs, labels = outputs_and_labels(1)
    dice = monai_losses.DiceLoss(softmax=True, to_onehot_y=True)
    target = labels.unsqueeze(1).double()                     # MONAI's (B, 1, *spatial) label map
    expected = monai_losses.DeepSupervisionLoss(dice, weight_mode="exp")(outputs, target)
    got = DeepSupervisionLoss(dice, weights="exp", target_downsampling="nearest")(outputs, target)
    torch.testing.assert_close(got, expected.double(), rtol=1e-5, atol=1e-6)       # MONAI computes in float32
    # softseg's own loss on the index labels: the same downsampled labels, the same value.
    ours = DeepSupervisionLoss(softseg.DiceLoss(aggregation="image"), weights="exp", target_downsampling="nearest")
    torch.testing.assert_close(ours(outputs, labels), expected.double(), rtol=1e-5, atol=1e-6)


def test_area_targets_are_soft_and_softseg_losses_are_zero_there():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]]])
    half, _ = scale_target(labels, (2, 2), num_classes=2)
    torch.testing.assert_close(half[0, 1], torch.tensor([[0.25, 1.0], [0.0, 0.75]]))
    nearest, _ = scale_target(labels, (2, 2), num_classes=2, target_downsampling="nearest")
    assert nearest.dtype == labels.dtype and nearest.tolist() == [[[1, 1], [0, 1]]]   # pixels (1|3, 1|3)
    # Outputs that match the targets at every scale: softseg's loss is 0 at every scale.
    full = F.one_hot(labels, 2).movedim(-1, 1).double()
    outputs = [full.clamp(1e-9, 1).log(), half.double().log()]
    value = DeepSupervisionLoss(softseg.DiceLoss(), weights="same")(outputs, labels)
    assert value.item() < 1e-6


def test_binary_single_channel_index_target():
    labels = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1]]])
    scaled, _ = scale_target(labels, (1, 2), num_classes=1)
    torch.testing.assert_close(scaled, torch.tensor([[[[0.25, 1.0]]]]))
    loss = DeepSupervisionLoss(softseg.DiceLoss(activation="sigmoid"), weights="same")
    outputs = [torch.zeros(1, 1, 2, 4), torch.zeros(1, 1, 1, 2)]
    expected = softseg.dice_loss(outputs[0], labels, activation="sigmoid") + softseg.dice_loss(
        outputs[1], scaled, activation="sigmoid")
    torch.testing.assert_close(loss(outputs, labels), expected)


def test_index_target_is_never_expanded_at_full_size(monkeypatch):
    outputs, labels = outputs_and_labels(2, levels=2)
    recorder = Recorder()

    def no_one_hot(*args, **kwargs):
        raise AssertionError("one_hot called")

    monkeypatch.setattr(torch.nn.functional, "one_hot", no_one_hot)
    DeepSupervisionLoss(recorder, weights="same")(outputs, labels)
    (shape0, target0, _), (shape1, target1, _) = recorder.calls
    assert target0 is labels                                  # the full scale gets the index target itself
    assert target1.shape == (2, 3, 4, 4) and target1.is_floating_point()


def test_zero_weight_scales_are_skipped():
    outputs, labels = outputs_and_labels(3, levels=3)
    recorder = Recorder()
    DeepSupervisionLoss(recorder)(outputs, labels)            # nnU-Net: the lowest scale has weight 0
    assert [call[0][2] for call in recorder.calls] == [8, 4]


def test_ignore_index_masks_every_scale():
    outputs, labels = outputs_and_labels(4, levels=2)
    labels[0, :4, :4] = 255                                   # a whole quarter ignored: whole cells at half size
    labels[1, 0, 0] = 255                                     # one pixel: its cell averages the other three
    for mode in ("area", "nearest"):
        recorder = Recorder()
        got = DeepSupervisionLoss(recorder, weights="same", target_downsampling=mode, ignore_index=255)(outputs, labels)
        (_, target0, mask0), (_, target1, mask1) = recorder.calls
        assert (mask0 == (labels != 255)).all() and (target0[~mask0] == 0).all()
        assert not mask1[0, :2, :2].any() and mask1[0, 2:, 2:].all()
        expected = softseg.dice_loss(outputs[0], labels, ignore_index=255)
        if mode == "area":
            soft = downsample_target(labels, (4, 4), num_classes=3, ignore_index=255)
            torch.testing.assert_close(target1, soft)
            assert mask1[1].all()
            expected = expected + softseg.dice_loss(outputs[1], soft, mask=soft.sum(1) > 0)
        else:
            expected = expected + softseg.dice_loss(outputs[1], target1, mask=mask1)
        torch.testing.assert_close(got, expected)


def test_soft_targets_and_gradients():
    g = torch.Generator().manual_seed(5)
    soft = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64).softmax(1)
    outputs = [torch.randn(2, 3, 8 >> i, 8 >> i, generator=g, dtype=torch.float64, requires_grad=True)
               for i in range(2)]
    loss = DeepSupervisionLoss(softseg.JaccardLoss(), weights=[1.0, 0.5])
    loss(outputs, soft).backward()
    assert all(o.grad is not None and torch.isfinite(o.grad).all() for o in outputs)
    torch.testing.assert_close(
        loss(outputs, soft),
        softseg.jaccard_loss(outputs[0], soft) + 0.5 * softseg.jaccard_loss(outputs[1], F.adaptive_avg_pool2d(soft, 4)),
    )
    assert torch.autograd.gradcheck(lambda a, b: loss([a, b], soft), tuple(outputs))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float32(dtype):
    outputs, labels = outputs_and_labels(8, size=16)
    loss = DeepSupervisionLoss(softseg.DiceLoss(), weights="same")
    low = loss([o.to(dtype) for o in outputs], labels)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, loss([o.float() for o in outputs], labels), rtol=1e-2, atol=1e-3)


def test_single_tensor_empty_batch_and_default_loss():
    outputs, labels = outputs_and_labels(6)
    torch.testing.assert_close(DeepSupervisionLoss()(outputs[0], labels), softseg.DiceCELoss()(outputs[0], labels))
    empty = [torch.zeros(0, 3, 8, 8, requires_grad=True), torch.zeros(0, 3, 4, 4, requires_grad=True)]
    value = DeepSupervisionLoss(softseg.DiceLoss(), weights="same")(empty, torch.zeros(0, 8, 8, dtype=torch.long))
    value.backward()
    assert value.item() == 0


def test_audit_passes_on_a_single_output():
    verdict = audit_loss(
        "DeepSupervisionLoss", DeepSupervisionLoss(softseg.DiceLoss()), make_problem(classes=3, size=6, seed=0),
        input_kind="logits", hard_target="onehot", reference="auto", value_range=(0.0, 1.0), steps=3,
        tolerance=1e-4, seed=0,
    )
    assert verdict.passed, verdict


def test_bad_input():
    outputs, labels = outputs_and_labels(7, levels=2)
    with pytest.raises(ValueError, match="weights must be one of 'nnunet', 'exp', 'same', 'two'; got 'half'"):
        DeepSupervisionLoss(weights="half")
    with pytest.raises(ValueError, match=r"weights\[1\] must be >= 0.0; got -1.0"):
        DeepSupervisionLoss(weights=[1.0, -1.0])
    with pytest.raises(ValueError, match=r"weights must have one value per output, not all 0; got \[0.0, 0.0\]"):
        DeepSupervisionLoss(weights=[0.0, 0.0])
    with pytest.raises(TypeError, match="weights must be 'nnunet', 'exp', 'same', 'two' or a sequence of numbers"):
        DeepSupervisionLoss(weights=0.5)
    with pytest.raises(ValueError, match="target_downsampling must be one of 'area', 'nearest'; got 'bilinear'"):
        DeepSupervisionLoss(target_downsampling="bilinear")
    with pytest.raises(TypeError, match="loss must be callable as loss"):
        DeepSupervisionLoss("dice")
    with pytest.raises(ValueError, match="the inner loss has ignore_index=255; set ignore_index on DeepSupervisionLoss"):
        DeepSupervisionLoss(softseg.DiceLoss(ignore_index=255))
    with pytest.raises(TypeError, match="ignore_index must be an int or None; got str"):
        DeepSupervisionLoss(ignore_index="255")
    loss = DeepSupervisionLoss(softseg.DiceLoss(), weights=[1.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="ignore_index=255 applies to class-index targets; got a float target"):
        DeepSupervisionLoss(ignore_index=255)(outputs, torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="weights has 3 values but there are 2 outputs"):
        loss(outputs, labels)
    with pytest.raises(TypeError, match="outputs must be a tensor or a non-empty sequence of tensors"):
        DeepSupervisionLoss()([], labels)
    with pytest.raises(TypeError, match=r"outputs\[1\] must be a torch.Tensor; got list"):
        DeepSupervisionLoss()([outputs[0], [1]], labels)
    with pytest.raises(ValueError, match=r"an output of spatial size \(16, 16\) is larger than the target \(8, 8\)"):
        DeepSupervisionLoss(weights="same")([outputs[0], torch.zeros(2, 3, 16, 16)], labels)
    with pytest.raises(ValueError, match=r"outputs\[1\] must have shape \(B, C, \*spatial\) with the target's batch size 2"):
        DeepSupervisionLoss(weights="same")([outputs[0], torch.zeros(3, 3, 4, 4)], labels)
