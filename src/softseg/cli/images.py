"""Decoding the files of a ``--data`` folder into :class:`~softseg.cli.dataset.MultiRaterData`.

The layout readers (:mod:`softseg.cli.folder` for the generic layout, :mod:`softseg.cli.datasets` for
CHASE_DB1, STARE and DRIVE) only find the files of each case (:class:`CaseFiles`); this module checks that
they exist, decodes them (Pillow, gzip, nibabel), picks the channel, resizes to the working scale and
stacks the cases. Anything missing, unreadable or inconsistent raises :class:`DataError` naming the file,
before any training starts.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from softseg.cli.dataset import MultiRaterData

CHANNELS = ("gray", "green", "rgb")
MASK_KINDS = ("labels", "binary")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Pillow modes that hold colour; "P" (a palette) may, and is converted through RGB.
COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "P")


class DataError(ValueError):
    """A file of the ``--data`` folder is missing, unreadable or does not match the others.

    Convention:
        - Constructed with one message naming the offending file or folder; a ``ValueError`` subclass, so
          callers catching ``ValueError`` see it too.
        - Raised by the readers (:func:`softseg.cli.folder.load_rater_folder`,
          :func:`softseg.cli.datasets.load_data`) and :func:`load_cases`: missing folder, image or mask;
          unreadable file; wrong dimensions or values; mismatched sizes or rater counts; unknown layout.

    Example:
        >>> error = DataError("missing /data/Image_01L_2ndHO.png (rater 2 of case '01L')")
        >>> isinstance(error, ValueError), "Image_01L_2ndHO.png" in str(error)
        (True, True)
    """


class CaseFiles(NamedTuple):
    """The files of one case: its image, one mask per rater and, where the data set has one, a field of view.

    Convention:
        - ``name``: the case's name (unique within the data set); ``image``: path of a PNG, JPEG, TIFF, GIF,
          PPM (optionally ``.gz``) or NIfTI (``.nii``, ``.nii.gz``) image; ``raters``: paths of the raters'
          masks, in rater order (at least one); ``fov``: path of a binary field-of-view mask or None.
        - ``mask_kind``: ``"labels"`` (integer class maps, 0 = background) or ``"binary"`` (0/255 or 0/1
          masks of one structure, read as classes 0 and 1). The field of view is always binary.
        - A plain ``NamedTuple``: constructing one checks nothing; :func:`load_cases` does.

    Example:
        >>> case = CaseFiles("01L", Path("Image_01L.jpg"), (Path("Image_01L_1stHO.png"),), mask_kind="binary")
        >>> case.name, len(case.raters), case.fov
        ('01L', 1, None)
    """

    name: str
    image: Path
    raters: tuple[Path, ...]
    fov: Path | None = None
    mask_kind: str = "labels"


def _open(path: Path):
    """A Pillow image of ``path``; ``.gz`` files (STARE) are decompressed first."""
    from PIL import Image

    if path.name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return Image.open(io.BytesIO(handle.read()))
    return Image.open(path)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def _squeeze_2d(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"{path} must hold a 2D {what}; got an array of shape {array.shape}")
    return array


def read_image(path: Path, *, channel: str) -> np.ndarray:
    """Decode an image file into float32 (channels, H, W): one channel for gray and green, three for rgb.

    gray = Pillow's luma ``L = 0.299 R + 0.587 G + 0.114 B`` for colour images; green = the G channel (the
    vessels' best contrast in fundus photographs); rgb = all three.

    Convention:
        - ``path``: a file Pillow reads (``.gz`` decompressed first) or a 2D NIfTI file (a trailing axis of
          length 1 is dropped); ``channel``: one of :data:`CHANNELS`.
        - Returns the raw intensities (not standardised), float32, shape (1, H, W) or (3, H, W).
        - Raises :class:`DataError` naming the file when it cannot be decoded, is not 2D, or when
          ``channel`` is green or rgb and the image has no colour.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "rgb.png"
        >>> Image.fromarray(np.full((2, 3, 3), [10, 200, 30], dtype=np.uint8)).save(path)
        >>> float(read_image(path, channel="green")[0, 0, 0]), read_image(path, channel="rgb").shape
        (200.0, (3, 2, 3))
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}; got {channel!r}")
    if _is_nifti(path):
        array = _squeeze_2d(_read_nifti(path), path, "image")
        if channel != "gray":
            raise DataError(f"--channel {channel} needs colour images; {path} is a single-channel NIfTI image")
        return array.astype(np.float32)[None]
    try:
        with _open(path) as image:
            colour = image.mode in COLOUR_MODES
            if channel != "gray" and not colour:
                raise DataError(f"--channel {channel} needs colour images; {path} has one channel (mode {image.mode})")
            if channel == "gray":
                array = np.asarray(image.convert("L") if colour or image.mode == "LA" else image)
            else:
                array = np.asarray(image.convert("RGB"))
    except DataError:
        raise
    except Exception as error:  # Pillow raises many kinds; all mean "cannot read this file"
        raise DataError(f"cannot read {path}: {error}") from error
    if channel == "gray":
        return _squeeze_2d(array, path, "image").astype(np.float32)[None]
    array = array.astype(np.float32).transpose(2, 0, 1)
    return array[1:2] if channel == "green" else array


