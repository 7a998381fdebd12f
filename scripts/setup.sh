#!/usr/bin/env bash
# Creates .venv (once) and installs torch (CPU wheel, pinned here only), softseg and its test extras.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
stamp="$venv/.softseg-installed"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # The pin keeps pip on the CPU wheel; the package itself only asks for torch>=2.2.
    "$venv/bin/python" -m pip install --quiet "torch==2.13.0"
    "$venv/bin/python" -m pip install --quiet -e "$root[cli,test]"
    # Test peer without its requirements (torchvision would break torchmetrics here; pyproject.toml says why).
    "$venv/bin/python" -m pip install --quiet --no-deps "segmentation-models-pytorch>=0.6,<0.7"
    touch "$stamp"
fi
