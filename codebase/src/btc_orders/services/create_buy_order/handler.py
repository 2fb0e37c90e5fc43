"""Placing an order: the idempotence rule, pricing before the transaction, one short write."""

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi.exceptions import RequestValidationError

from btc_orders import logs, metrics
from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain.errors import (
    BtcCapExceeded,
    DomainError,
    IdempotenceKeyConflict,
    IdempotenceKeyReused,
    OrderInFlight,
    RateUnavailable,
)
from btc_orders.domain.orders import BuyOrder, OrderRequest
from btc_orders.services.create_buy_order.schemas import BuyOrderRequest

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
    body: BuyOrderRequest,
    header_key: uuid.UUID | None,
    prices: BtcPriceClient,
    write_model: WriteModel,
    request_id: str | None,
) -> tuple[BuyOrder, bool]:
    """Store the order, or replay the one its key names. Returns `(order, created)`."""
    try:
        stored, created = _place(body, header_key, prices, write_model, request_id)
    except DomainError as error:
        metrics.ORDERS_REJECTED.labels(error.code).inc()
        raise
    if created:
        metrics.ORDERS_CREATED.labels(stored.currency.value).inc()
    else:
        metrics.ORDERS_REPLAYED.inc()
    return stored, created


def _place(
    body: BuyOrderRequest,
    header_key: uuid.UUID | None,
    prices: BtcPriceClient,
    write_model: WriteModel,
    request_id: str | None,
) -> tuple[BuyOrder, bool]:
    request = OrderRequest(body.currency, body.amount, _idempotence_key(body.idempotence_key, header_key))

    with IN_FLIGHT.placing(request.idempotence_key) as others_in_flight:
        try:
            rate = prices.rate(request.currency, request_id)  # before the transaction opens
            stored, created = write_model.place(request, rate, request_id)
        except (RateUnavailable, BtcCapExceeded) as error:
            # A replay is answered whatever the rate is now, or whether there is one.
            existing = write_model.find_by_key(request.idempotence_key)
            if existing is None:
                if isinstance(error, BtcCapExceeded) and others_in_flight():
                    # Final answers only once the key's fate is known: the other attempt may yet store it.
                    raise OrderInFlight(
                        f"another request with idempotence_key {request.idempotence_key} is being placed; "
                        "retry to learn its outcome",
                        retry_after=1,
                    ) from error
                raise
            stored, created = existing, False

    if not stored.matches(request):
        raise IdempotenceKeyReused(
            f"idempotence_key {request.idempotence_key} already names an order of "
            f"{stored.resource()['amount']} {stored.currency.value}; use a new key for a different order"
        )
    if created:
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
        logs.event(log, "order_replayed", order_id=str(stored.id))
    return stored, created


def _idempotence_key(body_key: uuid.UUID | None, header_key: uuid.UUID | None) -> uuid.UUID:
    if body_key is not None and header_key is not None and body_key != header_key:
        raise IdempotenceKeyConflict(
            "the Idempotency-Key header and the body's idempotence_key differ; send one, or the same in both"
        )
    key = body_key or header_key
    if key is None:
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("body", "idempotence_key"),
                    "msg": "Field required: give idempotence_key (a UUID) in the body or the Idempotency-Key header",
                    "input": None,
                }
            ]
        )
    return key
