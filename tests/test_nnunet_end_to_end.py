"""End to end on the CPU: nnU-Net plans and preprocesses a tiny 2D data set, softseg-nnunet-train trains a
Softseg trainer for a few iterations and validates, softseg-nnunet-predict loads the checkpoint and predicts.

The data set: ten 64 x 64 PNGs (NaturalImage2DIO) of a bright disc and a small square on noise, labels
0 background, 1 disc, 2 square. The trainer is a short subclass of nnUNetTrainerSoftsegDiceCE in a folder of
the test's own on nnUNet_extTrainer, as a user's would be; the commands put softseg's folder before it.
Runs in the nnU-Net environment (``bash scripts/test_nnunet.sh``, about a minute on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="needs nnU-Net: bash scripts/test_nnunet.sh runs these tests")

from PIL import Image  # noqa: E402

DATASET_ID, DATASET = 990, "Dataset990_SoftsegTiny"
TRAINER = "nnUNetTrainerSoftsegDiceCE_tiny"
TRAINER_MODULE = f'''
import torch

from softseg.integrations.nnunet.trainers import nnUNetTrainerSoftsegDiceCE


class {TRAINER}(nnUNetTrainerSoftsegDiceCE):
    """Two epochs of four iterations: enough to run every part of nnU-Net's training once."""

    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 4
        self.num_val_iterations_per_epoch = 2

    def _build_loss(self):
        loss = super()._build_loss()
        self.print_to_log_file(f"softseg loss: {{type(loss).__name__}} {{type(loss.loss).__name__}}")
        return loss
'''


def _case(generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.uint8)
    centre, radius = generator.uniform(20, 44, 2), generator.uniform(8, 14)
    labels[(rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2] = 1
    top, left = generator.integers(2, 56, 2)
    labels[top : top + 5, left : left + 5] = 2
    image = 40 + 120 * (labels == 1) + 200 * (labels == 2) + generator.normal(0, 20, (64, 64))
    return np.clip(image, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("nnunet")
    raw = root / "raw" / DATASET
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / folder).mkdir(parents=True)
    generator = np.random.default_rng(0)
    for index in range(12):
        image, labels = _case(generator)
        if index < 10:
            Image.fromarray(image).save(raw / "imagesTr" / f"tiny_{index:03d}_0000.png")
            Image.fromarray(labels).save(raw / "labelsTr" / f"tiny_{index:03d}.png")
        else:
            Image.fromarray(image).save(raw / "imagesTs" / f"tiny_{index:03d}_0000.png")
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "gray"},
        "labels": {"background": 0, "disc": 1, "square": 2},
        "numTraining": 10,
        "file_ending": ".png",
        "overwrite_image_reader_writer": "NaturalImage2DIO",
    }))
    trainers = root / "my_trainers"
    trainers.mkdir()
    (trainers / "tiny_trainers.py").write_text(textwrap.dedent(TRAINER_MODULE))
    env = dict(
        os.environ,
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        nnUNet_extTrainer=str(trainers),
        nnUNet_def_n_proc="1",
    )
    return root, env


def _run(command: list[str], env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command[0]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="module")
def trained(workspace):
    root, env = workspace
    _run([_script("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
          "--verify_dataset_integrity"], dict(env, nnUNet_n_proc_DA="1"))
    # augmentation in the main process (nnUNet_n_proc_DA=0): two cores, no worker start-up
    train = _run([_script("softseg-nnunet-train"), str(DATASET_ID), "2d", "0", "-tr", TRAINER, "-device", "cpu"],
                 dict(env, nnUNet_n_proc_DA="0"))
    return root, env, train


def test_training_uses_softsegs_loss_and_validates(trained):
    root, env, train = trained
    fold = root / "results" / DATASET / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    log = "".join(path.read_text() for path in fold.glob("training_log_*.txt"))
    assert "softseg loss: AreaTargetDeepSupervision NNUNetRegionCELoss" in log
    assert log.count("train_loss") == 2  # two epochs ran
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"1", "2"} and 0 <= summary["foreground_mean"]["Dice"] <= 1
    # the user's folder stayed on the lookup path, after softseg's
    assert f"Using trainer '{TRAINER}' from: {env['nnUNet_extTrainer']}" in train.stdout


def test_prediction_loads_the_checkpoint(trained):
    root, env, _ = trained
    out = root / "predicted"
    _run([_script("softseg-nnunet-predict"), "-i", str(root / "raw" / DATASET / "imagesTs"), "-o", str(out),
          "-d", str(DATASET_ID), "-c", "2d", "-f", "0", "-tr", TRAINER, "-chk", "checkpoint_final.pth",
          "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta"], env)
    predictions = sorted(out.glob("*.png"))
    assert [p.name for p in predictions] == ["tiny_010.png", "tiny_011.png"]
    for path in predictions:
        labels = np.asarray(Image.open(path))
        assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1, 2}
