"""Small data sets in the layouts of CHASE_DB1, STARE and the DRIVE test set, written with Pillow.

The originals are not at hand (and must not be committed); these fixtures have the same file names,
formats and value conventions: RGB photographs (JPEG, PPM, TIFF), 0/255 vessel masks (PNG, PPM, GIF),
STARE optionally gzip-compressed, DRIVE with a field-of-view mask. Each case's image is green where the
first observer drew a vessel, so a network can learn it, and the second observer's mask is the first one
shifted by a pixel.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import numpy as np
from PIL import Image


def vessel_case(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB image uint8 (H, W, 3), first observer 0/255, second observer 0/255) with a few straight vessels."""
    height, width = size
    first = np.zeros(size, dtype=np.uint8)
    for _ in range(3):
        if rng.random() < 0.5:
            first[rng.integers(0, height), :] = 255
        else:
            first[:, rng.integers(0, width)] = 255
    second = np.roll(first, 1, axis=1)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = rng.integers(0, 60, size)
    image[..., 1] = np.where(first > 0, 200, 40) + rng.integers(0, 20, size)
    image[..., 2] = 30
    return image, first, second


def _save(array: np.ndarray, path: Path, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if gz:
        buffer = io.BytesIO()
        image.save(buffer, format="PPM")
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(buffer.getvalue()))
        return path
    image.save(path)
    return path


def write_chase(root: Path, cases: int = 3, size: tuple[int, int] = (16, 20), seed: int = 0) -> Path:
    """CHASE_DB1's flat folder: Image_01L.jpg, Image_01L_1stHO.png, Image_01L_2ndHO.png, ..."""
    rng = np.random.default_rng(seed)
    for index in range(cases):
        name = f"Image_{index // 2 + 1:02d}{'LR'[index % 2]}"
        image, first, second = vessel_case(rng, size)
        _save(image, root / f"{name}.jpg")
        Image.fromarray(first > 0).save(root / f"{name}_1stHO.png")  # 1-bit, as the originals
        _save(second, root / f"{name}_2ndHO.png")
    return root


def write_stare(root: Path, cases: int = 3, size: tuple[int, int] = (16, 20), seed: int = 0, gz: bool = True) -> Path:
    """STARE: stare-images/im0001.ppm.gz, labels-ah/im0001.ah.ppm.gz, labels-vk/im0001.vk.ppm.gz (one plain .ppm)."""
    rng = np.random.default_rng(seed)
    for index in range(cases):
        stem = f"im{index + 1:04d}"
        image, first, second = vessel_case(rng, size)
        _save(image, root / "stare-images" / f"{stem}.ppm", gz=gz)
        _save(first, root / "labels-ah" / f"{stem}.ah.ppm", gz=gz and index > 0)
        _save(np.stack([second] * 3, -1), root / "labels-vk" / f"{stem}.vk.ppm", gz=gz)
    _save(np.zeros((*size, 3), np.uint8), root / "stare-images" / "im0400.ppm", gz=gz)  # unlabelled: not a case
    return root


def write_drive(root: Path, cases: int = 3, size: tuple[int, int] = (16, 20), seed: int = 0) -> Path:
    """The DRIVE test set: test/images/01_test.tif, test/1st_manual/01_manual1.gif, test/2nd_manual/01_manual2.gif,
    test/mask/01_test_mask.gif (a disc: the field of view)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.ogrid[: size[0], : size[1]]
    disc = ((rows - size[0] / 2) ** 2 + (cols - size[1] / 2) ** 2 <= (min(size) / 2) ** 2).astype(np.uint8) * 255
    test = root / "test"
    for index in range(cases):
        number = f"{index + 1:02d}"
        image, first, second = vessel_case(rng, size)
        image[disc == 0] = 0
        _save(image, test / "images" / f"{number}_test.tif")
        _save(first, test / "1st_manual" / f"{number}_manual1.gif")
        _save(second, test / "2nd_manual" / f"{number}_manual2.gif")
        _save(disc, test / "mask" / f"{number}_test_mask.gif")
    return root


def shared_data() -> Path | None:
    """The team's data folder, ``../shared/data`` next to the repository (or next to its worktrees' folder)."""
    repository = Path(__file__).resolve().parents[1]
    for candidate in (repository.parent / "shared" / "data", repository.parent.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return None
