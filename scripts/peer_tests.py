#!/usr/bin/env python3
"""Run the peers' own loss tests against softseg's compatibility layers.

    python scripts/peer_tests.py smp [--tests-dir DIR] [-- PYTEST_ARGS...]
    python scripts/peer_tests.py monai CHECKOUT [--ref REF] [-- PYTEST_ARGS...]

smp: segmentation_models_pytorch 0.6.0's ``tests/test_losses.py`` against ``softseg.compat.smp``. The file
comes from ``--tests-dir`` or from smp's source distribution, which pip downloads (``pip download --no-deps
--no-binary :all:``) into a cache folder; no smp code runs (tests/peers/smp_plugin.py).

monai: MONAI's test modules for DiceLoss, TverskyLoss, GeneralizedDiceLoss, DiceCELoss, DiceFocalLoss,
FocalLoss and MaskedDiceLoss against ``softseg.compat.monai`` (tests/peers/monai_plugin.py). MONAI's
source distribution has no tests: CHECKOUT is a clone of its repository (with ``--ref``, a git directory
whose ``tests`` folder at REF is extracted first). MONAI itself must be installed (its test utilities and
``one_hot`` stay MONAI's).

Exit status: pytest's; 3 when the peer's tests cannot be had (printed as "unavailable: ...").
The peers' test code is never copied into this repository.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "peers"
SMP_VERSION = "0.6.0"
MONAI_MODULES = (
    "test_dice_loss.py",
    "test_tversky_loss.py",
    "test_generalized_dice_loss.py",
    "test_dice_ce_loss.py",
    "test_dice_focal_loss.py",
    "test_focal_loss.py",
    "test_masked_dice_loss.py",
)
UNAVAILABLE = 3


class Unavailable(Exception):
    """The peer's tests cannot be had here (no network, no checkout)."""


def _cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "softseg" / "peer-tests"


def smp_tests(tests_dir: str | None) -> Path:
    """The folder holding smp's test_losses.py: ``tests_dir``, or extracted from the sdist (cached)."""
    if tests_dir is not None:
        folder = Path(tests_dir)
        if not (folder / "test_losses.py").is_file():
            raise Unavailable(f"{folder} has no test_losses.py")
        return folder
    folder = _cache() / f"smp-{SMP_VERSION}"
    if (folder / "test_losses.py").is_file():
        return folder
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        command += ["--dest", download, f"segmentation-models-pytorch=={SMP_VERSION}"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        archives = list(Path(download).glob("*.tar.gz"))
        if result.returncode or not archives:
            raise Unavailable(f"pip could not download smp {SMP_VERSION}'s source: {result.stderr.strip()[-300:]}")
        with tarfile.open(archives[0]) as archive:
            member = next((m for m in archive.getmembers() if m.name.endswith("/tests/test_losses.py")), None)
            if member is None:
                raise Unavailable(f"smp {SMP_VERSION}'s source distribution has no tests/test_losses.py")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "test_losses.py").write_bytes(archive.extractfile(member).read())
    return folder


def monai_tests(checkout: str, ref: str | None) -> Path:
    """The checkout root (whose tests/losses holds the modules), extracted from git at ``ref`` if given."""
    root = Path(checkout)
    if ref is not None:
        target = Path(tempfile.mkdtemp(prefix="softseg-monai-tests-"))
        archive = subprocess.run(
            ["git", f"--git-dir={root / '.git' if (root / '.git').exists() else root}", "archive", ref, "tests"],
            capture_output=True,
        )
        if archive.returncode:
            raise Unavailable(f"git could not read tests at {ref} from {root}: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
        root = target
    missing = [name for name in MONAI_MODULES if not (root / "tests" / "losses" / name).is_file()]
    if missing:
        raise Unavailable(f"{root} is not a MONAI checkout: tests/losses lacks {', '.join(missing)}")
    return root


def run_pytest(folder: Path, plugin: str, paths: list[str], extra: list[str]) -> int:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # -c /dev/null: none of this repository's pytest options (doctests, xdist) apply to the peer's folder.
    command = [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(folder), "-p", plugin]
    command += ["-p", "no:cacheprovider", "-q", *extra, *paths]
    return subprocess.run(command, cwd=folder, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    peers = parser.add_subparsers(dest="peer", required=True)
    smp = peers.add_parser("smp", help="segmentation_models_pytorch 0.6.0's tests/test_losses.py")
    smp.add_argument("--tests-dir", help="a folder holding smp's test_losses.py (default: from the sdist)")
    monai = peers.add_parser("monai", help="MONAI's loss test modules, from a checkout")
    monai.add_argument("checkout", help="a clone of MONAI's repository (or its git directory with --ref)")
    monai.add_argument("--ref", help="extract the tests folder at this git ref (tag, branch or commit) first")
    argv = sys.argv[1:] if argv is None else argv
    # Everything after "--" goes to pytest untouched.
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.pytest_args = argv[split + 1 :]
    try:
        if args.peer == "smp":
            return run_pytest(smp_tests(args.tests_dir), "smp_plugin", ["test_losses.py"], args.pytest_args)
        folder = monai_tests(args.checkout, args.ref)
        paths = [f"tests/losses/{name}" for name in MONAI_MODULES]
        return run_pytest(folder, "monai_plugin", paths, args.pytest_args)
    except Unavailable as reason:
        print(f"unavailable: {reason}")
        return UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
