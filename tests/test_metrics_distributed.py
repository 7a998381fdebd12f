"""Two processes on the gloo backend give the same metric values as one process over all data.

One process group runs three splits of the same five images: uneven (3 + 2), and one rank empty, either
updating with empty batches (B = 0) or never updating at all (issue 14, item 6).
"""

import datetime
import os
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from softseg.metrics import (
    BrierScore,
    CalibrationError,
    DiceScore,
    IoUScore,
    NegativeLogLikelihood,
    SoftDiceScore,
    SoftJaccardScore,
    ThresholdedDiceScore,
)

WORLD_SIZE = 2
IMAGES = 5
# rank 0's images, rank 1's images (None: rank 1 never calls update). Uneven, so gathered per-image states differ in size.
SPLITS = {
    "uneven": (slice(0, 3), slice(3, 5)),
    "empty_batches": (slice(0, 5), slice(5, 5)),
    "no_update": (slice(0, 5), None),
}


def make_metrics():
    return {
        "dice_global": (DiceScore(num_classes=3, ignore_index=255), "hard"),
        "dice_image_worst": (DiceScore(num_classes=3, aggregation="image", worst_q=30, ignore_index=255), "hard"),
        "iou_class_present": (
            IoUScore(num_classes=3, aggregation="class", active_classes="present", ignore_index=255),
            "hard",
        ),
        "iou_global": (IoUScore(num_classes=3, ignore_index=255), "hard"),
        "soft_dice_global": (SoftDiceScore(num_classes=3), "soft"),
        "soft_dice_class_worst": (SoftDiceScore(num_classes=3, aggregation="class", worst_q=50), "soft"),
        "soft_jaccard_image": (SoftJaccardScore(num_classes=3, aggregation="image"), "soft"),
        "thresholded_dice": (ThresholdedDiceScore(num_classes=3), "soft"),
        "thresholded_dice_global": (ThresholdedDiceScore(num_classes=3, aggregation="global"), "soft"),
        "ece": (CalibrationError(n_bins=10), "index"),
        "ace_class_wise": (CalibrationError(binning="mass", mode="class-wise", num_classes=3), "soft"),
        "mce_image": (CalibrationError(norm="max", aggregation="image"), "index"),
        "brier": (BrierScore(), "soft"),
        "brier_image": (BrierScore(aggregation="image"), "index"),
        "nll": (NegativeLogLikelihood(), "soft"),
        "nll_image": (NegativeLogLikelihood(aggregation="image"), "index"),
    }


def make_data():
    generator = torch.Generator().manual_seed(1234)
    probs = (2 * torch.randn(5, 3, 6, 6, generator=generator)).softmax(1)
    soft_target = torch.randn(5, 3, 6, 6, generator=generator).softmax(1)
    labels = torch.randint(0, 3, (5, 6, 6), generator=generator)
    ignored = labels.clone()
    ignored[:, 0, :2] = 255
    return {"hard": (probs.argmax(1), ignored), "soft": (probs, soft_target), "index": (probs, labels)}


def evaluate(images: slice | None) -> dict[str, torch.Tensor]:
    data = make_data()
    results = {}
    for name, (metric, kind) in make_metrics().items():
        inputs, target = data[kind]
        if images is not None:
            # two updates per process, so states also accumulate locally before the sync
            for part in (slice(images.start, min(images.start + 1, images.stop)), slice(images.start + 1, images.stop)):
                metric.update(inputs[part], target[part])
        with warnings.catch_warnings():  # compute() before update() warns; that rank's states are empty on purpose
            warnings.simplefilter("ignore", UserWarning)
            results[name] = metric.compute()
            if isinstance(metric, CalibrationError) and metric.aggregation == "global":
                results[name + "_bins"] = torch.stack([t.reshape(-1) for t in metric.reliability()[:3]])
    return results


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {split: evaluate(images[rank]) for split, images in SPLITS.items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_gloo_processes_equal_one_process(tmp_path):
    # fork: the children reuse the imported modules (spawn would import torch and torchmetrics twice more)
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True, start_method=start_method
    )
    single = evaluate(slice(0, IMAGES))
    assert all(torch.isfinite(value).all() for value in single.values())
    for rank in range(WORLD_SIZE):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        for split in SPLITS:
            assert synced[split].keys() == single.keys()
            for name, value in single.items():
                assert torch.allclose(synced[split][name], value, atol=1e-9), (
                    split,
                    rank,
                    name,
                    synced[split][name],
                    value,
                )
    # the comparison is not vacuous: one process over part of the data differs
    part = evaluate(slice(0, 3))
    assert not any(torch.allclose(part[name], single[name]) for name in single if not name.endswith("_bins"))
