"""The write model: store an order with its cap deduction and outbox row in one atomic write.

Every statement runs on the service's one pool of the write-model database (`db.async_pool`,
connections in autocommit), through `db.run`; the driver prepares a statement once it has run on a
connection a few times. The cap ledger's upkeep (its slots, its cap, `/capacity`) is `cap_ledger`'s.
"""

import logging
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.numeric import Int2, Int8

from btc_orders.adapters import db, outbox
from btc_orders.adapters.cap_ledger import CapLedger, lock_every_slot, scalar, set_slots
from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.adapters.order_rows import ORDER_COLUMNS, order_from_row, prefixed
from btc_orders.domain import cap, money, orders
from btc_orders.domain.errors import BtcCapExceeded, OrderInFlight
from btc_orders.domain.orders import BuyOrder, OrderRequest
from btc_orders.events import EVENT_TYPE

log = logging.getLogger(__name__)


# The outbox row of the order the CTE `o` inserted (parameters `event_id`, `routing_key`, `request_id`).
_OUTBOX_FROM_ORDER = outbox.INSERT_FROM_ORDER_CTE

# An order's columns as the database assigns none of them (`orders.new_order`'s values, by name),
# each parameter cast to its column's type.
_INSERTED = ", ".join(orders.INSERTED_COLUMNS)
_INSERTED_VALUES = ", ".join(f"%({name})s::{orders.WRITE_TYPES[name]}" for name in orders.INSERTED_COLUMNS)

_FIND_BY_KEY = f"SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = %(idempotence_key)s"  # noqa: S608

# The common case, in ONE statement and one round trip (run in autocommit: no BEGIN, no COMMIT
# of its own; the statement is atomic). Result row: the key's stored order (`id` ...) set when the
# key already names one; `placed_sequence` set when the order was stored; neither when the chosen
# slot cannot cover the order (nothing stored, no lock left): take the slow path. The order's
# columns and values follow its declaration (`domain.orders`), by name.
#
# `k` looks the key up. `s` takes the order's BTC from one slot if that slot holds enough. Under
# READ COMMITTED a concurrent update of the slot is waited for and the condition re-checked on
# the newest row, so the slot never goes below zero. `o` inserts the order only from `s`'s row,
# and `e` its outbox row only from `o`'s (the event is rendered from the order by the relay:
# `adapters.outbox`). A key that is stored already (visible to this statement) takes nothing
# and stores nothing. A key being stored by a concurrent transaction makes the INSERT wait for
# it; if that commits, the INSERT fails on the unique key and the whole statement is undone,
# slot included (the caller answers with the stored order). Locks are taken in one order on
# every path, slots before the key (the slow path locks every slot, then inserts): a same-key
# race cannot deadlock.
_PLACE_IN_ONE_STATEMENT = f"""
    WITH k AS (
        SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = %(idempotence_key)s
    ), s AS (
        UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - %(satoshis)s
        WHERE slot = %(slot)s AND remaining_satoshis >= %(satoshis)s AND NOT EXISTS (SELECT FROM k)
        RETURNING slot
    ), o AS (
        INSERT INTO buy_order ({_INSERTED}, request_id)
        SELECT {_INSERTED_VALUES}, %(request_id)s::text
        FROM s
        RETURNING sequence, created_at
    ), e AS (
        {_OUTBOX_FROM_ORDER}
    )
    SELECT o.sequence AS placed_sequence, o.created_at AS placed_at, {prefixed("k")}
    FROM (SELECT) AS one LEFT JOIN o ON true LEFT JOIN k ON true
"""  # noqa: S608  (fixed fragments; values are parameters)
_IDEMPOTENCE_KEY_CONSTRAINT = "buy_order_idempotence_key_key"

# The slow path's write, once every slot is locked: the order and its outbox row, in one statement.
# ON CONFLICT DO NOTHING waits for a concurrent insert of the same key to commit or roll back: two
# requests with one key never both store an order; no row when the key is taken.
_INSERT_ORDER = f"""
    WITH o AS (
        INSERT INTO buy_order ({_INSERTED}, request_id)
        VALUES ({_INSERTED_VALUES}, %(request_id)s::text)
        ON CONFLICT (idempotence_key) DO NOTHING
        RETURNING sequence, created_at
    ), e AS (
        {_OUTBOX_FROM_ORDER}
    )
    SELECT sequence, created_at FROM o
"""  # noqa: S608  (fixed fragments; values are parameters)

