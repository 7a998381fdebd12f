"""distributed=True: on 2 gloo processes the loss and its gradients equal one process on the whole batch.

One start of 2 CPU processes (forked where possible) runs every case; the parent computes the
single-process reference on the concatenated batch and compares, case by case.
Documented scaling: rank r's logits get WORLD times their slice of the single-process gradient, and a
DistributedDataParallel model gets exactly the single-process parameter gradient.
"""

from __future__ import annotations

import datetime
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import softseg
import softseg.compat.monai as monai
import softseg.compat.smp as smp
from softseg.losses.compound import DiceCELoss, RegionCELoss, dice_ce_loss, region_ce_loss
from softseg.distributed import check_distributed_options, sync_statistics
from softseg.statistics import RegionStatistics

WORLD = 2
C, H, W = 3, 3, 4


def _deep_supervision(logits, target, mask=None, **options):
    # Two scales, the coarse one pooled from the logits: the inner Dice is synchronised at each scale.
    outputs = [logits, F.avg_pool2d(logits, 2, ceil_mode=True)]
    return softseg.DeepSupervisionLoss(softseg.DiceLoss(**options), weights="same")(outputs, target)


def _compound_regions(logits, target, mask=None, **options):
    # Dice and Jaccard share one pass, the L2 Tversky takes its own; all three synchronised.
    terms = dict(dice=softseg.DiceLoss(**options), jaccard=softseg.JaccardLoss(**options),
                 tversky=softseg.TverskyLoss(norm=2, alpha=0.3, beta=0.7, **options))
    return softseg.CompoundLoss(terms, weights={"dice": 0.5, "jaccard": 0.25, "tversky": 1.0})(logits, target)


def _smp_mcc(logits, target, mask=None, **options):
    # smp's MCC takes probabilities of one channel.
    return smp.MCCLoss(**options)(logits.sigmoid(), target.unsqueeze(1).to(logits.dtype))


FUNCTIONS = {
    "dice": softseg.dice_loss,
    "jaccard": softseg.jaccard_loss,
    "tversky": softseg.tversky_loss,
    "region_ce": region_ce_loss,
    "dice_ce": dice_ce_loss,
    "generalized_dice": softseg.generalized_dice_loss,
    "mcc": softseg.mcc_loss,
    "deep_supervision": _deep_supervision,
    "compound_regions": _compound_regions,
    "smp_mcc": _smp_mcc,
}
MODULES = {
    "DiceLoss": softseg.DiceLoss,
    "JaccardLoss": softseg.JaccardLoss,
    "TverskyLoss": softseg.TverskyLoss,
    "RegionCELoss": RegionCELoss,
    "DiceCELoss": DiceCELoss,
    "GeneralizedDiceLoss": softseg.GeneralizedDiceLoss,
    "MCCLoss": softseg.MCCLoss,
}
# Compat layers: (class, positional constructor arguments); called as loss(input, target[, mask]).
COMPAT = {
    "smp.DiceLoss": (smp.DiceLoss, ("multiclass",)),
    "smp.JaccardLoss": (smp.JaccardLoss, ("multilabel",)),
    "smp.TverskyLoss": (smp.TverskyLoss, ("binary",)),
    "monai.DiceLoss": (monai.DiceLoss, ()),
    "monai.MaskedDiceLoss": (monai.MaskedDiceLoss, ()),
    "monai.TverskyLoss": (monai.TverskyLoss, ()),
    "monai.GeneralizedDiceLoss": (monai.GeneralizedDiceLoss, ()),
    "monai.DiceCELoss": (monai.DiceCELoss, ()),
    "monai.DiceFocalLoss": (monai.DiceFocalLoss, ()),
    "monai.GeneralizedDiceFocalLoss": (monai.GeneralizedDiceFocalLoss, ()),
    "monai.MCCLoss": (monai.MCCLoss, ()),
}


# ----------------------------------------------------------------------------------------------------------
# Cases: the whole batch, how it is split over the two ranks, and the loss options.


