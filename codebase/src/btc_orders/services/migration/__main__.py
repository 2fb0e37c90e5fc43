"""`python -m btc_orders.services.migration`: migrate the write and read models, then exit."""

import logging
import sys
import time
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import DatabaseURI
from yoyo.migrations import default_migration_table

from btc_orders import logs
from btc_orders.adapters import db
from btc_orders.services.startup import configured, startup_reason
from btc_orders.settings import MigrationSettings

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 30


class Backend(PostgresqlPsycopgBackend):  # type: ignore[misc]  # yoyo is untyped
    """yoyo's psycopg 3 backend on a connection psycopg opens from the URL as libpq reads it
    (`db.conninfo`): every form the settings accept, libpq's multi-host one included, which yoyo's
    own URL parsing cannot read. Bounded connect and keepalives, but no statement timeout: a
    migration (an index built on a large table) may take long."""

    def __init__(self, url: str, migration_table: str = default_migration_table) -> None:
        self.conninfo = db.conninfo(url)
        database = conninfo_to_dict(self.conninfo).get("dbname")
        # What yoyo keeps of the URL: the scheme and the database's name (its cache key, its listings).
        super().__init__(DatabaseURI("postgresql+psycopg", None, None, None, None, database, {}), migration_table)

    def connect(self, dburi: DatabaseURI) -> psycopg.Connection[Any]:
        # autocommit as yoyo's own backend: it begins and commits itself
        parameters: dict[str, Any] = {"connect_timeout": db.CONNECT_TIMEOUT_SECONDS, **db.KEEPALIVE_ARGS}
        return psycopg.connect(self.conninfo, autocommit=True, application_name="migration", **parameters)

    def copy(self) -> "Backend":
        return Backend(self.conninfo, self.migration_table)


def backend(url: str) -> Backend:
    """yoyo's backend for the database at `url` (any form `db.conninfo` accepts), connected and ready."""
    connected = Backend(url)
    connected.init_database()
    return connected


def migrate(database: str, url: str) -> int:
    """Apply what is missing; return how many migrations were applied."""
    migrations = read_migrations(str(db.migrations_dir(database)))
    # The backend's exit closes its connection: a database is cloned only with none left open.
    with _connect(database, url) as connected, connected.lock():
        pending = connected.to_apply(migrations)
        connected.apply_migrations(pending)
    logs.event(log, "migrated", database=database, applied=[m.id for m in pending], total=len(migrations))
    return len(pending)


def _connect(database: str, url: str) -> Backend:
    # The databases may still be starting (docker-compose): wait for them a while.
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return backend(url)
        except Exception as error:  # yoyo raises the driver's own errors
            if attempt == CONNECT_ATTEMPTS:
                raise
            logs.event(log, "database_not_ready", logging.WARNING, database=database, reason=str(error).strip())
            time.sleep(1)
    raise AssertionError("unreachable")


def main() -> int:
    settings = configured("migration", MigrationSettings)
    try:
        migrate("write_model", settings.write_model_db_url)
        migrate("read_model", settings.read_model_db_url)
    except Exception as error:
        # One line, never a traceback (logged at DEBUG for LOG_LEVEL=DEBUG).
        reason = startup_reason("migration", error)
        logs.event(log, "migration_failed", logging.ERROR, reason=reason)
        log.debug("migration_failed", exc_info=error)
        print(f"migration failed: {reason}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
