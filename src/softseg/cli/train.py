"""Training and evaluating one loss configuration for ``softseg compare``.

Every configuration starts from the same seed (same initial weights, same batch order), so the only
difference between runs is the loss and the target it sees.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from softseg import labels, metrics
from softseg.cli.configs import LossConfiguration, build_loss
from softseg.cli.dataset import MultiRaterData
from softseg.cli.model import CompactUNet


class TrainingError(RuntimeError):
    """Training a configuration went wrong (a non-finite loss): the message names the configuration.

    Convention:
        - Constructed with one message string; a ``RuntimeError`` subclass.
        - Raised by :func:`train_configuration` when a batch loss is NaN or infinite (message: the
          configuration name, the value and the epoch).

    Example:
        >>> error = TrainingError("loss configuration 'x' gave a non-finite loss (nan) at epoch 1")
        >>> isinstance(error, RuntimeError), "'x'" in str(error)
        (True, True)
    """


class Split(NamedTuple):
    """Train and test tensors: images (N, 1, H, W), soft targets (N, C, H, W), majority votes (N, H, W).

    Convention:
        - ``*_images``: float32 (N, 1, H, W); ``*_soft``: float (N, C, H, W) averaged raters (sum 1 over C);
          ``*_hard``: int64 (N, H, W) majority vote; ``num_classes``: C. Train and test N differ.
        - A plain ``NamedTuple``: no validation, raises nothing; :func:`split_data` builds a consistent one.

    Example:
        >>> from softseg.cli.dataset import generate_multirater
        >>> split = split_data(generate_multirater(3, size=8, raters=2))
        >>> len(split.train_images), len(split.test_images), split.num_classes, split.test_hard.dtype
        (2, 1, 3, torch.int64)
    """

    train_images: Tensor
    train_soft: Tensor
    train_hard: Tensor
    test_images: Tensor
    test_soft: Tensor
    test_hard: Tensor
    num_classes: int


class TrainSettings(NamedTuple):
    """Optimisation settings shared by all configurations of one comparison.

    Convention:
        - ``epochs`` (int >= 1), ``batch_size`` (int >= 1), ``learning_rate`` (float > 0, Adam's initial rate,
          cosine-decayed to 0), ``width`` (int, channels of the first :class:`CompactUNet` level), ``seed``
          (int: initial weights and batch order).
        - A plain ``NamedTuple``: no validation here, raises nothing (``softseg compare`` checks its options).

    Example:
        >>> settings = TrainSettings(epochs=2, batch_size=4, learning_rate=1e-3, width=8, seed=0)
        >>> settings._replace(epochs=5).epochs, settings.width
        (5, 8)
    """

    epochs: int
    batch_size: int
    learning_rate: float
    width: int
    seed: int


class RunResult(NamedTuple):
    """One configuration's outcome: per-epoch history, final test metrics, training seconds, test probabilities.

    Convention:
        - ``config``: the :class:`LossConfiguration` trained; ``history``: one dict per epoch with ``epoch``,
          ``train_loss`` and ``test_soft_dice``; ``metrics``: the keys of :data:`METRIC_LABELS` (floats, see
          :func:`evaluate`); ``seconds``: optimisation time (float); ``test_probs``: float (N_test, C, H, W).
        - A plain ``NamedTuple``: no validation, raises nothing; :func:`train_configuration` returns one.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], [], {"ece": 0.1}, 1.5, torch.zeros(1, 2, 4, 4))
        >>> result.config.name, result.seconds, tuple(result.test_probs.shape)
        ('ce', 1.5, (1, 2, 4, 4))
    """

    config: LossConfiguration
    history: list[dict[str, float]]
    metrics: dict[str, float]
    seconds: float
    test_probs: Tensor


METRIC_LABELS = {
    "dice_majority": "Dice vs majority",
    "soft_dice": "soft Dice",
    "thresholded_dice": "thresholded Dice",
    "ece": "ECE",
    "brier": "Brier",
}


def split_data(data: MultiRaterData, *, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Shuffle the cases with ``seed`` and hold out ``test_fraction`` of them (at least one) for testing.

    Soft targets are the averaged raters, hard ones the majority vote (:mod:`softseg.labels`).

    Convention:
        - ``data``: :class:`MultiRaterData` with N >= 2 cases; ``test_fraction``: float, the test count is
          round(N * ``test_fraction``) clipped to [1, N - 1]; ``seed``: int (the permutation of the cases).
        - Returns a :class:`Split` (images float (n, 1, H, W), soft float (n, C, H, W), hard int64 (n, H, W)).
        - Raises ``ValueError`` when N < 2. Deterministic for a given ``seed``.

    Example:
        >>> from softseg.cli.dataset import generate_multirater
        >>> split = split_data(generate_multirater(4, size=16, raters=3), test_fraction=0.25)
        >>> tuple(split.train_soft.shape), tuple(split.test_hard.shape)
        ((3, 3, 16, 16), (1, 16, 16))
    """
    count = data.images.shape[0]
    if count < 2:
        raise ValueError(f"the data must hold at least 2 cases (one to train on, one to test); got {count}")
    soft = labels.rater_mean(data.raters, data.num_classes)
    hard = labels.majority_vote(data.raters, data.num_classes)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    test_count = min(max(1, round(count * test_fraction)), count - 1)
    test, train = order[:test_count], order[test_count:]
    return Split(
        data.images[train], soft[train], hard[train], data.images[test], soft[test], hard[test], data.num_classes
    )