def _index_target(generator, batch, classes=C, ignore=None):
    labels = torch.randint(0, max(classes, 2), (batch, H, W), generator=generator)
    if ignore is not None:
        labels[torch.rand(batch, H, W, generator=generator) < 0.3] = ignore
    return labels


def _dense_target(generator, batch, classes=C):
    return torch.rand(batch, classes, H, W, generator=generator, dtype=torch.float64).softmax(1)


def _case(seed, sizes, fn="dice", *, target="index", classes=C, dtype=torch.float64, mask=False,
          ignore=None, background_only_rank=None, group=None, index_channel=False, **options):
    generator = torch.Generator().manual_seed(seed)
    batch = sum(sizes)
    logits = torch.randn(batch, classes, H, W, generator=generator, dtype=torch.float64).to(dtype)
    if target == "index":
        labels = _index_target(generator, batch, classes, ignore)
        if ignore is not None:
            options["ignore_index"] = ignore
    else:
        labels = _dense_target(generator, batch, classes).to(dtype)
    if background_only_rank is not None:
        start = sum(sizes[:background_only_rank])
        labels[start : start + sizes[background_only_rank]] = 0  # no foreground on that rank
    if index_channel:
        labels = labels.unsqueeze(1)  # MONAI's (B, 1, *spatial) class indices
    case = {"logits": logits, "target": labels, "sizes": sizes, "fn": fn, "options": options, "group": group}
    if mask:
        case["mask"] = torch.rand(batch, H, W, generator=generator) < 0.7
    return case


def _random_cases(count):
    # Seeded random splits (zeros allowed), aggregations and targets: property-style coverage in one start.
    generator = torch.Generator().manual_seed(1234)
    levels = ["global", "image", "class", {"image": 0.5, "class": 0.5}, {"global": 1.0, "class": 2.0}]
    cases = {}
    for number in range(count):
        sizes = torch.randint(0, 4, (WORLD,), generator=generator).tolist()
        pick = lambda n: int(torch.randint(0, n, (1,), generator=generator))  # noqa: E731
        cases[f"random_{number}"] = _case(
            100 + number,
            sizes,
            ["dice", "jaccard", "tversky"][pick(3)],
            target=["index", "dense"][pick(2)],
            mask=bool(pick(2)),
            aggregation=levels[pick(len(levels))],
            active_classes=["all", "present"][pick(2)],
            smooth=[0.0, 1.0][pick(2)],
        )
    return cases