def _read_nifti(path: Path) -> np.ndarray:
    try:
        import nibabel

        return np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float64))
    except Exception as error:  # nibabel raises many kinds
        raise DataError(f"cannot read {path}: {error}") from error


def read_mask(path: Path, *, kind: str) -> np.ndarray:
    """Decode a mask file into int64 (H, W): class labels, or 0/1 for a binary mask.

    Convention:
        - ``kind="labels"``: integer class indices >= 0 as stored (a palette PNG gives its indices; NIfTI
          values must be whole numbers). ``kind="binary"``: values 0 and 255, or 0 and 1 (any colour mode
          is read as gray first), returned as 0/1.
        - Raises :class:`DataError` naming the file: unreadable, not 2D, non-integer or negative labels, a
          binary mask with other values.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> path = Path(tempfile.mkdtemp()) / "mask.png"
        >>> Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).save(path)
        >>> read_mask(path, kind="binary").tolist()
        [[0, 1], [1, 0]]
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}; got {kind!r}")
    if _is_nifti(path):
        array = _read_nifti(path)
    else:
        try:
            with _open(path) as image:
                array = np.asarray(image.convert("L") if kind == "binary" and image.mode != "L" else image)
        except Exception as error:  # Pillow raises many kinds
            raise DataError(f"cannot read {path}: {error}") from error
    array = _squeeze_2d(array, path, "mask (one label per pixel)")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path} must hold integer class labels; found non-integer values")
    array = array.astype(np.int64)
    if kind == "binary":
        values = np.unique(array)
        for high in (1, 255):
            if np.isin(values, (0, high)).all():
                return (array == high).astype(np.int64)
        shown = ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")
        raise DataError(f"{path} must be a binary mask (values 0 and 255, or 0 and 1); found values {shown}")
    if array.min() < 0:
        raise DataError(f"{path} must hold class labels >= 0; found {array.min()}")
    return array


def scaled_size(size: Sequence[int], scale: float) -> tuple[int, int]:
    """The working size of an image of ``size`` (H, W) at ``scale``: each side rounded, at least 1.

    Convention:
        - ``size``: two positive ints; ``scale``: float in (0, 1]. Returns a tuple of two ints.

    Example:
        >>> scaled_size((960, 999), 0.5)
        (480, 500)
    """
    return tuple(max(1, round(side * scale)) for side in size)


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize float (channels, H, W) to ``size`` by area averaging (``torch.nn.functional.interpolate``, area).

    Convention:
        - ``image``: float32 (channels, H, W); ``size``: (H', W') no larger than (H, W). Returns float32
          (channels, H', W'); unchanged when the sizes agree.

    Example:
        >>> resize_image(np.arange(4, dtype=np.float32).reshape(1, 2, 2), (1, 1)).tolist()
        [[[1.5]]]
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(torch.from_numpy(image)[None], size=size, mode="area")[0].numpy()


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an int label map (H, W) to ``size``: each class by area, then the threshold 0.5.

    A pixel of the result takes the foreground class c > 0 that covers at least half of its area (the
    lowest such class when two cover exactly half), else the background 0; for a binary mask this is
    "area fraction >= 0.5", ties counting as foreground.

    Convention:
        - ``labels``: int64 (H, W), 0 = background; ``size``: (H', W'). Returns int64 (H', W'); unchanged
          when the sizes agree.

    Example:
        >>> mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
        >>> resize_labels(mask, (1, 2)).tolist()
        [[1, 0]]
    """
    if tuple(labels.shape) == tuple(size):
        return labels
    result = np.zeros(size, dtype=np.int64)
    best = np.zeros(size, dtype=np.float32)
    for value in np.unique(labels):
        if value == 0:
            continue
        fraction = resize_image((labels == value).astype(np.float32)[None], size)[0]
        take = (fraction >= 0.5) & (fraction > best)
        result[take] = value
        best = np.where(take, fraction, best)
    return result


