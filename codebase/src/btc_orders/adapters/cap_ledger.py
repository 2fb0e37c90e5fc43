"""The cap ledger's upkeep: the ledger row and its slots, made and changed at start, read for `/capacity`
and the cap gauges, and what this replica knows of them (the slots that exist, the cap enforced).

The ledger: one `cap_ledger` row (the cap, in satoshis) and `cap_slot` rows whose sum is what orders
may still take. Orders take from the slots in the same atomic write that stores them
(`write_model`); the slots spread the contention of concurrent orders over several rows.
"""

import logging
import random
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine

from btc_orders import logs
from btc_orders.adapters.db import pooled, unavailable_on_outage
from btc_orders.domain import cap, money

log = logging.getLogger(__name__)

# Every slot, locked, always in slot order (so two such transactions cannot deadlock). The ledger's
# cap rides along (not locked) so that every replica notices a cap set by another.
LOCK_ALL_SLOTS = """
    SELECT slot, remaining_satoshis, (SELECT cap_satoshis FROM cap_ledger) AS cap_satoshis
    FROM cap_slot ORDER BY slot FOR UPDATE OF cap_slot
"""
_COUNT_SLOTS = "SELECT count(*) FROM cap_slot"
# Sets every slot given, in one statement (the rows are locked by the caller's transaction already).
SET_SLOTS = """
    UPDATE cap_slot AS s SET remaining_satoshis = v.remaining
    FROM unnest(%(slots)s::smallint[], %(remaining)s::bigint[]) AS v (slot, remaining)
    WHERE s.slot = v.slot
"""
# (cap, still available) in satoshis, in one statement: one snapshot of the ledger row and the slots.
CAPACITY = (
    "SELECT l.cap_satoshis, (SELECT coalesce(sum(s.remaining_satoshis), 0) FROM cap_slot AS s)"
    " AS available_satoshis FROM cap_ledger AS l"
)


async def lock_every_slot(connection: psycopg.AsyncConnection[Any]) -> list[Any]:
    """Lock every slot (in a transaction), including any that a replica starting meanwhile added.

    `SELECT ... FOR UPDATE` locks the rows of the snapshot its statement began with: while it
    waited on a slot, `ensure_cap` may have added slots and another slow path may have spread
    capacity into them, capacity this transaction would not count (and so refuse an order that
    fits). Slots are only ever added, with higher numbers, so counting them again in a new
    snapshot and locking again until the count holds takes every one, still in slot order.
    Rows: `slot`, `remaining_satoshis`, `cap_satoshis` (the ledger's).
    """
    cursor = connection.cursor(row_factory=namedtuple_row)
    slots = await (await cursor.execute(LOCK_ALL_SLOTS)).fetchall()
    while await _slot_count(connection) != len(slots):
        slots = await (await cursor.execute(LOCK_ALL_SLOTS)).fetchall()
    return slots


async def _slot_count(connection: psycopg.AsyncConnection[Any]) -> int:
    row = await (await connection.execute(_COUNT_SLOTS)).fetchone()
    assert row is not None
    return int(row[0])


async def set_slots(connection: psycopg.AsyncConnection[Any], slots: Sequence[int], remaining: Sequence[int]) -> None:
    await connection.execute(SET_SLOTS, {"slots": list(slots), "remaining": list(remaining)})


