"""The write model: store an order with its cap deduction and outbox event in one transaction."""

import random
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.domain import cap, money
from btc_orders.domain.errors import BtcCapExceeded
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest
from btc_orders.events import EVENT_TYPE, created_event

_FIND_BY_KEY = text(
    """
    SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
    FROM buy_order
    WHERE idempotence_key = :key
    """
)

# ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit
# or roll back: two requests with one key never both store an order.
_INSERT_ORDER = text(
    """
    INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
    VALUES (:id, :key, :currency, :amount, :exchange_rate, :bitcoin_amount, :request_id)
    ON CONFLICT (idempotence_key) DO NOTHING
    RETURNING sequence, created_at
    """
)

# The fast path: take the order's BTC from one slot, if that slot holds enough.
# Under READ COMMITTED a concurrent update of the slot is waited for and the
# condition re-checked on the new row, so the slot never goes below zero.
_TAKE_FROM_SLOT = text(
    """
    UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - :satoshis
    WHERE slot = :slot AND remaining_satoshis >= :satoshis
    """
)

# The slow path: lock every slot (always in slot order, so two such transactions
# cannot deadlock), then take from the total and spread what is left.
_LOCK_ALL_SLOTS = text("SELECT slot, remaining_satoshis FROM cap_slot ORDER BY slot FOR UPDATE")
_SET_SLOT = text("UPDATE cap_slot SET remaining_satoshis = :remaining WHERE slot = :slot")

_INSERT_OUTBOX = text(
    """
    INSERT INTO outbox (event_id, order_sequence, routing_key, payload, request_id)
    VALUES (:event_id, :sequence, :routing_key, :payload, :request_id)
    """
)


