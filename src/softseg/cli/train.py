"""Training and evaluating one loss configuration on one fold with one seed, for ``softseg compare``.

Every configuration trained on a fold with a seed starts from the same initial weights and sees the same
batches (the same crops, flips, rotations and raters): all random draws come from the seed alone, never
from the configuration, so the only difference between runs is the loss and the target it sees.

Two ways to train (:class:`TrainSettings`):

- by epochs (the embedded default): whole images in shuffled batches, ``epochs`` passes;
- by steps (``steps`` set, for real images): each step draws ``batch_size`` training cases, a random
  ``patch`` x ``patch`` crop of each, a random horizontal and vertical flip and a rotation by a multiple of
  90 degrees, so a small data set gives thousands of different steps.

Test images are predicted whole (the network is fully convolutional; images are padded with zeros to a
multiple of 2 ** depth and the output cropped back).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg import labels, metrics
from softseg.cli.configs import LossConfiguration, accepts_mask, build_loss
from softseg.cli.dataset import MultiRaterData
from softseg.cli.model import CompactUNet

HARD_TARGETS = ("majority", "rater1", "random-rater")
METRIC_LABELS = {
    "dice_majority": "Dice vs majority",
    "dice_raters": "Dice vs raters",
    "soft_dice": "soft Dice",
    "thresholded_dice": "thresholded Dice",
    "ece": "ECE",
    "brier": "Brier",
}
LOWER_IS_BETTER = frozenset({"ece", "brier"})
MONITOR = "test_soft_dice"  # the history's monitored metric: soft Dice of the test fold, foreground
RELIABILITY_BINS = 15


class TrainingError(RuntimeError):
    """Training a configuration went wrong (a non-finite loss): the message names the configuration.

    Convention:
        - Constructed with one message string; a ``RuntimeError`` subclass.
        - Raised by :func:`train_run` when a batch loss is NaN or infinite (message: the configuration name,
          the value and the epoch or step), or when the data has a field of view and the loss takes no mask.

    Example:
        >>> error = TrainingError("loss configuration 'x' gave a non-finite loss (nan) at epoch 1")
        >>> isinstance(error, RuntimeError), "'x'" in str(error)
        (True, True)
    """


class TrainingData(NamedTuple):
    """A data set with its targets: images, raters, averaged raters, majority vote, field of view.

    Convention:
        - ``images`` float32 (N, C_in, H, W); ``raters`` int64 (N, R, H, W); ``soft`` float32 (N, C, H, W),
          the averaged raters (:func:`softseg.labels.rater_mean`); ``majority`` int64 (N, H, W)
          (:func:`softseg.labels.majority_vote`, ties to the lower class: with two raters a vessel pixel
          needs both); ``fov`` bool (N, H, W) or None; ``num_classes`` C; ``names`` one per case.
        - A plain ``NamedTuple``; :func:`prepare_data` builds a consistent one.

    Example:
        >>> from softseg.cli.dataset import generate_multirater
        >>> data = prepare_data(generate_multirater(2, size=8, raters=3))
        >>> tuple(data.soft.shape), tuple(data.majority.shape), data.fov
        ((2, 3, 8, 8), (2, 8, 8), None)
    """

    images: Tensor
    raters: Tensor
    soft: Tensor
    majority: Tensor
    fov: Tensor | None
    num_classes: int
    names: tuple[str, ...]


def prepare_data(data: MultiRaterData) -> TrainingData:
    """The averaged raters (soft target) and the majority vote (hard target) of ``data``, with its tensors.

    Convention:
        - ``data``: :class:`MultiRaterData` with N >= 1 cases. Returns :class:`TrainingData`.
        - Raises the ``ValueError`` of :mod:`softseg.labels` for labels outside [0, ``num_classes``).

    Example:
        >>> from softseg.cli.dataset import generate_multirater
        >>> prepare_data(generate_multirater(1, size=8, raters=2)).soft.sum(1).allclose(torch.ones(1, 8, 8))
        True
    """
    return TrainingData(
        data.images,
        data.raters,
        labels.rater_mean(data.raters, data.num_classes),
        labels.majority_vote(data.raters, data.num_classes),
        data.fov,
        data.num_classes,
        data.names,
    )


class Fold(NamedTuple):
    """One train/test split: the fold's number (1-based) and the case indices, int64 tensors.

    Convention:
        - ``number`` int >= 1; ``train``, ``test``: disjoint 1-D int64 tensors of case indices.
        - A plain ``NamedTuple``; :func:`make_folds` builds them.

    Example:
        >>> make_folds(4, folds=2)[0].number
        1
    """

    number: int
    train: Tensor
    test: Tensor


def make_folds(num_cases: int, *, folds: int | None = None, seed: int = 0, test_fraction: float = 0.25) -> list[Fold]:
    """K-fold cross-validation over cases, or one held-out split when ``folds`` is None.

    The cases are shuffled once with ``seed``; K folds are the K contiguous parts of that order
    (``numpy.array_split`` sizes), each the test set once with the rest for training. Without ``folds`` the
    first round(N ``test_fraction``) cases of the order (at least 1, at most N - 1) are the test set.

    Convention:
        - ``num_cases`` int >= 2; ``folds`` None or an int in [2, ``num_cases``]; ``seed`` int;
          ``test_fraction`` float in (0, 1).
        - Returns a list of :class:`Fold`; every case is tested exactly once when ``folds`` is given.
        - Raises ``ValueError`` naming ``--folds`` for a fold count below 2 or above the number of cases,
          and for fewer than 2 cases.

    Example:
        >>> [fold.test.tolist() for fold in make_folds(5, folds=2, seed=0)]
        [[4, 0, 1], [3, 2]]
        >>> len(make_folds(8, seed=0)[0].test)
        2
    """
    if num_cases < 2:
        raise ValueError(f"the data must hold at least 2 cases (one to train on, one to test); got {num_cases}")
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
            raise ValueError(
                f"--folds must be at least 2 (k-fold cross-validation); got {folds!r} (leave --folds out for one split)"
            )
        if folds > num_cases:
            raise ValueError(f"--folds {folds} is larger than the number of cases ({num_cases})")
    order = torch.randperm(num_cases, generator=torch.Generator().manual_seed(seed))
    if folds is None:
        test_count = min(max(1, round(num_cases * test_fraction)), num_cases - 1)
        return [Fold(1, order[test_count:], order[:test_count])]
    sizes = [num_cases // folds + (k < num_cases % folds) for k in range(folds)]
    parts = list(torch.split(order, sizes))
    return [Fold(k + 1, torch.cat(parts[:k] + parts[k + 1 :]), part) for k, part in enumerate(parts)]


class TrainSettings(NamedTuple):
    """Optimisation settings shared by all configurations of one comparison.

    Convention:
        - ``epochs`` (int >= 1, used when ``steps`` is None), ``batch_size`` (int >= 1), ``learning_rate``
          (float > 0, Adam's initial rate, cosine-decayed to 0 over all steps), ``width`` (channels of the
          first :class:`CompactUNet` level), ``seed`` (int; the run seed of seed index s is ``seed + s``).
        - ``depth``: pooling levels of the network; ``steps``: None (train by epochs on whole images) or the
          number of optimisation steps on augmented crops; ``patch``: crop side (None: whole images);
          ``evaluations``: monitoring points in step mode (the test soft Dice every ``steps / evaluations``
          steps); ``hard_target``: one of :data:`HARD_TARGETS`, what the ``"hard"`` configurations train on.
        - A plain ``NamedTuple``: no validation here (``softseg compare`` checks its options).

    Example:
        >>> settings = TrainSettings(epochs=2, batch_size=4, learning_rate=1e-3, width=8, seed=0)
        >>> settings._replace(steps=100, patch=32).steps, settings.depth, settings.hard_target
        (100, 2, 'majority')
    """

    epochs: int
    batch_size: int
    learning_rate: float
    width: int
    seed: int
    depth: int = 2
    steps: int | None = None
    patch: int | None = None
    evaluations: int = 10
    hard_target: str = "majority"


class RunResult(NamedTuple):
    """One configuration trained on one fold with one seed: its history, per-case metrics and reliability sums.

    Convention:
        - ``config``: the :class:`LossConfiguration`; ``fold``: fold number; ``seed``: the run seed;
          ``history``: one dict per evaluation with ``step`` (and ``epoch`` in epoch mode), ``train_loss``
          (mean since the previous evaluation), ``test_soft_dice`` and, for losses with a ``weights``
          attribute, ``loss_weights``; ``case_metrics``: metric key of :data:`METRIC_LABELS` -> one float per
          test case; ``test_cases``: the test cases' indices, in that order; ``seconds``: wall time of the
          optimisation steps; ``cpu_seconds``: their CPU time (all threads); ``reliability``: (count,
          confidence sum, accuracy sum), float64 (15,) each, top-label histograms of the test pixels;
          ``last_tenth_gain``: :func:`last_tenth_gain` of the history (None when it cannot be judged).
        - A plain ``NamedTuple``: no validation, raises nothing; :func:`train_run` returns one.

    Example:
        >>> from softseg.cli.configs import LOSS_CONFIGURATIONS
        >>> result = RunResult(LOSS_CONFIGURATIONS["ce"], 1, 0, [], {"ece": [0.1]}, (3,), 1.5, 2.5, None)
        >>> result.config.name, result.test_cases, result.seconds
        ('ce', (3,), 1.5)
    """

    config: LossConfiguration
    fold: int
    seed: int
    history: list[dict]
    case_metrics: dict[str, list[float]]
    test_cases: tuple[int, ...]
    seconds: float
    cpu_seconds: float
    reliability: tuple[Tensor, Tensor, Tensor] | None
    last_tenth_gain: float | None = None


def _counted(tensor: Tensor, fov: Tensor | None) -> Tensor:
    """(B, K, H, W) or (B, H, W) to the counted pixels only, as one image: (1, K, n) or (1, n)."""
    if fov is None:
        return tensor
    if tensor.ndim == fov.ndim:
        return tensor[fov].unsqueeze(0)
    return tensor.movedim(1, -1)[fov].T.unsqueeze(0)


def case_metrics(probs: Tensor, soft: Tensor, majority: Tensor, raters: Tensor, fov: Tensor | None) -> dict[str, float]:
    r"""The comparison's metrics of one test case, from :mod:`softseg.metrics`, over its field of view.

    Dice vs majority = Dice(argmax, majority vote); Dice vs raters = (1/R) sum_r Dice(argmax, rater r);
    soft Dice = 1 - sum_c |x_c - y_c|_1 / (|x_c|_1 + |y_c|_1) against the averaged raters y; thresholded
    Dice = mean over t in {0.1, ..., 0.9} of Dice(x > t, y > t) (QUBIQ); ECE = sum_b n_b |acc_b - conf_b| / N
    (top-label, 15 bins) and Brier = mean over pixels of sum_c (x_c - y_c)^2 against the averaged raters.

    Convention:
        - ``probs`` (C, H, W) probabilities; ``soft`` (C, H, W) averaged raters; ``majority`` (H, W) and
          ``raters`` (R, H, W) int64; ``fov`` bool (H, W) or None: pixels outside count nowhere.
        - The four Dice scores leave the background out (mean over the foreground classes present in
          prediction or target; none present gives 0); ECE and Brier use all classes. Returns floats.

    Example:
        >>> soft = torch.tensor([[[0.5, 1.0]], [[0.5, 0.0]]])               # (C=2, H=1, W=2)
        >>> raters = torch.tensor([[[1, 0]], [[0, 0]]])
        >>> {k: round(v, 4) for k, v in case_metrics(soft, soft, torch.tensor([[0, 0]]), raters, None).items()}
        {'dice_majority': 0.0, 'dice_raters': 0.0, 'soft_dice': 1.0, 'thresholded_dice': 1.0, 'ece': 0.0, 'brier': 0.0}
    """
    fov = None if fov is None else fov.unsqueeze(0)
    probs, soft = _counted(probs.unsqueeze(0), fov), _counted(soft.unsqueeze(0), fov)
    num_classes = probs.shape[1]
    prediction = probs.argmax(1)

    def hard_dice(target: Tensor) -> float:
        return float(metrics.dice_score(prediction, target, num_classes=num_classes, include_background=False))

    return {
        "dice_majority": hard_dice(_counted(majority.unsqueeze(0), fov)),
        "dice_raters": sum(hard_dice(_counted(r.unsqueeze(0), fov)) for r in raters) / len(raters),
        "soft_dice": float(metrics.soft_dice_score(probs, soft, include_background=False)),
        "thresholded_dice": float(metrics.thresholded_dice_score(probs, soft, include_background=False)),
        "ece": float(metrics.expected_calibration_error(probs, soft, n_bins=RELIABILITY_BINS)),
        "brier": float(metrics.brier_score(probs, soft)),
    }


def padded_forward(model: CompactUNet, images: Tensor) -> Tensor:
    """Logits of ``model`` on images of any size: zero-padded to a multiple of 2 ** depth, cropped back.

    Convention:
        - ``model``: a :class:`CompactUNet`; ``images``: float (B, C_in, H, W) with any H, W >= 1.
        - Returns logits (B, C, H, W). Padding is at the bottom and right (standardised images: 0 = mean
          intensity), so the kept pixels see the same context as without padding where none is needed.

    Example:
        >>> net = CompactUNet(in_channels=1, num_classes=2, width=2, depth=2)
        >>> padded_forward(net, torch.zeros(1, 1, 6, 7)).shape
        torch.Size([1, 2, 6, 7])
    """
    multiple = 2**model.depth
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        return model(F.pad(images, (0, pad_w, 0, pad_h)))[..., :height, :width]
    return model(images)


@torch.no_grad()
def predict(model: CompactUNet, images: Tensor, batch_size: int) -> Tensor:
    """Softmax probabilities of ``model`` on whole ``images``, in eval mode, batch by batch.

    Convention:
        - ``model``: a :class:`CompactUNet`; ``images``: (N, C_in, H, W), N >= 1, any H, W;
          ``batch_size``: int >= 1.
        - Returns float (N, C, H, W) probabilities (sum 1 over dim 1), without gradients.
        - Side effect: leaves ``model`` in eval mode.

    Example:
        >>> net = CompactUNet(in_channels=1, num_classes=2, width=2)
        >>> predict(net, torch.zeros(3, 1, 8, 6), batch_size=2).sum(1).allclose(torch.ones(3, 8, 6))
        True
    """
    model.eval()
    return torch.cat(
        [padded_forward(model, images[i : i + batch_size]).softmax(1) for i in range(0, len(images), batch_size)]
    )


def monitored_soft_dice(probs: Tensor, soft: Tensor, fov: Tensor | None) -> float:
    """Soft Dice (foreground, pooled over the cases) of ``probs`` against ``soft`` over the field of view.

    Convention:
        - ``probs``, ``soft``: (N, C, H, W); ``fov``: bool (N, H, W) or None. Returns a float in [0, 1].

    Example:
        >>> y = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])
        >>> monitored_soft_dice(y, y, None)
        1.0
    """
    return float(metrics.soft_dice_score(_counted(probs, fov), _counted(soft, fov), include_background=False))


def last_tenth_gain(history: Sequence[Mapping], total_steps: int, *, key: str = MONITOR) -> float | None:
    """How much ``key`` rose over the last tenth of training: its final value minus its value at 90%.

    The value "at 90%" is the last evaluation at or before step 0.9 ``total_steps``; None when there is
    none (too few evaluations to judge).

    Convention:
        - ``history``: dicts with ``step`` and ``key``, in order; ``total_steps``: int >= 1. Returns a float
          (negative when the metric fell) or None.

    Example:
        >>> history = [{"step": s, "test_soft_dice": v} for s, v in ((50, 0.5), (90, 0.70), (100, 0.74))]
        >>> round(last_tenth_gain(history, 100), 4)
        0.04
    """
    earlier = [h for h in history if h["step"] <= 0.9 * total_steps]
    if not history or not earlier or earlier[-1] is history[-1]:
        return None
    return float(history[-1][key] - earlier[-1][key])


def _weights_value(weights: object) -> object:
    """A loss's ``weights`` as JSON-ready numbers: a number, a list or a dict of numbers."""
    if isinstance(weights, Tensor):
        return weights.detach().cpu().tolist()
    if isinstance(weights, Mapping):
        return {str(k): _weights_value(v) for k, v in weights.items()}
    if isinstance(weights, Sequence) and not isinstance(weights, str):
        return [_weights_value(v) for v in weights]
    return float(weights)