def evaluate(probs: Tensor, soft: Tensor, hard: Tensor) -> dict[str, float]:
    r"""The comparison's metrics of test probabilities, all from :mod:`softseg.metrics`.

    soft Dice = 1 - sum_c |x_c - y_c|_1 / (|x_c|_1 + |y_c|_1) over foreground classes (global);
    ECE = sum_b n_b |acc_b - conf_b| / N; Brier = mean over pixels of sum_c (x_c - y_c)^2.

    Convention:
        - ``probs`` (N, C, H, W) probabilities, ``soft`` (N, C, H, W) averaged raters, ``hard`` (N, H, W)
          majority vote.
        - Overlap scores leave the background out (it would dominate every Dice); global aggregation
          except the thresholded Dice (per image, as QUBIQ). ``dice_majority``: argmax against the
          majority vote; ``soft_dice``: probabilities against the averaged raters; ``thresholded_dice``:
          both binarised at 0.1, ..., 0.9; ``ece`` (top-label, 15 bins) and ``brier`` against the averaged
          raters, all classes.

    Example:
        >>> soft = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])          # (N=1, C=2, H=1, W=2)
        >>> {k: round(v, 4) for k, v in evaluate(soft, soft, torch.tensor([[[0, 0]]])).items()}
        {'dice_majority': 0.0, 'soft_dice': 1.0, 'thresholded_dice': 1.0, 'ece': 0.0, 'brier': 0.0}
    """
    return {
        "dice_majority": float(
            metrics.dice_score(probs.argmax(1), hard, num_classes=probs.shape[1], include_background=False)
        ),
        "soft_dice": float(metrics.soft_dice_score(probs, soft, include_background=False)),
        "thresholded_dice": float(metrics.thresholded_dice_score(probs, soft, include_background=False)),
        "ece": float(metrics.expected_calibration_error(probs, soft)),
        "brier": float(metrics.brier_score(probs, soft)),
    }