class CapLedger:
    """The ledger in the write-model database (`pool`), and what this replica knows of it."""

    def __init__(
        self,
        pool: psycopg_pool.AsyncConnectionPool,
        slot_count: int = 16,
        choose: Callable[[int], int] | None = None,
    ) -> None:
        """`slot_count`: CAP_LEDGER_SLOTS, the slots `ensure_cap` makes sure exist. `choose(n)`: the
        index of the slot an order tries first among `n` (random by default)."""
        self._pool = pool
        self.slot_count = slot_count
        # The slots that exist (an order picks one): learnt by `ensure_cap`, refreshed by the slow path.
        self.slots: tuple[int, ...] = tuple(range(slot_count))
        self._choose = choose or random.randrange
        self.configured_cap_satoshis: int | None = None  # BTC_CAP, as given to `ensure_cap`
        self.cap_satoshis: int | None = None  # the ledger's cap as last read (another replica may set it)
        self._disagreements_logged: set[tuple[str, Any, Any]] = set()

    def pick_slot(self) -> int:
        """The slot an order tries to take its BTC from."""
        slots = self.slots
        return slots[self._choose(len(slots))]

    async def ensure_cap(self, cap_satoshis: int) -> None:
        """Make the ledger hold `cap_satoshis`, with at least `slot_count` slots.

        Safe to run from every replica at start, while other replicas serve orders: it
        serialises on the ledger row and on every slot, and changes the ledger in place. Slots
        are only ever added (empty: the slow path spreads capacity into them) and never removed,
        so an order waiting on the slots meanwhile finds every one it counted, with its newest
        value. A new cap is applied by recounting what stored orders use and spreading the rest
        over the slots that were there already. Does nothing when the ledger already matches.
        A replica configured with fewer slots than exist uses the slots that exist.
        """
        with unavailable_on_outage("write-model"):
            async with pooled(self._pool) as connection, connection.transaction():
                await connection.execute("INSERT INTO cap_ledger (cap_satoshis) VALUES (0) ON CONFLICT DO NOTHING")
                current = await scalar(connection, "SELECT cap_satoshis FROM cap_ledger FOR UPDATE")
                cursor = connection.cursor(row_factory=namedtuple_row)
                slots: list[Any] = await (await cursor.execute(LOCK_ALL_SLOTS)).fetchall()
                existing = {row.slot for row in slots}
                missing = [slot for slot in range(self.slot_count) if slot not in existing]
                if missing:
                    await connection.execute(
                        "INSERT INTO cap_slot (slot, remaining_satoshis)"
                        " SELECT slot, 0 FROM unnest(%s::smallint[]) AS slot ON CONFLICT DO NOTHING",
                        [missing],
                    )
                # The slots that held capacity before (all of them on a fresh ledger) take the new total.
                holders = [row.slot for row in slots] or missing
                if current != cap_satoshis or not slots:
                    used = await scalar(connection, "SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")
                    left = cap.remaining(cap_satoshis, money.btc_to_satoshis(used))
                    await set_slots(connection, holders, cap.spread(left, len(holders)))
                    await connection.execute("UPDATE cap_ledger SET cap_satoshis = %s::bigint", [cap_satoshis])
                    if slots:
                        logs.event(
                            log,
                            "cap_ledger_changed",
                            logging.WARNING,
                            from_btc=money.satoshis_to_btc(current),
                            to_btc=money.satoshis_to_btc(cap_satoshis),
                            message="BTC_CAP of this replica is not the ledger's cap: the ledger now holds this one; "
                            "every create_buy_order replica should have the same BTC_CAP",
                        )
        self.configured_cap_satoshis = cap_satoshis
        self.cap_satoshis = cap_satoshis
        self.slots = tuple(sorted(existing | set(missing)))
        self._check_slots()

    def learn(self, slots: Sequence[Any]) -> None:
        """Refresh what this replica knows of the ledger from the slow path's locked rows (`lock_every_slot`)."""
        known = tuple(row.slot for row in slots)
        if known and known != self.slots:
            self.slots = known
            self._check_slots()
        if slots and slots[0].cap_satoshis is not None:
            self.learn_cap(int(slots[0].cap_satoshis))

    def learn_cap(self, ledger_cap: int) -> None:
        """The ledger's cap as just read: the one enforced (said once if it is not this replica's BTC_CAP)."""
        self.cap_satoshis = ledger_cap
        configured = self.configured_cap_satoshis
        if configured is not None and configured != ledger_cap:
            self._log_disagreement_once(
                "BTC_CAP",
                money.satoshis_to_btc(configured),
                money.satoshis_to_btc(ledger_cap),
                "another replica set the cap; the ledger's cap is the one enforced",
            )

    def _check_slots(self) -> None:
        if len(self.slots) != self.slot_count:
            self._log_disagreement_once(
                "CAP_LEDGER_SLOTS",
                self.slot_count,
                len(self.slots),
                "another replica made more slots; the slots that exist are used",
            )

    def _log_disagreement_once(self, setting: str, configured: Any, ledger: Any, consequence: str) -> None:
        seen = (setting, configured, ledger)
        if seen in self._disagreements_logged:
            return
        self._disagreements_logged.add(seen)
        logs.event(
            log,
            "cap_ledger_disagrees",
            logging.WARNING,
            setting=setting,
            configured=configured,
            ledger=ledger,
            message=f"{setting} here is {configured} but the cap ledger has {ledger}: {consequence}; "
            f"set {setting} alike on every create_buy_order replica",
        )

    async def capacity(self) -> tuple[int, int] | None:
        """(cap, still available) in satoshis, in one statement: the ledger row and the sum of the slots.

        One statement reads one snapshot, and every order takes its BTC from the slots in the same
        atomic write that stores it: the sum is never above the cap, and at rest equals the cap
        minus the sum of all orders. None before `ensure_cap` ever ran.
        """
        with unavailable_on_outage("write-model"):
            async with pooled(self._pool) as connection:
                row = await (await connection.execute(CAPACITY)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def cap_status(self) -> tuple[Decimal, Decimal] | None:
        """(cap, still available) in BTC as the ledger holds them now; None before `ensure_cap` ever ran."""
        return _in_btc(await self.capacity())


def cap_status_with(engine: Engine) -> tuple[Decimal, Decimal] | None:
    """`CapLedger.cap_status` for a synchronous process (the admin CLI), through its engine."""
    with unavailable_on_outage("write-model"), engine.connect() as connection:
        row = connection.exec_driver_sql(CAPACITY).one_or_none()
    return _in_btc(None if row is None else (int(row[0]), int(row[1])))


def _in_btc(capacity: tuple[int, int] | None) -> tuple[Decimal, Decimal] | None:
    if capacity is None:
        return None
    cap_satoshis, left = capacity
    return money.satoshis_to_btc(cap_satoshis), money.satoshis_to_btc(left)


async def scalar(connection: psycopg.AsyncConnection[Any], statement: str) -> Any:
    """The one value of `statement`'s one row."""
    row = await (await connection.execute(statement)).fetchone()
    assert row is not None
    return row[0]
