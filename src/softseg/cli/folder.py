"""Loading a multi-rater data set from a folder for ``softseg compare --data DIR``.

Layout (PNG, or NIfTI through nibabel)::

    DIR/
      images/<case>.png            one grayscale image per case (.png, .nii or .nii.gz)
      masks/<case>/rater1.png      one integer label map per rater, same height and width as the image
      masks/<case>/rater2.png      raters numbered 1..R without gaps; every case has the same R

Mask values are class indices 0..C-1 (0 = background); C is the largest label found plus one (at least 2).
Images may be RGB (converted to grayscale) and are standardised per image; NIfTI files must be 2D (a
trailing axis of length 1 is dropped). All images must share one size, which must be divisible by 4
(the network pools twice). Anything missing or inconsistent raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from softseg.cli.dataset import MultiRaterData

SUFFIXES = (".nii.gz", ".nii", ".png")
RATER_PATTERN = re.compile(r"^rater(\d+)$")


class DataError(ValueError):
    """A file of the ``--data`` folder is missing, unreadable or does not match the others.

    Convention:
        - Constructed with one message naming the offending file or folder; a ``ValueError`` subclass, so
          callers catching ``ValueError`` see it too.
        - Raised by :func:`load_rater_folder` (missing folder, image or mask; unreadable file; non-2D array;
          non-integer or negative labels; mismatched sizes or rater counts; size not divisible by 4).

    Example:
        >>> import tempfile
        >>> try:
        ...     load_rater_folder(Path(tempfile.mkdtemp()) / "absent")
        ... except DataError as error:
        ...     print(isinstance(error, ValueError), "does not exist" in str(error))
        True True
    """


def _split_suffix(path: Path) -> tuple[str, str] | None:
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)], suffix
    return None


def _read_array(path: Path, *, grayscale: bool) -> np.ndarray:
    try:
        if path.name.lower().endswith(".png"):
            from PIL import Image

            with Image.open(path) as image:
                if grayscale and image.mode not in ("L", "I", "I;16", "F"):
                    image = image.convert("L")
                array = np.asarray(image)
        else:
            import nibabel

            array = np.asarray(nibabel.load(str(path)).get_fdata(dtype=np.float64))
    except Exception as error:  # PIL and nibabel raise many kinds; all mean "cannot read this file"
        raise DataError(f"cannot read {path}: {error}") from error
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(
            f"{path} must hold a 2D image (masks: one label per pixel); got an array of shape {array.shape}"
        )
    return array


def _read_mask(path: Path) -> np.ndarray:
    array = _read_array(path, grayscale=False)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"{path} must hold integer class labels; found non-integer values")
    if array.min() < 0:
        raise DataError(f"{path} must hold class labels >= 0; found {array.min()}")
    return array.astype(np.int64)


def _cases(folder: Path) -> dict[str, Path]:
    images = folder / "images"
    if not images.is_dir():
        raise DataError(f"missing folder {images}: expected images/<case>.png|.nii|.nii.gz and masks/<case>/rater<k>.*")
    cases: dict[str, Path] = {}
    for path in sorted(images.iterdir()):
        parts = _split_suffix(path)
        if parts is None or not path.is_file():
            continue
        if parts[0] in cases:
            raise DataError(f"two images for case {parts[0]!r}: {cases[parts[0]]} and {path}")
        cases[parts[0]] = path
    if not cases:
        raise DataError(f"no images in {images}: expected files named <case>.png, <case>.nii or <case>.nii.gz")
    return cases


def _rater_files(folder: Path, case: str) -> list[Path]:
    case_dir = folder / "masks" / case
    if not case_dir.is_dir():
        raise DataError(f"missing masks of case {case!r}: expected {case_dir}/rater1.png (or .nii, .nii.gz)")
    found: dict[int, Path] = {}
    for path in case_dir.iterdir():
        parts = _split_suffix(path)
        match = RATER_PATTERN.match(parts[0]) if parts else None
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise DataError(f"two masks for rater {number} of case {case!r}: {found[number]} and {path}")
        found[number] = path
    if not found:
        raise DataError(f"no rater masks in {case_dir}: expected rater1.png, rater2.png, ... (or .nii, .nii.gz)")
    expected = list(range(1, len(found) + 1))
    if sorted(found) != expected:
        missing = min(set(expected) - set(found))
        raise DataError(f"missing {case_dir}/rater{missing}.*: raters must be numbered 1..R without gaps")
    return [found[k] for k in expected]


def load_rater_folder(folder: str | Path) -> MultiRaterData:
    r"""Read a ``--data`` folder (layout in the module docstring) into :class:`MultiRaterData`.

    Convention:
        - Returns images (N, 1, H, W) float32, standardised per image ((x - mean) / std); raters
          (N, R, H, W) int64; ``num_classes`` = max label + 1 (at least 2); case names sorted.
        - Raises :class:`DataError` (a ``ValueError``) naming the file that is missing, unreadable, not
          2D, not integer-valued (masks), or whose shape or rater count differs from the first case's.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "images").mkdir(); (root / "masks" / "case1").mkdir(parents=True)
        >>> Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(root / "images" / "case1.png")
        >>> for k in (1, 2):
        ...     Image.fromarray(np.eye(8, dtype=np.uint8) * k).save(root / "masks" / "case1" / f"rater{k}.png")
        >>> data = load_rater_folder(root)
        >>> tuple(data.images.shape), tuple(data.raters.shape), data.num_classes, data.names
        ((1, 1, 8, 8), (1, 2, 8, 8), 3, ('case1',))
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data must be a folder; {folder} does not exist or is not a folder")
    images, masks = [], []
    reference: tuple[Path, tuple[int, int], int] | None = None
    cases = _cases(folder)
    for case, image_path in cases.items():
        rater_paths = _rater_files(folder, case)  # a missing file is reported before any decoding
        image = _read_array(image_path, grayscale=True).astype(np.float32)
        if reference is None:
            if image.shape[0] % 4 or image.shape[1] % 4:
                raise DataError(f"{image_path} has size {image.shape}; height and width must be divisible by 4")
            reference = (image_path, image.shape, len(rater_paths))
        elif image.shape != reference[1]:
            raise DataError(
                f"{image_path} has size {image.shape}, but {reference[0]} has {reference[1]}; all images must share one size"
            )
        elif len(rater_paths) != reference[2]:
            raise DataError(
                f"case {case!r} has {len(rater_paths)} raters, but {reference[0].stem.split('.')[0]!r} has {reference[2]}; "
                "every case needs the same raters"
            )
        rater_masks = []
        for path in rater_paths:
            mask = _read_mask(path)
            if mask.shape != image.shape:
                raise DataError(f"{path} has size {mask.shape}, but its image {image_path} has {image.shape}")
            rater_masks.append(mask)
        images.append((image - image.mean()) / (image.std() + 1e-6))
        masks.append(np.stack(rater_masks))
    raters = torch.from_numpy(np.stack(masks))
    return MultiRaterData(
        images=torch.from_numpy(np.stack(images).astype(np.float32))[:, None],
        raters=raters,
        num_classes=max(int(raters.max()) + 1, 2),
        names=tuple(cases),
    )