class _Batch(NamedTuple):
    images: Tensor
    soft: Tensor
    hard: Tensor
    mask: Tensor | None


def _hard_targets(data: TrainingData, cases: Tensor, chosen_raters: Tensor | None, hard_target: str) -> Tensor:
    if hard_target == "majority":
        return data.majority[cases]
    if hard_target == "rater1":
        return data.raters[cases, 0]
    return data.raters[cases, chosen_raters]


def _whole_batches(data: TrainingData, train: Tensor, settings: TrainSettings, generator: torch.Generator):
    """Epoch mode: every epoch a new order of the training cases, whole images; yields (epoch, batch)."""
    for epoch in range(1, settings.epochs + 1):
        order = train[torch.randperm(len(train), generator=generator)]
        chosen = None
        if settings.hard_target == "random-rater":
            chosen = torch.randint(data.raters.shape[1], (len(order),), generator=generator)
        for first in range(0, len(order), settings.batch_size):
            cases = order[first : first + settings.batch_size]
            picked = None if chosen is None else chosen[first : first + settings.batch_size]
            yield (
                epoch,
                _Batch(
                    data.images[cases],
                    data.soft[cases],
                    _hard_targets(data, cases, picked, settings.hard_target),
                    None if data.fov is None else data.fov[cases],
                ),
            )


