#!/usr/bin/env bash
# Entrypoint of btc-orders-local/patroni: as root, owns the data volume to postgres and runs
# itself again as postgres; then names the node after its hostname unless told otherwise and
# execs Patroni (under tini: compose's `init: true` reaps Postgres's children).
set -Eeuo pipefail
data=/var/lib/postgresql/data
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$data" /var/run/postgresql
    chown -R postgres:postgres "$data" /var/run/postgresql
    chmod 700 "$data"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi
host=$(hostname)
export PATRONI_NAME=${PATRONI_NAME:-$host}
export PATRONI_RESTAPI_CONNECT_ADDRESS=${PATRONI_RESTAPI_CONNECT_ADDRESS:-$host:8008}
export PATRONI_POSTGRESQL_CONNECT_ADDRESS=${PATRONI_POSTGRESQL_CONNECT_ADDRESS:-$host:5432}
: "${PATRONI_SUPERUSER_USERNAME:?set PATRONI_SUPERUSER_USERNAME (the database owner, as POSTGRES_USER)}"
: "${PATRONI_SUPERUSER_PASSWORD:?set PATRONI_SUPERUSER_PASSWORD}"
: "${PATRONI_REPLICATION_PASSWORD:?set PATRONI_REPLICATION_PASSWORD}"
export PATRONI_REPLICATION_USERNAME=${PATRONI_REPLICATION_USERNAME:-replicator}
exec "$@"
