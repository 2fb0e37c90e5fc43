"""`python -m btc_orders.services.migration`: migrate the write and read models, then exit."""

import logging
import sys
import time

from yoyo import get_backend, read_migrations

from btc_orders import logs
from btc_orders.adapters.db import conninfo, migrations_dir
from btc_orders.services.startup import configured, startup_reason
from btc_orders.settings import MigrationSettings

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 30


def yoyo_url(url: str) -> str:
    """yoyo names the driver in the scheme: psycopg 3's backend."""
    return "postgresql+psycopg://" + conninfo(url).partition("://")[2]


def migrate(database: str, url: str) -> int:
    """Apply what is missing; return how many migrations were applied."""
    migrations = read_migrations(str(migrations_dir(database)))
    # The backend's exit closes its connection: a database is cloned only with none left open.
    with _connect(database, yoyo_url(url)) as backend, backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    logs.event(log, "migrated", database=database, applied=[m.id for m in pending], total=len(migrations))
    return len(pending)


def _connect(database: str, url: str):  # type: ignore[no-untyped-def]
    # The databases may still be starting (docker-compose): wait for them a while.
    for attempt in range(1, CONNECT_ATTEMPTS + 1):
        try:
            return get_backend(url)
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
