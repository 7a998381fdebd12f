r"""Calibration of pixel probabilities against hard or soft targets: ECE, ACE, MCE, reliability bins,
Brier score and NLL. Functional forms and torchmetrics classes.

Every pixel is a sample. In a bin of samples with confidence p (the top probability, or one class's
probability) the "accuracy" is the mean target probability of the predicted class (top-label) or of that
class (class-wise): for index targets the usual 0/1 correctness, for soft targets its expectation.

Bins are equal-width ([i/n, (i+1)/n), the last closed, as torchmetrics) or equal-mass. Equal-mass bins
are built from a fine equal-width histogram of ``resolution`` sub-bins: sample ranks are split into n
equal parts, each sub-bin going to the part of its first sample. This keeps the states constant-size
sums (exact under multi-process sync); bins are exactly equal-mass when no sub-bin holds samples of
two parts (confidences more than 1/``resolution`` apart).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

from softseg._checks import (
    ACTIVATIONS,
    check_choice,
    check_ignore_index,
    check_labels,
    check_number,
    check_unit_interval,
)
from softseg.activation import Activation
from softseg.metrics._counted import activate_counted

BINNINGS = ("width", "mass")
MODES = ("top-label", "class-wise")
CALIBRATION_AGGREGATIONS = ("global", "image")
NORMS = ("l1", "max")


class ReliabilityBins(NamedTuple):
    r"""Reliability-diagram bins, returned by :func:`reliability_bins` and :meth:`CalibrationError.reliability`.

    conf_b = (1/n_b) sum_{i in b} p_i, acc_b = (1/n_b) sum_{i in b} y_i, count n_b, and the bin edges.

    Convention:
        - float64; shapes (n_bins,) and (n_bins + 1,) for edges top-label, with a leading C class-wise.
        - An empty bin has confidence, accuracy and count 0 (never NaN).

    Example:
        >>> bins = ReliabilityBins(*(torch.zeros(2) for _ in range(3)), torch.tensor([0.0, 0.5, 1.0]))
        >>> bins.edges
        tensor([0.0000, 0.5000, 1.0000])
    """

    confidence: Tensor
    accuracy: Tensor
    count: Tensor
    edges: Tensor


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def _check_calibration_options(*, n_bins, binning, mode, aggregation, resolution, norm="l1") -> None:
    _check_count("n_bins", n_bins, 1)
    check_choice("binning", binning, BINNINGS)
    check_choice("mode", mode, MODES)
    check_choice("aggregation", aggregation, CALIBRATION_AGGREGATIONS)
    check_choice("norm", norm, NORMS)
    _check_count("resolution", resolution, n_bins)


def _samples(probs: Tensor, target: Tensor, *, activation: str, ignore_index: int | None, mask: Tensor | None):
    """Flatten to probabilities (B, C, N) (C = 1 expanded to background/foreground), the labels or the
    dense target, and the counted pixels (B, N) as a bool tensor.

    Excluded pixels are cleared before the activation (:mod:`softseg.metrics._counted`), so a NaN or inf
    there never reaches a sum; every later step selects with ``counted``.
    """
    probs, target, kind, counted, mask = activate_counted(
        probs, target, activation=activation, ignore_index=ignore_index, mask=mask
    )
    if mask is not None and mask.shape[1] != 1:
        raise ValueError(
            f"mask must be per pixel, (B, *spatial) or (B, 1, *spatial), for calibration; got shape {tuple(mask.shape)}"
        )
    batch, channels = probs.shape[:2]
    pixels = math.prod(probs.shape[2:])  # explicit: reshape(0, -1) is ambiguous for an empty batch
    if counted is None:
        counted = torch.ones(batch, pixels, dtype=torch.bool, device=probs.device)
    else:
        counted = counted.reshape(batch, pixels)
    flat = probs.reshape(batch, channels, pixels)
    if kind == "index":
        labels = target.reshape(batch, pixels).long()
        check_labels(labels, max(channels, 2), counted, ignore_index)
        labels = torch.where(counted, labels, 0)  # any valid class: excluded pixels are never counted
        dense_target = None
    else:
        check_unit_interval("target", target)
        labels, dense_target = None, target.reshape(batch, channels, pixels)
    if channels == 1:  # binary: foreground probability -> (background, foreground)
        flat = torch.cat([1 - flat, flat], 1)
        if dense_target is not None:
            dense_target = torch.cat([1 - dense_target, dense_target], 1)
    return flat, labels, dense_target, counted


def _confidence_accuracy(flat, labels, dense_target, mode):
    """Yield confidence and accuracy (B, N) per group: one group top-label, one per class class-wise.

    Class by class, so class-wise calibration never holds a (B, C, N) one-hot or float64 copy.
    """
    if mode == "top-label":
        confidence, predicted = flat.max(1)
        if labels is not None:
            yield confidence, (predicted == labels).to(torch.float64)
        else:
            yield confidence, dense_target.gather(1, predicted.unsqueeze(1)).squeeze(1).to(torch.float64)
        return
    for c in range(flat.shape[1]):
        accuracy = (labels == c) if labels is not None else dense_target[:, c]
        yield flat[:, c], accuracy.to(torch.float64)


def calibration_histograms(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "width",
    mode: str = "top-label",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    resolution: int = 10_000,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-image histograms (count, sum of confidence, sum of accuracy), each (B, G, M) in float64.

    With bin(i) the equal-width bin of sample i's confidence p_i and y_i its accuracy:
    count_m = sum_i [bin(i) = m], confidence_m = sum_i [bin(i) = m] p_i, accuracy_m = sum_i [bin(i) = m] y_i.
    G = 1 (top-label) or C (class-wise); M = ``n_bins`` (equal width) or ``resolution`` (fine bins that
    equal-mass binning merges). The sufficient statistics of every calibration metric here.

    Convention:
        As :func:`expected_calibration_error`: ``probs`` (B, C, \*spatial) probabilities, index or soft
        ``target``; ignored pixels add nothing; C = 1 counts as two classes (G = 2 class-wise).

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6], [0.1, 0.4]]])        # (B=1, C=2, N=2)
        >>> count, confidence, accuracy = calibration_histograms(probs, torch.tensor([[0, 1]]), n_bins=2)
        >>> count, confidence, accuracy
        (tensor([[[0., 2.]]], dtype=torch.float64), tensor([[[0.0000, 1.5000]]], dtype=torch.float64), tensor([[[0., 1.]]], dtype=torch.float64))
    """
    _check_calibration_options(n_bins=n_bins, binning=binning, mode=mode, aggregation="global", resolution=resolution)
    flat, labels, dense_target, counted = _samples(
        probs, target, activation=activation, ignore_index=ignore_index, mask=mask
    )
    batch = flat.shape[0]

    def select(values: Tensor) -> Tensor:
        return torch.where(counted, values, 0)

    bins = n_bins if binning == "width" else resolution
    boundaries = torch.linspace(0, 1, bins + 1, dtype=flat.dtype, device=flat.device)
    offset = torch.arange(batch, device=flat.device).unsqueeze(1) * bins
    per_group = []
    for confidence, accuracy in _confidence_accuracy(flat, labels, dense_target, mode):
        # Bins [i/n, (i+1)/n), the last closed: torchmetrics' bucketize rule.
        index = (
            (torch.bucketize(confidence.contiguous(), boundaries, right=True) - 1).clamp(0, bins - 1) + offset
        ).reshape(-1)
        sums = []
        for values in (counted.to(torch.float64), select(confidence.to(torch.float64)), select(accuracy)):
            hist = torch.zeros(batch * bins, dtype=torch.float64, device=flat.device)
            sums.append(hist.scatter_add_(0, index, values.reshape(-1)).reshape(batch, bins))
        per_group.append(sums)
    return tuple(torch.stack(parts, 1) for parts in zip(*per_group))


