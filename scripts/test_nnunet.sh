#!/usr/bin/env bash
# Sets up the nnU-Net environment (scripts/setup_nnunet.sh, .venv-nnunet), then runs the nnU-Net
# integration's tests: equality with nnU-Net's own losses (values, gradients, two gloo processes), the
# commands and their messages, the modules' doctests, and an end-to-end run on the CPU (plan and preprocess
# a tiny 2D data set, train a Softseg trainer, validate, predict from the checkpoint). Extra pytest
# arguments pass through. One file per worker (--dist loadfile): the end-to-end run is set up once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_nnunet.sh"
cd "$root"
venv="${SOFTSEG_NNUNET_VENV:-$root/.venv-nnunet}"
exec "$venv/bin/python" -m pytest -n 2 --dist loadfile -q \
    tests/test_nnunet_per_scale.py tests/test_nnunet_losses.py tests/test_nnunet_commands.py \
    tests/test_nnunet_end_to_end.py \
    src/softseg/integrations src/softseg/cli/nnunet.py "$@"
