"""The Softseg trainers' losses against nnU-Net 2.8's own, built by each trainer's ``_build_loss``.

On hard labels with nnU-Net's nearest-neighbour deep-supervision targets, softseg's Dice + CE equals
nnU-Net's ``DC_and_CE_loss`` + ``MemoryEfficientSoftDiceLoss`` (softmax) and ``DC_and_BCE_loss`` (regions)
in ``DeepSupervisionWrapper``, value and gradient, with and without batch Dice and the ignore label. The
smoothing matches: nnU-Net's 1e-5 on (2 tp + s) / (2 tp + fp + fn + s) is softseg's 5e-6 on tp. On two
gloo processes the batch Dice gradient equals nnU-Net's ``AllGatherGrad`` one. Area targets keep what
nearest targets lose. Runs in the nnU-Net environment (``bash scripts/test_nnunet.sh``); skipped elsewhere.
"""

from __future__ import annotations

import datetime
import os
from types import SimpleNamespace

import pytest

pytest.importorskip("nnunetv2", reason="needs nnU-Net: bash scripts/test_nnunet.sh runs these tests")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform  # noqa: E402
from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform  # noqa: E402
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper  # noqa: E402
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402
from nnunetv2.utilities.label_handling.label_handling import LabelManager  # noqa: E402

from softseg.integrations.nnunet import trainers  # noqa: E402
from softseg.integrations.nnunet.deep_supervision import AreaTargetDeepSupervision  # noqa: E402
from softseg.integrations.nnunet.losses import NNUNetRegionCELoss  # noqa: E402
from softseg.integrations.nnunet.targets import area_target  # noqa: E402

POOLING = {2: [[1, 1], [2, 2], [2, 2], [2, 2]], 3: [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}
SIZE = {2: (16, 16), 3: (8, 8, 8)}
LABELS = {"background": 0, "liver": 1, "tumour": 2}
REGIONS = {"background": 0, "whole": [1, 2], "tumour": 2}
FLOAT32 = {"rtol": 2e-5, "atol": 2e-6}


def _trainer(cls, *, regions=False, ignore=False, batch_dice=True, dims=2, ddp=False, compile=False):
    """A trainer with just what _build_loss reads (nnU-Net's constructor needs a whole dataset on disk)."""
    labels = dict(REGIONS if regions else LABELS)
    if ignore:
        labels["ignore"] = 3
    trainer = cls.__new__(cls)
    trainer.label_manager = LabelManager(labels, regions_class_order=[1, 2] if regions else None)
    trainer.configuration_manager = SimpleNamespace(batch_dice=batch_dice, pool_op_kernel_sizes=POOLING[dims])
    trainer.enable_deep_supervision = True
    trainer.is_ddp = ddp
    trainer.device = torch.device("cpu")
    trainer._do_i_compile = lambda: compile
    return trainer


def _batch(trainer, *, dims=2, batch=2, seed=0):
    """Logits for every deep-supervision output and nnU-Net's own targets for them (its transforms)."""
    generator = torch.Generator().manual_seed(seed)
    manager = trainer.label_manager
    size = SIZE[dims]
    labels = torch.randint(0, 3, (batch, 1, *size), generator=generator, dtype=torch.int16)
    if manager.has_ignore_label:
        labels[torch.rand(labels.shape, generator=generator) < 0.2] = manager.ignore_label
    scales = trainer._get_deep_supervision_scales()
    samples = []
    for sample in labels:  # nnU-Net's transforms work on one (1, *spatial) sample at a time
        if manager.has_regions:
            regions = list(manager.foreground_regions) + ([manager.ignore_label] if manager.has_ignore_label else [])
            sample = ConvertSegmentationToRegionsTransform(regions, channel_in_seg=0)(segmentation=sample)["segmentation"]
        samples.append(DownsampleSegForDSTransform(scales)(segmentation=sample)["segmentation"])
    targets = [torch.stack(scale) for scale in zip(*samples)]
    channels = manager.num_segmentation_heads
    outputs = [torch.randn(batch, channels, *t.shape[2:], generator=generator) * 3 for t in targets]
    return outputs, targets, labels


def _value_and_grads(loss, outputs, targets):
    outputs = [o.clone().requires_grad_() for o in outputs]
    value = loss(outputs, targets)
    value.backward()
    return value.detach(), [o.grad for o in outputs]


CASES = [
    pytest.param(dict(regions=regions, ignore=ignore, batch_dice=batch_dice, dims=dims), id=f"{name}-{dims}d")
    for regions, ignore, batch_dice, name in [
        (False, False, True, "softmax-batch_dice"),
        (False, False, False, "softmax-image_dice"),
        (False, True, True, "softmax-ignore_label"),
        (False, True, False, "softmax-ignore_label-image_dice"),
        (True, False, True, "regions-batch_dice"),
        (True, False, False, "regions-image_dice"),
        (True, True, True, "regions-ignore_label"),
    ]
    for dims in (2, 3)
]


@pytest.mark.parametrize("setting", CASES)
def test_dice_ce_on_nearest_targets_equals_nnunets_default_loss(setting):
    ours = _trainer(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS, **setting)
    reference = _trainer(nnUNetTrainer, **setting)
    outputs, targets, _ = _batch(ours, dims=setting["dims"])
    value, grads = _value_and_grads(ours._build_loss(), outputs, targets)
    expected, expected_grads = _value_and_grads(reference._build_loss(), outputs, targets)
    torch.testing.assert_close(value, expected, **FLOAT32)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, **FLOAT32)
    assert all(grad is not None for grad in grads[:-1])
    assert grads[-1] is None and expected_grads[-1] is None  # nnU-Net's weight 0: the lowest output is unused


