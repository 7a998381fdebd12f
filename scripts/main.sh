#!/usr/bin/env bash
# Sets everything up on a fresh machine, then runs the main job.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/python" "$root/examples/why_soft_labels.py" "$@"
