"""The write model: store orders with their cap deduction and outbox rows, several in one atomic write.

Every order goes through the same path: `place` queues it and a writer task takes whatever has
queued (up to MAX_GROUP orders) and writes that group in one statement, one round trip and one commit
(`_PLACE_GROUP`), the group's BTC taken from one slot at once. A writer that finds the queue empty
ends; an order that finds fewer than `writers` writers running starts one: an order arriving while
the database is idle is a group of one and is written at once, and orders group only while every
writer is busy. Each order's outcome is the one it would have alone, the group's orders taken one
at a time in arrival order (`_decide`).

Every statement runs on the service's one pool of the write-model database (`db.async_pool`,
connections in autocommit), through `db.run`; the driver prepares a statement once it has run on a
connection a few times. The cap ledger's upkeep (its slots, its cap, `/capacity`) is `cap_ledger`'s.
"""

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
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
from btc_orders.domain.errors import BtcCapExceeded, OrderInFlight, ServiceUnavailable
from btc_orders.domain.orders import BuyOrder, OrderRequest
from btc_orders.events import EVENT_TYPE

log = logging.getLogger(__name__)

# How many writers a process runs at most (each on a connection of the pool while it writes), and
# how many orders one group holds at most. Fewer writers make larger groups (less CPU per order);
# more than one keeps orders moving while a group waits on a lock (another replica's same-key attempt).
WRITERS = 2
MAX_GROUP = 64
# How long an order waits in the queue for a writer to take it: as long as a request waits for a
# pooled connection (`db.CONNECT_TIMEOUT_SECONDS`), then it is a 503 to retry, as a full pool is.
QUEUE_WAIT_SECONDS = db.CONNECT_TIMEOUT_SECONDS

# The group's orders as rows (`i`): one array parameter per column, each cast to its column's type
# (the order's columns by name from its declaration, `domain.orders`), and each row's `position` in
# the group. Every group, whatever its size, is the same statement: prepared once per connection.
_INSERTED = ", ".join(orders.INSERTED_COLUMNS)
_ARRAYS = {
    "satoshis": "bigint",
    "request_id": "text",
    **{name: orders.WRITE_TYPES[name] for name in orders.INSERTED_COLUMNS},
}
_ROWS = (
    f"unnest({', '.join(f'%({name})s::{sql_type}[]' for name, sql_type in _ARRAYS.items())})"
    f" WITH ORDINALITY AS i ({', '.join(_ARRAYS)}, position)"
)
_OUTBOX_FROM_ORDERS = outbox.INSERT_FROM_ORDER_CTE  # the outbox rows of the orders the CTE `o` inserted

_FIND_BY_KEY = f"SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = %(idempotence_key)s"  # noqa: S608
_FIND_BY_KEYS = f"SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = ANY(%(idempotence_key)s::uuid[])"  # noqa: S608

# The common case: a group of orders with distinct keys in ONE statement and one round trip (run in
# autocommit: no BEGIN, no COMMIT of its own; the statement is atomic). One result row per order, in
# `position` order: the key's stored order (`id` ...) set when the key already names one;
# `placed_sequence` set when the order was stored; neither when the chosen slot cannot cover the
# group's new orders (nothing stored, no lock left): take the slow path.
#
# `k` looks the keys up. `n` is the orders whose key is not stored, `s` takes their total BTC from
# one slot if that slot holds it all. Under READ COMMITTED a concurrent update of the slot is waited
# for and the condition re-checked on the newest row, so the slot never goes below zero. `o` inserts
# the orders only from `s`'s row, in key order (two groups never wait for each other's keys in
# opposite orders), and `e` their outbox rows only from `o`'s (the event is rendered from the order by
# the relay: `adapters.outbox`). A key stored already (visible to this statement) takes nothing and
# stores nothing. A key being stored by a concurrent transaction makes the INSERT wait for it; if
# that commits, the INSERT fails on the unique key and the whole statement is undone, slot included
# (the group is written again: that key is then a replay). Locks are taken in one order on every
# path, slots before keys (the slow path locks every slot, then inserts): a same-key race cannot
# deadlock.
_PLACE_GROUP = f"""
    WITH k AS (
        {_FIND_BY_KEYS}
    ), i AS (
        SELECT * FROM {_ROWS}
    ), n AS (
        SELECT * FROM i WHERE NOT EXISTS (SELECT FROM k WHERE k.idempotence_key = i.idempotence_key)
    ), s AS (
        UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - t.satoshis
        FROM (SELECT sum(satoshis) AS satoshis FROM n) AS t
        WHERE slot = %(slot)s AND remaining_satoshis >= t.satoshis
        RETURNING slot
    ), o AS (
        INSERT INTO buy_order ({_INSERTED}, request_id)
        SELECT {", ".join(f"n.{name}" for name in orders.INSERTED_COLUMNS)}, n.request_id
        FROM n CROSS JOIN s
        ORDER BY n.idempotence_key
        RETURNING idempotence_key, sequence, created_at, request_id
    ), e AS (
        {_OUTBOX_FROM_ORDERS}
    )
    SELECT o.sequence AS placed_sequence, o.created_at AS placed_at, {prefixed("k")}
    FROM i LEFT JOIN o ON o.idempotence_key = i.idempotence_key LEFT JOIN k ON k.idempotence_key = i.idempotence_key
    ORDER BY i.position
"""  # noqa: S608  (fixed fragments; values are parameters)
_IDEMPOTENCE_KEY_CONSTRAINT = "buy_order_idempotence_key_key"

