"""Postgres engines and the schema check that services run before serving."""

from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import psycopg2.extras
import sqlalchemy
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from btc_orders.domain.errors import ServiceUnavailable

psycopg2.extras.register_uuid()  # uuid.UUID in and out of uuid columns

CONNECT_TIMEOUT_SECONDS = 3


def create_engine(
    url: str, pool_size: int = 10, application_name: str = "btc_orders", autocommit: bool = False
) -> Engine:
    """A pooled engine; connections that died with the server are replaced on the next use.

    `autocommit` suits read-only single statements: no BEGIN before and no ROLLBACK after
    (when the pool takes the connection back), so a query costs one round trip, not three.

    No overflow: at most `pool_size` connections, opened once and kept. An HTTP service caps
    its request threads at the same number (`web.create_app(thread_limit=...)`), so requests
    queue for a thread, not for a connection, and none opens and closes a connection of its
    own. A caller that still finds the pool empty for `pool_timeout` gets a 503
    (`unavailable_on_outage`).
    """
    return sqlalchemy.create_engine(
        url,
        isolation_level="AUTOCOMMIT" if autocommit else None,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        pool_recycle=1800,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": application_name},
    )


def migrations_dir(database: str) -> Path:
    """The folder of yoyo SQL migrations for `write_model` or `read_model`."""
    return Path(str(resources.files("btc_orders") / "migrations" / database))


def required_migrations(database: str) -> set[str]:
    return {path.stem for path in migrations_dir(database).glob("*.sql")}


class SchemaNotReady(RuntimeError):
    """The database is not at the schema this code needs (or cannot be reached to tell)."""


class DatabaseUnreachable(SchemaNotReady):
    """The database could not be reached; it may be starting: worth another try."""


def check_schema(engine: Engine, database: str) -> None:
    """Refuse to serve a database whose schema is not at the version this code needs."""
    try:
        with engine.connect() as connection:
            exists = connection.execute(text("SELECT to_regclass('_yoyo_migration') IS NOT NULL")).scalar()
            applied = (
                set(connection.execute(text("SELECT migration_id FROM _yoyo_migration")).scalars()) if exists else set()
            )
    except DBAPIError as error:
        raise DatabaseUnreachable(f"the {database} database cannot be reached: {first_line(error)}") from error
    missing = sorted(required_migrations(database) - applied)
    if missing:
        raise SchemaNotReady(
            f"the {database} database schema is not up to date (missing migrations: "
            f"{', '.join(missing)}); run the migration process first"
        )


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except (DBAPIError, PoolTimeout):
        return False


def first_line(error: BaseException) -> str:
    """The first line of an error's text (the driver's own message for a wrapped DBAPI error)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def unavailable_on_outage(database: str) -> Iterator[None]:
    """Turn a lost or refused database connection, or an exhausted pool, into `ServiceUnavailable` (a 503)."""
    try:
        yield
    except PoolTimeout as error:
        raise ServiceUnavailable(f"the {database} database is busy (no free connection); retry shortly") from error
    except DBAPIError as error:
        if isinstance(error, OperationalError) or error.connection_invalidated:
            raise ServiceUnavailable(f"the {database} database is unavailable; retry shortly") from error
        raise
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
        # Unwrapped: from work on a raw pooled connection (`engine.raw_connection()`), or raised
        # while the pool takes a connection back (resetting its isolation level) when the server
        # has just dropped it. The work before may have been done; the client's retry with the
        # same idempotence key is answered with it.
        raise ServiceUnavailable(f"the {database} database is unavailable; retry shortly") from error
