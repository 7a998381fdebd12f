#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the whole test suite (doctests included), then the
# nnU-Net integration's tests in their own environment (scripts/test_nnunet.sh: nnU-Net needs a
# torch/torchvision pair that the main environment's CPU torch has no match for on PyPI).
# Extra arguments pass through to the main suite's pytest and skip the nnU-Net part (a quick, targeted run);
# SOFTSEG_SKIP_NNUNET=1 skips it too.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
"$root/.venv/bin/python" -m pytest -n 2 -q "$@"
if [ $# -eq 0 ] && [ "${SOFTSEG_SKIP_NNUNET:-0}" != 1 ]; then
    bash "$root/scripts/test_nnunet.sh"
fi