@pytest.mark.parametrize("batch_dice", [True, False])
def test_smoothing_matches_where_it_decides_the_value(batch_dice):
    # Class 2 absent from the target and nearly absent from the prediction: Dice_2 = s / (|p_2| + s) with
    # |p_2| ~ 1e-6, so the value hinges on the smoothing. nnU-Net's 1e-5 on 2 tp is softseg's 5e-6 on tp.
    ours = _trainer(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS, batch_dice=batch_dice)
    reference = _trainer(nnUNetTrainer, batch_dice=batch_dice)
    outputs, targets, _ = _batch(ours, seed=5)
    targets = [t.clamp(max=1) for t in targets]
    outputs = [torch.cat((o[:, :2], torch.full_like(o[:, 2:], -18.0)), 1) for o in outputs]
    value, grads = _value_and_grads(ours._build_loss(), outputs, targets)
    expected, expected_grads = _value_and_grads(reference._build_loss(), outputs, targets)
    torch.testing.assert_close(value, expected, **FLOAT32)
    for grad, expected_grad in zip(grads[:-1], expected_grads[:-1]):
        torch.testing.assert_close(grad, expected_grad, **FLOAT32)

    class Unconverted(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS):
        smooth = 1e-5  # nnU-Net's constant taken literally: a different loss here

    unconverted = _trainer(Unconverted, batch_dice=batch_dice)._build_loss()(outputs, targets)
    assert abs(unconverted.item() - expected.item()) > 1e-3


def test_equality_is_not_vacuous_other_losses_and_area_targets_differ():
    setting = dict(regions=False, ignore=True, batch_dice=True)
    reference = _trainer(nnUNetTrainer, **setting)
    outputs, targets, _ = _batch(reference)
    expected = reference._build_loss()(outputs, targets)
    for cls in (trainers.nnUNetTrainerSoftsegJaccardCE_nearestDS, trainers.nnUNetTrainerSoftsegDiceCE):
        value = _trainer(cls, **setting)._build_loss()(outputs, targets)
        assert abs(value.item() - expected.item()) > 1e-3, cls.__name__


@pytest.mark.parametrize("regions", [False, True], ids=["softmax", "regions"])
@pytest.mark.parametrize("ignore", [False, True], ids=["", "ignore"])
def test_area_trainer_scores_each_output_against_the_area_target(regions, ignore):
    trainer = _trainer(trainers.nnUNetTrainerSoftsegJaccardCE, regions=regions, ignore=ignore)
    loss = trainer._build_loss()
    assert isinstance(loss, AreaTargetDeepSupervision)
    outputs, targets, _ = _batch(trainer, seed=3)
    per_scale = NNUNetRegionCELoss(
        region="jaccard", lambda_region=0.75, lambda_ce=0.25, region_based=regions,
        ignore_label=trainer.label_manager.ignore_label,
    )
    expected = 0
    for k, (weight, output) in enumerate(zip(loss.weight_factors, outputs)):
        if k == 0:
            target = targets[0]  # full resolution: nnU-Net's target unchanged
        else:
            target = area_target(targets[0], output.shape[2:], num_classes=output.shape[1], region_based=regions,
                                 ignore_label=trainer.label_manager.ignore_label)
        if weight:
            expected = expected + weight * per_scale(output, target)
    torch.testing.assert_close(loss(outputs, targets), expected, **FLOAT32)


def test_area_targets_keep_a_structure_that_nearest_targets_lose():
    labels = torch.zeros(1, 1, 8, 8, dtype=torch.int16)
    labels[0, 0, 2, 3] = 2  # one pixel of class 2, off the nearest-neighbour sampling grid
    nearest = DownsampleSegForDSTransform([[1, 1], [0.5, 0.5]])(segmentation=labels[0])["segmentation"][1]
    assert (nearest == 2).sum() == 0  # nnU-Net's target has lost it
    soft = area_target(labels, (4, 4), num_classes=3)
    assert soft[0, 2, 1, 1] == 0.25 and soft[0, 2].sum() == 0.25
    torch.testing.assert_close(soft.sum(1), torch.ones(1, 4, 4))