def _mass_assignment(count: Tensor, n_bins: int) -> Tensor:
    """Bin of each fine sub-bin: the part (of n equal rank parts) of its first sample."""
    before = count.cumsum(-1) - count
    total = count.sum(-1, keepdim=True)
    part = torch.floor(n_bins * before / total.clamp_min(1)).long()
    return part.clamp(0, n_bins - 1)


def _merge_bins(
    count: Tensor, confidence: Tensor, accuracy: Tensor, *, n_bins: int, binning: str
) -> tuple[Tensor, Tensor, Tensor]:
    """Sums per final bin, (..., n_bins): the histogram itself (width) or merged fine bins (mass)."""
    if binning == "width":
        return count, confidence, accuracy
    part = _mass_assignment(count, n_bins)
    merged = []
    for values in (count, confidence, accuracy):
        merged.append(
            torch.zeros(*values.shape[:-1], n_bins, dtype=values.dtype, device=values.device).scatter_add_(
                -1, part, values
            )
        )
    return tuple(merged)


def _bin_edges(count: Tensor, *, n_bins: int, binning: str) -> Tensor:
    lead = count.shape[:-1]
    if binning == "width":
        return (
            torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=count.device).expand(*lead, n_bins + 1).clone()
        )
    fine = count.shape[-1]
    lower = torch.arange(fine, dtype=torch.float64, device=count.device) / fine
    part = _mass_assignment(count, n_bins)
    # Edge i: lower edge of the first non-empty sub-bin of part >= i (1 when there is none).
    starts = torch.arange(n_bins + 1, device=count.device).view(*([1] * len(lead)), -1, 1)
    candidates = (part.unsqueeze(-2) >= starts) & (count.unsqueeze(-2) > 0)
    edges = torch.where(candidates, lower, torch.ones((), dtype=torch.float64, device=count.device)).amin(-1)
    edges[..., 0] = 0.0
    edges[..., -1] = 1.0
    return edges