# The slow path's write, once every slot is locked and the orders that fit are chosen: the orders
# and their outbox rows, in one statement, in key order. ON CONFLICT DO NOTHING waits for a
# concurrent insert of the same key to commit or roll back: two requests with one key never both
# store an order; no row for a key that is taken.
_INSERT_GROUP = f"""
    WITH i AS (
        SELECT * FROM {_ROWS}
    ), o AS (
        INSERT INTO buy_order ({_INSERTED}, request_id)
        SELECT {_INSERTED}, request_id FROM i ORDER BY idempotence_key
        ON CONFLICT (idempotence_key) DO NOTHING
        RETURNING idempotence_key, sequence, created_at, request_id
    ), e AS (
        {_OUTBOX_FROM_ORDERS}
    )
    SELECT idempotence_key, sequence, created_at FROM o
"""  # noqa: S608  (fixed fragments; values are parameters)

# How long an order refused for the cap waits for another attempt with its key to finish
# before it answers `order_in_flight` instead (see `_refuse_above_whole_cap`).
KEY_WAIT_SECONDS = 1.0

# Claims the key for the length of a transaction that is always rolled back: ON CONFLICT waits
# for a concurrent, uncommitted insert of the same key (an attempt in flight) to end. The row
# is never committed, so only the key matters; the BTC column gets a placeholder that fits.
_CLAIM_KEY = f"""
    INSERT INTO buy_order ({_INSERTED})
    VALUES ({", ".join(f"%({name})s::{orders.WRITE_TYPES[name]}" for name in orders.INSERTED_COLUMNS)})
    ON CONFLICT (idempotence_key) DO NOTHING
    RETURNING sequence
"""  # noqa: S608  (fixed fragments; values are parameters)
_CLAIM_PLACEHOLDER_BTC = Decimal("0.00000001")

# An outcome: `(order, created)`, or the refusal to raise in the order's own request.
Outcome = tuple[BuyOrder, bool] | BtcCapExceeded


class _Placement:
    """One order to store, its values, and where its outcome goes (`answer`)."""

    def __init__(
        self,
        request: OrderRequest,
        exchange_rate: Decimal,
        satoshis: int,
        request_id: str | None,
        answer: "asyncio.Future[Outcome]",
    ) -> None:
        self.request = request
        self.key = request.idempotence_key
        self.satoshis = satoshis
        self.request_id = request_id
        self.order = orders.new_order(request, uuid.uuid4(), exchange_rate, money.satoshis_to_btc(satoshis))
        self.answer = answer
        # The group it is written in, and the task writing it, once a writer took it.
        self.group: list[_Placement] = []
        self.writing: asyncio.Future[None] | None = None

    async def abandon(self) -> None:
        """This order's request was cancelled (its answer with it). Still queued: it is never
        written. Being written: when every order of its group is cancelled, the group's statement
        is cancelled, and this returns once it has ended (nothing of the group is stored then);
        otherwise the group is written (the client's retry with the key is answered with it)."""
        writing = self.writing
        if writing is not None and all(placement.answer.cancelled() for placement in self.group):
            writing.cancel()
            await asyncio.wait([writing])

    def stored(self, sequence: int, created_at: Any) -> BuyOrder:
        """The order as stored, with what the database assigned."""
        return BuyOrder.from_row(self.order | {"sequence": sequence, "created_at": created_at})


def group_values(placements: Sequence[_Placement]) -> dict[str, Any]:
    """The parameters of `_ROWS` for `placements` (one array per column, in their order).

    Integers wrapped in their column's type: the driver would type a Python int by its value, and
    each set of parameter types is a statement of its own to prepare."""
    values: dict[str, Any] = {
        "satoshis": [Int8(placement.satoshis) for placement in placements],
        "request_id": [placement.request_id for placement in placements],
        "routing_key": EVENT_TYPE,
    }
    for name in orders.INSERTED_COLUMNS:
        values[name] = [placement.order[name] for placement in placements]
    return values


