# shellcheck shell=bash
# Sourced by test.sh and run.sh (after scripts/urls.sh): make sure a Postgres and a RabbitMQ answer, exporting
# TEST_PG_URL, TEST_AMQP_URL and TEST_RABBITMQCTL for the tests.
# Uses the ones named in the environment, else the local defaults, else starts
# throwaway servers from the local binaries under .tools/ (removed by nothing:
# they are reused by the next run and cost nothing when stopped).

: "${TEST_PG_URL:=postgresql://postgres@127.0.0.1:5432/postgres}"
: "${TEST_AMQP_URL:=amqp://guest:guest@127.0.0.1:5672/%2F}"
: "${TEST_RABBITMQCTL:=rabbitmqctl}"
export TEST_PG_URL TEST_AMQP_URL TEST_RABBITMQCTL

_pg_answers() {
    python - "$1" <<'PY' >/dev/null 2>&1
import sys, psycopg
psycopg.connect(sys.argv[1], connect_timeout=3).close()
PY
}

_amqp_answers() {
    python - "$1" <<'PY' >/dev/null 2>&1
import sys, pika
pika.BlockingConnection(pika.URLParameters(sys.argv[1] + "?socket_timeout=3&connection_attempts=1")).close()
PY
}

ensure_postgres() {
    _pg_answers "$TEST_PG_URL" && return 0
    say "no Postgres answers at $(mask_urls "$TEST_PG_URL"); starting a throwaway one"
    local bindir
    bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -n 1)
    [ -n "$bindir" ] || bindir=$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/pg_ctl)")
    [ -x "$bindir/pg_ctl" ] || die "no Postgres reachable at $(mask_urls "$TEST_PG_URL") and no pg_ctl to start one (apt-get install postgresql)"
    # shellcheck disable=SC2154  # root is set by test.sh, which sources this file
    local data="$root/.tools/postgres" port=54329 owner=""
    [ "$(id -u)" = 0 ] && owner=postgres
    mkdir -p "$root/.tools"
    [ -n "$owner" ] && chown "$owner" "$root/.tools"
    _as() { if [ -n "$owner" ]; then su "$owner" -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
    [ -f "$data/PG_VERSION" ] || _as "'$bindir/initdb' -D '$data' -U postgres -A trust >/dev/null" ||
        die "initdb failed in $data"
    _as "'$bindir/pg_ctl' -D '$data' -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' -l '$data/log' -w start >/dev/null" ||
        die "could not start the throwaway Postgres (see $data/log)"
    TEST_PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
    _pg_answers "$TEST_PG_URL" || die "the throwaway Postgres does not answer (see $data/log)"
}

ensure_rabbitmq() {
    _amqp_answers "$TEST_AMQP_URL" && return 0
    say "no RabbitMQ answers at $(mask_urls "$TEST_AMQP_URL"); starting a throwaway one"
    command -v rabbitmq-server >/dev/null 2>&1 ||
        die "no RabbitMQ reachable at $(mask_urls "$TEST_AMQP_URL") and no rabbitmq-server to start one (apt-get install rabbitmq-server)"
    export RABBITMQ_NODENAME="btc-orders-test@localhost" RABBITMQ_NODE_PORT=56729
    export RABBITMQ_MNESIA_BASE="$root/.tools/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$root/.tools/rabbitmq/log"
    export RABBITMQ_DIST_PORT=56730
    mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    TEST_AMQP_URL="amqp://guest:guest@127.0.0.1:$RABBITMQ_NODE_PORT/%2F"
    TEST_RABBITMQCTL="rabbitmqctl -n $RABBITMQ_NODENAME"
    for _ in $(seq 60); do _amqp_answers "$TEST_AMQP_URL" && return 0; sleep 1; done
    die "the throwaway RabbitMQ did not start within 60 s (see $RABBITMQ_LOG_BASE)"
}
