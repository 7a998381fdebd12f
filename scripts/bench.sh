#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the loss benchmark (extra arguments pass through:
# --quick for a run of seconds, --workloads W1 W5-3d, --help for the rest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/python" "$root/benchmarks/run.py" "$@"
