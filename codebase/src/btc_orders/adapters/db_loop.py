"""Prepared statements awaited on the event loop: a few of psycopg2's asynchronous connections.

The create path's common case is one prepared statement (`write_model._PLACE_IN_ONE_STATEMENT`).
Handing it to a thread and back cost about a fifth of the service's CPU per order (a futex
wake-up of the pool thread, the interpreter lock passed twice, the loop woken through its
self-pipe: tuning log in docs/benchmarks.md). Here the statement is sent on a connection in
asynchronous mode and its answer awaited with the loop's own `add_reader`/`add_writer`, as aiopg
does, on the project's one driver.

Bounds, the same as the pooled connections' (`db.create_engine`):
- at most `size` connections, opened when first needed and kept; when every one is busy the
  caller is told at once (`NoConnectionFree`) and takes the thread path, whose pool answers a
  503 when it too stays full: a request never waits here;
- the connect is bounded by `db.CONNECT_TIMEOUT_SECONDS` here (libpq's `connect_timeout` does not
  apply to an asynchronous connect), and it starts on a thread (the host name is resolved there,
  never on the loop);
- a statement is bounded by the server's `statement_timeout` and, for a server that went silent,
  by the socket's keepalives and `TCP_USER_TIMEOUT` (`db.connect_args`, as every connection);
- a connection that is lost, or that a cancelled request left in the middle of a statement, is
  closed and forgotten, and the idle ones with it after a loss (they died with the server);
- a statement the server forgot (`DEALLOCATE`, `DISCARD ALL`) is prepared again and run once more.

Errors are psycopg2's, as from `db.fetch_prepared`: the caller maps outages with
`db.unavailable_on_outage`. Every method runs on the event loop's thread only.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from btc_orders.adapters import db


def connections_on_loop(pool_size: int) -> int:
    """How many of an HTTP worker's `DB_POOL_SIZE` connections serve statements awaited on the event
    loop (three quarters: 15 of 20); the others, at least one, serve its threads (`web.in_thread`).
    The worker's total stays `DB_POOL_SIZE`.

    Measured at 32 clients (tuning log in docs/benchmarks.md): with half on the loop, a saturated
    worker found them all busy often enough (a connection is held until the loop gets round to
    its answer) that the orders handed to threads took back the gain; three quarters did as well
    as all of them."""
    return pool_size - max(1, pool_size // 4)


class NoConnectionFree(Exception):
    """Every connection is busy with a statement (or they are closed): take the thread path."""


@dataclass(eq=False)
class _Connection:
    raw: Any  # psycopg2.extensions.connection, in asynchronous mode (always autocommit)
    prepared: set[str] = field(default_factory=set)  # the statements prepared on it, plus PLAN_SETTINGS


class LoopConnections:
    def __init__(self, url: str, size: int, application_name: str) -> None:
        self.size = size
        self._dsn = db.libpq_url(url)
        self._connect_args = db.connect_args(application_name)
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or being opened, idle or busy
        self._closed = False

    @property
    def open(self) -> int:
        return self._open

    async def fetch_prepared(self, prepared: db.Prepared, values: Sequence[Any]) -> tuple[Any, ...] | None:
        """The first row (None: no row) of `prepared` run with `values`, awaited on the loop.

        `NoConnectionFree` at once when all `size` connections are busy.
        """
        connection = await self._take()
        try:
            row = await self._run(connection, prepared, values)
        except psycopg2.Error:
            if connection.raw.closed:  # lost with the server: so are the idle ones
                self._forget(connection)
                self._close_idle()
            else:  # the server refused the statement; the connection is as good as before
                self._give_back(connection)
            raise
        except BaseException:  # cancelled (or a bug) in the middle of a statement: never reused
            self._forget(connection, cancel=True)
            raise
        self._give_back(connection)
        return row

    async def close(self) -> None:
        """Close the idle connections now and each busy one when its statement ends."""
        self._closed = True
        self._close_idle()

    async def _take(self) -> _Connection:
        if self._closed:
            raise NoConnectionFree("closed")
        if self._idle:
            return self._idle.pop()
        if self._open >= self.size:
            raise NoConnectionFree(f"all {self.size} connections are busy")
        self._open += 1
        try:
            return _Connection(await self._connect())
        except BaseException:
            self._open -= 1
            raise

    async def _connect(self) -> Any:
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(None, lambda: psycopg2.connect(self._dsn, async_=True, **self._connect_args))
        try:
            await asyncio.wait_for(_wait(raw), db.CONNECT_TIMEOUT_SECONDS)
        except TimeoutError:
            raw.close()
            raise psycopg2.OperationalError(
                f"connection to the server timed out after {db.CONNECT_TIMEOUT_SECONDS} s"
            ) from None
        except BaseException:
            raw.close()
            raise
        return raw

    async def _run(
        self, connection: _Connection, prepared: db.Prepared, values: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        try:
            return await self._execute_prepared(connection, prepared, values)
        except psycopg2.errors.InvalidSqlStatementName:  # forgotten behind our back: it never ran
            connection.prepared.clear()
            return await self._execute_prepared(connection, prepared, values)

    async def _execute_prepared(
        self, connection: _Connection, prepared: db.Prepared, values: Sequence[Any]
    ) -> tuple[Any, ...] | None:
        cursor = connection.raw.cursor()
        try:
            if db.PLAN_SETTINGS not in connection.prepared:
                cursor.execute(db.PLAN_SETTINGS)
                await _wait(connection.raw)
                connection.prepared.add(db.PLAN_SETTINGS)
            if prepared.name not in connection.prepared:
                cursor.execute(prepared.prepare)
                await _wait(connection.raw)
                connection.prepared.add(prepared.name)
            cursor.execute(prepared.execute, values)
            await _wait(connection.raw)
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
        finally:
            cursor.close()

    def _give_back(self, connection: _Connection) -> None:
        if self._closed:
            self._forget(connection)
        else:
            self._idle.append(connection)

    def _forget(self, connection: _Connection, cancel: bool = False) -> None:
        """Close `connection`; `cancel`: ask the server to stop its statement first (on a thread:
        a cancel request is a connection of its own). A closed socket alone is not noticed by a
        server busy with a statement (a lock wait, a sleep) until that statement ends."""
        self._open -= 1
        if cancel and not connection.raw.closed:
            asyncio.get_running_loop().run_in_executor(None, _cancel_and_close, connection.raw)
        else:
            connection.raw.close()

    def _close_idle(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            self._forget(connection)


def _cancel_and_close(raw: Any) -> None:
    try:
        raw.cancel()
    except psycopg2.Error:
        pass  # the server is gone too, or the statement ended: closing is all that is left
    finally:
        raw.close()


async def _wait(raw: Any) -> None:
    """Drive `raw` (an asynchronous connection) until its connect or statement is done."""
    loop = asyncio.get_running_loop()
    while True:
        state = raw.poll()  # raises the statement's or the connection's error
        if state == psycopg2.extensions.POLL_OK:
            return
        ready = loop.create_future()

        def wake(ready: asyncio.Future[None] = ready) -> None:
            if not ready.done():
                ready.set_result(None)

        fd = raw.fileno()
        reading = state == psycopg2.extensions.POLL_READ  # else POLL_WRITE
        (loop.add_reader if reading else loop.add_writer)(fd, wake)
        try:
            await ready
        finally:
            (loop.remove_reader if reading else loop.remove_writer)(fd)
