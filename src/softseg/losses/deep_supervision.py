r"""Deep supervision: one loss over the outputs of several scales, each against its own downsampled target.

A deeply supervised network (nnU-Net, MONAI's DynUNet) returns outputs at the full resolution and at
coarser ones. Each output is scored against the target resized to its size, and the losses are summed
with weights. How the target is resized matters for soft labels: averaging a hard label map over each
coarse cell (``"area"``, the default) gives fractional targets at every boundary, which softseg's losses
handle correctly (a classic Dice does not); nearest-neighbour resizing (``"nearest"``, what nnU-Net and
MONAI do) keeps the labels hard but moves boundaries by up to half a coarse cell and can delete small
structures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from softseg._checks import check_choice, check_ignore_index, check_number, check_tensor, not_ignored

WEIGHT_MODES = ("nnunet", "exp", "same", "two")
TARGET_DOWNSAMPLING = ("area", "nearest")


def deep_supervision_weights(levels: int, mode: str = "nnunet") -> list[float]:
    r"""The weights of ``levels`` outputs, full resolution first, by the rule of nnU-Net or MONAI.

    .. math::

        \text{nnunet: } w_i \propto 2^{-i},\ w_{L-1} = 0,\ \textstyle\sum_i w_i = 1;\quad
        \text{exp: } \max(2^{-i}, 1/16);\quad \text{same: } 1;\quad \text{two: } 1, 1/2, 1/2, \dots

    ``"nnunet"`` is nnU-Net v2's rule (the lowest resolution gets 0, the rest is normalised to sum 1; a
    single output gets 1); ``"exp"``, ``"same"``, ``"two"`` are MONAI's ``DeepSupervisionLoss`` modes
    (not normalised).

    Convention:
        ``levels`` >= 1 (int); ``mode`` one of the four names. Returns a list of ``levels`` floats.

    Example:
        >>> deep_supervision_weights(4)                     # nnU-Net: 1, 1/2, 1/4, 0 normalised
        [0.5714285714285714, 0.2857142857142857, 0.14285714285714285, 0.0]
        >>> deep_supervision_weights(6, "exp")
        [1.0, 0.5, 0.25, 0.125, 0.0625, 0.0625]
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1; got {levels!r}")
    check_choice("weights", mode, WEIGHT_MODES)
    if mode == "same":
        return [1.0] * levels
    if mode == "two":
        return [1.0] + [0.5] * (levels - 1)
    if mode == "exp":
        return [max(0.5**i, 0.0625) for i in range(levels)]
    if levels == 1:
        return [1.0]
    weights = [0.5**i for i in range(levels - 1)] + [0.0]
    return [w / sum(weights) for w in weights]