@torch.no_grad()
def predict(model: torch.nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """Softmax probabilities of ``model`` on ``images``, in eval mode, batch by batch.

    Convention:
        - ``model``: maps (b, C_in, H, W) to logits (b, C, H, W); ``images``: (N, C_in, H, W) with N >= 1;
          ``batch_size``: int >= 1.
        - Returns float (N, C, H, W) probabilities (sum 1 over dim 1), without gradients (``torch.no_grad``).
        - Side effect: leaves ``model`` in eval mode. Errors are the model's (shape mismatch); N = 0 makes
          ``torch.cat`` raise (an empty list of batches).

    Example:
        >>> net = CompactUNet(in_channels=1, num_classes=2, width=2)
        >>> predict(net, torch.zeros(3, 1, 8, 8), batch_size=2).sum(1).allclose(torch.ones(3, 8, 8))
        True
    """
    model.eval()
    return torch.cat([model(images[i : i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)])


def train_configuration(
    config: LossConfiguration,
    split: Split,
    settings: TrainSettings,
    *,
    on_epoch: Callable[[int], None] | None = None,
) -> RunResult:
    """Train a fresh :class:`CompactUNet` with ``config``'s loss and evaluate it on the test cases.

    Adam with a cosine learning-rate decay to 0 over all steps; loss = ``config.build()(logits, target)``.

    Convention:
        - The target is ``split.train_soft`` (float (N, C, H, W)) for ``config.target == "soft"``, else
          ``split.train_hard`` (int64 (N, H, W)).
        - Weights and batch order come from ``settings.seed`` only, so configurations are comparable and
          a run does not depend on the others.
        - The history records the mean training loss and the test soft Dice (foreground) after every epoch;
          ``seconds`` counts the optimisation steps only. A non-finite loss raises :class:`TrainingError`.
        - Staged losses (:func:`softseg.cli.configs.build_loss`): built with the run's number of steps,
          stepped after every optimisation step; their weights at the end of each epoch are in the history
          as ``loss_weights`` ({term: weight}).

    Example:
        >>> from softseg.cli.configs import resolve_configurations
        >>> from softseg.cli.dataset import generate_multirater
        >>> split = split_data(generate_multirater(4, size=8, raters=2))
        >>> result = train_configuration(resolve_configurations("softseg-dice")[0], split, TrainSettings(1, 2, 1e-3, 2, 0))
        >>> [h["epoch"] for h in result.history], sorted(result.metrics)
        ([1], ['brier', 'dice_majority', 'ece', 'soft_dice', 'thresholded_dice'])
    """
    torch.manual_seed(settings.seed)
    model = CompactUNet(in_channels=split.train_images.shape[1], num_classes=split.num_classes, width=settings.width)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    steps_per_epoch = math.ceil(len(split.train_images) / settings.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    loss_fn = build_loss(config, total_steps=settings.epochs * steps_per_epoch)
    loss_step = getattr(loss_fn, "step", None)  # staged losses (softseg.CompoundLoss) advance with training
    targets = split.train_soft if config.target == "soft" else split.train_hard
    order_generator = torch.Generator().manual_seed(settings.seed)
    history: list[dict[str, float]] = []
    seconds = 0.0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(split.train_images), generator=order_generator)
        total = 0.0
        for first in range(0, len(order), settings.batch_size):
            batch = order[first : first + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(split.train_images[batch]), targets[batch])
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss configuration {config.name!r} gave a non-finite loss ({loss.item()}) at epoch {epoch}"
                )
            loss.backward()
            optimizer.step()
            schedule.step()
            if callable(loss_step):
                loss_step()
            total += loss.item() * len(batch)
        seconds += time.perf_counter() - start
        probs = predict(model, split.test_images, settings.batch_size)
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(order),
                "test_soft_dice": float(metrics.soft_dice_score(probs, split.test_soft, include_background=False)),
            }
        )
        if hasattr(loss_fn, "weights") and isinstance(loss_fn.weights, dict):  # a staged loss: its weights now
            history[-1]["loss_weights"] = {name: float(w) for name, w in loss_fn.weights.items()}
        if on_epoch is not None:
            on_epoch(epoch)
    probs = predict(model, split.test_images, settings.batch_size)
    return RunResult(config, history, evaluate(probs, split.test_soft, split.test_hard), seconds, probs)
