#!/usr/bin/env bash
# Check each local image's contract against a real engine (what docker-compose.yml relies on):
#   docker/local-images/verify.sh          (after build.sh; takes a few minutes)
# Throwaway containers, volumes and a network named verify-local-images-<pid>-*, removed at the
# end. One "ok: ..." line per check on stderr; the first failure is one line and exit 1.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
DOCKER=${DOCKER:-docker}
P=verify-local-images-$$
PYTHON=btc-orders-local/python:3.13-trixie
POSTGRES=btc-orders-local/postgres:17-trixie
RABBITMQ=btc-orders-local/rabbitmq:4.0-management-trixie
NGINX=btc-orders-local/nginx-unprivileged:1.26-trixie
FLUENTD=btc-orders-local/fluentd-standin:trixie

fail() { printf 'local-images/verify.sh: %s\n' "$*" >&2; exit 1; }
ok() { printf 'ok: %s\n' "$*" >&2; }
cleanup() {
    local ids=()
    mapfile -t ids < <("$DOCKER" ps -aq --filter "name=^$P-")
    [ "${#ids[@]}" = 0 ] || "$DOCKER" rm -fv "${ids[@]}" >/dev/null 2>&1 || true
    "$DOCKER" volume rm "$P-pg" "$P-mq" "$P-log" >/dev/null 2>&1 || true
    "$DOCKER" network rm "$P" >/dev/null 2>&1 || true
    "$DOCKER" image rm "$P-client" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# until SECONDS WHAT COMMAND...: run COMMAND every second until it succeeds, at most SECONDS.
until_ok() {
    local limit=$1 what=$2 deadline=$((SECONDS + $1))
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within $limit s"
        sleep 1
    done
}
run() { "$DOCKER" run -d --network "$P" "$@" >/dev/null; }
client() { "$DOCKER" run --rm --network "$P" "$P-client" "$@"; }
stopped_cleanly() {
    "$DOCKER" stop -t 30 "$1" >/dev/null
    [ "$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$1")" = 0 ] || fail "$1 did not exit 0 on docker stop"
}

for image in "$PYTHON" "$POSTGRES" "$RABBITMQ" "$NGINX" "$FLUENTD"; do
    "$DOCKER" image inspect "$image" >/dev/null 2>&1 || fail "$image is missing: run docker/local-images/build.sh first"
done
"$DOCKER" network create "$P" >/dev/null

# --- python: pip (in a venv too) trusts this machine's CA; the client of the checks below ------
DOCKER_BUILDKIT=0 "$DOCKER" build -q --tag "$P-client" - >/dev/null <<EOF || fail "pip in an image FROM $PYTHON failed"
FROM $PYTHON
RUN groupadd --system --gid 10001 app && useradd --system --uid 10001 --gid app app \
    && python -m venv /v \
    && /v/bin/pip install --no-cache-dir --only-binary=:all: 'psycopg[binary]==3.3.9' orjson==3.13.0 uvloop \
        pika==1.3.2 fluent-logger==0.11.1
ENV PATH=/v/bin:\$PATH
EOF
ok "python: a venv from $PYTHON installs psycopg (binary), orjson, uvloop, pika, fluent-logger from PyPI"

# --- postgres ---------------------------------------------------------------------------------
pg() { run --name "$P-pg" -e POSTGRES_USER=btc -e POSTGRES_PASSWORD=secret -e POSTGRES_DB=write_model \
    -v "$P-pg:/var/lib/postgresql/data" "$POSTGRES" postgres -c max_connections=300; }
sql() { client python -c "import sys, psycopg
c = psycopg.connect(host='$P-pg', user='btc', password=sys.argv[1], dbname='write_model', autocommit=True)
cur = c.execute(sys.argv[2]); print(cur.fetchone()[0] if cur.description else '')" "$@"; }
pg
until_ok 60 "postgres ready" "$DOCKER" exec "$P-pg" pg_isready -q -U btc -d write_model
[ "$(sql secret 'SHOW max_connections')" = 300 ] || fail "postgres: max_connections is not 300"
sql secret 'CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)' >/dev/null
! sql wrong 'SELECT 1' >/dev/null 2>&1 || fail "postgres: a wrong password was accepted over TCP"
stopped_cleanly "$P-pg"
"$DOCKER" rm "$P-pg" >/dev/null
pg
until_ok 60 "postgres ready again" "$DOCKER" exec "$P-pg" pg_isready -q -U btc -d write_model
[ "$(sql secret 'SELECT x FROM kept')" = 42 ] || fail "postgres: the data did not survive a new container"
[ "$("$DOCKER" logs "$P-pg" 2>&1 | grep -c 'init process complete')" = 0 ] || fail "postgres: initialised twice"
ok "postgres: password over TCP, max_connections=300, a wrong password refused, data kept, clean stop"

# --- rabbitmq ---------------------------------------------------------------------------------
mq() { run --name "$P-mq" --hostname queue -v "$P-mq:/var/lib/rabbitmq" "$RABBITMQ"; }
amqp() { client python -c "import sys, pika
c = pika.BlockingConnection(pika.ConnectionParameters('$P-mq', credentials=pika.PlainCredentials('guest', 'guest')))
ch = c.channel(); ch.queue_declare('kept', durable=True, arguments={'x-queue-type': 'quorum'})
if sys.argv[1] == 'put':
    ch.confirm_delivery(); ch.basic_publish('', 'kept', b'kept', pika.BasicProperties(delivery_mode=2))
else:
    print(ch.basic_get('kept', auto_ack=True)[2].decode())
c.close()" "$1"; }
mq
until_ok 120 "rabbitmq-diagnostics check_port_connectivity" \
    "$DOCKER" exec "$P-mq" rabbitmq-diagnostics -q check_port_connectivity
"$DOCKER" exec "$P-mq" rabbitmqctl -q status | grep -q 'rabbit@queue' || fail "rabbitmq: the node is not rabbit@queue"
amqp put
stopped_cleanly "$P-mq"
"$DOCKER" start "$P-mq" >/dev/null
until_ok 120 "rabbitmq back" "$DOCKER" exec "$P-mq" rabbitmq-diagnostics -q check_port_connectivity
[ "$(amqp get)" = kept ] || fail "rabbitmq: the message did not survive a restart"
ok "rabbitmq: rabbit@queue, docker exec CLI tools, guest from another container, quorum queue kept, clean stop"

# --- nginx: the project's gateway template, hardened as compose runs it -------------------------
backend() { run --name "$P-$1" --network-alias "$1" "$PYTHON" \
    sh -c "mkdir -p /s/x && echo $1 > /s/x/index.html && cd /s && exec python -m http.server $2"; }
backend create_buy_order 8777
backend fetch_buy_orders 8778
run --name "$P-gw" --read-only --tmpfs /tmp --tmpfs /etc/nginx/conf.d:uid=101,gid=101 --cap-drop ALL \
    --security-opt no-new-privileges -e CREATE_BUY_ORDER_PORT=8777 -e FETCH_BUY_ORDERS_PORT=8778 \
    -e NGINX_ENTRYPOINT_LOCAL_RESOLVERS=1 -v "$repo/docker/gateway/templates:/etc/nginx/templates:ro" "$NGINX"
until_ok 30 "nginx /healthz" "$DOCKER" exec "$P-gw" wget -q -O /dev/null http://127.0.0.1:8080/healthz
"$DOCKER" exec "$P-gw" grep -q 'resolver 127.0.0.11 ' /etc/nginx/conf.d/default.conf ||
    fail "nginx: NGINX_LOCAL_RESOLVERS was not rendered"
get() { client python -c "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())" "$1"; }
until_ok 30 "nginx proxies" get "http://$P-gw:8777/x/"
[ "$(get "http://$P-gw:8777/x/")" = create_buy_order ] || fail "nginx: 8777 does not reach create_buy_order"
[ "$(get "http://$P-gw:8778/x/")" = fetch_buy_orders ] || fail "nginx: 8778 does not reach fetch_buy_orders"
stopped_cleanly "$P-gw"
ok "nginx: template rendered (ports, resolver), proxies both ports, read-only root, no capabilities, clean stop"

# --- fluentd stand-in -------------------------------------------------------------------------
run --name "$P-log" --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$repo/docker/fluentd/fluent.conf:/fluentd/etc/fluent.conf:ro" -v "$P-log:/fluentd/log" "$FLUENTD"
until_ok 30 "fluentd-standin-healthcheck" "$DOCKER" exec "$P-log" fluentd-standin-healthcheck
client python -c "from fluent import sender
s = sender.FluentSender('btc.create_buy_order', host='$P-log', port=24224)
assert s.emit('order_created', {'order_id': 'o-1'}), s.last_error
s.close()"
day=$(date -u +%Y%m%d)
until_ok 10 "the record in create_buy_order.$day.log" \
    "$DOCKER" exec "$P-log" grep -q '"tag":"btc.create_buy_order.order_created"' "/fluentd/log/create_buy_order.$day.log"
stopped_cleanly "$P-log"
ok "fluentd-standin: a fluent-logger record from another container is in /fluentd/log, healthcheck, clean stop"