def _augment(tensor: Tensor, top: int, left: int, size: tuple[int, int], flips: Tensor, turns: int) -> Tensor:
    tensor = tensor[..., top : top + size[0], left : left + size[1]]
    if flips[0]:
        tensor = tensor.flip(-1)
    if flips[1]:
        tensor = tensor.flip(-2)
    return tensor.rot90(turns, (-2, -1)) if turns else tensor


def _patch_batches(data: TrainingData, train: Tensor, settings: TrainSettings, generator: torch.Generator):
    """Step mode: endless batches of augmented crops; the draws do not depend on the configuration."""
    height, width = data.images.shape[-2:]
    size = (settings.patch, settings.patch) if settings.patch else (height, width)
    order = torch.empty(0, dtype=torch.int64)
    while True:
        if len(order) < settings.batch_size:
            order = torch.cat([order, train[torch.randperm(len(train), generator=generator)]])
        cases, order = order[: settings.batch_size], order[settings.batch_size :]
        count = len(cases)
        tops = torch.randint(height - size[0] + 1, (count,), generator=generator).tolist()
        lefts = torch.randint(width - size[1] + 1, (count,), generator=generator).tolist()
        flips = torch.randint(2, (count, 2), generator=generator)
        turns = torch.randint(4, (count,), generator=generator).tolist()
        chosen = torch.randint(data.raters.shape[1], (count,), generator=generator)
        hard = _hard_targets(data, cases, chosen, settings.hard_target)
        parts: dict[str, list[Tensor]] = {"images": [], "soft": [], "hard": [], "mask": []}
        for i, case in enumerate(cases.tolist()):
            turn = turns[i] if size[0] == size[1] else 0  # a quarter turn keeps the shape of square crops only
            place = (tops[i], lefts[i], size, flips[i], turn)
            parts["images"].append(_augment(data.images[case], *place))
            parts["soft"].append(_augment(data.soft[case], *place))
            parts["hard"].append(_augment(hard[i], *place))
            if data.fov is not None:
                parts["mask"].append(_augment(data.fov[case], *place))
        yield _Batch(
            torch.stack(parts["images"]),
            torch.stack(parts["soft"]),
            torch.stack(parts["hard"]),
            torch.stack(parts["mask"]) if parts["mask"] else None,
        )


