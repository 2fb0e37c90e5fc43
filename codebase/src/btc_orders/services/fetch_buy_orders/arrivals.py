"""Read your own write: requests waiting for orders to land in the read model, woken by NOTIFY.

One LISTEN connection per process, outside the pool: a psycopg `AsyncConnection` in autocommit
whose notifications are awaited on the event loop. The read model's trigger notifies
`buy_order_view_inserted` once per projected batch with the new ids (migration 0003), and only
the waiters of those ids are woken; each then reads its order once. Waiting requests never poll
the database. The number of waiters is bounded: past the bound (or while the listening connection
is down) a request is answered at once, as without `Prefer: wait`.

A lost connection (found at once when the server closes it, within seconds by the keepalives of
`db.connect_args` when the network goes silent) is reopened with bounded backoff; every waiter is
woken as it is lost and again once listening resumes, to look once, since what was notified in
between is lost.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

from btc_orders import logs
from btc_orders.adapters import db

log = logging.getLogger(__name__)

CHANNEL = "buy_order_view_inserted"
EVERYTHING = "*"  # a notification meaning: many rows landed, every waiter looks
_BACKOFF_SECONDS = (0.2, 0.5, 1.0, 2.0)

Connect = Callable[[], Awaitable[psycopg.AsyncConnection[Any]]]


def connector(url: str, application_name: str) -> Connect:
    """Opens the LISTEN connection: autocommit (never idle in a transaction), the suite's connection
    parameters (a connect deadline; keepalives: a silently dead network is noticed in seconds)."""
    target = db.conninfo(url)
    arguments = db.connect_args(application_name)

    async def connect() -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(target, autocommit=True, **arguments)

    return connect


class Arrivals:
    def __init__(self, connect: Connect, max_waiters: int) -> None:
        self._connect = connect
        self.max_waiters = max_waiters
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._count = 0
        self._listening = False
        self._keeper: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._listening

    @property
    def waiting(self) -> int:
        return self._count

    async def start(self) -> None:
        """Listen from now on (in the background: a database away at start is retried)."""
        self._keeper = asyncio.create_task(self._keep_listening())

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None

    @contextmanager
    def wait_for(self, order_id: uuid.UUID) -> Iterator[asyncio.Event | None]:
        """An event set when `order_id` may have landed; None when no wait can be offered."""
        if not self._listening or self._count >= self.max_waiters:
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
            connection: psycopg.AsyncConnection[Any] | None = None
            try:
                connection = await self._connect()
                await connection.execute(f"LISTEN {CHANNEL}")
                attempt = 0
                self._listening = True
                logs.event(log, "listening", channel=CHANNEL)
                self._wake_all()  # what landed while nobody listened was not notified: look once
                async for notify in connection.notifies():
                    self._landed(notify.payload)
            except psycopg.Error as error:  # refused, or lost (the server went away, or the network)
                lost = self._listening
                await self._stopped_listening(connection)
                delay = _BACKOFF_SECONDS[min(attempt, len(_BACKOFF_SECONDS) - 1)]
                attempt += 1
                event = "listen_lost" if lost else "listen_failed"
                logs.event(log, event, logging.WARNING, reason=db.first_line(error), retry_in_s=delay)
                await asyncio.sleep(delay)
            finally:
                await self._stopped_listening(connection)

    async def _stopped_listening(self, connection: psycopg.AsyncConnection[Any] | None) -> None:
        """Offer no more waits, and wake every waiter to look once: a landing may go unnotified now."""
        if self._listening:
            self._listening = False
            self._wake_all()
        if connection is not None:
            with suppress(psycopg.Error):
                await connection.close()

    def _landed(self, payload: str) -> None:
        if payload == EVERYTHING:
            self._wake_all()
            return
        for key in payload.split(","):
            for event in self._waiters.get(key, ()):
                event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()


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
