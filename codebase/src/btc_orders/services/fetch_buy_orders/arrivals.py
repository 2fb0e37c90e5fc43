"""Read your own write: requests waiting for orders to land in the read model, woken by NOTIFY.

One LISTEN connection per process, read from the event loop (`add_reader`): the read model's
trigger notifies `buy_order_view_inserted` once per projected batch with the new ids (migration
0003), and only the waiters of those ids are woken; each then reads its order once. Waiting
requests never poll the database. The number of waiters is bounded: past the bound (or while the
listening connection is down) a request is answered at once, as without `Prefer: wait`.

A lost connection is reopened with backoff; every waiter is then woken to look once, since what
was notified in between is lost.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import anyio
import anyio.to_thread
import psycopg2
import psycopg2.extensions

from btc_orders import logs

log = logging.getLogger(__name__)

CHANNEL = "buy_order_view_inserted"
EVERYTHING = "*"  # a notification meaning: many rows landed, every waiter looks
_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)

Connect = Callable[[], psycopg2.extensions.connection]


class Arrivals:
    def __init__(self, connect: Connect, max_waiters: int) -> None:
        self._connect = connect
        self.max_waiters = max_waiters
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._count = 0
        self._connection: psycopg2.extensions.connection | None = None
        self._fd: int | None = None  # the connection's socket, kept: a closed connection has no fileno()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()

    @property
    def listening(self) -> bool:
        return self._connection is not None

    @property
    def waiting(self) -> int:
        return self._count

    async def start(self) -> None:
        """Listen from now on (in the background: a database away at start is retried)."""
        self._loop = asyncio.get_running_loop()
        self._keeper = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
        self._close()

    @contextmanager
    def wait_for(self, order_id: uuid.UUID) -> Iterator[asyncio.Event | None]:
        """An event set when `order_id` may have landed; None when no wait can be offered."""
        if not self.listening or self._count >= self.max_waiters:
            yield None
            return
        key = str(order_id)
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        self._count += 1
        try:
            yield event
        finally:
            self._count -= 1
            waiters = self._waiters[key]
            waiters.discard(event)
            if not waiters:
                del self._waiters[key]

    async def _keep_listening(self) -> None:
        attempt = 0
        while True:
            try:
                connection = await anyio.to_thread.run_sync(self._open, limiter=anyio.CapacityLimiter(1))
            except psycopg2.Error as error:
                delay = _BACKOFF_SECONDS[min(attempt, len(_BACKOFF_SECONDS) - 1)]
                attempt += 1
                logs.event(log, "listen_failed", logging.WARNING, reason=str(error).strip(), retry_in_s=delay)
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._connection, self._fd = connection, connection.fileno()
            self._lost.clear()
            assert self._loop is not None
            self._loop.add_reader(self._fd, self._readable)
            logs.event(log, "listening", channel=CHANNEL)
            self._wake_all()  # what landed while nobody listened was not notified: look once
            await self._lost.wait()

    def _open(self) -> psycopg2.extensions.connection:
        connection = self._connect()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        return connection

    def _readable(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            connection.poll()
        except psycopg2.Error as error:  # the server went away (or the network): listen again
            logs.event(log, "listen_lost", logging.WARNING, reason=str(error).strip())
            self._close()
            self._wake_all()
            self._lost.set()
            return
        notifies: list[Any] = connection.notifies
        while notifies:
            payload: str = notifies.pop(0).payload
            if payload == EVERYTHING:
                self._wake_all()
                continue
            for key in payload.split(","):
                for event in self._waiters.get(key, ()):
                    event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        fd, self._fd = self._fd, None
        if self._loop is not None and fd is not None:
            # before anything else: a reader left on a dead socket would be called in a busy loop
            self._loop.remove_reader(fd)
        if connection is not None:
            with suppress(psycopg2.Error):
                connection.close()


def preferred_wait(prefer_headers: list[str]) -> int | None:
    """The `wait` preference of RFC 7240 (delta-seconds), or None when absent or malformed.

    A preference given twice counts once, the first time (RFC 7240 section 2); one the server
    cannot read is ignored, as the RFC asks, not refused.
    """
    for header in prefer_headers:
        for preference in header.split(","):
            name, _, value = preference.split(";", 1)[0].partition("=")
            if name.strip().lower() != "wait":
                continue
            value = value.strip().strip('"')
            return int(value) if value.isascii() and value.isdigit() else None
    return None
