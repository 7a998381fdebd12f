"""Two processes on the gloo backend give the same metric values as one process over all data."""

import datetime
import os

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
SPLIT = 3  # rank 0 gets images [0, 3), rank 1 gets [3, 5): uneven, so gathered per-image states differ in size


def make_metrics():
    return {
        "dice_global": (DiceScore(num_classes=3, ignore_index=255), "hard"),
        "dice_image_worst": (DiceScore(num_classes=3, aggregation="image", worst_q=40, ignore_index=255), "hard"),
        "iou_class_present": (
            IoUScore(num_classes=3, aggregation="class", active_classes="present", ignore_index=255),
            "hard",
        ),
        "soft_dice_global": (SoftDiceScore(num_classes=3), "soft"),
        "soft_jaccard_image": (SoftJaccardScore(num_classes=3, aggregation="image"), "soft"),
        "thresholded_dice": (ThresholdedDiceScore(num_classes=3), "soft"),
        "ece": (CalibrationError(n_bins=10), "index"),
        "ace_class_wise": (CalibrationError(binning="mass", mode="class-wise", num_classes=3), "soft"),
        "mce_image": (CalibrationError(norm="max", aggregation="image"), "index"),
        "brier": (BrierScore(), "soft"),
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


def evaluate(images: slice) -> dict[str, torch.Tensor]:
    data = make_data()
    results = {}
    for name, (metric, kind) in make_metrics().items():
        inputs, target = data[kind]
        # two updates per process, so states also accumulate locally before the sync
        for part in (slice(images.start, images.start + 1), slice(images.start + 1, images.stop)):
            metric.update(inputs[part], target[part])
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
        images = slice(0, SPLIT) if rank == 0 else slice(SPLIT, 5)
        torch.save(evaluate(images), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")
def test_two_gloo_processes_equal_one_process(tmp_path):
    # fork: the children reuse the imported modules (spawn would import torch and torchmetrics twice more)
    start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD_SIZE, join=True, start_method=start_method
    )
    single = evaluate(slice(0, 5))
    for rank in range(WORLD_SIZE):
        synced = torch.load(tmp_path / f"rank{rank}.pt")
        assert synced.keys() == single.keys()
        for name, value in single.items():
            assert torch.allclose(synced[name], value, atol=1e-9), (rank, name, synced[name], value)
    # the comparison is not vacuous: one process over half the data differs
    half = evaluate(slice(0, SPLIT))
    assert not all(torch.allclose(half[name], single[name]) for name in single)
