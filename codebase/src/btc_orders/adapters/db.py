"""Postgres engines and the schema check that services run before serving."""

import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg2.errors
import psycopg2.extras
import sqlalchemy
from sqlalchemy import Engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError
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


# The forms of a Postgres URL that users are given (libpq, Heroku-style platforms, SQLAlchemy),
# all served by the project's one driver. SQLAlchemy alone would map `postgresql://` to psycopg 3
# (not installed) and knows no `postgres://` dialect at all.
DRIVER_SCHEME = "postgresql+psycopg2"
ACCEPTED_SCHEMES = ("postgresql", "postgres", DRIVER_SCHEME)


def sqlalchemy_url(url: str) -> str:
    """`url` with the driver named, as SQLAlchemy needs it; ValueError for anything else.

    Only the scheme is changed: the rest (credentials, host, query) is kept byte for byte.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ACCEPTED_SCHEMES:
        raise ValueError(
            f"must be a Postgres URL such as postgresql://user:password@host:5432/database "
            f"(postgres:// and {DRIVER_SCHEME}:// are accepted too), not {scheme or url[:20]!r}"
        )
    normalized = f"{DRIVER_SCHEME}://{rest}"
    try:
        make_url(normalized)  # a port that is not a number is refused here, not at the first connect
    except (ArgumentError, ValueError) as error:
        raise ValueError(f"is not a valid URL: {error}") from None
    return normalized


def libpq_url(url: str) -> str:
    """`url` in the plain `postgresql://` form that libpq and yoyo read."""
    return "postgresql://" + sqlalchemy_url(url).partition("://")[2]


def create_engine(
    url: str,
    pool_size: int = 10,
    application_name: str = "btc_orders",
    autocommit: bool = False,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> Engine:
    """A pooled engine; connections that died with the server are replaced on the next use.

    `url` in any form `sqlalchemy_url` accepts (`postgresql://` as users write it).

    `autocommit` suits read-only single statements: no BEGIN before and no ROLLBACK after
    (when the pool takes the connection back), so a query costs one round trip, not three.

    No overflow: at most `pool_size` connections, opened once and kept. An HTTP service runs its
    blocking calls on as many threads (`web.in_thread`, an executor per service), so requests
    queue for a thread, not for a connection, and none opens and closes a connection of its
    own. A caller that still finds the pool empty for `pool_timeout` gets a 503
    (`unavailable_on_outage`). Connections carry `connect_args` (keepalives and timeouts).
    """
    url = sqlalchemy_url(url)
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


def first_line(error: BaseException) -> str:
    """The first line of an error's text (the driver's own message for a wrapped DBAPI error)."""
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# What a database error means, by its SQLSTATE (Postgres appendix A): True = the database cannot
# serve this statement right now, whatever the statement holds, so the caller retries or answers
# 503 with Retry-After; an error not listed is about the statement's own data (classes 22, 23: a
# 4xx or a dead letter) or a bug (42601 a syntax error, P0001 a trigger refusing an update: a 500).
OUTAGE_SQLSTATE_CLASSES: dict[str, str] = {
    "08": "connection exception (refused, lost, protocol violation)",
    "28": "invalid authorization (the role's login or password was changed)",
    "53": "insufficient resources (53100 disk full, 53200 out of memory, 53300 too many connections)",
    "57": "operator intervention (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now, "
    "57014 statement timeout or cancelled)",
    "58": "system error (58030 I/O error)",
    "XX": "internal error (XX001 data corrupted): the server's, not the statement's",
}
OUTAGE_SQLSTATES: dict[str, str] = {
    "25006": "read-only SQL transaction (a standby, or default_transaction_read_only after a failover)",
    "25P03": "idle-in-transaction session timeout (the session was ended)",
    "40001": "serialization failure (a retry succeeds)",
    "40P01": "deadlock detected (a retry succeeds)",
    "40003": "statement completion unknown",
    "55P03": "lock not available (lock_timeout)",
    "42501": "insufficient privilege (a grant revoked: the environment, not the statement)",
    "42P01": "undefined table (a schema behind or dropped: the environment, not the statement)",
    "42703": "undefined column (a schema behind: the environment, not the statement)",
    "42704": "undefined object (a type or role missing: the environment, not the statement)",
    "3D000": "invalid catalog name (the database was dropped or renamed)",
}


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error (wrapped by SQLAlchemy or raw psycopg2), if the server sent one."""
    orig = getattr(error, "orig", None) if isinstance(error, DBAPIError) else error
    code = getattr(orig, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database is unavailable, read-only, out of resources or busy
    (worth a retry, a 503 with Retry-After; never a dead letter); False when it is about the
    statement's own data or a bug. Decided by what the error means (its SQLSTATE, the tables
    above), not by which exception class carries it: psycopg2 raises a read-only transaction as
    an `InternalError` and a lost connection as an `OperationalError`.
    """
    if isinstance(error, PoolTimeout):
        return True  # every pooled connection is in use: busy, not broken
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    code = sqlstate(error)
    if code is not None:
        return code in OUTAGE_SQLSTATES or code[:2] in OUTAGE_SQLSTATE_CLASSES
    # No SQLSTATE: the driver's own verdict on the connection (refused, closed, timed out).
    orig = error.orig if isinstance(error, DBAPIError) else error
    return isinstance(orig, psycopg2.OperationalError | psycopg2.InterfaceError)


def outage_message(database: str, error: BaseException) -> str:
    """The client's sentence for an outage of `database`."""
    code = sqlstate(error)
    if isinstance(error, PoolTimeout):
        return f"the {database} database is busy (no free connection); retry shortly"
    if code == "53300":
        return f"the {database} database has too many connections; retry shortly"
    if code is not None and code.startswith("53"):
        return f"the {database} database is out of resources (disk, memory); retry shortly"
    if code == "25006":
        return f"the {database} database is read-only right now (a failover?); retry shortly"
    return f"the {database} database is unavailable; retry shortly"


