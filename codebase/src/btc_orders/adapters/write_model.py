"""The write model: store an order with its cap deduction and outbox event in one transaction."""

import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Row, text
from sqlalchemy.exc import IntegrityError

from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.domain import cap, money
from btc_orders.domain.errors import BtcCapExceeded
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest, format_timestamp
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

# The fast path, in ONE statement and one round trip (run in autocommit: no BEGIN, no COMMIT
# of its own; the statement is atomic). Result row: `replayed_*` set when the key already
# names a stored order; `sequence` set when the order was stored; neither when the chosen
# slot cannot cover the order (nothing stored, no lock left): take the slow path.
#
# `s` takes the order's BTC from one slot if that slot holds enough. Under READ COMMITTED a
# concurrent update of the slot is waited for and the condition re-checked on the newest
# row, so the slot never goes below zero. The order is inserted only from `s`'s row. A key
# that is stored already (visible to this statement) takes nothing and stores nothing. A key
# being stored by a concurrent transaction makes the INSERT wait for it; if that commits, the
# INSERT fails on the unique key and the whole statement is undone, slot included (the caller
# answers with the stored order). Locks are taken in one order on every path, slots before
# the key (the slow path locks every slot, then inserts): a same-key race cannot deadlock.
#
# The event payload is the exact text `events.created_event` makes: Python renders it around
# the two values only the database knows (`sequence`, `created_at`), which are spliced in here;
# `created_at` is rendered as `orders.format_timestamp` does (UTC, microseconds, `Z`).
_PLACE_IN_ONE_STATEMENT = text(
    r"""
    WITH k AS (
        SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
        FROM buy_order WHERE idempotence_key = :key
    ), s AS (
        UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - :satoshis
        WHERE slot = :slot AND remaining_satoshis >= :satoshis AND NOT EXISTS (SELECT FROM k)
        RETURNING slot
    ), o AS (
        INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
        SELECT CAST(:id AS uuid), CAST(:key AS uuid), CAST(:currency AS text), CAST(:amount AS numeric),
               CAST(:exchange_rate AS numeric), CAST(:bitcoin_amount AS numeric), CAST(:request_id AS text)
        FROM s
        RETURNING sequence, created_at,
                  to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24\:MI\:SS.US"Z"') AS created_text
    ), e AS (
        INSERT INTO outbox (event_id, order_sequence, routing_key, payload, request_id)
        SELECT CAST(:event_id AS uuid), o.sequence, CAST(:routing_key AS text),
               CAST(:payload_0 AS text) || o.created_text || CAST(:payload_1 AS text) || o.created_text
               || CAST(:payload_2 AS text) || o.sequence || CAST(:payload_3 AS text),
               CAST(:request_id AS text)
        FROM o
    )
    SELECT o.sequence, o.created_at,
           k.sequence AS replayed_sequence, k.id, k.created_at AS replayed_created_at, k.currency, k.amount,
           k.exchange_rate, k.bitcoin_amount, k.idempotence_key
    FROM (SELECT) AS one LEFT JOIN o ON true LEFT JOIN k ON true
    """
)
_IDEMPOTENCE_KEY_CONSTRAINT = "buy_order_idempotence_key_key"

# The slow path: lock every slot (always in slot order, so two such transactions
# cannot deadlock), then store the order, then take from the total and spread what is left.
_LOCK_ALL_SLOTS = text("SELECT slot, remaining_satoshis FROM cap_slot ORDER BY slot FOR UPDATE")
_SET_SLOT = text("UPDATE cap_slot SET remaining_satoshis = :remaining WHERE slot = :slot")

_INSERT_OUTBOX = text(
    """
    INSERT INTO outbox (event_id, order_sequence, routing_key, payload, request_id)
    VALUES (:event_id, :sequence, :routing_key, :payload, :request_id)
    """
)

