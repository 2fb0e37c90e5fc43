#!/usr/bin/env bash
# The paging-depth check with the repository's venv: bench/paging.sh [--quick] [paging.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/venv.sh
exec "$PY" bench/paging.py "$@"