def _decide(
    group: Sequence[_Placement], stored_before: dict[uuid.UUID, BuyOrder], available: int
) -> tuple[dict[_Placement, Outcome], list[_Placement], dict[_Placement, _Placement], int]:
    """The group's orders one at a time, in arrival order, as each would be answered alone.

    `stored_before`: the orders the group's keys name in the database; `available`: the satoshis
    the cap still leaves. An order whose key is stored is that order's replay; one whose key an
    earlier order of the group stores is the replay of that one; else it is stored if it fits what
    is left, and refused with what is left otherwise (its key stays unused: a later order of the
    group may use it). Returns the outcomes known now, the orders to store (in arrival order), the
    replays of those (order -> the one it replays) and the satoshis left after them.
    """
    outcomes: dict[_Placement, Outcome] = {}
    to_store: dict[uuid.UUID, _Placement] = {}
    replays: dict[_Placement, _Placement] = {}
    for placement in group:
        existing = stored_before.get(placement.key)
        if existing is not None:
            outcomes[placement] = (existing, False)
        elif placement.key in to_store:
            replays[placement] = to_store[placement.key]
        elif placement.satoshis <= available:
            available -= placement.satoshis
            to_store[placement.key] = placement
        else:
            outcomes[placement] = BtcCapExceeded(
                requested=money.satoshis_to_btc(placement.satoshis), available=money.satoshis_to_btc(available)
            )
    return outcomes, list(to_store.values()), replays, available


class _KeyTaken(Exception):
    """A key the slow path chose to store was stored meanwhile: write the group again."""