# Stand-ins for the two values only the database knows, to render the event around them.
_SEQUENCE_STANDIN = 987654321987654321
_CREATED_AT_STANDIN = datetime(2999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


class WriteModel:
    """Orders, the cap ledger and the outbox in the write-model database."""

    def __init__(
        self,
        engine: Engine,
        slot_count: int = 16,
        choose: Callable[[int], int] | None = None,
        engine_autocommit: bool = False,
    ) -> None:
        """`engine_autocommit`: the engine was made with `db.create_engine(autocommit=True)`.

        Most of the work here is single statements (the fast path, lookups), which run in
        autocommit; the slow path and `ensure_cap` need a transaction. On an autocommit engine
        (the service's) the single statements cost nothing extra and the rare transactions switch
        their connection; on a default engine it is the other way round. Switching a pooled
        connection costs a call into libpq on checkout and again on return (10% of the create
        path's time in the profile when every order switched).
        """
        self._statements: Engine
        self._transactions: Engine
        if engine_autocommit:
            self._statements, self._transactions = engine, engine.execution_options(isolation_level="READ COMMITTED")
        else:
            self._statements, self._transactions = engine.execution_options(isolation_level="AUTOCOMMIT"), engine
        self.slot_count = slot_count
        self._choose = choose or random.randrange
        self.cap_satoshis: int | None = None  # set by ensure_cap

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        with unavailable_on_outage("write-model"), self._statements.connect() as connection:
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
            placed = self._place_in_one_statement(request, exchange_rate, satoshis, request_id)
            if placed is not None:
                return placed
            # The chosen slot is short (nothing was stored, no lock is left): lock them all, in order.
            return self._place_taking_from_all_slots(request, exchange_rate, satoshis, request_id)

    def _place_in_one_statement(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None
    ) -> tuple[BuyOrder, bool] | None:
        """The fast path; None when the chosen slot cannot cover the order."""
        order = BuyOrder(
            id=uuid.uuid4(),
            sequence=_SEQUENCE_STANDIN,
            created_at=_CREATED_AT_STANDIN,
            currency=request.currency,
            amount=request.amount,
            exchange_rate=exchange_rate,
            bitcoin_amount=money.satoshis_to_btc(satoshis),
            idempotence_key=request.idempotence_key,
        )
        event_id = uuid.uuid4()
        payload = _payload_around_standins(created_event(order, event_id, request_id))
        with self._statements.connect() as connection:
            try:
                row = connection.execute(
                    _PLACE_IN_ONE_STATEMENT,
                    {
                        "slot": self._choose(self.slot_count),
                        "satoshis": satoshis,
                        "id": order.id,
                        "key": request.idempotence_key,
                        "currency": request.currency.value,
                        "amount": request.amount,
                        "exchange_rate": exchange_rate,
                        "bitcoin_amount": order.bitcoin_amount,
                        "request_id": request_id,
                        "event_id": event_id,
                        "routing_key": EVENT_TYPE,
                        **{f"payload_{index}": part for index, part in enumerate(payload)},
                    },
                ).one()
            except IntegrityError as error:
                diag = getattr(error.orig, "diag", None)
                if diag is None or diag.constraint_name != _IDEMPOTENCE_KEY_CONSTRAINT:
                    raise
                # A concurrent request stored this key first (and committed): a replay.
                existing = connection.execute(_FIND_BY_KEY, {"key": request.idempotence_key}).one()
                return _order_from_row(existing), False
        if row.replayed_sequence is not None:
            return _order_from_row(row, sequence=row.replayed_sequence, created_at=row.replayed_created_at), False
        if row.sequence is None:
            return None
        return replace(order, sequence=row.sequence, created_at=row.created_at), True

    def _place_taking_from_all_slots(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None
    ) -> tuple[BuyOrder, bool]:
        """The slow path: one transaction that locks every slot, stores the order and spreads what is left."""
        order_id = uuid.uuid4()
        bitcoin_amount = money.satoshis_to_btc(satoshis)
        with self._transactions.begin() as connection:
            slots = connection.execute(_LOCK_ALL_SLOTS).all()
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
            total = sum(row.remaining_satoshis for row in slots)
            if total < satoshis:
                # Raised inside the transaction: it rolls back, the order with it; the key stays unused.
                raise BtcCapExceeded(requested=bitcoin_amount, available=money.satoshis_to_btc(total))
            parts = cap.spread(total - satoshis, len(slots))
            connection.execute(
                _SET_SLOT, [{"slot": row.slot, "remaining": part} for row, part in zip(slots, parts, strict=True)]
            )
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

    def ensure_cap(self, cap_satoshis: int) -> None:
        """Make the ledger hold `cap_satoshis` across `slot_count` slots.

        Safe to run from every replica at start: it serialises on the ledger row
        and on every slot, and counts what stored orders use from the orders
        themselves. Does nothing when the ledger already matches.
        """
        with unavailable_on_outage("write-model"), self._transactions.begin() as connection:
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

    def capacity(self) -> tuple[int, int] | None:
        """(cap, still available) in satoshis, in one statement: the ledger row and the sum of the slots.

        One statement reads one snapshot, and every order takes its BTC from the slots in the same
        atomic write that stores it: the sum is never above the cap, and at rest equals the cap
        minus the sum of all orders. None before `ensure_cap` ever ran.
        """
        with unavailable_on_outage("write-model"), self._statements.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT l.cap_satoshis, (SELECT coalesce(sum(s.remaining_satoshis), 0) FROM cap_slot AS s)"
                    " AS available_satoshis FROM cap_ledger AS l"
                )
            ).one_or_none()
        return None if row is None else (int(row.cap_satoshis), int(row.available_satoshis))

    def cap_status(self) -> tuple[Decimal, Decimal] | None:
        """(cap, still available) in BTC as the ledger holds them now; None before `ensure_cap` ever ran."""
        with unavailable_on_outage("write-model"), self._statements.connect() as connection:
            cap_satoshis = connection.execute(text("SELECT cap_satoshis FROM cap_ledger")).scalar_one_or_none()
            left = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
        if cap_satoshis is None:
            return None
        return money.satoshis_to_btc(cap_satoshis), money.satoshis_to_btc(int(left))


def _payload_around_standins(payload: str) -> tuple[str, str, str, str]:
    """Split an event rendered with the stand-in `created_at` and `sequence` into the four texts
    around them: `[0] created_at [1] created_at [2] sequence [3]`.

    Keys and the quotes around the stand-in are part of what is searched for, so a client's
    text (a request id) cannot be mistaken for them: JSON escapes every quote inside a string.
    """
    stamp = format_timestamp(_CREATED_AT_STANDIN)
    head, occurred, rest = payload.partition(f'"occurred_at":"{stamp}"')
    middle, created, rest = rest.partition(f'"created_at":"{stamp}"')
    ending = f',"sequence":{_SEQUENCE_STANDIN}}}}}'
    if not occurred or not created or not rest.endswith(ending):
        raise RuntimeError("the buy_order.created event no longer has the shape the write model splices into")
    return (
        f'{head}"occurred_at":"',
        f'"{middle}"created_at":"',
        f'"{rest[: -len(ending)]},"sequence":',
        "}}",
    )


def _order_from_row(row: Row[Any], sequence: int | None = None, created_at: datetime | None = None) -> BuyOrder:
    return BuyOrder(
        id=row.id,
        sequence=row.sequence if sequence is None else sequence,
        created_at=row.created_at if created_at is None else created_at,
        currency=Currency(row.currency),
        amount=row.amount,
        exchange_rate=row.exchange_rate,
        bitcoin_amount=row.bitcoin_amount,
        idempotence_key=row.idempotence_key,
    )
