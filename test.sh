#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run linters and the whole suite.
#   ./test.sh                 everything
#   ./test.sh -k cap -x       extra arguments go to pytest (the container stage is then not run)
#   ./test.sh tests/cluster   the container stage alone (the compose cluster, black-box)
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
# Every file hash-checked: the runtime tree (requirements.lock), then the tests', the tools', the
# --local extras' and setuptools' (their own locks, scripts/lock.sh); then the package itself,
# editable, built with that setuptools (no build environment fetched).
locks=(codebase/requirements.lock codebase/requirements-dev.lock codebase/requirements-tools.lock
    codebase/requirements-local.lock codebase/requirements-build.lock)
stamp="$venv/.requirements.sha256"
wanted=$(cat "${locks[@]}" codebase/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
    say "creating the virtual environment in .venv"
    "$python_bin" -m venv "$venv" || die "could not create a virtual environment (is python3-venv installed?)"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    say "installing the hash-locked requirements into .venv"
    args=(); for lock in "${locks[@]}"; do args+=(-r "$lock"); done
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps "${args[@]}" ||
        die "pip could not install the locked requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e codebase ||
        die "pip could not install the package from codebase/"
    echo "$wanted" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
# shellcheck source=scripts/urls.sh
source scripts/urls.sh

# --- Postgres and RabbitMQ ----------------------------------------------------------------
# shellcheck source=scripts/test_services.sh
source scripts/test_services.sh
ensure_postgres
ensure_rabbitmq

# --- Lint and types ---------------------------------------------------------------------------
say "ruff"
(cd codebase && ruff check src tests && ruff format --check src tests)
(cd bench && ruff check . && ruff format --check .)  # bench/pyproject.toml extends the codebase's rules
say "mypy"
(cd codebase && mypy)
(cd bench && mypy)  # the scripts, benchkit, and the tests.support modules they import

# --- The suite ----------------------------------------------------------------------------
# shellcheck source=scripts/container_stage.sh
source scripts/container_stage.sh
stage_only=""
for argument in "$@"; do
    case "$argument" in tests/cluster* | codebase/tests/cluster*) stage_only=1 ;; esac
done
if [ -n "$stage_only" ]; then
    run_container_stage "${@#codebase/}"
    exit $?
fi

say "pytest (Postgres: $(mask_urls "$TEST_PG_URL"), RabbitMQ: $(mask_urls "$TEST_AMQP_URL"))"
status=0
(cd codebase && python -m pytest --ignore=tests/cluster "$@") || status=$?
[ "$status" -eq 5 ] && die "pytest collected no tests"
if [ "$#" -gt 0 ]; then
    say "container stage not run (pytest arguments were given; ./test.sh tests/cluster runs it)"
    exit "$status"
fi
stage=0
run_container_stage || stage=$?
[ "$status" -ne 0 ] || status=$stage
exit "$status"