CASES = {
    "global_index": _case(0, [2, 2], "dice"),
    "global_dense_mask_uneven": _case(1, [3, 1], "jaccard", target="dense", mask=True),
    "image_index_ignore_uneven": _case(2, [3, 1], "tversky", ignore=-1, alpha=0.3, beta=0.7, aggregation="image"),
    "class_index_ignore_uneven": _case(3, [1, 3], "dice", ignore=255, aggregation="class", active_classes="present"),
    "global_present_no_foreground": _case(4, [2, 2], "dice", background_only_rank=1, active_classes="present"),
    "image_present_no_foreground": _case(
        5, [2, 2], "jaccard", background_only_rank=0, aggregation="image", active_classes="present"
    ),
    "class_present_no_foreground": _case(
        6, [2, 2], "dice", background_only_rank=1, aggregation="class", active_classes="present"
    ),
    "mix_weighted_focal_log": _case(
        7, [3, 1], "tversky", target="dense", aggregation={"global": 1.0, "image": 0.5, "class": 0.5},
        weight=[1.0, 2.0, 0.5], gamma=2.0, log_loss=True, alpha=0.7, beta=0.3,
    ),
    "empty_rank_global": _case(8, [4, 0], "dice", ignore=-1),
    "empty_rank_image": _case(9, [0, 4], "jaccard", target="dense", mask=True, aggregation="image"),
    "empty_rank_class": _case(10, [4, 0], "dice", aggregation="class", active_classes="present"),
    "empty_everywhere_image": _case(11, [0, 0], "dice", aggregation="image"),
    "empty_everywhere_global": _case(12, [0, 0], "dice", target="dense"),
    "reduction_sum_image": _case(13, [3, 1], "dice", aggregation="image", reduction="sum"),
    "reduction_none_class": _case(14, [1, 3], "dice", aggregation="class", reduction="none"),
    "reduction_none_global": _case(15, [2, 2], "jaccard", reduction="none"),
    "module_class_no_background": _case(16, [3, 1], "DiceLoss", aggregation="class", include_background=False),
    "module_tversky_global_norm2": _case(17, [2, 2], "TverskyLoss", target="dense", alpha=0.2, beta=0.8, norm=2),
    "module_jaccard_image": _case(18, [1, 3], "JaccardLoss", aggregation="image", active_classes="present"),
    "binary_sigmoid_global": _case(19, [3, 1], "dice", classes=1, activation="sigmoid"),
    "float32_global": _case(20, [2, 2], "dice", dtype=torch.float32),
    "explicit_group_image": _case(21, [3, 1], "dice", aggregation="image", group="pair"),
    "explicit_group_global": _case(22, [1, 3], "jaccard", group="pair"),
    "smp_dice_multiclass_ignore_uneven": _case(23, [3, 1], "smp.DiceLoss", ignore=-1, smooth=1.0),
    "smp_jaccard_multilabel_no_foreground": _case(
        24, [2, 2], "smp.JaccardLoss", target="dense", background_only_rank=1, log_loss=True
    ),
    "monai_dice_index_ignore_uneven": _case(
        26, [3, 1], "monai.DiceLoss", index_channel=True, ignore=255, to_onehot_y=True, softmax=True
    ),
    "monai_dice_batch_soft_empty_rank": _case(
        27, [0, 4], "monai.DiceLoss", target="dense", softmax=True, batch=True, soft_label=True, jaccard=True
    ),
    "monai_masked_dice_uneven": _case(
        28, [1, 3], "monai.MaskedDiceLoss", index_channel=True, mask=True, to_onehot_y=True, softmax=True
    ),
    "monai_tversky_sigmoid_sum": _case(
        29, [1, 3], "monai.TverskyLoss", target="dense", sigmoid=True, alpha=0.3, beta=0.7, reduction="sum"
    ),
    "monai_tversky_batch_none": _case(
        32, [2, 2], "monai.TverskyLoss", target="dense", softmax=True, batch=True, reduction="none"
    ),
    "monai_generalized_dice_no_foreground": _case(
        33, [2, 2], "monai.GeneralizedDiceLoss", index_channel=True, background_only_rank=0, to_onehot_y=True,
        softmax=True,
    ),
    "monai_generalized_dice_batch_none_uneven": _case(
        34, [3, 1], "monai.GeneralizedDiceLoss", target="dense", softmax=True, batch=True, w_type="simple",
        reduction="none",
    ),
    "smp_tversky_binary_empty_rank": _case(25, [0, 4], "smp.TverskyLoss", classes=1, alpha=0.3, beta=0.7, gamma=2.0),
    "generalized_dice_global_ignore_uneven": _case(60, [3, 1], "generalized_dice", ignore=-1),
    "generalized_dice_image_dense_mask_empty_rank": _case(
        61, [0, 4], "GeneralizedDiceLoss", target="dense", mask=True, aggregation="image", weighting="simple"
    ),
    "generalized_dice_no_foreground_none": _case(
        62, [2, 2], "generalized_dice", background_only_rank=1, include_background=False, reduction="none"
    ),
    "mcc_global_index": _case(63, [2, 2], "mcc"),
    "mcc_image_dense_mask_none_uneven": _case(
        64, [3, 1], "MCCLoss", target="dense", mask=True, aggregation="image", reduction="none"
    ),
    "mcc_class_ignore_weighted_empty_rank": _case(
        65, [4, 0], "mcc", ignore=255, aggregation="class", active_classes="present", weight=[1.0, 2.0, 0.5]
    ),
    "mcc_binary_sigmoid_mix": _case(66, [1, 3], "mcc", classes=1, activation="sigmoid",
                                    aggregation={"global": 1.0, "image": 0.5}),
    "deep_supervision_dice_uneven": _case(67, [3, 1], "deep_supervision"),
    "compound_regions_dense_image": _case(68, [1, 3], "compound_regions", target="dense", aggregation="image"),
    "monai_mcc_index_uneven": _case(69, [3, 1], "monai.MCCLoss", index_channel=True, to_onehot_y=True, softmax=True),
    "monai_mcc_batch_soft_empty_rank": _case(
        70, [0, 4], "monai.MCCLoss", target="dense", softmax=True, batch=True, soft_label=True, reduction="none"
    ),
    "smp_mcc_soft_label_uneven": _case(71, [1, 3], "smp_mcc", classes=1, soft_label=True),
    **_random_cases(6),
}
# Each rank in its own singleton group: the loss must be that rank's local loss (the group is honoured).
SOLO_CASES = {
    "solo_group_global": _case(30, [2, 2], "dice", group="solo"),
    "solo_group_class": _case(31, [3, 1], "dice", aggregation="class", group="solo"),
}
# Compound losses: the region term is synchronised, the cross-entropy term is each rank's local mean.
COMPOUND_CASES = {
    "compound_dice_ce_global": _case(50, [2, 2], "dice_ce"),
    "compound_jaccard_ce_image_ignore_uneven": _case(
        51, [3, 1], "region_ce", region="jaccard", ignore=-1, aggregation="image", lambda_ce=0.5
    ),
    "compound_tversky_focal_class_dense": _case(
        52, [1, 3], "RegionCELoss", target="dense", region="tversky", alpha=0.3, beta=0.7, ce="focal",
        aggregation="class", active_classes="present",
    ),
    "compound_module_empty_rank": _case(53, [4, 0], "DiceCELoss", mask=True, aggregation={"global": 1, "image": 1}),
    "monai_dice_ce_uneven": _case(
        54, [3, 1], "monai.DiceCELoss", index_channel=True, to_onehot_y=True, softmax=True, lambda_ce=0.5
    ),
    "monai_dice_focal_batch": _case(
        55, [2, 2], "monai.DiceFocalLoss", target="dense", sigmoid=True, batch=True, lambda_focal=2.0
    ),
    "monai_generalized_dice_focal": _case(56, [1, 3], "monai.GeneralizedDiceFocalLoss", target="dense", softmax=True),
}
# Compiled with fullgraph=True on each rank (the collectives traced into the graph): any split for global
# aggregation, even splits for image and class.
COMPILED_CASES = [
    "global_dense_mask_uneven", "empty_rank_global", "image_present_no_foreground", "class_present_no_foreground",
    "module_tversky_global_norm2", "compound_dice_ce_global", "smp_jaccard_multilabel_no_foreground",
    "monai_tversky_batch_none",
]
# The option that turns off each term of a compound loss (by its own library's name).
TERM_WEIGHTS = {
    "monai.DiceCELoss": ("lambda_dice", "lambda_ce"),
    "monai.DiceFocalLoss": ("lambda_dice", "lambda_focal"),
    "monai.GeneralizedDiceFocalLoss": ("lambda_gdl", "lambda_focal"),
}
DDP_CASES = {
    "ddp_global": {"sizes": [2, 2], "seed": 40, "aggregation": "global"},
    "ddp_image_uneven": {"sizes": [3, 1], "seed": 41, "aggregation": "image"},
    "ddp_class_empty_rank": {"sizes": [4, 0], "seed": 42, "aggregation": "class"},
    # Dice + CE on an even split: DDP's average of the local CE means is the CE mean of the whole batch.
    "ddp_dice_ce_even": {"sizes": [2, 2], "seed": 43, "aggregation": "image", "loss": dice_ce_loss},
}


