#!/usr/bin/env bash
# The README's recorded real-data run: `softseg compare` on CHASE_DB1 as its official archive lays it out
# (3 folds, the four default configurations, 1200 steps of 8 crops of 64 x 64 at half resolution), then
# copies its tables and wall time into README.md ("Real data: CHASE_DB1"). Recorded: 26 min 38 s on
# two otherwise idle CPU cores (12 runs of 112-163 s). Run it on an
# idle machine: the figures are deterministic from the seed, the time is not.
# Usage: bash scripts/record_chase.sh [CHASEDB1 folder]   (default: ../shared/data/chase_db1-original/CHASEDB1)
# Environment: SOFTSEG (the softseg command; default .venv/bin/softseg, after scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${1:-$root/../shared/data/chase_db1-original/CHASEDB1}"
softseg="${SOFTSEG:-$root/.venv/bin/softseg}"
python="$(dirname "$softseg")/python"
if [ ! -d "$data" ]; then
    echo "record_chase: no CHASE_DB1 folder at $data (pass it as the first argument)" >&2
    exit 2
fi
cd "$root"
mkdir -p reports
"$softseg" compare --data "$data" --scale 0.5 --folds 3 --steps 1200 --patch 64 --batch-size 8 --depth 3 \
    --width 16 --threads 2 --out reports/chase_db1 | tee reports/chase_db1.log
"$python" "$root/scripts/fill_readme.py" reports/chase_db1 chase
