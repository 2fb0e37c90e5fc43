"""Postgres through the project's one driver, psycopg 3: URLs, pools, the schema check, outages.

A process keeps one pool per database: an asynchronous process (an HTTP service) a psycopg_pool
`AsyncConnectionPool` (`async_pool`), a synchronous one (a worker, the admin CLI) SQLAlchemy's
engine (`create_engine`), whose connections psycopg 3 opens from the same libpq connection string.
The URL is read by libpq itself (`conninfo`), so every form users are given works, libpq's
multi-host form with `target_session_attrs` included.
"""

import select
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import sqlalchemy
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as EnginePoolTimeout

from btc_orders.domain.errors import ServiceUnavailable

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
# Statements are prepared by the driver: psycopg prepares a statement on a connection once it has
# run there `PREPARE_THRESHOLD` times. A prepared statement is planned generically, once, for any
# parameters (`plan_cache_mode`): each hot statement's generic plan is the chain of index scans its
# custom plans are (the EXPLAIN tests), so planning per request buys nothing.
PREPARE_THRESHOLD = 2
# How many prepared statements the driver keeps per connection (its default: 100): more than the
# read model's page shapes (128) and the create path's statements, so none is prepared again and again.
PREPARED_MAX = 256
GENERIC_PLANS = "-c plan_cache_mode=force_generic_plan"


def connect_args(
    application_name: str,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    statement_timeout_seconds: float = STATEMENT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """libpq parameters of every connection the suite opens (`psycopg.connect(url, **...)`)."""
    return {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
        **KEEPALIVE_ARGS,
        "options": (
            f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_timeout_seconds * 1000)}"
            f" -c statement_timeout={int(statement_timeout_seconds * 1000)} {GENERIC_PLANS}"
        ),
    }


# The forms of a Postgres URL that users are given (libpq, Heroku-style platforms, SQLAlchemy's
# `postgresql+psycopg://` and, from older configurations, `postgresql+psycopg2://`), all served by
# psycopg 3: only the scheme is read here, the rest is libpq's.
ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


