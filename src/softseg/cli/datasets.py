"""The public two-observer data sets, read in the layouts they are downloaded in, and the generic layout.

``softseg compare --data DIR`` recognises the layout by its files (:func:`detect_layout`):

- CHASE_DB1, the official archive's flat folder: ``Image_01L.jpg`` with ``Image_01L_1stHO.png`` and
  ``Image_01L_2ndHO.png`` (the first and second human observer), children 01-14, left and right eye;
- STARE: ``stare-images/im0001.ppm`` with ``labels-ah/im0001.ah.ppm`` and ``labels-vk/im0001.vk.ppm``
  (the two observers, A. Hoover and V. Kouznetsova), each file optionally ``.gz``; the cases are the
  labelled images (the full download has 400 images and 20 labelled ones);
- the DRIVE test set: ``test/images/01_test.tif`` with ``test/1st_manual/01_manual1.gif``,
  ``test/2nd_manual/01_manual2.gif`` and the field of view ``test/mask/01_test_mask.gif`` (``DIR`` may be
  the DRIVE folder or its ``test`` folder);
- the generic layout of :mod:`softseg.cli.folder`.

The three fundus sets hold colour photographs (read as their green channel unless ``--channel`` says
otherwise) and binary vessel masks (0/255): class 0 background, class 1 vessel.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from softseg.cli.dataset import MultiRaterData
from softseg.cli.folder import generic_case_files
from softseg.cli.images import CHANNELS, CaseFiles, DataError, load_cases

CHASE_IMAGE = re.compile(r"^Image_(\d+[LR])\.jpg$", re.IGNORECASE)
CHASE_MASK = re.compile(r"^Image_(\d+[LR])_(1st|2nd)HO\.png$", re.IGNORECASE)
STARE_LABEL = re.compile(r"^(im\d+)\.(ah|vk)\.ppm(\.gz)?$", re.IGNORECASE)
DRIVE_IMAGE = re.compile(r"^(\d+)_test\.tif$", re.IGNORECASE)


class Layout(NamedTuple):
    """A data set layout: how to recognise it, how to list its cases, and its default channel.

    Convention:
        - ``name``: printed when the layout is in use; ``files``: one line saying which files it expects;
          ``channel``: the default ``--channel`` (``"green"`` for colour fundus photographs, ``"gray"``
          otherwise); ``detect(folder) -> bool`` looks at names only; ``case_files(folder)`` returns
          :class:`~softseg.cli.images.CaseFiles` and raises :class:`DataError` for missing files.
        - A plain ``NamedTuple``; :data:`LAYOUTS` holds the four known ones, in detection order.

    Example:
        >>> [layout.name for layout in LAYOUTS]
        ['CHASE_DB1', 'STARE', 'DRIVE test set', 'generic']
    """

    name: str
    files: str
    channel: str
    detect: Callable[[Path], bool]
    case_files: Callable[[Path], list[CaseFiles]]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def _chase_files(folder: Path) -> list[CaseFiles]:
    names = _names(folder)
    images = {m.group(1): folder / n for n in names if (m := CHASE_IMAGE.match(n))}
    masked: dict[str, str] = {}
    for name in names:
        if match := CHASE_MASK.match(name):
            masked.setdefault(match.group(1), name)
    for case, mask in sorted(masked.items()):
        if case not in images:
            raise DataError(f"missing {folder / f'Image_{case}.jpg'} (the image of {mask})")
    return [
        CaseFiles(
            case,
            image,
            (folder / f"Image_{case}_1stHO.png", folder / f"Image_{case}_2ndHO.png"),
            None,
            "binary",
        )
        for case, image in sorted(images.items())
    ]


def _first_existing(*candidates: Path) -> Path:
    return next((path for path in candidates if path.is_file()), candidates[0])


def _stare_files(folder: Path) -> list[CaseFiles]:
    for sub in ("stare-images", "labels-ah", "labels-vk"):
        if not (folder / sub).is_dir():
            raise DataError(f"missing folder {folder / sub}: STARE needs stare-images/, labels-ah/ and labels-vk/")
    cases: dict[str, str] = {}
    for sub in ("labels-ah", "labels-vk"):
        for name in _names(folder / sub):
            match = STARE_LABEL.match(name)
            if match is not None and match.group(2).lower() == sub[-2:]:
                cases.setdefault(match.group(1), f"{sub}/{name}")
    if not cases:
        raise DataError(f"no labels in {folder / 'labels-ah'}: expected files named im0001.ah.ppm (or .ppm.gz)")
    result = []
    for case, seen in sorted(cases.items()):
        paths = []
        for sub, stem in (("stare-images", case), ("labels-ah", f"{case}.ah"), ("labels-vk", f"{case}.vk")):
            path = _first_existing(folder / sub / f"{stem}.ppm", folder / sub / f"{stem}.ppm.gz")
            if not path.is_file():
                raise DataError(f"missing {path} (or {path.name}.gz), needed by {seen}")
            paths.append(path)
        result.append(CaseFiles(case, paths[0], (paths[1], paths[2]), None, "binary"))
    return result


def _drive_root(folder: Path) -> Path:
    return folder / "test" if (folder / "test").is_dir() else folder


def _drive_files(folder: Path) -> list[CaseFiles]:
    root = _drive_root(folder)
    for sub in ("images", "1st_manual", "2nd_manual", "mask"):
        if not (root / sub).is_dir():
            hint = " (DRIVE's second observer comes with the test set only)" if sub == "2nd_manual" else ""
            raise DataError(
                f"missing folder {root / sub}: the DRIVE test set needs images/, 1st_manual/, 2nd_manual/ "
                f"and mask/{hint}"
            )
    numbers = sorted(m.group(1) for n in _names(root / "images") if (m := DRIVE_IMAGE.match(n)))
    if not numbers:
        raise DataError(f"no images in {root / 'images'}: expected files named 01_test.tif, 02_test.tif, ...")
    return [
        CaseFiles(
            number,
            root / "images" / f"{number}_test.tif",
            (root / "1st_manual" / f"{number}_manual1.gif", root / "2nd_manual" / f"{number}_manual2.gif"),
            root / "mask" / f"{number}_test_mask.gif",
            "binary",
        )
        for number in numbers
    ]


LAYOUTS = (
    Layout(
        "CHASE_DB1",
        "Image_01L.jpg, Image_01L_1stHO.png, Image_01L_2ndHO.png, ... in one folder",
        "green",
        lambda folder: any(CHASE_IMAGE.match(n) or CHASE_MASK.match(n) for n in _names(folder)),
        _chase_files,
    ),
    Layout(
        "STARE",
        "stare-images/im0001.ppm[.gz], labels-ah/im0001.ah.ppm[.gz], labels-vk/im0001.vk.ppm[.gz]",
        "green",
        lambda folder: any((folder / sub).is_dir() for sub in ("labels-ah", "labels-vk")),
        _stare_files,
    ),
    Layout(
        "DRIVE test set",
        "test/images/01_test.tif, test/1st_manual/01_manual1.gif, test/2nd_manual/01_manual2.gif, "
        "test/mask/01_test_mask.gif",
        "green",
        lambda folder: (_drive_root(folder) / "1st_manual").is_dir() or (_drive_root(folder) / "2nd_manual").is_dir(),
        _drive_files,
    ),
    Layout(
        "generic",
        "images/<case>.png, masks/<case>/rater1.png, rater2.png, ... (optional fov/<case>.png)",
        "gray",
        lambda folder: (folder / "images").is_dir(),
        generic_case_files,
    ),
)


def detect_layout(folder: str | Path) -> Layout:
    """The layout of ``folder``, recognised by its file and folder names (first match of :data:`LAYOUTS`).

    Convention:
        - ``folder``: an existing folder. Returns a :class:`Layout`; reads names only, decodes nothing.
        - Raises :class:`DataError` when ``folder`` is not a folder or matches no layout (the message lists
          the layouts and their files).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "Image_01L.jpg").write_bytes(b"")
        >>> detect_layout(root).name
        'CHASE_DB1'
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data must be a folder; {folder} does not exist or is not a folder")
    for layout in LAYOUTS:
        if layout.detect(folder):
            return layout
    known = "; ".join(f"{layout.name} ({layout.files})" for layout in LAYOUTS)
    raise DataError(f"--data {folder}: unknown layout; expected one of: {known}")


