r"""Soft targets for deep supervision: a target averaged down to each output scale."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from softseg._checks import check_ignore_index, check_tensor, check_unit_interval
from softseg.labels._common import check_index_map, check_num_classes, is_integer_dtype

_ADAPTIVE_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


def _output_size(size_or_scale: object, spatial: Sequence[int]) -> tuple[int, ...]:
    dims = len(spatial)
    values = (
        size_or_scale
        if isinstance(size_or_scale, Sequence) and not isinstance(size_or_scale, str)
        else (size_or_scale,) * dims
    )
    if len(values) != dims:
        raise ValueError(f"size_or_scale must have one value per spatial dimension ({dims}); got {tuple(values)}")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise TypeError(f"size_or_scale must be ints (output size) or floats (scale factors); got {size_or_scale!r}")
    if all(isinstance(v, int) for v in values):
        size = tuple(values)
        # A dimension of size 0 has one output size: 0 (an empty result).
        if any(s < min(1, n) or s > n for s, n in zip(size, spatial)):
            raise ValueError(
                f"size_or_scale as an output size must lie in [1, input size {tuple(spatial)}] per dimension "
                f"(0 for an empty dimension); got {size}"
            )
        return size
    scales = tuple(float(v) for v in values)
    if any(not (0 < s <= 1) for s in scales):
        raise ValueError(f"size_or_scale as scale factors must lie in (0, 1]; got {scales}")
    return tuple(max(1, math.floor(n * s)) if n else 0 for n, s in zip(spatial, scales))


def _pool(pool, values: Tensor, size: tuple[int, ...]) -> Tensor:
    """Adaptive average pooling; an empty spatial dimension gives an empty result (torch's pooling refuses it)."""
    if 0 in size:
        return values.new_zeros(*values.shape[:2], *size)
    return pool(values, size)


def downsample_target(
    target: Tensor,
    size_or_scale: int | float | Sequence[int] | Sequence[float],
    *,
    num_classes: int | None = None,
    ignore_index: int | None = None,
) -> Tensor:
    r"""Average-pool a target's one-hot (or probabilities) to a smaller scale: a soft target per output cell.

    With W(j) the input pixels pooled into output cell j (the windows of
    :func:`torch.nn.functional.adaptive_avg_pool2d`; kernel = stride = the factor when it divides the size):

    .. math::

        y_c(j) = \frac{1}{|W(j)|} \sum_{i \in W(j)} [\ell_i = c]

    Unlike nearest-neighbour resizing, a structure smaller than a cell keeps its share instead of
    vanishing or growing to a whole cell.

    Convention:
        - ``target``: class indices (B, \*spatial) of an integer dtype (needs ``num_classes``), or class
          probabilities (B, C, \*spatial) of a float dtype with values in [0, 1] (NaN or values outside are a
          ``ValueError``, see :func:`softseg.set_value_checks`). 1 to 3 spatial dimensions.
        - ``size_or_scale``: ints are the output size (one, or one per spatial dimension); floats in (0, 1]
          are scale factors (output size = floor(size x scale), at least 1).
        - A spatial dimension of size 0 gives an empty result: size 0 there (a scale factor, or the size 0).
        - Returns float32 (B, C, \*out_size) (float64 stays float64) summing to 1 over C where the input did.
        - ``ignore_index`` (index targets): ignored pixels leave the average; a cell with only ignored
          pixels is all zero. The one-hot is built one class at a time, never as a (B, C, \*spatial) tensor.

    Example:
        >>> labels = torch.tensor([[[0, 0, 1, 0], [0, 0, 0, 0]]])     # (B=1, H=2, W=4), one small structure
        >>> downsample_target(labels, 0.5, num_classes=2)[0, 1]
        tensor([[0.0000, 0.2500]])
    """
    target = check_tensor("target", target)
    ignore_index = check_ignore_index(ignore_index)
    if is_integer_dtype(target):
        if num_classes is None:
            raise ValueError("num_classes is required for an index target (B, *spatial); got None")
        num_classes = check_num_classes(num_classes)
        labels, valid = check_index_map("target", target, num_classes, ignore_index=ignore_index)
        spatial = tuple(labels.shape[1:])
        if len(spatial) not in _ADAPTIVE_POOL:
            raise ValueError(f"target must have 1 to 3 spatial dimensions; got shape {tuple(labels.shape)}")
        size = _output_size(size_or_scale, spatial)
        pool = _ADAPTIVE_POOL[len(spatial)]
        channels = [_pool(pool, (labels == c).unsqueeze(1).to(torch.float32), size) for c in range(num_classes)]
        out = torch.cat(channels, 1)
        if valid is not None:
            share = _pool(pool, valid.unsqueeze(1).to(torch.float32), size)
            out = torch.where(share > 0, out / torch.where(share > 0, share, 1), 0)
        return out
    if not target.is_floating_point():
        raise TypeError(
            f"target must be class indices of an integer dtype or probabilities of a float dtype; got dtype {target.dtype}"
        )
    if ignore_index is not None:
        raise ValueError("ignore_index applies to index targets only; a dense target has no ignored label")
    if target.ndim < 3 or target.ndim - 2 not in _ADAPTIVE_POOL:
        raise ValueError(
            f"a float target must have shape (B, C, *spatial) with 1 to 3 spatial dimensions; got shape {tuple(target.shape)}"
        )
    if num_classes is not None and check_num_classes(num_classes, minimum=1) != target.shape[1]:
        raise ValueError(f"num_classes={num_classes} does not match the target's {target.shape[1]} channels")
    size = _output_size(size_or_scale, tuple(target.shape[2:]))
    check_unit_interval("target", target)  # NaN too: averaging would spread it over a whole cell
    dtype = torch.float64 if target.dtype == torch.float64 else torch.float32
    return _pool(_ADAPTIVE_POOL[target.ndim - 2], target.to(dtype), size)