class WriteModel:
    """Orders and their outbox rows in the write-model database, under the cap `ledger` keeps."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        ledger: CapLedger,
        writers: int = WRITERS,
        max_group: int = MAX_GROUP,
    ) -> None:
        self._pool = pool
        self.ledger = ledger
        self._writers = writers
        self._max_group = max_group
        self._queue: deque[_Placement] = deque()
        self._running: set[asyncio.Task[None]] = set()

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
        `ServiceUnavailable` (for every order of the group: none of them is stored).
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
            answer: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
            placement = _Placement(request, exchange_rate, satoshis, request_id, answer)
            self._queue.append(placement)
            if len(self._running) < self._writers:
                self._running.add(asyncio.ensure_future(self._drain()))
            try:
                await asyncio.wait([answer], timeout=QUEUE_WAIT_SECONDS)
                if not answer.done() and placement.writing is None:
                    answer.cancel()  # never written: every writer stayed busy (stuck on locks, say)
                    raise ServiceUnavailable("the write-model database is busy (no free writer); retry shortly")
                outcome = await answer
            except asyncio.CancelledError:
                answer.cancel()
                await placement.abandon()
                raise
        if isinstance(outcome, BtcCapExceeded):
            raise outcome
        return outcome

    async def _drain(self) -> None:
        """Write groups until the queue is empty (then this writer is no longer counted as running:
        in the same step, so that an order queued after it looked starts a writer)."""
        try:
            while self._queue:
                group: list[_Placement] = []
                while self._queue and len(group) < self._max_group:
                    placement = self._queue.popleft()
                    if not placement.answer.done():  # not cancelled while it waited
                        group.append(placement)
                if group:
                    await self._write_cancellable(group)
        finally:
            self._running.discard(asyncio.current_task())

    async def _write_cancellable(self, group: list[_Placement]) -> None:
        """Write `group` in a task of its own, which the last of its orders to be cancelled cancels
        (`_Placement.abandon`)."""
        writing = asyncio.ensure_future(self._write(group))
        for placement in group:
            placement.group = group
            placement.writing = writing
        try:
            await asyncio.wait([writing])
        finally:
            if not writing.done():  # the writer itself cancelled (the loop is closing)
                writing.cancel()
                for placement in group:
                    placement.answer.cancel()

    async def _write(self, group: list[_Placement]) -> None:
        """Write `group` and answer each of its orders; an error answers every order not yet answered."""
        try:
            outcomes = await self._outcomes(group)
        except psycopg.Error as error:
            if len(group) > 1 and not db.is_outage(error):
                # About one order's own data (a value the schema refuses, say): each order alone, so
                # that the others are answered as they would have been.
                for placement in group:
                    if not placement.answer.done():
                        await self._write([placement])
                return
            _answer_all(group, error)
        except Exception as error:  # a bug: every order of the group is told, none left waiting
            _answer_all(group, error)
        else:
            for placement, outcome in outcomes.items():
                if not placement.answer.done():
                    placement.answer.set_result(outcome)

    async def _outcomes(self, group: list[_Placement]) -> dict[_Placement, Outcome]:
        """The outcome of each of the group's orders, the group written."""
        for _ in range(len(group) + 1):
            try:
                decided = await self._place_in_one_statement(group)
                if decided is None:  # the chosen slot is short: nothing was stored, no lock is left
                    decided = await db.run(
                        self._pool, lambda connection: self._place_taking_from_all_slots(group, connection)
                    )
                return decided
            except psycopg.errors.UniqueViolation as error:
                if error.diag.constraint_name != _IDEMPOTENCE_KEY_CONSTRAINT:
                    raise
                # A concurrent request stored one of the keys first (and committed): nothing of the
                # group was stored; written again, that key is a replay.
            except _KeyTaken:
                pass
        raise RuntimeError("the group's keys kept being stored by concurrent requests")

    async def _place_in_one_statement(self, group: list[_Placement]) -> dict[_Placement, Outcome] | None:
        """The common case; None when the chosen slot cannot cover the group's new orders."""
        first: dict[uuid.UUID, _Placement] = {}
        for placement in group:
            first.setdefault(placement.key, placement)
        distinct = list(first.values())
        values = group_values(distinct) | {"slot": Int2(self.ledger.pick_slot())}

        async def work(connection: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cursor = connection.cursor(row_factory=dict_row)
            return await (await cursor.execute(_PLACE_GROUP, values)).fetchall()

        rows = await db.run(self._pool, work)
        named: dict[uuid.UUID, tuple[BuyOrder, bool]] = {}
        for placement, row in zip(distinct, rows, strict=True):
            if row["id"] is not None:  # the key names a stored order
                named[placement.key] = (order_from_row(row), False)
            elif row["placed_sequence"] is not None:
                named[placement.key] = (placement.stored(row["placed_sequence"], row["placed_at"]), True)
            else:
                return None
        # Later orders of the group with a key already seen: that order's replay.
        return {
            placement: named[placement.key] if placement is first[placement.key] else (named[placement.key][0], False)
            for placement in group
        }

    async def _place_taking_from_all_slots(
        self, group: list[_Placement], connection: psycopg.AsyncConnection[Any]
    ) -> dict[_Placement, Outcome]:
        """The slow path: one transaction that locks every slot, stores the orders that fit (in
        arrival order, `_decide`) and spreads what is left."""
        async with connection.transaction():
            slots = await lock_every_slot(connection)
            self.ledger.learn(slots)
            # Looked up after the slots are locked: an attempt in flight with one of these keys holds a
            # slot until it ends (or is a claim of `_refuse_above_whole_cap`, which is always rolled
            # back), so the keys stored now are the keys' fates.
            cursor = connection.cursor(row_factory=dict_row)
            keys = list(dict.fromkeys(placement.key for placement in group))
            found = await (await cursor.execute(_FIND_BY_KEYS, {"idempotence_key": keys})).fetchall()
            stored_before = {row["idempotence_key"]: order_from_row(row) for row in found}
            total = sum(row.remaining_satoshis for row in slots)
            outcomes, to_store, replays, left = _decide(group, stored_before, total)
            if to_store:
                inserted = await (await cursor.execute(_INSERT_GROUP, group_values(to_store))).fetchall()
                if len(inserted) != len(to_store):
                    raise _KeyTaken  # the transaction rolls back: nothing of the group is stored
                by_key = {row["idempotence_key"]: row for row in inserted}
                for placement in to_store:
                    row = by_key[placement.key]
                    outcomes[placement] = (placement.stored(row["sequence"], row["created_at"]), True)
                await set_slots(connection, [row.slot for row in slots], cap.spread(left, len(slots)))
        for placement, first in replays.items():
            first_stored, _ = outcomes[first]  # type: ignore[misc]  # `first` was stored
            outcomes[placement] = (first_stored, False)
        return {placement: outcomes[placement] for placement in group}

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


def _answer_all(group: Iterable[_Placement], error: BaseException) -> None:
    for placement in group:
        if not placement.answer.done():
            placement.answer.set_exception(error)


async def _find_by_key(connection: psycopg.AsyncConnection[Any], idempotence_key: uuid.UUID) -> BuyOrder | None:
    cursor = connection.cursor(row_factory=dict_row)
    row = await (await cursor.execute(_FIND_BY_KEY, {"idempotence_key": idempotence_key})).fetchone()
    return order_from_row(row) if row else None