def _slice(case, rank):
    start = sum(case["sizes"][:rank])
    return slice(start, start + case["sizes"][rank])


def _loss(case, logits, target, mask, **sync):
    options = dict(case["options"])
    if case["fn"] in COMPAT:
        cls, args = COMPAT[case["fn"]]
        masks = () if mask is None else (mask.unsqueeze(1),)  # MaskedDiceLoss: (B, 1, *spatial)
        return cls(*args, **options, **sync)(logits, target, *masks)
    if case["fn"] in MODULES:
        return MODULES[case["fn"]](**options, **sync)(logits, target, mask)
    return FUNCTIONS[case["fn"]](logits, target, mask=mask, **options, **sync)


def _loss_and_grad(case, part, **sync):
    logits = case["logits"][part].clone().requires_grad_()
    mask = case["mask"][part] if "mask" in case else None
    loss = _loss(case, logits, case["target"][part], mask, **sync)
    loss.sum().backward()
    return loss.detach(), logits.grad


def _ddp_data(spec):
    generator = torch.Generator().manual_seed(spec["seed"])
    batch = sum(spec["sizes"])
    images = torch.randn(batch, 2, H, W, generator=generator, dtype=torch.float64)
    labels = _index_target(generator, batch)
    model = nn.Conv2d(2, C, 1).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return images, labels, model