class WriteModel:
    """Orders, the cap ledger and the outbox in the write-model database."""

    def __init__(self, engine: Engine, slot_count: int = 16, choose: Callable[[int], int] | None = None) -> None:
        self.engine = engine
        self.slot_count = slot_count
        self._choose = choose or random.randrange
        self.cap_satoshis: int | None = None  # set by ensure_cap

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        with unavailable_on_outage("write-model"), self.engine.connect() as connection:
            row = connection.execute(_FIND_BY_KEY, {"key": idempotence_key}).one_or_none()
        return _order_from_row(row) if row else None

    def place(self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None) -> tuple[BuyOrder, bool]:
        """Store the order priced at `exchange_rate`, or return the one its key already names.

        Returns `(order, created)`. Raises `BtcCapExceeded` when the order does
        not fit under the cap; nothing is stored then and the key stays unused.
        """
        satoshis = money.bitcoin_satoshis(request.amount, exchange_rate)
        bitcoin_amount = money.satoshis_to_btc(satoshis)
        if self.cap_satoshis is not None and satoshis > self.cap_satoshis:
            # More than the whole cap: refused without a transaction (and without
            # asking the database to store a number wider than its column).
            status = self.cap_status()
            raise BtcCapExceeded(requested=bitcoin_amount, available=status[1] if status else Decimal(0))
        with unavailable_on_outage("write-model"):
            try:
                return self._place_once(request, exchange_rate, satoshis, request_id, take=self._take_from_one_slot)
            except _SlotTooLow:
                # Rolled back, so no slot row stays locked; now lock them all, in order.
                return self._place_once(request, exchange_rate, satoshis, request_id, take=self._take_from_all_slots)

    def _place_once(
        self,
        request: OrderRequest,
        exchange_rate: Decimal,
        satoshis: int,
        request_id: str | None,
        take: Callable[[Connection, int], None],
    ) -> tuple[BuyOrder, bool]:
        order_id = uuid.uuid4()
        bitcoin_amount = money.satoshis_to_btc(satoshis)
        with self.engine.begin() as connection:
            inserted = connection.execute(
                _INSERT_ORDER,
                {
                    "id": order_id,
                    "key": request.idempotence_key,
                    "currency": request.currency.value,
                    "amount": request.amount,
                    "exchange_rate": exchange_rate,
                    "bitcoin_amount": bitcoin_amount,
                    "request_id": request_id,
                },
            ).one_or_none()
            if inserted is None:
                existing = connection.execute(_FIND_BY_KEY, {"key": request.idempotence_key}).one()
                return _order_from_row(existing), False
            take(connection, satoshis)
            order = BuyOrder(
                id=order_id,
                sequence=inserted.sequence,
                created_at=inserted.created_at,
                currency=request.currency,
                amount=request.amount,
                exchange_rate=exchange_rate,
                bitcoin_amount=bitcoin_amount,
                idempotence_key=request.idempotence_key,
            )
            event_id = uuid.uuid4()
            connection.execute(
                _INSERT_OUTBOX,
                {
                    "event_id": event_id,
                    "sequence": order.sequence,
                    "routing_key": EVENT_TYPE,
                    "payload": created_event(order, event_id, request_id),
                    "request_id": request_id,
                },
            )
        return order, True

    def _take_from_one_slot(self, connection: Connection, satoshis: int) -> None:
        slot = self._choose(self.slot_count)
        if connection.execute(_TAKE_FROM_SLOT, {"slot": slot, "satoshis": satoshis}).rowcount != 1:
            # The failed UPDATE may still hold the slot's row lock (Postgres locks the
            # newest row version before re-checking the condition): give up this
            # transaction rather than lock other slots while holding it.
            raise _SlotTooLow

    def _take_from_all_slots(self, connection: Connection, satoshis: int) -> None:
        slots = connection.execute(_LOCK_ALL_SLOTS).all()
        total = sum(row.remaining_satoshis for row in slots)
        if total < satoshis:
            raise BtcCapExceeded(requested=money.satoshis_to_btc(satoshis), available=money.satoshis_to_btc(total))
        parts = cap.spread(total - satoshis, len(slots))
        connection.execute(
            _SET_SLOT, [{"slot": row.slot, "remaining": part} for row, part in zip(slots, parts, strict=True)]
        )

    def ensure_cap(self, cap_satoshis: int) -> None:
        """Make the ledger hold `cap_satoshis` across `slot_count` slots.

        Safe to run from every replica at start: it serialises on the ledger row
        and on every slot, and counts what stored orders use from the orders
        themselves. Does nothing when the ledger already matches.
        """
        with unavailable_on_outage("write-model"), self.engine.begin() as connection:
            connection.execute(text("INSERT INTO cap_ledger (cap_satoshis) VALUES (0) ON CONFLICT DO NOTHING"))
            current = connection.execute(text("SELECT cap_satoshis FROM cap_ledger FOR UPDATE")).scalar_one()
            slots = connection.execute(_LOCK_ALL_SLOTS).all()
            if current == cap_satoshis and len(slots) == self.slot_count and slots:
                self.cap_satoshis = cap_satoshis
                return
            used_btc = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
            left = cap.remaining(cap_satoshis, money.btc_to_satoshis(used_btc))
            connection.execute(text("DELETE FROM cap_slot"))
            connection.execute(
                text("INSERT INTO cap_slot (slot, remaining_satoshis) VALUES (:slot, :remaining)"),
                [{"slot": slot, "remaining": part} for slot, part in enumerate(cap.spread(left, self.slot_count))],
            )
            connection.execute(text("UPDATE cap_ledger SET cap_satoshis = :cap"), {"cap": cap_satoshis})
        self.cap_satoshis = cap_satoshis

    def cap_status(self) -> tuple[Decimal, Decimal] | None:
        """(cap, still available) in BTC as the ledger holds them now; None before `ensure_cap` ever ran."""
        with unavailable_on_outage("write-model"), self.engine.connect() as connection:
            cap_satoshis = connection.execute(text("SELECT cap_satoshis FROM cap_ledger")).scalar_one_or_none()
            left = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
        if cap_satoshis is None:
            return None
        return money.satoshis_to_btc(cap_satoshis), money.satoshis_to_btc(int(left))


class _SlotTooLow(Exception):
    """The chosen slot cannot cover the order; retry locking every slot."""


def _order_from_row(row: Row[Any]) -> BuyOrder:
    return BuyOrder(
        id=row.id,
        sequence=row.sequence,
        created_at=row.created_at,
        currency=Currency(row.currency),
        amount=row.amount,
        exchange_rate=row.exchange_rate,
        bitcoin_amount=row.bitcoin_amount,
        idempotence_key=row.idempotence_key,
    )
