#!/usr/bin/env bash
# Entrypoint of btc-orders-local/postgres:17-trixie, after the official image's:
#   docker-entrypoint.sh postgres [-c name=value ...]   (arguments after `postgres` go to the server)
# As root: owns PGDATA and the socket directory to postgres, then runs itself again as postgres.
# On an empty PGDATA: initdb with POSTGRES_USER (default postgres) and POSTGRES_PASSWORD (required
# unless POSTGRES_HOST_AUTH_METHOD=trust) plus POSTGRES_INITDB_ARGS, `host all all all` with
# POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), POSTGRES_DB (default the user) created, then
# /docker-entrypoint-initdb.d/*.sh, *.sql and *.sql.gz run, on a private socket so that nothing
# (pg_isready) sees the server before it is ready. Then postgres is exec'd: it is PID 1.
set -Eeuo pipefail

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi
[ "$1" = postgres ] || exec "$@"
: "${PGDATA:=/var/lib/postgresql/data}"

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 700 "$PGDATA"
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$auth" != trust ]; then
        echo "docker-entrypoint.sh: the database is uninitialized and POSTGRES_PASSWORD is not set (or set POSTGRES_HOST_AUTH_METHOD=trust)" >&2
        exit 1
    fi
    initdb_args=(--username="$user")
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
        initdb_args+=(--pwfile="$pwfile")
    fi
    # shellcheck disable=SC2206  # POSTGRES_INITDB_ARGS is split into words, as the official image does
    initdb_args+=(${POSTGRES_INITDB_ARGS:-})
    initdb "${initdb_args[@]}"
    rm -f "${pwfile:-}"
    printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"

    socket=$(mktemp -d)
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories='$socket'" -w start
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password -h "$socket" -U "$user")
    if [ "$db" != postgres ]; then
        "${psql[@]}" -d postgres --set db="$db" <<<'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case $f in
            *.sh) echo "running $f"; PGHOST=$socket PGUSER=$user PGDATABASE=$db bash "$f" ;;
            *.sql) echo "running $f"; "${psql[@]}" -d "$db" -f "$f" ;;
            *.sql.gz) echo "running $f"; gunzip -c "$f" | "${psql[@]}" -d "$db" ;;
            */\*) ;;
            *) echo "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
    rmdir "$socket"
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
