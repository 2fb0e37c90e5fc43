# shellcheck shell=bash
# Sourced by bench/*.sh: from the repository root, check the venv and pgbench, and install what the
# benchmarks add to the venv (matplotlib, for --plots); sets PY.
PY=.venv/bin/python
if [[ ! -x $PY ]]; then
    echo "no $PY: create the venv first (python3 -m venv .venv && .venv/bin/pip install -e codebase)" >&2
    exit 2
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "installing bench/requirements.txt into .venv" >&2
    "$PY" -m pip install --quiet -r bench/requirements.txt
fi
if ! command -v pgbench >/dev/null && [[ ! -x /usr/lib/postgresql/15/bin/pgbench ]]; then
    echo "pgbench not found (apt-get install postgresql-client)" >&2
    exit 2
fi