def conninfo(url: str) -> str:
    """`url` as the `postgresql://` URL libpq reads; ValueError (one sentence) for anything else.

    Only the scheme is changed: credentials, hosts (libpq's `host1:5432,host2:5432` list) and
    parameters (`target_session_attrs=read-write`, `sslmode`, ...) are kept byte for byte.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ACCEPTED_SCHEMES:
        raise ValueError(
            "must be a Postgres URL such as postgresql://user:password@host:5432/database "
            "(or libpq's multi-host form postgresql://host1:5432,host2:5432/database?target_session_attrs=read-write), "
            f"not {scheme or url[:20]!r}"
        )
    plain = f"postgresql://{rest}"
    try:
        parameters = conninfo_to_dict(plain)
    except psycopg.Error as error:
        raise ValueError(f"is not a valid URL: {first_line(error)}") from None
    for port in str(parameters.get("port") or "").split(","):
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"is not a valid URL: port {port!r} is not a port number")
    return plain


def create_engine(
    url: str,
    pool_size: int = 10,
    application_name: str = "btc_orders",
    autocommit: bool = False,
    idle_in_transaction_timeout_seconds: float = IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
) -> Engine:
    """A synchronous process's pool: SQLAlchemy's engine, each connection psycopg 3's, opened by
    libpq from `url` (any form `conninfo` accepts, multi-host included: SQLAlchemy never parses it).

    `autocommit` suits single statements: no BEGIN before and no ROLLBACK after.
    No overflow: at most `pool_size` connections, opened when first needed and kept; a caller that
    finds the pool empty for CONNECT_TIMEOUT_SECONDS gets an outage (`is_outage`), and a connection
    lost with the server is replaced on the next use.
    """
    target = conninfo(url)
    arguments = {**connect_args(application_name, idle_in_transaction_timeout_seconds)}

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(target, prepare_threshold=PREPARE_THRESHOLD, **arguments)

    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://",
        creator=connect,
        isolation_level="AUTOCOMMIT" if autocommit else None,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=CONNECT_TIMEOUT_SECONDS,
        pool_recycle=1800,
    )
    event.listen(engine, "handle_error", _forgotten_statements_end_the_connection)
    return engine


def _forgotten_statements_end_the_connection(context: Any) -> None:
    """A connection whose prepared statements were dropped behind the driver's back (a pooler's
    `DISCARD ALL`) would fail every one of them again: SQLAlchemy replaces it, as a lost one."""
    if sqlstate(context.original_exception) == FORGOTTEN_STATEMENT:
        context.is_disconnect = True


def _closed_while_idle(connection: psycopg.AsyncConnection[Any]) -> bool:
    """Did the server close `connection` while it sat idle in the pool? One `poll()`, no round trip.

    An idle connection has nothing to read; a readable one holds the server's goodbye or the end of
    the stream (a restart, a failover, `pg_terminate_backend`, an idle-session reaper).
    """
    if connection.closed:
        return True
    poller = select.poll()  # not select(): a process may hold more than 1,024 descriptors
    poller.register(connection.fileno(), select.POLLIN)
    return bool(poller.poll(0))


def async_pool(url: str, size: int, application_name: str) -> psycopg_pool.AsyncConnectionPool:
    """An asynchronous process's pool (open it with `await pool.open()`; take its connections with
    `pooled` or `run`): up to `size` connections in autocommit. A request that finds every connection
    busy for CONNECT_TIMEOUT_SECONDS gets `psycopg_pool.PoolTimeout`, an outage (a 503); a connection
    lost in use is replaced by the pool in the background."""

    async def configure(connection: psycopg.AsyncConnection[Any]) -> None:
        connection.prepared_max = PREPARED_MAX

    return psycopg_pool.AsyncConnectionPool(
        conninfo(url),
        kwargs={**connect_args(application_name), "autocommit": True, "prepare_threshold": PREPARE_THRESHOLD},
        # A quarter of `size` opened at start, more as requests need them (up to `size`, one at a
        # time), idle ones beyond that quarter closed after 10 minutes: a burst at start is served at
        # once (200 orders at once, on a loaded machine, waited past 3 s for a pool grown from one),
        # and a suite of many processes on one server does not take `size` each at start (twenty per
        # process took a shared server's 100 connections in the chaos run).
        min_size=max(1, size // 4),
        max_size=size,
        max_idle=600,
        open=False,
        configure=configure,
        timeout=CONNECT_TIMEOUT_SECONDS,
        # A connection that cannot be opened is tried again with a backoff that doubles (1 s, 2 s, ...);
        # after this long the pool stops, and the next request that waits starts a new attempt at
        # once: when an outage ends, the pool connects again within seconds, not after a backoff grown
        # through the whole outage.
        reconnect_timeout=CONNECT_TIMEOUT_SECONDS,
        max_lifetime=1800,
        name=application_name,
    )


@asynccontextmanager
async def pooled(pool: psycopg_pool.AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection of `pool` that the server has not closed while it sat there.

    One the server closed (`_closed_while_idle`) is closed here, so that the pool replaces it, and the
    next is taken at once: a restart or a failover that closed every idle connection never costs a
    request. (psycopg_pool's own `check` waits a second after each failed check before the next.)
    """
    for _ in range(pool.max_size + 1):
        async with pool.connection() as candidate:
            if _closed_while_idle(candidate):
                await candidate.close()
                continue
            yield candidate
            return
    raise psycopg.OperationalError("every connection of the pool was found closed by the server")


T = TypeVar("T")
FORGOTTEN_STATEMENT = "26000"  # invalid SQL statement name: `prepared statement "_pg3_0" does not exist`


async def run(
    pool: psycopg_pool.AsyncConnectionPool, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]
) -> T:
    """`work(connection)` on a connection of `pool`, and its result.

    A prepared statement the server no longer knows (a pooler's `DISCARD ALL`, a `DEALLOCATE` behind
    the driver's back) fails before it runs: the driver is told (a `DEALLOCATE ALL` of its own, which
    empties its cache of prepared statements) and `work` runs once more, so `prepared statement does
    not exist` never reaches a caller. Other errors are the caller's (`unavailable_on_outage`).
    """
    async with pooled(pool) as connection:
        try:
            return await work(connection)
        except psycopg.errors.InvalidSqlStatementName:
            if connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                await connection.rollback()
            await connection.execute("DEALLOCATE ALL")
            return await work(connection)


