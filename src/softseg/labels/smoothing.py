r"""Soft targets from one hard label map: uniform, boundary and distance-based label smoothing.

Every function takes class indices (B, \*spatial) and returns class probabilities (B, C, \*spatial) in
float32 that sum to one over C at every counted pixel. Pixels equal to ``ignore_index`` come out as an
all-zero vector (they sum to 0, not 1), so ``mask = target.sum(1) > 0`` (or ``labels != ignore_index``)
recovers them; pass that as ``mask=`` to the losses and metrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from softseg._checks import check_ignore_index, check_number, check_tensor
from softseg.labels._common import (
    check_epsilon,
    check_index_map,
    check_num_classes,
    check_spacing,
    is_integer_dtype,
    one_hot,
)

_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def label_smoothing(
    labels: Tensor, num_classes: int, *, epsilon: float = 0.1, ignore_index: int | None = None
) -> Tensor:
    r"""Uniform label smoothing of an index map: y = (1 - epsilon) one_hot(labels) + epsilon / C.

    .. math::

        y_{c}(i) = (1 - \varepsilon)\,[\ell_i = c] + \varepsilon / C

    Convention:
        - ``labels``: class indices (B, \*spatial), integer dtype, values in [0, C) or ``ignore_index``.
        - Returns float32 (B, C, \*spatial); every counted pixel sums to 1 over C.
        - ``epsilon`` in [0, 1]: 0 gives the one-hot, 1 the uniform distribution.
        - Ignored pixels (``labels == ignore_index``) are all-zero vectors; pass
          ``mask=labels != ignore_index`` to losses and metrics.
        - No activation, no gradient (labels are data).

    Example:
        >>> labels = torch.tensor([[0, 1, 255]])
        >>> label_smoothing(labels, 2, epsilon=0.2, ignore_index=255)
        tensor([[[0.9000, 0.1000, 0.0000],
                 [0.1000, 0.9000, 0.0000]]])
    """
    num_classes = check_num_classes(num_classes)
    epsilon = check_epsilon(epsilon)
    ignore_index = check_ignore_index(ignore_index)
    labels, valid = check_index_map("labels", labels, num_classes, ignore_index=ignore_index)
    target = one_hot(labels, num_classes, valid=valid) * (1 - epsilon) + epsilon / num_classes
    return target if valid is None else target * valid.unsqueeze(1)


def boundary_mask(labels: Tensor, *, radius: int = 1, ignore_index: int | None = None) -> Tensor:
    r"""Pixels within ``radius`` pixels of a class boundary: True where the (2r + 1)^d window differs.

    A pixel is on the boundary band when the window of side 2 ``radius`` + 1 centred on it (Chebyshev
    distance <= ``radius``, clipped at the image border) holds two different classes. Ignored pixels
    never make a boundary.

    Convention:
        - ``labels``: (B, \*spatial) integer class indices with 1 to 3 spatial dimensions.
        - Returns a bool tensor of the same shape; ``radius=0`` gives all False.

    Example:
        >>> boundary_mask(torch.tensor([[0, 0, 0, 1, 1, 1]]))
        tensor([[False, False,  True,  True, False, False]])
    """
    labels = check_tensor("labels", labels)
    if not is_integer_dtype(labels):
        raise TypeError(f"labels must hold class indices of an integer dtype; got dtype {labels.dtype}")
    if isinstance(radius, bool) or not isinstance(radius, int):
        raise TypeError(f"radius must be an int (pixels); got {type(radius).__name__}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0; got {radius}")
    ignore_index = check_ignore_index(ignore_index)
    spatial_dims = labels.ndim - 1
    if spatial_dims not in _MAX_POOL:
        raise ValueError(f"labels must have 1 to 3 spatial dimensions; got shape {tuple(labels.shape)}")
    if radius == 0 or labels.numel() == 0:
        return torch.zeros_like(labels, dtype=torch.bool)
    values = labels.unsqueeze(1).to(torch.float64)
    if ignore_index is not None:
        ignored = values == ignore_index
        # Ignored pixels are below every class for the max and above every class for the min.
        high, low = values.masked_fill(ignored, -1.0), values.masked_fill(ignored, float("inf"))
    else:
        high = low = values
    pool = _MAX_POOL[spatial_dims]
    size = 2 * radius + 1
    window_max = pool(high, size, stride=1, padding=radius)
    window_min = -pool(-low, size, stride=1, padding=radius)
    return (window_max != window_min).squeeze(1)


def boundary_smoothing(
    labels: Tensor,
    num_classes: int,
    *,
    epsilon: float = 0.1,
    radius: int = 1,
    ignore_index: int | None = None,
) -> Tensor:
    r"""Label smoothing only near class boundaries: :func:`label_smoothing` on the band of :func:`boundary_mask`.

    .. math::

        y_c(i) = \begin{cases} (1 - \varepsilon)\,[\ell_i = c] + \varepsilon / C & i \text{ within } r
        \text{ pixels of a boundary} \\ [\ell_i = c] & \text{otherwise} \end{cases}

    Both sides of a boundary are smoothed: a pixel is in the band when its (2r + 1)^d window (clipped at
    the image border) holds two classes.

    Convention:
        - ``labels``: class indices (B, \*spatial), integer dtype, 1 to 3 spatial dimensions.
        - Returns float32 (B, C, \*spatial); every counted pixel sums to 1 over C.
        - ``epsilon`` in [0, 1]; ``radius`` >= 0 in pixels (0: the one-hot).
        - Ignored pixels are all-zero vectors and never make a boundary.

    Example:
        >>> labels = torch.tensor([[0, 0, 1, 1]])
        >>> boundary_smoothing(labels, 2, epsilon=0.2)
        tensor([[[1.0000, 0.9000, 0.1000, 0.0000],
                 [0.0000, 0.1000, 0.9000, 1.0000]]])
    """
    num_classes = check_num_classes(num_classes)
    epsilon = check_epsilon(epsilon)
    ignore_index = check_ignore_index(ignore_index)
    labels, valid = check_index_map("labels", labels, num_classes, ignore_index=ignore_index)
    band = boundary_mask(labels, radius=radius, ignore_index=ignore_index).unsqueeze(1)
    hard = one_hot(labels, num_classes, valid=valid)
    target = torch.where(band, hard * (1 - epsilon) + epsilon / num_classes, hard)
    return target if valid is None else target * valid.unsqueeze(1)


def _signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance between pixel centres: + distance to the nearest pixel outside ``mask`` for pixels
    inside, - distance to the nearest pixel inside for pixels outside (+inf / -inf if there is none)."""
    if mask.all():
        return np.full(mask.shape, np.inf)
    if not mask.any():
        return np.full(mask.shape, -np.inf)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    return np.where(mask, inside, -outside)


