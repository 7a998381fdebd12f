#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the whole test suite (doctests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -n 2 -q "$@"