def migrations_dir(database: str) -> Path:
    """The folder of yoyo SQL migrations for `write_model` or `read_model`."""
    return Path(str(resources.files("btc_orders") / "migrations" / database))


def required_migrations(database: str) -> set[str]:
    return {path.stem for path in migrations_dir(database).glob("*.sql")}


class SchemaNotReady(RuntimeError):
    """The database is not at the schema this code needs (or cannot be reached to tell)."""


class DatabaseUnreachable(SchemaNotReady):
    """The database could not be reached; it may be starting: worth another try."""


def check_schema(url: str, database: str) -> None:
    """Refuse to serve a database whose schema is not at the version this code needs (one short
    connection of its own, before the process builds its pool)."""
    try:
        with psycopg.connect(conninfo(url), autocommit=True, **connect_args("btc_orders_schema_check")) as connection:
            exists = connection.execute("SELECT to_regclass('_yoyo_migration') IS NOT NULL").fetchone()
            applied = (
                {row[0] for row in connection.execute("SELECT migration_id FROM _yoyo_migration")}
                if exists and exists[0]
                else set()
            )
    except psycopg.Error as error:
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
    except (DBAPIError, EnginePoolTimeout):
        return False


async def ping_pool(pool: psycopg_pool.AsyncConnectionPool) -> bool:
    try:
        async with pooled(pool) as connection:
            await connection.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def first_line(error: BaseException) -> str:
    """The first line of an error's text (the driver's own message for a wrapped DBAPI error)."""
    message = str(getattr(error, "orig", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__


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
    "26000": "invalid SQL statement name (a prepared statement dropped behind the driver's back: a retry prepares it)",
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


def _driver_error(error: BaseException) -> BaseException:
    """psycopg's own error, unwrapped from SQLAlchemy's."""
    orig = getattr(error, "orig", None) if isinstance(error, DBAPIError) else None
    return orig if isinstance(orig, BaseException) else error


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE of a database error (psycopg's, or wrapped by SQLAlchemy), if the server sent one."""
    code = getattr(_driver_error(error), "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def is_outage(error: BaseException) -> bool:
    """True when `error` says the database is unavailable, read-only, out of resources or busy
    (worth a retry, a 503 with Retry-After; never a dead letter); False when it is about the
    statement's own data or a bug. Decided by what the error means (its SQLSTATE, the tables
    above), not by which exception class carries it.
    """
    if isinstance(error, EnginePoolTimeout | psycopg_pool.PoolTimeout | psycopg_pool.TooManyRequests):
        return True  # every pooled connection is in use: busy, not broken
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    code = sqlstate(error)
    if code is not None:
        return code in OUTAGE_SQLSTATES or code[:2] in OUTAGE_SQLSTATE_CLASSES
    # No SQLSTATE: the driver's own verdict on the connection (refused, closed, timed out).
    return isinstance(_driver_error(error), psycopg.OperationalError | psycopg.InterfaceError)


DATABASE_ERRORS = (psycopg.Error, DBAPIError, EnginePoolTimeout)


def outage_message(database: str, error: BaseException) -> str:
    """The client's sentence for an outage of `database`."""
    code = sqlstate(error)
    if isinstance(error, EnginePoolTimeout | psycopg_pool.PoolTimeout | psycopg_pool.TooManyRequests):
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

    Wraps synchronous and awaited work alike (`with` around `await`). The work before may have been
    done; the client's retry with the same idempotence key is answered with it. Any other error
    (the statement's data, a bug) goes through unchanged.
    """
    try:
        yield
    except DATABASE_ERRORS as error:
        if is_outage(error):
            raise ServiceUnavailable(outage_message(database, error)) from error
        raise