def total_steps(settings: TrainSettings, train_cases: int) -> int:
    """Optimisation steps of one run: ``steps``, or ``epochs`` times the batches of one epoch.

    Convention:
        - ``settings``: :class:`TrainSettings`; ``train_cases``: int >= 1. Returns an int >= 1.

    Example:
        >>> total_steps(TrainSettings(epochs=3, batch_size=4, learning_rate=1e-3, width=4, seed=0), 10)
        9
    """
    return settings.steps or settings.epochs * math.ceil(train_cases / settings.batch_size)


def train_run(
    config: LossConfiguration,
    data: TrainingData,
    fold: Fold,
    settings: TrainSettings,
    *,
    run_seed: int,
    on_step: Callable[[int], None] | None = None,
) -> RunResult:
    """Train a fresh :class:`CompactUNet` with ``config``'s loss on ``fold.train`` and evaluate it on ``fold.test``.

    Adam with a cosine learning-rate decay to 0 over all steps; loss = ``config.build()(logits, target)``
    (with ``mask=`` the field of view when the data has one); a loss's ``step()`` runs after each step.

    Convention:
        - The target is the averaged raters (float (B, C, H, W)) for ``config.target == "soft"``, else the
          hard target that ``settings.hard_target`` names (int64 (B, H, W)): the majority vote, rater 1, or
          a rater drawn at random per case and step.
        - Initial weights and every random draw come from ``run_seed`` only (see the module docstring).
        - The history holds an evaluation after every epoch (epoch mode) or every ``steps / evaluations``
          steps; ``on_step(step)`` is called after every optimisation step.
        - Raises :class:`TrainingError` for a non-finite loss, or a field of view with a loss that takes no
          ``mask=``; errors of the loss itself (a target it rejects) propagate.

    Example:
        >>> from softseg.cli.configs import resolve_configurations
        >>> from softseg.cli.dataset import generate_multirater
        >>> data = prepare_data(generate_multirater(4, size=8, raters=2))
        >>> fold = make_folds(4)[0]
        >>> result = train_run(resolve_configurations("softseg-dice")[0], data, fold,
        ...                    TrainSettings(1, 2, 1e-3, 2, 0), run_seed=0)
        >>> [h["epoch"] for h in result.history], sorted(result.case_metrics), len(result.test_cases)
        ([1], ['brier', 'dice_majority', 'dice_raters', 'ece', 'soft_dice', 'thresholded_dice'], 1)
    """
    torch.manual_seed(run_seed)
    model = CompactUNet(
        in_channels=data.images.shape[1], num_classes=data.num_classes, width=settings.width, depth=settings.depth
    )
    steps = total_steps(settings, len(fold.train))
    loss_fn = build_loss(config, total_steps=steps)  # staged losses are told the run's length
    if data.fov is not None and not accepts_mask(loss_fn):
        raise TrainingError(
            f"loss configuration {config.name!r} takes no mask= argument, but the data has a field of view "
            "(its outside pixels must leave the loss)"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(run_seed)
    stepper = getattr(loss_fn, "step", None)
    history: list[dict] = []
    seconds = cpu_seconds = 0.0
    running, counted = 0.0, 0

    def evaluate(record: dict) -> None:
        nonlocal running, counted
        probs = predict(model, data.images[fold.test], settings.batch_size)
        fov = None if data.fov is None else data.fov[fold.test]
        record.update(
            train_loss=running / max(counted, 1), test_soft_dice=monitored_soft_dice(probs, data.soft[fold.test], fov)
        )
        if hasattr(loss_fn, "weights"):
            record["loss_weights"] = _weights_value(loss_fn.weights)
        history.append(record)
        running, counted = 0.0, 0
        model.train()

    if settings.steps is None:
        batches = _whole_batches(data, fold.train, settings, generator)
        evaluate_at: set[int] = set()
    else:
        batches = ((None, batch) for batch in _patch_batches(data, fold.train, settings, generator))
        evaluate_at = {round(k * steps / settings.evaluations) for k in range(1, settings.evaluations + 1)}
    model.train()
    epoch_seen = 1
    for step, (epoch, batch) in enumerate(batches, 1):
        if epoch is not None and epoch != epoch_seen:  # an epoch ended with the previous step
            evaluate({"epoch": epoch_seen, "step": step - 1})
            epoch_seen = epoch
        started, cpu_started = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        logits = padded_forward(model, batch.images)
        target = batch.soft if config.target == "soft" else batch.hard
        loss = loss_fn(logits, target) if batch.mask is None else loss_fn(logits, target, mask=batch.mask)
        if not torch.isfinite(loss):
            where = f"epoch {epoch}" if epoch is not None else f"step {step}"
            raise TrainingError(f"loss configuration {config.name!r} gave a non-finite loss ({loss.item()}) at {where}")
        loss.backward()
        optimizer.step()
        schedule.step()
        if callable(stepper):
            stepper()
        seconds += time.perf_counter() - started
        cpu_seconds += time.process_time() - cpu_started
        running, counted = running + loss.item() * len(batch.images), counted + len(batch.images)
        if on_step is not None:
            on_step(step)
        if step in evaluate_at:
            evaluate({"step": step})
        if step == steps:
            break
    if settings.steps is None:
        evaluate({"epoch": epoch_seen, "step": steps})

    probs = predict(model, data.images[fold.test], settings.batch_size)
    per_case: dict[str, list[float]] = {key: [] for key in METRIC_LABELS}
    for i, case in enumerate(fold.test.tolist()):
        fov = None if data.fov is None else data.fov[case]
        values = case_metrics(probs[i], data.soft[case], data.majority[case], data.raters[case], fov)
        for key, value in values.items():
            per_case[key].append(value)
    fov = None if data.fov is None else data.fov[fold.test]
    histograms = metrics.calibration_histograms(
        _counted(probs, fov), _counted(data.soft[fold.test], fov), n_bins=RELIABILITY_BINS
    )
    reliability = tuple(h.sum(0)[0] for h in histograms)
    return RunResult(
        config,
        fold.number,
        run_seed,
        history,
        per_case,
        tuple(fold.test.tolist()),
        seconds,
        cpu_seconds,
        reliability,
        last_tenth_gain(history, steps),
    )
