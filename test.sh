#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run linters and the whole suite.
#   ./test.sh                 everything
#   ./test.sh -k cap -x       extra arguments go to pytest
# Postgres and RabbitMQ: the ones named by TEST_PG_URL / TEST_AMQP_URL (default: the local
# ones on 127.0.0.1); when none answers, throwaway ones are started from the local binaries.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)

say() { printf '==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# --- Python and the virtual environment (pinned requirements) ---------------------------
python_bin=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python_bin=$(command -v "$candidate"); break
    fi
done
[ -n "$python_bin" ] || die "Python 3.11 or newer is needed (python3.11 not found on PATH)"

venv="$root/.venv"
requirements=(codebase/requirements.txt codebase/requirements-dev.txt)
[ -f codebase/requirements-tools.txt ] && requirements+=(codebase/requirements-tools.txt)
stamp="$venv/.requirements.sha256"
wanted=$(cat "${requirements[@]}" codebase/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment in .venv"
    "$python_bin" -m venv "$venv" || die "could not create a virtual environment (is python3-venv installed?)"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    say "installing pinned requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    args=(); for r in "${requirements[@]}"; do args+=(-r "$r"); done
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${args[@]}"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e codebase
    echo "$wanted" > "$stamp"
fi
export PATH="$venv/bin:$PATH"

# --- Postgres and RabbitMQ ----------------------------------------------------------------
# shellcheck source=scripts/test_services.sh
source scripts/test_services.sh
ensure_postgres
ensure_rabbitmq

# --- Lint and types ---------------------------------------------------------------------------
say "ruff"
(cd codebase && ruff check src tests && ruff format --check src tests)
say "mypy"
(cd codebase && mypy)

# --- The suite ----------------------------------------------------------------------------
say "pytest (Postgres: $TEST_PG_URL, RabbitMQ: ${TEST_AMQP_URL%%@*}@…)"
cd codebase
status=0
python -m pytest "$@" || status=$?
[ "$status" -eq 5 ] && die "pytest collected no tests"
exit "$status"