# How long an order refused for the cap waits for another attempt with its key to finish
# before it answers `order_in_flight` instead (see `_refuse_above_whole_cap`).
KEY_WAIT_SECONDS = 1.0

# Claims the key for the length of a transaction that is always rolled back: ON CONFLICT waits
# for a concurrent, uncommitted insert of the same key (an attempt in flight) to end. The row
# is never committed, so only the key matters; the BTC column gets a placeholder that fits.
_CLAIM_KEY = f"""
    INSERT INTO buy_order ({_INSERTED}) VALUES ({_INSERTED_VALUES})
    ON CONFLICT (idempotence_key) DO NOTHING
    RETURNING sequence
"""  # noqa: S608  (fixed fragments; values are parameters)
_CLAIM_PLACEHOLDER_BTC = Decimal("0.00000001")


class _Placement:
    """One order to store: its values (the parameters of `_PLACE_IN_ONE_STATEMENT` and `_INSERT_ORDER`)
    and what a result row means for it."""

    def __init__(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None, slot: int
    ) -> None:
        self.request = request
        self.satoshis = satoshis
        self.bitcoin_amount = money.satoshis_to_btc(satoshis)
        self.order = orders.new_order(request, uuid.uuid4(), exchange_rate, self.bitcoin_amount)
        # Integers wrapped in their column's type: the driver would type a Python int by its value,
        # and each set of parameter types is a statement of its own to prepare.
        self.values: dict[str, Any] = self.order | {
            "satoshis": Int8(satoshis),
            "slot": Int2(slot),
            "request_id": request_id,
            "event_id": uuid.uuid4(),
            "routing_key": EVENT_TYPE,
        }

    def stored(self, sequence: int, created_at: Any) -> BuyOrder:
        """The order as stored, with what the database assigned."""
        return BuyOrder.from_row(self.order | {"sequence": sequence, "created_at": created_at})

    def outcome(self, row: dict[str, Any] | None) -> tuple[BuyOrder, bool] | None:
        """`(order, created)` from `_PLACE_IN_ONE_STATEMENT`'s row, or None when the chosen slot could
        not cover the order."""
        assert row is not None  # the statement returns one row, always
        if row["id"] is not None:  # the key names a stored order
            return order_from_row(row), False
        if row["placed_sequence"] is None:
            return None
        return self.stored(row["placed_sequence"], row["placed_at"]), True


