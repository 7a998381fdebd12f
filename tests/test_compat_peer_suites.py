"""The peers' own loss tests on softseg's compatibility layers (scripts/peer_tests.py).

smp 0.6.0's tests/test_losses.py comes from its source distribution (pip downloads it; skipped when that
fails). MONAI's test modules are not in its source distribution: set SOFTSEG_MONAI_CHECKOUT to a clone of
MONAI's repository (and SOFTSEG_MONAI_REF to read its tests at a tag of a bare clone) to run them."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "peer_tests.py"


def run_peer_tests(*args):
    result = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900)
    if result.returncode == 3:
        pytest.skip(result.stdout.strip())
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|xfailed|xpassed|error)", result.stdout)}
    return result, counts


def test_smp_own_loss_tests_pass():
    pytest.importorskip("softseg.compat.smp")
    result, counts = run_peer_tests("smp")
    assert result.returncode == 0, result.stdout[-3000:]
    # The 16 tests of smp's loss classes (DiceLoss, JaccardLoss, TverskyLoss, FocalLoss, MCCLoss, SoftBCE,
    # SoftCE, class weights); its 14 tests of the private functional API are skipped.
    assert counts == {"passed": 16, "skipped": 14}, result.stdout[-3000:]


def test_monai_own_loss_tests_pass():
    checkout = os.environ.get("SOFTSEG_MONAI_CHECKOUT")
    if not checkout:
        pytest.skip("set SOFTSEG_MONAI_CHECKOUT to a clone of MONAI's repository (its tests are not on PyPI)")
    pytest.importorskip("monai.losses")
    ref = os.environ.get("SOFTSEG_MONAI_REF")
    result, counts = run_peer_tests("monai", checkout, *(["--ref", ref] if ref else []))
    assert result.returncode == 0, result.stdout[-3000:]
    # 126 tests: all pass but TorchScript (5 test_script) and 3 MaskedDiceLoss rows of MONAI 1.5's order.
    assert counts == {"passed": 118, "xfailed": 8}, result.stdout[-3000:]
