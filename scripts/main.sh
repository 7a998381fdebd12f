#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the main job: `softseg compare` on the embedded
# multi-rater data (2 to 5 minutes on two idle CPU cores); the report goes to reports/compare/.
# Extra arguments pass through, e.g. `bash scripts/main.sh --quick` or `--losses ce,softseg-dice`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/softseg" compare --out reports/compare "$@"  # a later --out wins