class WriteModel:
    """Orders and their outbox rows in the write-model database, under the cap `ledger` keeps."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, ledger: CapLedger) -> None:
        self._pool = pool
        self.ledger = ledger

    async def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        with unavailable_on_outage("write-model"):
            return await db.run(self._pool, lambda connection: _find_by_key(connection, idempotence_key))

    async def place(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool]:
        """Store the order priced at `exchange_rate`, or return the one its key already names.

        Returns `(order, created)`. Raises `BtcCapExceeded` when the order does not fit under
        the cap and no other attempt with its key is in flight (nothing is stored then and the
        key stays unused), `OrderInFlight` when one still is after KEY_WAIT_SECONDS: a refusal
        is final, and never one that the other attempt's outcome could contradict. Outages raise
        `ServiceUnavailable`.
        """
        satoshis = money.bitcoin_satoshis(request.amount, exchange_rate)
        with unavailable_on_outage("write-model"):
            ledger_cap = self.ledger.cap_satoshis
            if ledger_cap is not None and satoshis > ledger_cap:
                # More than the whole cap (as last read): never asked to store (it may not even fit
                # the column), but refused only once no other attempt with its key is in flight.
                replayed = await self._refuse_above_whole_cap(request, exchange_rate, satoshis)
                if replayed is not None:
                    return replayed, False
            placement = _Placement(request, exchange_rate, satoshis, request_id, self.ledger.pick_slot())
            placed = await self._place_in_one_statement(placement)
            if placed is not None:
                return placed
            # The chosen slot is short (nothing was stored, no lock is left): lock them all, in order.
            return await self._place_taking_from_all_slots(placement)

    async def _place_in_one_statement(self, placement: _Placement) -> tuple[BuyOrder, bool] | None:
        """The common case; None when the chosen slot cannot cover the order."""

        async def work(connection: psycopg.AsyncConnection[Any]) -> Any:
            cursor = connection.cursor(row_factory=dict_row)
            return await (await cursor.execute(_PLACE_IN_ONE_STATEMENT, placement.values)).fetchone()

        try:
            row = await db.run(self._pool, work)
        except psycopg.errors.UniqueViolation as error:
            if error.diag.constraint_name != _IDEMPOTENCE_KEY_CONSTRAINT:
                raise
            # A concurrent request stored this key first (and committed): a replay.
            existing = await db.run(self._pool, lambda c: _find_by_key(c, placement.request.idempotence_key))
            assert existing is not None  # orders are never deleted
            return existing, False
        return placement.outcome(row)

    async def _place_taking_from_all_slots(self, placement: _Placement) -> tuple[BuyOrder, bool]:
        """The slow path: one transaction that locks every slot, stores the order and spreads what is left."""

        async def work(connection: psycopg.AsyncConnection[Any]) -> tuple[BuyOrder, bool]:
            async with connection.transaction():
                slots = await lock_every_slot(connection)
                self.ledger.learn(slots)
                # The key is inserted after the slots are locked: an attempt in flight with this key holds
                # a slot until it ends (or is a claim of `_refuse_above_whole_cap`, which lasts at most
                # KEY_WAIT_SECONDS), so once this insert returns the key's fate is known (stored: the
                # replay; unused: the cap rule below is the final answer).
                inserted = await (await connection.execute(_INSERT_ORDER, placement.values)).fetchone()
                if inserted is None:
                    existing = await _find_by_key(connection, placement.request.idempotence_key)
                    assert existing is not None
                    return existing, False
                total = sum(row.remaining_satoshis for row in slots)
                if total < placement.satoshis:
                    # Raised inside the transaction: it rolls back, the order with it; the key stays unused.
                    raise BtcCapExceeded(requested=placement.bitcoin_amount, available=money.satoshis_to_btc(total))
                parts = cap.spread(total - placement.satoshis, len(slots))
                await set_slots(connection, [row.slot for row in slots], parts)
            sequence, created_at = inserted
            return placement.stored(sequence, created_at), True

        return await db.run(self._pool, work)

    async def _refuse_above_whole_cap(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int
    ) -> BuyOrder | None:
        """An order above the whole cap (as last read): the order its key names, or the refusal.

        The refusal is final, so it is given only once no other attempt with the key can be in
        flight: the key is claimed (and the claim always rolled back), which waits for such an
        attempt to end. Still in flight after KEY_WAIT_SECONDS: `OrderInFlight`. Returns None
        when another replica has raised the cap so that the order may fit after all.
        """

        async def work(connection: psycopg.AsyncConnection[Any]) -> BuyOrder | None:
            async with connection.transaction(force_rollback=True):
                ledger_cap = await scalar(connection, "SELECT cap_satoshis FROM cap_ledger")
                self.ledger.learn_cap(int(ledger_cap))
                if satoshis <= ledger_cap:
                    return None
                await connection.execute(f"SET LOCAL lock_timeout = '{int(KEY_WAIT_SECONDS * 1000)}ms'")
                values = orders.new_order(request, uuid.uuid4(), exchange_rate, _CLAIM_PLACEHOLDER_BTC)
                try:
                    claimed = await (await connection.execute(_CLAIM_KEY, values)).fetchone()
                except psycopg.errors.LockNotAvailable as error:
                    raise OrderInFlight(
                        f"another request with idempotence_key {request.idempotence_key} is being stored; "
                        "retry to learn its outcome",
                        retry_after=1,
                    ) from error
                if claimed is None:
                    return await _find_by_key(connection, request.idempotence_key)
                left = await scalar(connection, "SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")
                raise BtcCapExceeded(
                    requested=money.satoshis_to_btc(satoshis), available=money.satoshis_to_btc(int(left))
                )

        return await db.run(self._pool, work)


async def _find_by_key(connection: psycopg.AsyncConnection[Any], idempotence_key: uuid.UUID) -> BuyOrder | None:
    cursor = connection.cursor(row_factory=dict_row)
    row = await (await cursor.execute(_FIND_BY_KEY, {"idempotence_key": idempotence_key})).fetchone()
    return order_from_row(row) if row else None
