#!/usr/bin/env bash
# The pgbench ceilings with the repository's venv: bench/ceilings.sh [ceilings.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venv.sh
exec "$PY" bench/ceilings.py "$@"