def distance_smoothing(
    labels: Tensor,
    num_classes: int,
    *,
    width: float = 2.0,
    spacing: float | Sequence[float] | None = None,
    ignore_index: int | None = None,
) -> Tensor:
    r"""Soft target from each class's signed distance to its boundary, with a width in pixels or millimetres.

    With d_c(i) the signed distance of pixel i to class c (positive inside: distance to the nearest pixel
    centre of another class; negative outside: minus the distance to the nearest pixel of c; computed by
    :func:`scipy.ndimage.distance_transform_edt` with ``sampling=spacing``) and sigma the logistic function:

    .. math::

        y_c(i) = \frac{\sigma(d_c(i) / w)}{\sum_k \sigma(d_k(i) / w)}

    For two classes d_0 = -d_1, so y_1 = sigma(d_1 / w) exactly: pixels next to the boundary get
    sigma(+-1 / w) (for unit spacing), deep pixels tend to the hard label.

    Convention:
        - ``labels``: class indices (B, \*spatial), integer dtype, any number of spatial dimensions (2D, 3D).
        - ``width`` > 0 in the units of ``spacing``: pixels when ``spacing`` is None, millimetres when it
          is the voxel spacing (one number, or one per spatial dimension, e.g. (z, y, x) in mm).
        - Returns float32 (B, C, \*spatial) summing to 1 over C at every counted pixel. A class absent from
          an image scores 0 there; a class that fills the image scores 1.
        - Ignored pixels take the label of the nearest counted pixel for the distances (so they create no
          boundary) and come out as all-zero vectors.
        - Runs on the CPU (SciPy); the result is moved back to ``labels.device``.

    Example:
        >>> labels = torch.tensor([[0, 0, 1, 1]])
        >>> distance_smoothing(labels, 2, width=1.0)[0, 1]        # sigma(-2), sigma(-1), sigma(1), sigma(2)
        tensor([0.1192, 0.2689, 0.7311, 0.8808])
    """
    num_classes = check_num_classes(num_classes)
    width = check_number("width", width, minimum=0.0, strict=True)
    ignore_index = check_ignore_index(ignore_index)
    labels, valid = check_index_map("labels", labels, num_classes, ignore_index=ignore_index)
    spacing = check_spacing(spacing, labels.ndim - 1)
    label_array = labels.detach().cpu().numpy()
    valid_array = None if valid is None else valid.cpu().numpy()
    out = np.zeros((labels.shape[0], num_classes, *labels.shape[1:]), dtype=np.float64)
    for b in range(labels.shape[0]):
        image = label_array[b]
        if valid_array is not None:
            if not valid_array[b].any():
                continue  # nothing counted: all-zero output
            nearest = ndimage.distance_transform_edt(
                ~valid_array[b], sampling=spacing, return_distances=False, return_indices=True
            )
            image = image[tuple(nearest)]
        for c in range(num_classes):
            # expit(d / w) with d = +-inf gives exactly 1 and 0.
            with np.errstate(over="ignore"):
                out[b, c] = 1.0 / (1.0 + np.exp(-_signed_distance(image == c, spacing) / width))
    out /= np.clip(out.sum(1, keepdims=True), np.finfo(np.float64).tiny, None)
    target = torch.from_numpy(out).to(device=labels.device, dtype=torch.float32)
    return target if valid is None else target * valid.unsqueeze(1)