@contextmanager
def unavailable_on_outage(database: str) -> Iterator[None]:
    """Turn a database error that is an outage (`is_outage`) into `ServiceUnavailable` (a 503).

    Covers SQLAlchemy's wrapped errors and the raw psycopg2 ones: from work on a raw pooled
    connection (`engine.raw_connection()`), or raised while the pool takes a connection back
    (resetting its isolation level) when the server has just dropped it. The work before may
    have been done; the client's retry with the same idempotence key is answered with it.
    Any other error (the statement's data, a bug) goes through unchanged.
    """
    try:
        yield
    except (DBAPIError, PoolTimeout, psycopg2.Error) as error:
        if is_outage(error):
            raise ServiceUnavailable(outage_message(database, error)) from error
        raise


# Prepared statements, for the hot statements of the services (a page, an order, the create
# path's one statement). Parsed and planned once per pooled connection instead of per request,
# and run on the raw psycopg2 connection without SQLAlchemy's per-execution work. Measured in the
# tuning log of docs/benchmarks.md: the create statement's server time halves, a page's planning
# goes.


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement prepared once on each pooled connection (`prepare`), then run by `execute`
    (psycopg2 `%s` placeholders, one per parameter of the prepared statement, in order)."""

    name: str
    prepare: str
    execute: str
    parameters: tuple[str, ...] = ()  # the names of the parameters, in order (`named`)

    @classmethod
    def named(cls, name: str, statement: str, types: Mapping[str, str]) -> "Prepared":
        """`statement` written with `:name` parameters (as for SQLAlchemy's `text`), each of the
        SQL type `types[name]`, prepared as `$1`..`$n` in the order of `types`."""
        order = list(types)

        def placeholder(match: re.Match[str]) -> str:
            return f"${order.index(match[1]) + 1}"

        body = _NAMED.sub(placeholder, statement)
        if not order:  # no parameters: no parentheses (`()` is a syntax error)
            return cls(name, f"PREPARE {name} AS {body}", f"EXECUTE {name}")
        prepare = f"PREPARE {name} ({', '.join(types.values())}) AS {body}"
        return cls(name, prepare, f"EXECUTE {name} ({', '.join(['%s'] * len(order))})", tuple(order))

    def values(self, parameters: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of a `named` statement's parameters, in its order."""
        return tuple(parameters[name] for name in self.parameters)


_NAMED = re.compile(r"(?<![:\w]):(\w+)")

# Every prepared statement is planned once, generically, for any parameters: each one's generic
# plan is the same chain of index scans as its custom ones (proven by the EXPLAIN tests of the
# EXECUTEd statements), so planning per request (0.1-0.4 ms, more than the execution) buys
# nothing. Under the default `auto` mode Postgres plans the first five executions anew and some
# shapes for ever (measured; tuning log in benchmarks.md).
#
# A generic plan is kept until the statistics of its tables change (an ANALYZE invalidates it,
# and the next execution plans again). A new deployment's tables have never been analyzed: the
# planner assumes a few pages and the plans are the indexes' (tested). A plan made just after an
# ANALYZE of a table of a few rows may read that table in full, which costs what reading its
# index would, until the next ANALYZE: autovacuum's, once 50 rows and 10% have changed, within
# its naptime (1 minute). Sequential scans are not priced out (`enable_seqscan = off`): the
# penalty pushes a plan's estimated cost past `jit_above_cost`, and JIT compilation then took
# 190-230 ms per page (measured).
PLAN_SETTINGS = "SET plan_cache_mode = force_generic_plan"
_PREPARED_KEY = "btc_orders.prepared"  # in a pooled connection's `info`: cleared on reconnect


def run_prepared(connection: Any, prepared: Prepared, values: Sequence[Any]) -> Any:
    """A cursor on `connection` (a pooled DBAPI connection) that has run `prepared` with `values`.

    The first statement on a connection sets `PLAN_SETTINGS` (committed at once when the connection
    is not in autocommit, so the pool's rollback on check-in keeps it) and each statement is
    prepared on its first use. What was prepared is kept in the connection's `info`, which
    SQLAlchemy clears when it replaces a lost connection: the new one prepares again. A statement
    the server no longer knows (a `DEALLOCATE` or `DISCARD ALL` behind the pool's back) is
    prepared again and run once more (it never ran): `prepared statement does not exist` never
    reaches a caller.
    """
    dbapi = connection.dbapi_connection
    cursor = dbapi.cursor()
    try:
        try:
            _prepare(connection, cursor, prepared)
            cursor.execute(prepared.execute, values)
        except psycopg2.errors.InvalidSqlStatementName:
            if not dbapi.autocommit:
                dbapi.rollback()
            connection.info.pop(_PREPARED_KEY, None)
            _prepare(connection, cursor, prepared)
            cursor.execute(prepared.execute, values)
    except BaseException:
        cursor.close()
        raise
    return cursor


def _prepare(connection: Any, cursor: Any, prepared: Prepared) -> None:
    done: set[str] | None = connection.info.get(_PREPARED_KEY)
    if done is None:
        cursor.execute(PLAN_SETTINGS)
        if not connection.dbapi_connection.autocommit:
            connection.dbapi_connection.commit()
        done = connection.info[_PREPARED_KEY] = set()
    if prepared.name not in done:
        cursor.execute(prepared.prepare)
        done.add(prepared.name)


def fetch_prepared(engine: Engine, prepared: Prepared, values: Sequence[Any]) -> tuple[Any, ...] | None:
    """The first row (None: no row) of one prepared statement on a connection of `engine`'s pool,
    run as a statement of its own: committed at once on a connection not in autocommit.

    A connection lost with the server is discarded, and the pool with it (the others died too),
    as SQLAlchemy does on a disconnect. Errors are psycopg2's: the caller maps outages with
    `unavailable_on_outage`, as for SQLAlchemy's.
    """
    connection = engine.raw_connection()
    try:
        cursor = run_prepared(connection, prepared, values)
        row: tuple[Any, ...] | None = cursor.fetchone()
        cursor.close()
        dbapi: Any = connection.dbapi_connection
        if not dbapi.autocommit:
            dbapi.commit()
        return row
    except psycopg2.Error as error:
        if getattr(connection.dbapi_connection, "closed", 1):  # lost, not just refused
            connection.invalidate(error)
            engine.dispose(close=False)
        raise
    finally:
        connection.close()