class LoadedData(NamedTuple):
    """What :func:`load_data` read: the data, the layout it recognised and the channel it used.

    Convention:
        - ``data``: :class:`MultiRaterData`; ``layout``: :class:`Layout`; ``channel``: one of ``CHANNELS``.
        - A plain ``NamedTuple``; raises nothing.

    Example:
        >>> LoadedData(None, LAYOUTS[0], "green").layout.name
        'CHASE_DB1'
    """

    data: MultiRaterData
    layout: Layout
    channel: str


def load_data(folder: str | Path, *, channel: str | None = None, scale: float = 1.0) -> LoadedData:
    """Recognise the layout of ``folder`` and read it at the working ``scale``.

    Convention:
        - ``channel``: ``"gray"``, ``"green"``, ``"rgb"``, or None for the layout's default (green for the
          fundus sets, gray for the generic layout); ``scale``: in (0, 1] (images by area, masks by area then
          the threshold 0.5).
        - Returns :class:`LoadedData`. Every file is found before any is decoded.
        - Raises :class:`DataError` naming the folder or file: unknown layout, missing, unreadable or
          mismatched files (see :func:`softseg.cli.images.load_cases`).

    Example:
        >>> import tempfile
        >>> import numpy as np
        >>> from PIL import Image
        >>> root = Path(tempfile.mkdtemp())
        >>> Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "Image_01L.jpg")
        >>> for observer in ("1st", "2nd"):
        ...     Image.fromarray(np.eye(4, dtype=np.uint8) * 255).save(root / f"Image_01L_{observer}HO.png")
        >>> loaded = load_data(root)
        >>> loaded.layout.name, loaded.channel, loaded.data.names, tuple(loaded.data.raters.shape)
        ('CHASE_DB1', 'green', ('01L',), (1, 2, 4, 4))
    """
    if channel is not None and channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS} or None; got {channel!r}")
    layout = detect_layout(folder)
    files = layout.case_files(Path(folder))
    if not files:
        raise DataError(f"--data {folder}: no cases found in the {layout.name} layout ({layout.files})")
    channel = channel or layout.channel
    return LoadedData(load_cases(files, channel=channel, scale=scale), layout, channel)


__all__ = ["LAYOUTS", "Layout", "LoadedData", "detect_layout", "load_data"]