# ----------------------------------------------------------------------------------------------------------
# The worker: every case on this rank's slice with distributed=True.


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        groups = {"pair": dist.new_group(list(range(WORLD)))}
        solo = [dist.new_group([r]) for r in range(WORLD)]  # every rank must create every group
        groups["solo"] = solo[rank]
        results = {}
        for name, case in {**CASES, **SOLO_CASES, **COMPOUND_CASES}.items():
            group = groups.get(case["group"])
            results[name] = _loss_and_grad(case, _slice(case, rank), distributed=True, process_group=group)
        for name, spec in DDP_CASES.items():
            images, labels, model = _ddp_data(spec)
            ddp = nn.parallel.DistributedDataParallel(model)
            part = _slice(spec, rank)
            loss_fn = spec.get("loss", softseg.dice_loss)
            loss = loss_fn(ddp(images[part]), labels[part], aggregation=spec["aggregation"], distributed=True)
            loss.backward()
            results[name] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
        # Under torch.compile (fullgraph: no graph break) the collectives trace into the graph, with the same
        # result; uneven slices for global aggregation, even ones for image and class.
        caught = []
        for name in COMPILED_CASES:
            case = {**CASES, **COMPOUND_CASES}[name]
            part = _slice(case, rank)
            logits = case["logits"][part].clone().requires_grad_()
            mask = case["mask"][part] if "mask" in case else None
            torch._dynamo.reset()  # one function, many cases: each its own compile
            compiled = torch.compile(_loss, backend="aot_eager", fullgraph=True)
            with warnings.catch_warnings(record=True) as caught_here:
                warnings.simplefilter("always")
                loss = compiled(case, logits, case["target"][part], mask, distributed=True)
                loss.sum().backward()
            caught += caught_here
            results[f"compiled_{name}"] = (loss.detach(), logits.grad)
        results["warnings"] = [str(w.message) for w in caught if "distributed" in str(w.message)]
        # Uneven slices with image aggregation under the compiler: a clear error, not a wrong loss.
        case = CASES["image_index_ignore_uneven"]
        torch._dynamo.reset()
        try:
            torch.compile(_loss, backend="aot_eager", fullgraph=True)(
                case, case["logits"][_slice(case, rank)], case["target"][_slice(case, rank)], None, distributed=True
            )
        except RuntimeError as error:
            results["compiled_uneven"] = str(error)
        # The other rank's singleton group: this rank is no member, a local ValueError before any collective.
        try:
            softseg.dice_loss(torch.randn(1, 2, H, W), torch.zeros(1, H, W, dtype=torch.long), distributed=True,
                              process_group=solo[1 - rank])
        except ValueError as error:
            results["not_a_member"] = str(error)
        # A different number of classes per rank: a ValueError on every rank, not a hang.
        logits = torch.randn(2, 3 - rank, H, W)
        try:
            softseg.dice_loss(logits, torch.zeros(2, H, W, dtype=torch.long), aggregation="image", distributed=True)
        except ValueError as error:
            results["mismatched_classes"] = str(error)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Results of every rank: {case name: (loss, grad)}, from one start of WORLD gloo processes."""
    directory = tmp_path_factory.mktemp("distributed")
    # fork where available: the children reuse the imported torch instead of importing it again (seconds).
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _worker, args=(str(directory / "store"), str(directory)), nprocs=WORLD, join=True, start_method=start_method
    )
    return [torch.load(directory / f"rank{rank}.pt") for rank in range(WORLD)]


def _tolerance(dtype):
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}


# ----------------------------------------------------------------------------------------------------------
# Comparisons with one process on the concatenated batch.


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_and_gradient_equal_single_process(ranks, name):
    case = CASES[name]
    reference_loss, reference_grad = _loss_and_grad(case, slice(None))
    tolerance = _tolerance(case["logits"].dtype)
    for rank in range(WORLD):
        loss, grad = ranks[rank][name]
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, reference_loss, **tolerance)
        # Documented scaling: the collectives sum the gradient of every rank's (identical) loss.
        torch.testing.assert_close(grad, WORLD * reference_grad[_slice(case, rank)], **tolerance)


def test_cases_are_not_trivial(ranks):
    # Guard against vacuous comparisons: the synced loss must differ from the local loss somewhere.
    for name in (
        "global_index",
        "image_index_ignore_uneven",
        "class_index_ignore_uneven",
        "smp_dice_multiclass_ignore_uneven",
        "monai_dice_index_ignore_uneven",
        "monai_generalized_dice_batch_none_uneven",
        "generalized_dice_global_ignore_uneven",
        "mcc_global_index",
        "deep_supervision_dice_uneven",
        "compound_regions_dense_image",
        "monai_mcc_index_uneven",
        "smp_mcc_soft_label_uneven",
    ):
        case = CASES[name]
        local_loss, _ = _loss_and_grad(case, _slice(case, 1))
        assert not torch.allclose(ranks[1][name][0], local_loss)
    assert (CASES["global_present_no_foreground"]["target"][2:] == 0).all()


@pytest.mark.parametrize("name", sorted(SOLO_CASES))
def test_singleton_group_gives_the_local_loss(ranks, name):
    case = SOLO_CASES[name]
    for rank in range(WORLD):
        local_loss, local_grad = _loss_and_grad(case, _slice(case, rank))
        loss, grad = ranks[rank][name]
        torch.testing.assert_close(loss, local_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, local_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(DDP_CASES))
def test_ddp_parameter_gradient_equals_single_process(ranks, name):
    spec = DDP_CASES[name]
    images, labels, model = _ddp_data(spec)
    loss = spec.get("loss", softseg.dice_loss)(model(images), labels, aggregation=spec["aggregation"])
    loss.backward()
    for rank in range(WORLD):
        ddp_loss, grads = ranks[rank][name]
        if "loss" not in spec:  # a compound loss's value holds the local CE (tested above), its gradient not
            torch.testing.assert_close(ddp_loss, loss.detach(), rtol=1e-10, atol=1e-12)
        for grad, parameter in zip(grads, model.parameters()):
            # DDP averages over WORLD ranks, cancelling the WORLD from the collectives: factor 1.
            torch.testing.assert_close(grad, parameter.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(COMPOUND_CASES))
def test_compound_region_term_synchronised_ce_term_local(ranks, name):
    case = COMPOUND_CASES[name]
    region_weight, ce_weight = TERM_WEIGHTS.get(case["fn"], ("lambda_region", "lambda_ce"))
    region_only = {**case, "options": {**case["options"], ce_weight: 0.0}}
    ce_only = {**case, "options": {**case["options"], region_weight: 0.0}}
    region_loss, region_grad = _loss_and_grad(region_only, slice(None))
    for rank in range(WORLD):
        part = _slice(case, rank)
        ce_loss, ce_grad = _loss_and_grad(ce_only, part)
        loss, grad = ranks[rank][name]
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(loss, region_loss + ce_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, WORLD * region_grad[part] + ce_grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", COMPILED_CASES)
def test_compiled_loss_equals_eager_without_deprecation_warnings(ranks, name):
    for rank in range(WORLD):
        loss, grad = ranks[rank][f"compiled_{name}"]
        eager_loss, eager_grad = ranks[rank][name]
        torch.testing.assert_close(loss, eager_loss, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, eager_grad, rtol=1e-10, atol=1e-12)
        assert ranks[rank]["warnings"] == []


def test_compiled_uneven_image_slices_are_a_clear_error(ranks):
    for rank in range(WORLD):
        assert "needs the same batch size and number of classes on every rank" in ranks[rank]["compiled_uneven"]


def test_group_without_this_rank_is_a_clear_error(ranks):
    for rank in range(WORLD):
        assert f"this process (global rank {rank}) is not a member of process_group" in ranks[rank]["not_a_member"]


def test_mismatched_classes_raise_on_every_rank(ranks):
    for rank in range(WORLD):
        assert "same number of scored classes on every rank; got [3, 2]" in ranks[rank]["mismatched_classes"]


# ----------------------------------------------------------------------------------------------------------
# Bad input, without a process group (this test process never initialises one).


def test_no_process_group_is_a_clear_error():
    assert not dist.is_initialized()
    logits, labels = torch.randn(1, 2, 3), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(RuntimeError, match=r"no default process group is initialised; call torch\.distributed\.init"):
        softseg.dice_loss(logits, labels, distributed=True)
    with pytest.raises(RuntimeError, match="or pass process_group="):
        softseg.JaccardLoss(distributed=True)(logits, labels)
    stats = RegionStatistics(*(torch.zeros(1, 2) for _ in range(4)))
    with pytest.raises(RuntimeError, match="no default process group"):
        sync_statistics(stats)
    with pytest.raises(RuntimeError, match="no default process group"):
        smp.DiceLoss("multiclass", distributed=True)(logits, labels)
    with pytest.raises(RuntimeError, match="no default process group"):
        dice_ce_loss(logits, labels, distributed=True)
    with pytest.raises(RuntimeError, match="no default process group"):
        monai.GeneralizedDiceLoss(to_onehot_y=True, softmax=True, distributed=True)(logits, labels[:, None])


def test_option_validation():
    logits, labels = torch.randn(1, 2, 3), torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match="distributed must be a bool; got str"):
        softseg.dice_loss(logits, labels, distributed="yes")
    with pytest.raises(TypeError, match="distributed must be a bool; got int"):
        softseg.DiceLoss(distributed=1)
    with pytest.raises(ValueError, match="process_group is set but distributed=False"):
        softseg.tversky_loss(logits, labels, process_group=object())
    with pytest.raises(TypeError, match="process_group must be a torch.distributed.ProcessGroup .* got list"):
        softseg.TverskyLoss(distributed=True, process_group=[0, 1])
    with pytest.raises(TypeError, match="process_group must be .* got str"):
        check_distributed_options(True, "world")
    with pytest.raises(TypeError, match="distributed must be a bool; got NoneType"):
        smp.JaccardLoss("multiclass", distributed=None)
    with pytest.raises(ValueError, match="process_group is set but distributed=False"):
        smp.TverskyLoss("binary", process_group=object())
    with pytest.raises(TypeError, match="distributed must be a bool; got str"):
        DiceCELoss(distributed="no")
    with pytest.raises(TypeError, match="distributed must be a bool; got int"):
        monai.DiceLoss(distributed=0)
    with pytest.raises(ValueError, match="process_group is set but distributed=False"):
        monai.DiceFocalLoss(process_group=object())
    check_distributed_options(False, None)  # the default is valid
    stats = RegionStatistics(*(torch.zeros(1, 2) for _ in range(4)))
    with pytest.raises(ValueError, match="levels must be one of 'global', 'image', 'class'; got 'batch'"):
        sync_statistics(stats, levels=["batch"])
    with pytest.raises(ValueError, match="levels must name at least one aggregation level"):
        sync_statistics(stats, levels=[])


def test_distributed_false_is_unchanged():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, generator=generator)
    labels = torch.randint(0, 3, (2, 4, 4), generator=generator)
    for aggregation in ("global", "image", "class"):
        assert softseg.dice_loss(logits, labels, aggregation=aggregation, distributed=False) == softseg.dice_loss(
            logits, labels, aggregation=aggregation
        )