def _error_from_bins(count: Tensor, confidence: Tensor, accuracy: Tensor, norm: str) -> tuple[Tensor, Tensor]:
    """Calibration error per group (..., G) -> mean over groups, per leading index; and whether any sample counted."""
    total = count.sum(-1)
    if norm == "l1":
        per_group = (accuracy - confidence).abs().sum(-1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    else:
        gap = (accuracy - confidence).abs() / count.clamp_min(torch.finfo(torch.float64).tiny)
        per_group = torch.where(count > 0, gap, 0).amax(-1)
    return per_group.mean(-1), total.amax(-1) > 0


def _calibration_error_from_histograms(
    count: Tensor, confidence: Tensor, accuracy: Tensor, *, n_bins: int, binning: str, norm: str, aggregation: str
) -> Tensor:
    """ECE (norm "l1") or MCE (norm "max") from per-image histograms (B, G, M)."""
    if aggregation == "global":
        count, confidence, accuracy = (t.sum(0, keepdim=True) for t in (count, confidence, accuracy))
    error, counted = _error_from_bins(*_merge_bins(count, confidence, accuracy, n_bins=n_bins, binning=binning), norm)
    counted = counted.to(error.dtype)
    return (error * counted).sum() / counted.sum().clamp_min(1)


def _calibration_error(
    probs, target, *, norm, n_bins, binning, mode, aggregation, activation, ignore_index, mask, resolution
) -> Tensor:
    _check_calibration_options(
        n_bins=n_bins, binning=binning, mode=mode, aggregation=aggregation, resolution=resolution, norm=norm
    )
    hists = calibration_histograms(
        probs,
        target,
        n_bins=n_bins,
        binning=binning,
        mode=mode,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        resolution=resolution,
    )
    return _calibration_error_from_histograms(
        *hists, n_bins=n_bins, binning=binning, norm=norm, aggregation=aggregation
    )


def expected_calibration_error(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "width",
    mode: str = "top-label",
    aggregation: str = "global",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    resolution: int = 10_000,
) -> Tensor:
    r"""Expected calibration error: the count-weighted mean gap between accuracy and confidence per bin.

    .. math::

        \mathrm{ECE} = \sum_{b} \frac{n_b}{N}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|

    Top-label with equal-width bins and index targets equals torchmetrics'
    ``multiclass_calibration_error(norm="l1")`` over the pixels.

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities (``activation="none"``; or ``"softmax"``/``"sigmoid"``
          for logits). C = 1 is binary: the foreground probability, expanded to (1 - p, p).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial), or class probabilities
          (B, C, \*spatial) in [0, 1]: accuracy in a bin is the mean target probability of the predicted
          class (top-label) or of the class (class-wise).
        - ``mode``: ``"top-label"`` (confidence = max_c p_c) or ``"class-wise"`` (every class's p_c binned
          on its own; the error is the mean over classes).
        - ``binning``: ``"width"`` or ``"mass"`` (equal-mass from ``resolution`` fine bins).
        - ``aggregation``: ``"global"`` (all pixels of the batch in one histogram) or ``"image"`` (one error
          per image, then the mean over images).
        - Ignored pixels (``ignore_index``, or ``mask`` (B, \*spatial), True = counts) are no samples;
          their values are never read (NaN or inf there changes nothing). No counted pixel, or an empty
          batch, gives 0 (never NaN); empty bins add nothing. Result float64, no gradient.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])   # (B=1, C=2, N=3)
        >>> labels = torch.tensor([[0, 1, 1]])
        >>> expected_calibration_error(probs, labels, n_bins=2)           # bin [0.5, 1]: conf 0.7667, acc 2/3
        tensor(0.1000, dtype=torch.float64)
    """
    return _calibration_error(
        probs,
        target,
        norm="l1",
        n_bins=n_bins,
        binning=binning,
        mode=mode,
        aggregation=aggregation,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        resolution=resolution,
    )


def maximum_calibration_error(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "width",
    mode: str = "top-label",
    aggregation: str = "global",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    resolution: int = 10_000,
) -> Tensor:
    r"""Maximum calibration error: the largest gap between accuracy and confidence over non-empty bins.

    .. math::

        \mathrm{MCE} = \max_{b:\,n_b > 0} \big|\mathrm{acc}_b - \mathrm{conf}_b\big|

    Class-wise: the mean over classes of each class's MCE. Top-label equal-width equals torchmetrics'
    ``multiclass_calibration_error(norm="max")``.

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities (``activation="none"``; or ``"softmax"``/``"sigmoid"``
          for logits). C = 1 is binary: the foreground probability, expanded to (1 - p, p).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial), or class probabilities
          (B, C, \*spatial) in [0, 1]: accuracy in a bin is the mean target probability of the predicted
          class (top-label) or of the class (class-wise).
        - ``mode``: ``"top-label"`` (confidence = max_c p_c) or ``"class-wise"`` (every class's p_c binned
          on its own; the error is the mean over classes).
        - ``binning``: ``"width"`` or ``"mass"`` (equal-mass from ``resolution`` fine bins).
        - ``aggregation``: ``"global"`` (all pixels of the batch in one histogram) or ``"image"`` (one error
          per image, then the mean over images).
        - Ignored pixels (``ignore_index``, or ``mask`` (B, \*spatial), True = counts) are no samples;
          their values are never read (NaN or inf there changes nothing). No counted pixel, or an empty
          batch, gives 0 (never NaN); empty bins add nothing. Result float64, no gradient.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])
        >>> maximum_calibration_error(probs, torch.tensor([[0, 1, 1]]), n_bins=10)   # bin [0.6, 0.7): 0.6 vs 0
        tensor(0.6000, dtype=torch.float64)
    """
    return _calibration_error(
        probs,
        target,
        norm="max",
        n_bins=n_bins,
        binning=binning,
        mode=mode,
        aggregation=aggregation,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        resolution=resolution,
    )


def adaptive_calibration_error(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    mode: str = "top-label",
    aggregation: str = "global",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    resolution: int = 10_000,
) -> Tensor:
    r"""Adaptive calibration error: :func:`expected_calibration_error` with equal-mass bins.

    .. math::

        \mathrm{ACE} = \sum_{b} \frac{n_b}{N}\,\big|\mathrm{acc}_b - \mathrm{conf}_b\big|,\qquad n_b \approx N / n

    Nixon et al. (2019) define ACE class-wise: pass ``mode="class-wise"`` for theirs.

    Convention:
        - ``probs``: (B, C, \*spatial) probabilities (``activation="none"``; or ``"softmax"``/``"sigmoid"``
          for logits). C = 1 is binary: the foreground probability, expanded to (1 - p, p).
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial), or class probabilities
          (B, C, \*spatial) in [0, 1]: accuracy in a bin is the mean target probability of the predicted
          class (top-label) or of the class (class-wise).
        - ``mode``: ``"top-label"`` (confidence = max_c p_c) or ``"class-wise"`` (every class's p_c binned
          on its own; the error is the mean over classes).
        - ``binning``: ``"width"`` or ``"mass"`` (equal-mass from ``resolution`` fine bins).
        - ``aggregation``: ``"global"`` (all pixels of the batch in one histogram) or ``"image"`` (one error
          per image, then the mean over images).
        - Ignored pixels (``ignore_index``, or ``mask`` (B, \*spatial), True = counts) are no samples;
          their values are never read (NaN or inf there changes nothing). No counted pixel, or an empty
          batch, gives 0 (never NaN); empty bins add nothing. Result float64, no gradient.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2, 0.3], [0.1, 0.4, 0.8, 0.7]]])
        >>> labels = torch.tensor([[0, 1, 1, 0]])
        >>> adaptive_calibration_error(probs, labels, n_bins=2)   # bins {0.6, 0.7}, {0.8, 0.9}: |0 - 0.65|/2 + |1 - 0.85|/2
        tensor(0.4000, dtype=torch.float64)
    """
    return _calibration_error(
        probs,
        target,
        norm="l1",
        n_bins=n_bins,
        binning="mass",
        mode=mode,
        aggregation=aggregation,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        resolution=resolution,
    )


def _bins_from_histograms(
    count: Tensor, confidence: Tensor, accuracy: Tensor, *, n_bins: int, binning: str, mode: str
) -> ReliabilityBins:
    """Reliability bins from global histograms (G, M)."""
    edges = _bin_edges(count, n_bins=n_bins, binning=binning)
    count, confidence, accuracy = _merge_bins(count, confidence, accuracy, n_bins=n_bins, binning=binning)
    safe = count.clamp_min(torch.finfo(torch.float64).tiny)
    result = ReliabilityBins(
        torch.where(count > 0, confidence / safe, 0), torch.where(count > 0, accuracy / safe, 0), count, edges
    )
    return ReliabilityBins(*(t[0] for t in result)) if mode == "top-label" else result


def reliability_bins(
    probs: Tensor,
    target: Tensor,
    *,
    n_bins: int = 15,
    binning: str = "width",
    mode: str = "top-label",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    resolution: int = 10_000,
) -> ReliabilityBins:
    r"""The bins of a reliability diagram over all pixels: mean confidence, mean accuracy, count, edges.

    conf_b = (1/n_b) sum_{i in b} p_i, acc_b = (1/n_b) sum_{i in b} y_i (target probability of the
    predicted class, or of the class class-wise); ECE = sum_b n_b |acc_b - conf_b| / N.

    Convention:
        As :func:`expected_calibration_error` (global only). Returns a :class:`ReliabilityBins` of float64
        tensors, (n_bins,) and (n_bins + 1,) edges top-label, with a leading C class-wise. Empty bins
        have confidence, accuracy and count 0; equal-mass edges are sub-bin lower edges.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6, 0.2], [0.1, 0.4, 0.8]]])
        >>> bins = reliability_bins(probs, torch.tensor([[0, 1, 1]]), n_bins=2)
        >>> bins.confidence, bins.accuracy, bins.count
        (tensor([0.0000, 0.7667], dtype=torch.float64), tensor([0.0000, 0.6667], dtype=torch.float64), tensor([0., 3.], dtype=torch.float64))
        >>> bins.edges
        tensor([0.0000, 0.5000, 1.0000], dtype=torch.float64)
    """
    hists = calibration_histograms(
        probs,
        target,
        n_bins=n_bins,
        binning=binning,
        mode=mode,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        resolution=resolution,
    )
    return _bins_from_histograms(*(t.sum(0) for t in hists), n_bins=n_bins, binning=binning, mode=mode)


class CalibrationError(Metric):
    r"""Accumulating ECE (``norm="l1"``), MCE (``norm="max"``) or ACE (``binning="mass"``).

    .. math::

        \mathrm{ECE} = \sum_b \frac{n_b}{N} |\mathrm{acc}_b - \mathrm{conf}_b|,\qquad
        \mathrm{MCE} = \max_{b: n_b > 0} |\mathrm{acc}_b - \mathrm{conf}_b|

    ``update(probs, target, mask=None)``; ``compute()``; :meth:`reliability` gives the diagram's bins.

    Convention:
        As :func:`expected_calibration_error`. ``num_classes`` (the C of ``probs``) is needed for
        ``mode="class-wise"``. States: global aggregation keeps float64 histograms (count, confidence sum,
        accuracy sum) of shape (G, n_bins or resolution), constant memory; ``"image"`` keeps the sum of
        per-image errors and the image count. Both are sums: exact under multi-process sync.

    Example:
        >>> metric = CalibrationError(n_bins=2)
        >>> metric.update(torch.tensor([[[0.9, 0.6], [0.1, 0.4]]]), torch.tensor([[0, 1]]))
        >>> metric.update(torch.tensor([[[0.2], [0.8]]]), torch.tensor([[1]]))
        >>> metric.compute()
        tensor(0.1000, dtype=torch.float64)
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(
        self,
        *,
        n_bins: int = 15,
        binning: str = "width",
        mode: str = "top-label",
        norm: str = "l1",
        aggregation: str = "global",
        num_classes: int | None = None,
        activation: Activation = "none",
        ignore_index: int | None = None,
        resolution: int = 10_000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_calibration_options(
            n_bins=n_bins, binning=binning, mode=mode, aggregation=aggregation, resolution=resolution, norm=norm
        )
        if mode == "class-wise":
            if num_classes is None:
                raise ValueError("mode='class-wise' keeps one histogram per class: num_classes is required; got None")
            groups = max(_check_count("num_classes", num_classes, 1), 2)
        else:
            groups = 1
        self.n_bins, self.binning, self.mode, self.norm, self.aggregation = n_bins, binning, mode, norm, aggregation
        check_choice("activation", activation, ACTIVATIONS)
        check_ignore_index(ignore_index)
        self.activation, self.ignore_index, self.resolution = activation, ignore_index, resolution
        self.groups = groups
        bins = n_bins if binning == "width" else resolution
        if aggregation == "global":
            for name in ("count", "confidence", "accuracy"):
                self.add_state(name, default=torch.zeros(groups, bins, dtype=torch.float64), dist_reduce_fx="sum")
        else:
            self.add_state("error_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state("images", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        hists = calibration_histograms(
            probs,
            target,
            n_bins=self.n_bins,
            binning=self.binning,
            mode=self.mode,
            activation=self.activation,
            ignore_index=self.ignore_index,
            mask=mask,
            resolution=self.resolution,
        )
        if hists[0].shape[1] != self.groups:
            raise ValueError(
                f"CalibrationError was built for {self.groups} class histograms (num_classes); this batch has {hists[0].shape[1]}"
            )
        if self.aggregation == "global":
            self.count += hists[0].sum(0)
            self.confidence += hists[1].sum(0)
            self.accuracy += hists[2].sum(0)
            return
        merged = _merge_bins(*hists, n_bins=self.n_bins, binning=self.binning)
        error, counted = _error_from_bins(*merged, self.norm)
        self.error_sum += (error * counted).sum()
        self.images += counted.sum()

    def compute(self) -> Tensor:
        if self.aggregation == "image":
            return self.error_sum / self.images.clamp_min(1)
        return _calibration_error_from_histograms(
            self.count.unsqueeze(0),
            self.confidence.unsqueeze(0),
            self.accuracy.unsqueeze(0),
            n_bins=self.n_bins,
            binning=self.binning,
            norm=self.norm,
            aggregation="global",
        )

    def reliability(self) -> ReliabilityBins:
        """The reliability-diagram bins of everything seen so far (global aggregation only; synced)."""
        if self.aggregation != "global":
            raise ValueError("reliability() needs the pooled histograms: build the metric with aggregation='global'")
        # Same state gathering as compute(): the bins of all processes, local states restored afterwards.
        with self.sync_context(
            dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync, should_unsync=self._should_unsync
        ):
            return _bins_from_histograms(
                self.count, self.confidence, self.accuracy, n_bins=self.n_bins, binning=self.binning, mode=self.mode
            )


def _pixel_losses(probs, target, *, kind_of_loss, activation, ignore_index, mask, eps):
    """Per-pixel Brier score or NLL (B, N) in float64 (0 where not counted) and the counted pixels (B, N)."""
    flat, labels, dense_target, counted = _samples(
        probs, target, activation=activation, ignore_index=ignore_index, mask=mask
    )
    flat = flat.to(torch.float64)
    if kind_of_loss == "brier":
        if labels is not None:  # sum_c (p_c - [c = l])^2 without a one-hot
            picked = flat.gather(1, labels.unsqueeze(1)).squeeze(1)
            values = flat.square().sum(1) - 2 * picked + 1
        else:
            values = (flat - dense_target.to(torch.float64)).square().sum(1)
    else:
        log_probs = flat.clamp_min(eps).log()
        if labels is not None:
            values = -log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
        else:
            values = -(dense_target.to(torch.float64) * log_probs).sum(1)
    return torch.where(counted, values, 0), counted


def _pixel_mean(values: Tensor, counted: Tensor, aggregation: str) -> tuple[Tensor, Tensor]:
    """(sum, count) for global; (sum of per-image means, images with a counted pixel) for image."""
    if aggregation == "global":
        return values.sum(), counted.sum().to(torch.float64)
    pixels = counted.sum(1).to(torch.float64)
    images = pixels > 0
    return (values.sum(1)[images] / pixels[images]).sum(), images.sum().to(torch.float64)


def _check_pixel_options(aggregation: str, eps: float) -> None:
    check_choice("aggregation", aggregation, CALIBRATION_AGGREGATIONS)
    check_number("eps", eps, minimum=0.0, strict=True)


def _mean_pixel_loss(probs, target, *, kind_of_loss, aggregation, activation, ignore_index, mask, eps) -> Tensor:
    """Brier score or NLL averaged by ``aggregation`` (0 when nothing counts): the functional forms' body."""
    _check_pixel_options(aggregation, eps)
    values, counted = _pixel_losses(
        probs, target, kind_of_loss=kind_of_loss, activation=activation, ignore_index=ignore_index, mask=mask, eps=eps
    )
    total, count = _pixel_mean(values, counted, aggregation)
    return total / count.clamp_min(1)


def brier_score(
    probs: Tensor,
    target: Tensor,
    *,
    aggregation: str = "global",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    r"""Brier score against hard or soft targets: the mean over pixels of sum_c (p_c - y_c)^2.

    .. math::

        \mathrm{BS} = \frac{1}{N}\sum_i \sum_c (p_{ic} - y_{ic})^2 \in [0, 2]

    Equals scikit-learn's ``brier_score_loss(..., scale_by_half=False)`` on index targets. Binary C = 1
    inputs are expanded to (1 - p, p), so the value is twice the usual binary (p - y)^2.

    Convention:
        - ``probs`` (B, C, \*spatial) probabilities (``activation="none"``); ``target`` class indices or
          probabilities (B, C, \*spatial).
        - ``aggregation``: ``"global"`` (mean over all counted pixels) or ``"image"`` (per-image mean, then
          mean over images). Ignored pixels (``ignore_index``, ``mask``) are left out, their values never
          read (NaN or inf there changes nothing); none counted (or B = 0) gives 0.

    Example:
        >>> probs = torch.tensor([[[0.9, 0.6], [0.1, 0.4]]])
        >>> brier_score(probs, torch.tensor([[0, 1]]))                   # (0.02 + 0.72) / 2
        tensor(0.3700, dtype=torch.float64)
    """
    return _mean_pixel_loss(
        probs,
        target,
        kind_of_loss="brier",
        aggregation=aggregation,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        eps=1.0,
    )


def negative_log_likelihood(
    probs: Tensor,
    target: Tensor,
    *,
    aggregation: str = "global",
    activation: Activation = "none",
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    eps: float = 1e-7,
) -> Tensor:
    r"""Negative log-likelihood (cross-entropy) against hard or soft targets, mean over pixels.

    .. math::

        \mathrm{NLL} = -\frac{1}{N}\sum_i \sum_c y_{ic} \log \max(p_{ic}, \varepsilon)

    For index targets this is scikit-learn's ``log_loss`` and ``F.nll_loss(probs.log(), labels)``; for soft
    targets ``F.cross_entropy`` with probability targets (on log-probabilities).

    Convention:
        As :func:`brier_score`. Probabilities are floored at ``eps`` so a zero probability gives a finite
        value.

    Example:
        >>> probs = torch.tensor([[[0.5, 0.25], [0.5, 0.75]]])
        >>> negative_log_likelihood(probs, torch.tensor([[[1.0, 0.5], [0.0, 0.5]]]))   # (log 2 + (log 4 + log 4/3) / 2) / 2
        tensor(0.7651, dtype=torch.float64)
    """
    return _mean_pixel_loss(
        probs,
        target,
        kind_of_loss="nll",
        aggregation=aggregation,
        activation=activation,
        ignore_index=ignore_index,
        mask=mask,
        eps=eps,
    )


class _PixelMeanMetric(Metric):
    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    _kind: str

    def __init__(
        self,
        *,
        aggregation: str = "global",
        activation: Activation = "none",
        ignore_index: int | None = None,
        eps: float = 1e-7,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        _check_pixel_options(aggregation, eps)
        check_choice("activation", activation, ACTIVATIONS)
        self.aggregation, self.activation, self.ignore_index, self.eps = aggregation, activation, ignore_index, eps
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, probs: Tensor, target: Tensor, mask: Tensor | None = None) -> None:
        values, counted = _pixel_losses(
            probs,
            target,
            kind_of_loss=self._kind,
            activation=self.activation,
            ignore_index=self.ignore_index,
            mask=mask,
            eps=self.eps,
        )
        total, count = _pixel_mean(values, counted, self.aggregation)
        self.total += total
        self.count += count

    def compute(self) -> Tensor:
        return self.total / self.count.clamp_min(1)


class BrierScore(_PixelMeanMetric):
    r"""Accumulating :func:`brier_score`: mean over pixels of sum_c (p_c - y_c)^2.

    Convention:
        As :func:`brier_score`; ``update(probs, target, mask=None)``. States: a float64 sum and a count
        (pixels, or images for ``aggregation="image"``): constant memory, exact under sync.

    Example:
        >>> metric = BrierScore()
        >>> metric.update(torch.tensor([[[0.9], [0.1]]]), torch.tensor([[0]]))
        >>> metric.update(torch.tensor([[[0.6], [0.4]]]), torch.tensor([[1]]))
        >>> metric.compute()
        tensor(0.3700, dtype=torch.float64)
    """

    _kind = "brier"


class NegativeLogLikelihood(_PixelMeanMetric):
    r"""Accumulating :func:`negative_log_likelihood`: -mean over pixels of sum_c y_c log max(p_c, eps).

    Convention:
        As :func:`negative_log_likelihood` and :class:`BrierScore`.

    Example:
        >>> metric = NegativeLogLikelihood()
        >>> metric.update(torch.tensor([[[0.5], [0.5]]]), torch.tensor([[1]]))
        >>> metric.compute()
        tensor(0.6931, dtype=torch.float64)
    """

    _kind = "nll"
