#!/usr/bin/env bash
# Run a benchmark with the repository's venv: bench/run.sh [--quick] [paging.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [[ ! -x $PY ]]; then
    echo "no $PY: create the venv first (python3 -m venv .venv && .venv/bin/pip install -e codebase)" >&2
    exit 2
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "installing bench/requirements.txt into .venv" >&2
    "$PY" -m pip install --quiet -r bench/requirements.txt
fi
exec "$PY" bench/paging.py "$@"
