r"""Deep-supervision targets area-downsampled from nnU-Net's full-resolution target, on its device.

nnU-Net's data pipeline downsamples the label map by nearest neighbour for each deep-supervision output
(``DownsampleSegForDSTransform``): a structure thinner than a cell vanishes or grows to the whole cell.
Averaging the one-hot over each cell instead (:func:`softseg.labels.downsample_target`) keeps every
class's share, which is a soft target that softseg's losses are correct for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from softseg.labels import downsample_target


def area_target(
    target: Tensor,
    size: Sequence[int],
    *,
    num_classes: int,
    region_based: bool = False,
    ignore_label: int | None = None,
) -> Tensor:
    r"""nnU-Net's full-resolution target averaged down to ``size``, in the format the loss takes.

    With W(j) the full-resolution pixels of output cell j and V the counted (not ignored) pixels:

    .. math::

        y_c(j) = \frac{\sum_{i \in W(j) \cap V} y_c(i)}{|W(j) \cap V|}

    (0 for a cell without counted pixels), where y_c(i) is the one-hot of the label (softmax) or the
    region's membership (region-based).

    Convention:
        - ``target``: what nnU-Net's loader gives at full resolution: class indices (B, 1, \*spatial) or
          (B, \*spatial) of an integer dtype (values ``ignore_label`` are ignored), or, with
          ``region_based``, the bool/float region one-hot (B, R, \*spatial) with a trailing ignore channel
          (1 = ignored) when ``ignore_label`` is set. 1 to 3 spatial dims.
        - ``size``: the output size, one int per spatial dimension (each at most the input's).
        - ``num_classes``: C, the logits' channels (softmax; R for region-based, where it must match).
        - Returns float32 on the target's device: softmax: probabilities (B, C, \*size), an all-zero
          vector where no pixel counted; region-based: (B, R, \*size) shares, plus the ignore channel
          (1 exactly where no pixel counted) when ``ignore_label`` is set.

    Example:
        >>> labels = torch.tensor([[[[0, 1, 2, 2], [0, 0, 2, 2]]]])           # (B=1, 1, H=2, W=4)
        >>> area_target(labels, (1, 2), num_classes=3)[0, :, 0]              # one cell per 2 x 2 block
        tensor([[0.7500, 0.0000],
                [0.2500, 0.0000],
                [0.0000, 1.0000]])
        >>> area_target(labels, (1, 2), num_classes=3, ignore_label=2)[0, :, 0]   # cell 2: all ignored
        tensor([[0.7500, 0.0000],
                [0.2500, 0.0000],
                [0.0000, 0.0000]])
    """
    size = tuple(size)
    if not region_based:
        labels = target[:, 0] if target.ndim == len(size) + 2 else target
        return downsample_target(labels, size, num_classes=num_classes, ignore_index=ignore_label)
    regions = target.float()
    expected = num_classes + (ignore_label is not None)
    if regions.shape[1] != expected:
        raise ValueError(
            f"a region target for {num_classes} regions{' plus the ignore channel' if expected > num_classes else ''} "
            f"must have {expected} channels; got shape {tuple(target.shape)}"
        )
    if ignore_label is None:
        return downsample_target(regions, size)
    counted = 1 - regions[:, -1:]
    share = downsample_target(counted, size)  # fraction of counted pixels per cell
    pooled = downsample_target(regions[:, :-1] * counted, size)
    soft = torch.where(share > 0, pooled / share.clamp_min(torch.finfo(share.dtype).tiny), 0)
    return torch.cat((soft, (share == 0).to(soft.dtype)), 1)