def scale_target(
    target: Tensor,
    size: Sequence[int],
    *,
    num_classes: int,
    target_downsampling: str = "area",
    ignore_index: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    r"""The target of one output scale, and the mask of its counted cells (None without ``ignore_index``).

    .. math::

        \text{area: } y_c(j) = \frac{1}{|W(j)|} \sum_{i \in W(j)} y_c(i);\qquad
        \text{nearest: } y(j) = y(\text{the input pixel nearest to the centre of } j)

    Convention:
        - ``target``: class indices (B, \*spatial) / (B, 1, \*spatial) of an integer dtype, or class
          probabilities (B, C, \*spatial) of a float dtype; ``size`` the output's spatial size, each entry
          <= the target's.
        - ``"area"`` (:func:`softseg.labels.downsample_target`) returns class probabilities (B, C, \*size)
          (index targets are averaged one class at a time, never as a full-size one-hot; with C = 1 the
          foreground share); ``"nearest"`` keeps the target's kind (``nearest-exact`` sampling).
        - A target already of ``size`` is returned as it is.
        - ``ignore_index`` (index targets): the mask is True where a cell holds a counted pixel ("area": the
          average runs over them) or where the sampled label is counted ("nearest"); ignored labels are
          replaced by 0 in the returned indices.

    Example:
        >>> labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 0, 1]]])    # (B=1, 2, 4)
        >>> scale_target(labels, (1, 2), num_classes=2)[0][0, 1]     # area: fractions of class 1
        tensor([[0.0000, 0.7500]])
        >>> scale_target(labels, (1, 2), num_classes=2, target_downsampling="nearest")[0]
        tensor([[[0, 1]]])
    """
    check_choice("target_downsampling", target_downsampling, TARGET_DOWNSAMPLING)
    index = not target.is_floating_point()
    labels = target.squeeze(1) if index and target.ndim == len(size) + 2 else target
    spatial = tuple(labels.shape[1:] if index else labels.shape[2:])
    size = tuple(size)
    if spatial != size and any(s > n for s, n in zip(size, spatial)):
        raise ValueError(f"an output of spatial size {size} is larger than the target {spatial}; deep supervision "
                         "downsamples the target, so every output must be at most the target's size")
    if spatial == size:
        scaled = labels
    elif target_downsampling == "area":
        # C = 1 is binary (label 1 is the foreground of the one channel): average both classes, keep class 1.
        classes = max(num_classes, 2) if index else None
        from softseg.labels import downsample_target  # on first use: softseg.labels imports scipy

        scaled = downsample_target(labels, list(size), num_classes=classes, ignore_index=ignore_index)
        if index:
            mask = scaled.sum(1) > 0 if ignore_index is not None else None
            return (scaled[:, 1:] if num_classes == 1 else scaled), mask
        return scaled, None
    else:
        source = labels.unsqueeze(1).to(torch.float64) if index else labels
        scaled = F.interpolate(source, size=size, mode="nearest-exact")
        scaled = scaled[:, 0].to(labels.dtype) if index else scaled
    if not index or ignore_index is None:
        return scaled, None
    counted = not_ignored(scaled, ignore_index)
    return scaled.masked_fill(~counted, 0), counted


class DeepSupervisionLoss(nn.Module):
    r"""Weighted sum of a loss over the outputs of several scales, each against its downsampled target.

    .. math::

        L = \sum_i w_i\, \ell(\text{output}_i, \operatorname{down}_i(y))

    with down_i the target resized to output i's size (:func:`scale_target`: area averaging by default,
    which turns boundaries into fractional targets; or nearest neighbour, as nnU-Net and MONAI).

    Convention:
        - ``loss``: any callable ``loss(input, target)`` (softseg's losses, torch's, a user's); None:
          :class:`softseg.DiceCELoss` (nnU-Net's Dice + CE). With ``"area"`` the coarse scales get class
          probabilities (B, C, \*size), so the loss must take soft targets (softseg's do).
        - ``weights``: ``"nnunet"`` (default; 1/2^i with the lowest scale 0, normalised), MONAI's
          ``"exp"``, ``"same"``, ``"two"`` (:func:`deep_supervision_weights`), or one number >= 0 per output.
        - ``target_downsampling``: ``"area"`` (default) or ``"nearest"``.
        - ``ignore_index`` (index targets): set it here, not on the inner loss (the coarse scales may be
          dense). The loss then gets ``mask=`` of the counted pixels or cells at every scale, so it must
          take ``mask`` (softseg's losses do).
        - ``forward(outputs, target)``: ``outputs`` one tensor (then simply ``loss(outputs, target)``) or a
          sequence of (B, C, \*spatial_i) tensors, full resolution first; ``target`` at the full
          resolution (indices or probabilities). An output whose weight is 0 is not scored. Index targets
          are never expanded to a full-size one-hot.

    Example:
        >>> import softseg
        >>> loss = DeepSupervisionLoss(softseg.DiceLoss(), weights="same")
        >>> labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]])              # (B=1, 2, 4)
        >>> outputs = [torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 1, 2)]       # full scale and half
        >>> loss(outputs, labels)                                               # 0.5 + 0.5
        tensor(1.)
    """

    def __init__(
        self,
        loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        *,
        weights: str | Sequence[float] = "nnunet",
        target_downsampling: str = "area",
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        if loss is None:
            from softseg.losses.compound import DiceCELoss

            loss = DiceCELoss()
        if not callable(loss):
            raise TypeError(f"loss must be callable as loss(input, target); got {type(loss).__name__}")
        inner_ignore = getattr(loss, "options", {}).get("ignore_index") if isinstance(loss, nn.Module) else None
        if inner_ignore is not None:
            raise ValueError(
                f"the inner loss has ignore_index={inner_ignore}; set ignore_index on DeepSupervisionLoss instead "
                "(the coarse scales get dense targets, which take a mask rather than an ignore_index)"
            )
        if isinstance(weights, str):
            check_choice("weights", weights, WEIGHT_MODES)
        elif isinstance(weights, Sequence):
            weights = [check_number(f"weights[{i}]", w, minimum=0.0) for i, w in enumerate(weights)]
            if not any(weights):
                raise ValueError(f"weights must have one value per output, not all 0; got {weights}")
        else:
            raise TypeError(
                f"weights must be 'nnunet', 'exp', 'same', 'two' or a sequence of numbers; got {type(weights).__name__}"
            )
        check_choice("target_downsampling", target_downsampling, TARGET_DOWNSAMPLING)
        self.loss = loss
        self.weights = weights
        self.target_downsampling = target_downsampling
        self.ignore_index = check_ignore_index(ignore_index)

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights!r}, target_downsampling={self.target_downsampling!r}, "
            f"ignore_index={self.ignore_index!r}"
        )

    def forward(self, outputs: Tensor | Sequence[Tensor], target: Tensor) -> Tensor:
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        elif not isinstance(outputs, Sequence) or not outputs:
            raise TypeError(
                f"outputs must be a tensor or a non-empty sequence of tensors (full resolution first); got {outputs!r}"
            )
        outputs = [check_tensor(f"outputs[{i}]", output) for i, output in enumerate(outputs)]
        check_tensor("target", target)
        if self.ignore_index is not None and target.is_floating_point():
            raise ValueError(
                f"ignore_index={self.ignore_index} applies to class-index targets; got a float target of shape "
                f"{tuple(target.shape)} (class probabilities have no label to ignore)"
            )
        if isinstance(self.weights, str):
            weights = deep_supervision_weights(len(outputs), self.weights)
        elif len(self.weights) != len(outputs):
            raise ValueError(f"weights has {len(self.weights)} values but there are {len(outputs)} outputs")
        else:
            weights = self.weights
        total = None  # some weight is > 0 (checked at construction; the modes' first weight is 1)
        for i, (output, weight) in enumerate(zip(outputs, weights)):
            if weight == 0:
                continue
            if output.ndim < 3 or output.shape[0] != target.shape[0]:
                raise ValueError(
                    f"outputs[{i}] must have shape (B, C, *spatial) with the target's batch size {target.shape[0]}; "
                    f"got {tuple(output.shape)}"
                )
            spatial_dims = output.ndim - 2
            if target.ndim not in (spatial_dims + 1, spatial_dims + 2):
                raise ValueError(
                    f"target of shape {tuple(target.shape)} does not fit outputs[{i}] of shape {tuple(output.shape)}: "
                    f"expected (B, *spatial) or (B, 1 | C, *spatial) with {spatial_dims} spatial dimensions"
                )
            scaled, mask = scale_target(
                target, output.shape[2:], num_classes=output.shape[1],
                target_downsampling=self.target_downsampling, ignore_index=self.ignore_index,
            )
            value = self.loss(output, scaled) if mask is None else self.loss(output, scaled, mask=mask)
            total = weight * value if total is None else total + weight * value
        return total