def _standardise(image: np.ndarray, fov: np.ndarray | None) -> np.ndarray:
    """Zero mean, unit standard deviation per channel over the field of view; 0 outside it."""
    inside = np.ones(image.shape[-2:], dtype=bool) if fov is None else fov.astype(bool)
    values = image[:, inside]
    mean = values.mean(1, keepdims=True) if values.size else np.zeros((len(image), 1), np.float32)
    std = values.std(1, keepdims=True) if values.size else np.ones((len(image), 1), np.float32)
    result = (image - mean[:, :, None]) / (std[:, :, None] + 1e-6)
    return np.where(inside, result, 0.0).astype(np.float32)


def _check_exist(cases: Sequence[CaseFiles]) -> None:
    for case in cases:
        named = [(case.image, "the image")]
        named += [(path, f"rater {k}'s mask") for k, path in enumerate(case.raters, 1)]
        if case.fov is not None:
            named.append((case.fov, "the field of view"))
        for path, what in named:
            if not Path(path).is_file():
                raise DataError(f"missing {path} ({what} of case {case.name!r})")


def load_cases(cases: Sequence[CaseFiles], *, channel: str = "gray", scale: float = 1.0) -> MultiRaterData:
    r"""Decode, resize and stack the cases: images standardised per case, masks at the same working size.

    Images are resized by area, each rater's mask and the field of view by area then the threshold 0.5
    (:func:`resize_labels`), to round(``scale`` H) x round(``scale`` W); then each image channel is
    standardised over the field of view, (x - mean) / std, and set to 0 outside it.

    Convention:
        - ``cases``: at least one :class:`CaseFiles`, all with the same number of raters and images of one
          size; ``channel``: one of :data:`CHANNELS`; ``scale``: float in (0, 1].
        - Returns :class:`MultiRaterData`: images float32 (N, 1 or 3, H', W'), raters int64 (N, R, H', W'),
          ``num_classes`` = max label + 1 (at least 2), the cases' names, and ``fov`` bool (N, H', W') when
          the cases have fields of view (else None).
        - Every file's existence is checked before any is decoded. Raises :class:`DataError` naming the
          file that is missing, unreadable, of the wrong kind or size, or whose rater count differs.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).save(root / "a.png")
        >>> Image.fromarray(np.eye(4, dtype=np.uint8) * 255).save(root / "a_mask.png")
        >>> data = load_cases([CaseFiles("a", root / "a.png", (root / "a_mask.png",), mask_kind="binary")], scale=0.5)
        >>> tuple(data.images.shape), data.raters[0, 0].tolist(), data.num_classes
        ((1, 1, 2, 2), [[1, 0], [0, 1]], 2)
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}; got {channel!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale <= 1:
        raise ValueError(f"scale must be a number in (0, 1]; got {scale!r}")
    if not cases:
        raise DataError("no cases to load")
    _check_exist(cases)
    has_fov = cases[0].fov is not None
    images, masks, fovs = [], [], []
    reference: tuple[CaseFiles, tuple[int, int]] | None = None
    for case in cases:
        if len(case.raters) != len(cases[0].raters):
            raise DataError(
                f"case {case.name!r} has {len(case.raters)} raters, but {cases[0].name!r} has {len(cases[0].raters)}; "
                "every case needs the same raters"
            )
        if (case.fov is not None) != has_fov:
            raise DataError(
                f"case {case.name!r} {'lacks' if has_fov else 'has'} a field-of-view mask, unlike {cases[0].name!r}"
            )
        image = read_image(Path(case.image), channel=channel)
        size = tuple(image.shape[-2:])
        if reference is None:
            reference = (case, size)
        elif size != reference[1]:
            raise DataError(
                f"{case.image} has size {size}, but {reference[0].image} has {reference[1]}; "
                "all images must share one size"
            )
        named = [(Path(p), case.mask_kind) for p in case.raters] + ([(Path(case.fov), "binary")] if has_fov else [])
        decoded = []
        for path, kind in named:
            mask = read_mask(path, kind=kind)
            if mask.shape != size:
                raise DataError(f"{path} has size {mask.shape}, but its image {case.image} has {size}")
            decoded.append(mask)
        working = scaled_size(size, scale)
        resized = [resize_labels(mask, working) for mask in decoded]
        fov = resized.pop().astype(bool) if has_fov else None
        images.append(_standardise(resize_image(image, working), fov))
        masks.append(np.stack(resized))
        if has_fov:
            fovs.append(fov)
    raters = torch.from_numpy(np.stack(masks))
    return MultiRaterData(
        images=torch.from_numpy(np.stack(images)),
        raters=raters,
        num_classes=max(int(raters.max()) + 1, 2),
        names=tuple(case.name for case in cases),
        fov=torch.from_numpy(np.stack(fovs)) if has_fov else None,
    )