@pytest.mark.parametrize("ddp", [False, True])
@pytest.mark.parametrize("compile", [False, True])
def test_deep_supervision_weights_and_compilation_follow_nnunet(ddp, compile):
    class CompiledLoss(trainers.nnUNetTrainerSoftsegDiceCE):
        compile_loss = True

    for cls in (trainers.nnUNetTrainerSoftsegDiceCE, trainers.nnUNetTrainerSoftsegTverskyCE_nearestDS, CompiledLoss):
        loss = _trainer(cls, ddp=ddp, compile=compile)._build_loss()
        reference = _trainer(nnUNetTrainer, ddp=ddp, compile=compile)._build_loss()
        assert loss.weight_factors == pytest.approx(reference.weight_factors)
        assert (loss.weight_factors[-1] > 0) == (ddp and not compile)  # nnU-Net's 1e-6 for DDP without compile
        compiled = compile and cls is CompiledLoss  # only with compile_loss, and only where nnU-Net compiles
        assert isinstance(loss.loss, torch._dynamo.eval_frame.OptimizedModule) == compiled
        inner = loss.loss._orig_mod if compiled else loss.loss
        assert inner.options["distributed"] == ddp  # batch Dice over the ranks only under DDP


def test_image_dice_under_ddp_stays_local_as_in_nnunet():
    loss = _trainer(trainers.nnUNetTrainerSoftsegDiceCE, ddp=True, batch_dice=False)._build_loss()
    assert loss.loss.options["distributed"] is False and loss.loss.options["aggregation"] == "image"


def test_without_deep_supervision_the_loss_is_unwrapped():
    trainer = _trainer(trainers.nnUNetTrainerSoftsegDiceCE)
    outputs, targets, _ = _batch(trainer)
    trainer.enable_deep_supervision = False
    loss = trainer._build_loss()
    assert isinstance(loss, NNUNetRegionCELoss)
    reference = _trainer(nnUNetTrainer)
    reference.enable_deep_supervision = False
    torch.testing.assert_close(loss(outputs[0], targets[0]), reference._build_loss()(outputs[0], targets[0]), **FLOAT32)


def test_compiled_loss_equals_eager():
    trainer = _trainer(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS, ignore=True)
    outputs, targets, _ = _batch(trainer)
    eager = NNUNetRegionCELoss(ignore_label=3)
    compiled = torch.compile(NNUNetRegionCELoss(ignore_label=3), backend="aot_eager")
    x = outputs[0].clone().requires_grad_()
    y = outputs[0].clone().requires_grad_()
    torch.testing.assert_close(compiled(x, targets[0]), eager(y, targets[0]), **FLOAT32)
    compiled(x, targets[0]).backward()
    eager(y, targets[0]).backward()
    torch.testing.assert_close(x.grad, y.grad, **FLOAT32)


def test_bad_class_attribute_names_it():
    class Broken(trainers.nnUNetTrainerSoftsegDiceCE):
        ds_targets = "bilinear"

    with pytest.raises(ValueError, match="ds_targets must be one of"):
        _trainer(Broken)._build_loss()

    class Negative(trainers.nnUNetTrainerSoftsegDiceCE):
        lambda_ce = -1.0

    with pytest.raises(ValueError, match="lambda_ce must be >= 0.0; got -1.0"):
        _trainer(Negative)._build_loss()

    class Truthy(trainers.nnUNetTrainerSoftsegDiceCE):
        compile_loss = "False"

    with pytest.raises(TypeError, match="compile_loss must be a bool; got str"):
        _trainer(Truthy)._build_loss()


# ----------------------------------------------------------------------------------------------------------
# Data parallel: two gloo processes, each with half of the batch, batch Dice over both.

WORLD = 2


def _ddp_worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for regions in (False, True):
            ours = _trainer(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS, regions=regions, ignore=True, ddp=True)
            reference = _trainer(nnUNetTrainer, regions=regions, ignore=True, ddp=True)
            outputs, targets, _ = _batch(ours, batch=2 * WORLD, seed=11)
            part = slice(2 * rank, 2 * rank + 2)
            outputs, targets = [o[part] for o in outputs], [t[part] for t in targets]
            results[regions] = (
                _value_and_grads(ours._build_loss(), outputs, targets),
                _value_and_grads(reference._build_loss(), outputs, targets),
            )
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_batch_dice_over_ranks_has_nnunets_value_and_gradient(tmp_path):
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True,
                       start_method=start_method)
    for rank in range(WORLD):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for regions, ((value, grads), (expected, expected_grads)) in results.items():
            torch.testing.assert_close(value, expected, **FLOAT32)
            for grad, expected_grad in zip(grads, expected_grads):
                torch.testing.assert_close(grad, expected_grad, **FLOAT32)
    # The batch Dice really spans both ranks: a single-process loss on rank 0's half differs.
    (ours_value, _), _ = torch.load(tmp_path / "rank0.pt")[False]
    local = _trainer(trainers.nnUNetTrainerSoftsegDiceCE_nearestDS, ignore=True)
    outputs, targets, _ = _batch(local, batch=2 * WORLD, seed=11)
    alone = local._build_loss()([o[:2] for o in outputs], [t[:2] for t in targets])
    assert abs(alone.item() - ours_value.item()) > 1e-4
