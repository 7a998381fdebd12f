"""The embedded multi-rater dataset of ``softseg compare``: deterministic from a seed.

Each image holds structures of several sizes: one or two large "organs" (class 1) and a few small
"lesions" (class 2) on a noisy background with blurred, low-contrast boundaries. Every rater's mask is the
ground truth seen through that rater's habits, the ways real annotators disagree:

- a shift of the whole mask by up to one pixel (registration, drawing offset);
- erosion or dilation of every structure by zero to two pixels, with a per-rater bias (tight or generous
  annotators) and per-structure jitter (scipy.ndimage binary morphology);
- missed small structures: each lesion is skipped with probability ``miss_probability``.

The averaged raters are the soft target and the majority vote is the hard one (:mod:`softseg.labels`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

NUM_CLASSES = 3  # background, large structures, small structures
CLASS_NAMES = ("background", "large", "small")


class MultiRaterData(NamedTuple):
    """Images with one label map per rater and, where the data set has one, a field of view.

    ``images``: (N, C_in, H, W) float32, standardised per image (C_in = 1, or 3 for ``--channel rgb``);
    ``raters``: (N, R, H, W) int64 class indices; ``num_classes``: number of classes (>= 2); ``names``: one
    case name per image; ``fov``: bool (N, H, W), True inside the field of view, or None (every pixel counts).

    Convention:
        - Inputs: the fields above; rater labels lie in 0..``num_classes`` - 1. Pixels outside ``fov`` count
          in no loss and no metric.
        - Outputs: a plain ``NamedTuple``; the soft target is ``softseg.labels.rater_mean(raters, num_classes)``
          and the hard one the majority vote (see :func:`softseg.cli.train.prepare_data`).
        - Constructing one validates nothing and raises nothing; :func:`generate_multirater` and
          :func:`softseg.cli.images.load_cases` build consistent ones.

    Example:
        >>> data = MultiRaterData(torch.zeros(2, 1, 4, 4), torch.zeros(2, 3, 4, 4, dtype=torch.int64), 2, ("a", "b"))
        >>> data.num_classes, data.names, tuple(data.raters.shape), data.fov
        (2, ('a', 'b'), (2, 3, 4, 4), None)
    """

    images: Tensor
    raters: Tensor
    num_classes: int
    names: tuple[str, ...]
    fov: Tensor | None = None


def _disk(shape: tuple[int, int], center: np.ndarray, radii: np.ndarray, angle: float) -> np.ndarray:
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    dy, dx = rows - center[0], cols - center[1]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = (dx * cos + dy * sin) / radii[0], (-dx * sin + dy * cos) / radii[1]
    return u**2 + v**2 <= 1


def _ground_truth(rng: np.random.Generator, size: int) -> np.ndarray:
    labels = np.zeros((size, size), dtype=np.int64)
    for _ in range(rng.integers(1, 3)):
        radii = rng.uniform(0.12, 0.24, 2) * size
        center = rng.uniform(0.3, 0.7, 2) * size
        labels[_disk(labels.shape, center, radii, rng.uniform(0, np.pi))] = 1
    for _ in range(rng.integers(2, 5)):
        radii = rng.uniform(0.03, 0.06, 2) * size + 1
        center = rng.uniform(0.1, 0.9, 2) * size
        labels[_disk(labels.shape, center, radii, rng.uniform(0, np.pi))] = 2
    return labels


def _image(rng: np.random.Generator, labels: np.ndarray, noise: float) -> np.ndarray:
    intensity = np.array([0.0, 1.0, 1.8])[labels]
    # Blurred boundaries make the true edge ambiguous, which is why raters disagree there.
    image = ndimage.gaussian_filter(intensity, sigma=1.5)
    ramp = np.linspace(-0.5, 0.5, labels.shape[0])
    image = image + rng.uniform(-0.3, 0.3) * ramp[:, None] + rng.uniform(-0.3, 0.3) * ramp[None, :]
    image = image + rng.normal(0.0, noise, labels.shape)
    return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)


def _rater(rng: np.random.Generator, truth: np.ndarray, *, bias: int, miss_probability: float) -> np.ndarray:
    mask = np.zeros_like(truth)
    for cls in range(1, NUM_CLASSES):
        components, count = ndimage.label(truth == cls)
        for index in range(1, count + 1):
            structure = components == index
            if cls == 2 and rng.random() < miss_probability:
                continue
            steps = int(np.clip(bias + rng.integers(-1, 2), -2, 2))
            if steps > 0:
                structure = ndimage.binary_dilation(structure, iterations=steps)
            elif steps < 0:
                eroded = ndimage.binary_erosion(structure, iterations=-steps)
                structure = eroded if eroded.any() else structure  # nobody erases what they outline
            mask[structure] = cls
    shift = rng.integers(-1, 2, 2)
    return ndimage.shift(mask, shift, order=0, mode="constant", cval=0)


def generate_multirater(
    num_images: int,
    *,
    size: int = 64,
    raters: int = 4,
    seed: int = 0,
    noise: float = 0.35,
    miss_probability: float = 0.3,
) -> MultiRaterData:
    r"""Generate ``num_images`` images of ``size`` x ``size`` pixels, each annotated by ``raters`` raters.

    Rater k has a bias b_k in {-1, 0, 1} (erosion < 0 < dilation); each structure is eroded or dilated by
    clip(b_k + j, -2, 2) pixels with j uniform in {-1, 0, 1}, each small structure is missed with
    probability ``miss_probability``, and the whole mask is shifted by up to one pixel per axis.

    Convention:
        - Returns :class:`MultiRaterData`: images (N, 1, size, size) float32 (zero mean, unit std per
          image), raters (N, R, size, size) int64 in {0, 1, 2} (background, large, small), 3 classes.
        - Deterministic: the same arguments give the same tensors (numpy ``default_rng(seed)``).
        - ``num_images`` >= 1, ``raters`` >= 1, ``size`` >= 8; ``noise`` >= 0;
          ``miss_probability`` in [0, 1].

    Example:
        >>> data = generate_multirater(2, size=16, raters=3, seed=0)
        >>> tuple(data.images.shape), tuple(data.raters.shape), data.num_classes
        ((2, 1, 16, 16), (2, 3, 16, 16), 3)
        >>> bool((data.raters == generate_multirater(2, size=16, raters=3, seed=0).raters).all())
        True
    """
    for name, value, minimum in (("num_images", num_images, 1), ("raters", raters, 1), ("size", size, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")
    if not 0 <= miss_probability <= 1:
        raise ValueError(f"miss_probability must lie in [0, 1]; got {miss_probability!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}")
    rng = np.random.default_rng(seed)
    biases = rng.integers(-1, 2, raters)
    images, masks = [], []
    for _ in range(num_images):
        truth = _ground_truth(rng, size)
        images.append(_image(rng, truth, noise))
        masks.append(np.stack([_rater(rng, truth, bias=int(b), miss_probability=miss_probability) for b in biases]))
    return MultiRaterData(
        images=torch.from_numpy(np.stack(images))[:, None],
        raters=torch.from_numpy(np.stack(masks)),
        num_classes=NUM_CLASSES,
        names=tuple(f"synthetic{i:04d}" for i in range(num_images)),
    )
