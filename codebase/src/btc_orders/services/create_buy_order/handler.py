"""Placing an order (SPEC 3.1): the idempotence rule, pricing before the write, one short write.

`place_buy_order` handles the `PlaceBuyOrder` command against two ports, a `RateSource` and an
`OrderStore`, and raises domain errors only: no HTTP here (the key's HTTP rules, header or body,
are `app.py`'s). The adapters are `BtcPriceClient` and `WriteModel`; the unit tests use fakes.
Everything is awaited on the event loop.
"""

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Protocol

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

    async def rate(self, currency: Currency, request_id: str | None = None) -> Decimal: ...


class OrderStore(Protocol):
    """Where orders are kept: `place` stores one under the cap (or `BtcCapExceeded`) and returns
    `(order, created)`, the order the key already names with `created` False."""

    async def place(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool]: ...

    async def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None: ...


log = logging.getLogger(__name__)


class KeysInFlight:
    """The idempotence keys of the requests this process is placing right now.

    The write model waits for another attempt with a key once that attempt is in the database;
    before that (while it is being priced) only its own process knows of it. Used on the event
    loop only (no lock).
    """

    def __init__(self) -> None:
        self._counts: Counter[uuid.UUID] = Counter()

    @contextmanager
    def placing(self, key: uuid.UUID) -> Iterator[Callable[[], bool]]:
        """Count a request with `key` in flight; yields "is another one in flight too?"."""
        self._counts[key] += 1
        try:
            yield lambda: self._counts[key] > 1
        finally:
            self._counts[key] -= 1
            if not self._counts[key]:
                del self._counts[key]


IN_FLIGHT = KeysInFlight()


async def place_buy_order(
    command: PlaceBuyOrder, rates: RateSource, orders: OrderStore, in_flight: KeysInFlight = IN_FLIGHT
) -> tuple[BuyOrder, bool]:
    """Store the order, or replay the one its key names. Returns `(order, created)`."""
    request = command.request
    try:
        with in_flight.placing(request.idempotence_key) as others_in_flight:
            stored, created = await _store(command, rates, orders, others_in_flight)
        return _answer(request, stored, created)
    except DomainError as error:
        metrics.ORDERS_REJECTED.labels(error.code).inc()
        raise


async def _store(
    command: PlaceBuyOrder, rates: RateSource, orders: OrderStore, others_in_flight: Callable[[], bool]
) -> tuple[BuyOrder, bool]:
    """The order stored at the rate now, or the one its key names.

    `others_in_flight`: is another attempt with the key in flight in this process?
    """
    request = command.request
    try:
        rate = await rates.rate(request.currency, command.request_id)  # before the write
        return await orders.place(request, rate, command.request_id)
    except (RateUnavailable, BtcCapExceeded) as error:
        # A replay is answered whatever the rate is now, or whether there is one.
        existing = await orders.find_by_key(request.idempotence_key)
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
