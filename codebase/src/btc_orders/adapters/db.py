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
# Every wait on a connection is bounded, so a silent network failure (packets dropped, no
# reset) is found in seconds, not after the kernel's default of hours:
# - the client: TCP keepalives (a dead peer found after idle 5 s + 3 probes 2 s apart) and
#   TCP_USER_TIMEOUT (data sent but unacknowledged for 15 s fails the socket);
# - the server: a session idle in a transaction for 15 s is ended, releasing its row locks
#   (the relay's claimed outbox rows), and no statement runs longer than 30 s.
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 15
STATEMENT_TIMEOUT_SECONDS = 30
KEEPALIVE_ARGS = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}


def connect_args(
    application_name: str,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    statement_timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS,
) -> dict[str, object]:
    """libpq connection parameters of every connection the suite opens (`psycopg2.connect(**...)`)."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
        **KEEPALIVE_ARGS,
        "options": (
            f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_seconds * 1000)}"
            f" -c statement_timeout={int(statement_timeout_seconds * 1000)}"
        ),
    }


def create_engine(
    url: str,
    pool_size: int = 10,
    application_name: str = "btc_orders",
    autocommit: bool = False,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> Engine:
    """A pooled engine; connections that died with the server are replaced on the next use.

    `autocommit` suits read-only single statements: no BEGIN before and no ROLLBACK after
    (when the pool takes the connection back), so a query costs one round trip, not three.

    No overflow: at most `pool_size` connections, opened once and kept. An HTTP service caps
    its request threads at the same number (`web.create_app(thread_limit=...)`), so requests
    queue for a thread, not for a connection, and none opens and closes a connection of its
    own. A caller that still finds the pool empty for `pool_timeout` gets a 503
    (`unavailable_on_outage`). Connections carry `connect_args` (keepalives and timeouts).
    """
    return sqlalchemy.create_engine(
        url,
        isolation_level="AUTOCOMMIT" if autocommit else None,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        pool_recycle=1800,
        connect_args=connect_args(application_name, idle_in_transaction_timeout_seconds),
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


# What an error means, by its SQLSTATE (https://www.postgresql.org/docs/15/errcodes-appendix.html):
# the classes of a database that cannot do the work now, whatever the statement or its data.
_OUTAGE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})
# In class 42, the states of a schema or role that is not as it must be (privilege revoked,
# table or column missing), not the statement's own syntax.
_OUTAGE_STATES = frozenset({"42501", "42P01", "42703", "42704", "42883", "3D000", "28000", "28P01"})


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database cannot do the work now (retry later), False when
    the work itself was refused (a data exception, a constraint violation: retrying cannot help).

    Decided by the SQLSTATE, never by which exception class carries it: a read-only standby
    (25006) or a revoked privilege (42501) arrive as `ProgrammingError`/`InternalError`, and an
    `OperationalError` may carry a data error. A driver error without a SQLSTATE (a refused or
    lost connection, a closed cursor) is an outage.
    """
    original = getattr(error, "orig", None) or error
    if not isinstance(original, psycopg2.Error):
        return isinstance(error, DBAPIError) and error.connection_invalidated
    sqlstate = original.pgcode
    if sqlstate is None:
        return isinstance(original, psycopg2.OperationalError | psycopg2.InterfaceError)
    return sqlstate[:2] in _OUTAGE_CLASSES or sqlstate in _OUTAGE_STATES


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
