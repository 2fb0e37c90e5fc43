"""Placing an order (SPEC 3.1): the idempotence rule, pricing before the transaction, one short write.

`place_buy_order` handles the `PlaceBuyOrder` command against two ports, a `RateSource` and an
`OrderStore`, and raises domain errors only: no HTTP here (the key's HTTP rules, header or body,
are `app.py`'s). The adapters are `BtcPriceClient` and `WriteModel`; the unit tests use fakes.

`place_buy_order_on_loop` is the same command for an `async` route: the common case (a rate at
hand, the order settled by one statement) is awaited on the event loop, anything else is
`place_buy_order`'s work on a thread. The rules are the same on both paths, and tested on both.
"""

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Protocol

from btc_orders import logs, metrics
from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.domain.errors import (
    BtcCapExceeded,
    DomainError,
    IdempotenceKeyReused,
    OrderInFlight,
    RateUnavailable,
)
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest


class RateSource(Protocol):
    """Fiat per BTC now, or `RateUnavailable`."""

    def rate(self, currency: Currency, request_id: str | None = None) -> Decimal: ...

    def reusable_rate(self, currency: Currency, request_id: str | None = None) -> Decimal | None:
        """The rate `rate` would give without waiting for anything, or None (`rate` must fetch)."""


class OrderStore(Protocol):
    """Where orders are kept: `place` stores one under the cap (or `BtcCapExceeded`) and returns
    `(order, created)`, the order the key already names with `created` False."""

    def place(self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None) -> tuple[BuyOrder, bool]: ...

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None: ...

    async def place_on_loop(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool] | None:
        """What `place` would return, awaited on the event loop; or None when it cannot be settled
        that way (nothing stored): then `place` is called, on a thread."""


InThread = Callable[..., Awaitable[Any]]  # `in_thread(function, *args)`: the call on a thread, awaited


log = logging.getLogger(__name__)


class KeysInFlight:
    """The idempotence keys of the requests this process is placing right now.

    The write model waits for another attempt with a key once that attempt is in the database;
    before that (while it is being priced) only its own process knows of it.
    """

    def __init__(self) -> None:
        self._counts: Counter[uuid.UUID] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def placing(self, key: uuid.UUID) -> Iterator[Callable[[], bool]]:
        """Count a request with `key` in flight; yields "is another one in flight too?"."""
        with self._lock:
            self._counts[key] += 1
        try:
            yield lambda: self._others(key)
        finally:
            with self._lock:
                self._counts[key] -= 1
                if not self._counts[key]:
                    del self._counts[key]

    def _others(self, key: uuid.UUID) -> bool:
        with self._lock:
            return self._counts[key] > 1


IN_FLIGHT = KeysInFlight()


def place_buy_order(
    command: PlaceBuyOrder, rates: RateSource, orders: OrderStore, in_flight: KeysInFlight = IN_FLIGHT
) -> tuple[BuyOrder, bool]:
    """Store the order, or replay the one its key names. Returns `(order, created)`."""
    request = command.request
    try:
        with in_flight.placing(request.idempotence_key) as others_in_flight:
            stored, created = _store(command, rates, orders, others_in_flight)
        return _answer(request, stored, created)
    except DomainError as error:
        metrics.ORDERS_REJECTED.labels(error.code).inc()
        raise


async def place_buy_order_on_loop(
    command: PlaceBuyOrder,
    rates: RateSource,
    orders: OrderStore,
    in_thread: InThread,
    in_flight: KeysInFlight = IN_FLIGHT,
) -> tuple[BuyOrder, bool]:
    """`place_buy_order`, with its common case awaited on the event loop and the rest on a thread.

    The key is counted in flight once, from pricing to the answer, whichever path settles it.
    """
    request = command.request
    try:
        with in_flight.placing(request.idempotence_key) as others_in_flight:
            placed = None
            rate = rates.reusable_rate(request.currency, command.request_id)
            if rate is not None:
                placed = await orders.place_on_loop(request, rate, command.request_id)
            if placed is None:  # priced once: the thread uses the rate at hand, if there was one
                placed = await in_thread(_store, command, rates, orders, others_in_flight, rate)
            stored, created = placed
        return _answer(request, stored, created)
    except DomainError as error:
        metrics.ORDERS_REJECTED.labels(error.code).inc()
        raise


def _store(
    command: PlaceBuyOrder,
    rates: RateSource,
    orders: OrderStore,
    others_in_flight: Callable[[], bool],
    rate: Decimal | None = None,
) -> tuple[BuyOrder, bool]:
    """The order stored at `rate` (None: the rate source's now), or the one its key names.

    `others_in_flight`: is another attempt with the key in flight in this process?
    """
    request = command.request
    try:
        if rate is None:
            rate = rates.rate(request.currency, command.request_id)  # before the transaction opens
        return orders.place(request, rate, command.request_id)
    except (RateUnavailable, BtcCapExceeded) as error:
        # A replay is answered whatever the rate is now, or whether there is one.
        existing = orders.find_by_key(request.idempotence_key)
        if existing is None:
            if isinstance(error, BtcCapExceeded) and others_in_flight():
                # Final answers only once the key's fate is known: the other attempt may yet store it.
                raise OrderInFlight(
                    f"another request with idempotence_key {request.idempotence_key} is being placed; "
                    "retry to learn its outcome",
                    retry_after=1,
                ) from error
            raise
        return existing, False


def _answer(request: OrderRequest, stored: BuyOrder, created: bool) -> tuple[BuyOrder, bool]:
    """The request's answer once its key's order is known: refused if it is another order."""
    if not stored.matches(request):
        raise IdempotenceKeyReused(
            f"idempotence_key {request.idempotence_key} already names an order of "
            f"{stored.resource()['amount']} {stored.currency.value}; use a new key for a different order"
        )
    if created:
        metrics.ORDERS_CREATED.labels(stored.currency.value).inc()
        logs.event(
            log,
            "order_created",
            order_id=str(stored.id),
            sequence=stored.sequence,
            currency=stored.currency.value,
            amount=stored.amount,
            exchange_rate=stored.exchange_rate,
            bitcoin_amount=stored.bitcoin_amount,
        )
    else:
        metrics.ORDERS_REPLAYED.inc()
        logs.event(log, "order_replayed", order_id=str(stored.id))
    return stored, created
