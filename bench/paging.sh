#!/usr/bin/env bash
# Run a benchmark with the repository's venv: bench/run.sh [--quick] [paging.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venv.sh
exec "$PY" bench/paging.py "$@"
