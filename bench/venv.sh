# shellcheck shell=bash
# Sourced by bench/run.sh and bench/run_all.sh: from the repository root, check the venv and
# install what the benchmarks add to it (matplotlib and friends); sets PY.
PY=.venv/bin/python
if [[ ! -x $PY ]]; then
    echo "no $PY: create the venv first (python3 -m venv .venv && .venv/bin/pip install -e codebase)" >&2
    exit 2
fi
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
    echo "installing bench/requirements.txt into .venv" >&2
    "$PY" -m pip install --quiet -r bench/requirements.txt
fi
