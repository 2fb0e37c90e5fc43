"""The write model for synchronous tests (the relay's, the projector's, the admin's): orders placed by
the service's own asynchronous `WriteModel` and `CapLedger`, awaited on one event loop of the test
process's, each call on a connection of its own (nothing is left open between calls).

`WriteModel(engine_or_url, slot_count=16, choose=None)` has the methods the old synchronous one had:
`ensure_cap`, `place`, `find_by_key`, `capacity`, `cap_status`, and its `slots` and `cap_satoshis`.
Safe to call from several threads at once.
"""

import asyncio
import concurrent.futures
import contextlib
import threading
import uuid
import weakref
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any, TypeVar

import psycopg_pool
from sqlalchemy import Engine

from btc_orders.adapters import db
from btc_orders.adapters import write_model as write_model_module
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.domain.orders import BuyOrder, OrderRequest

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _shared_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="test-write-model", daemon=True).start()
        return _loop


def _run(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(work, _shared_loop()).result(60)


def _close(pool: psycopg_pool.AsyncNullConnectionPool) -> None:
    """Close `pool` on the shared loop (when its write model is collected, or the process exits)."""
    if _loop is not None and _loop.is_running():
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(pool.close(), _loop).result(5)


def _conninfo(target: Engine | str) -> str:
    if isinstance(target, str):
        return db.conninfo(target)
    with target.connect() as connection:  # the engine's database, as libpq's key=value string
        dsn: str = connection.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
    return dsn


class WriteModel:
    def __init__(self, target: Engine | str, slot_count: int = 16, choose: Callable[[int], int] | None = None) -> None:
        conninfo = _conninfo(target)

        async def build() -> tuple[psycopg_pool.AsyncNullConnectionPool, CapLedger, write_model_module.WriteModel]:
            pool = psycopg_pool.AsyncNullConnectionPool(
                conninfo,
                kwargs={**db.connect_args("test_write_model"), "autocommit": True},
                max_size=64,
                open=False,
                timeout=30,
            )
            await pool.open()
            ledger = CapLedger(pool, slot_count, choose)
            return pool, ledger, write_model_module.WriteModel(pool, ledger)

        self._pool, self.ledger, self._orders = _run(build())
        weakref.finalize(self, _close, self._pool)

    @property
    def slots(self) -> tuple[int, ...]:
        return self.ledger.slots

    @property
    def cap_satoshis(self) -> int | None:
        return self.ledger.cap_satoshis

    def ensure_cap(self, cap_satoshis: int) -> None:
        _run(self.ledger.ensure_cap(cap_satoshis))

    def place(self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None) -> tuple[BuyOrder, bool]:
        return _run(self._orders.place(request, exchange_rate, request_id))

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        return _run(self._orders.find_by_key(idempotence_key))

    def capacity(self) -> tuple[int, int] | None:
        return _run(self.ledger.capacity())

    def cap_status(self) -> tuple[Decimal, Decimal] | None:
        return _run(self.ledger.cap_status())
