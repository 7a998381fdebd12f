"""The generic ``--data`` folder layout of ``softseg compare``.

Layout (PNG, or NIfTI through nibabel)::

    DIR/
      images/<case>.png            one image per case (.png, .nii or .nii.gz)
      masks/<case>/rater1.png      one integer label map per rater, same height and width as the image
      masks/<case>/rater2.png      raters numbered 1..R without gaps; every case has the same R
      fov/<case>.png               optional: a binary field of view (0/255 or 0/1) for every case

Mask values are class indices 0..C-1 (0 = background); C is the largest label found plus one (at least 2).
Images may be RGB (converted to grayscale unless ``--channel`` says otherwise) and are standardised per
image; NIfTI files must be 2D (a trailing axis of length 1 is dropped). All images share one size. Anything
missing or inconsistent raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

from softseg.cli.dataset import MultiRaterData
from softseg.cli.images import CaseFiles, DataError, load_cases

SUFFIXES = (".nii.gz", ".nii", ".png")
RATER_PATTERN = re.compile(r"^rater(\d+)$")


def _split_suffix(path: Path) -> tuple[str, str] | None:
    for suffix in SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)], suffix
    return None


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


def _rater_files(folder: Path, case: str) -> tuple[Path, ...]:
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
    return tuple(found[k] for k in expected)


def _fov_file(folder: Path, case: str) -> Path | None:
    fov_dir = folder / "fov"
    if not fov_dir.is_dir():
        return None
    for suffix in SUFFIXES:
        if (fov_dir / f"{case}{suffix}").is_file():
            return fov_dir / f"{case}{suffix}"
    raise DataError(f"missing {fov_dir}/{case}.png (or .nii, .nii.gz): {fov_dir} holds fields of view, one per case")


def generic_case_files(folder: str | Path) -> list[CaseFiles]:
    """The cases of a folder in the generic layout (module docstring), sorted by name; nothing is decoded.

    Convention:
        - ``folder``: the ``--data`` folder. Returns one :class:`CaseFiles` per image (``mask_kind="labels"``),
          with the case's field of view when ``DIR/fov`` exists.
        - Raises :class:`DataError` naming the missing folder or file: no ``images`` folder or no image in
          it, two images for one case, a case without masks, raters not numbered 1..R, a missing field of view.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "images").mkdir(); (root / "masks" / "c1").mkdir(parents=True)
        >>> _ = (root / "images" / "c1.png").write_bytes(b"")
        >>> _ = (root / "masks" / "c1" / "rater1.png").write_bytes(b"")
        >>> [(case.name, case.image.name, [p.name for p in case.raters]) for case in generic_case_files(root)]
        [('c1', 'c1.png', ['rater1.png'])]
    """
    folder = Path(folder)
    return [
        CaseFiles(case, image, _rater_files(folder, case), _fov_file(folder, case), "labels")
        for case, image in _cases(folder).items()
    ]


def load_rater_folder(folder: str | Path, *, channel: str = "gray", scale: float = 1.0) -> MultiRaterData:
    r"""Read a ``--data`` folder in the generic layout (module docstring) into :class:`MultiRaterData`.

    Convention:
        - ``channel``: ``"gray"`` (default: colour images become luma), ``"green"`` or ``"rgb"``; ``scale``:
          working scale in (0, 1] (images by area, masks by area then 0.5, see
          :func:`softseg.cli.images.load_cases`).
        - Returns images (N, 1 or 3, H, W) float32, standardised per image ((x - mean) / std over the field
          of view); raters (N, R, H, W) int64; ``num_classes`` = max label + 1 (at least 2); case names
          sorted; ``fov`` bool (N, H, W) when ``DIR/fov`` exists, else None.
        - Raises :class:`DataError` (a ``ValueError``) naming the file that is missing, unreadable, not
          2D, not integer-valued (masks), or whose shape or rater count differs from the first case's.

    Example:
        >>> import tempfile
        >>> import numpy as np
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
    return load_cases(generic_case_files(folder), channel=channel, scale=scale)


__all__ = ["DataError", "generic_case_files", "load_rater_folder"]
