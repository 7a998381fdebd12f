#!/usr/bin/env bash
# Creates .venv-nnunet (once): the environment of the nnU-Net integration's tests, kept apart from .venv.
#
# nnU-Net's trainer lookup imports every trainer module it ships, one of which imports timm, which imports
# torchvision. torchvision has to match torch exactly, and the CPU torch of .venv (2.13.0) has no
# matching torchvision on PyPI (PyPI's builds link CUDA and fail to import beside it). So this environment
# takes torch 2.14.1 + torchvision 0.29.1, PyPI's CUDA builds (about 5.5 GB, which also run on the CPU),
# then softseg with its nnunet and test extras. SOFTSEG_NNUNET_VENV moves the environment, and
# SOFTSEG_NNUNET_TORCH replaces the torch pins (e.g. "torch torchvision" on another platform).
# Safe to run again: it reinstalls only when pyproject.toml or this script changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SOFTSEG_NNUNET_VENV:-$root/.venv-nnunet}"
torch_pins="${SOFTSEG_NNUNET_TORCH:-torch==2.14.1 torchvision==0.29.1}"
stamp="$venv/.softseg-installed"
script="$root/scripts/setup_nnunet.sh"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$script" -nt "$stamp" ] \
        || [ "$(cat "$stamp")" != "$torch_pins" ]; then
    start=$SECONDS
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # shellcheck disable=SC2086  # the pins are separate words
    "$venv/bin/python" -m pip install --quiet $torch_pins
    "$venv/bin/python" -m pip install --quiet -e "$root[nnunet,test]"
    echo "$torch_pins" > "$stamp"
    echo "setup_nnunet.sh: $venv ready in $((SECONDS - start)) s" >&2
fi
