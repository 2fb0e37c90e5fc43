"""The write model: store an order with its cap deduction and outbox row in one transaction."""

import logging
import random
import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg2.errors
from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.exc import OperationalError

from btc_orders import logs
from btc_orders.adapters import outbox
from btc_orders.adapters.db import Prepared, fetch_prepared, unavailable_on_outage
from btc_orders.adapters.db_loop import LoopConnections, NoConnectionFree
from btc_orders.adapters.order_rows import ORDER_COLUMNS, order_from_fields, order_from_row
from btc_orders.domain import cap, money
from btc_orders.domain.errors import BtcCapExceeded, OrderInFlight
from btc_orders.domain.orders import BuyOrder, OrderRequest
from btc_orders.events import EVENT_TYPE

_FIND_BY_KEY = text(f"SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = :key")  # noqa: S608

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
_PLACE_IN_ONE_STATEMENT = Prepared.named(
    "place_order",
    f"""
    WITH k AS (
        SELECT {ORDER_COLUMNS} FROM buy_order WHERE idempotence_key = :key
    ), s AS (
        UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - :satoshis
        WHERE slot = :slot AND remaining_satoshis >= :satoshis AND NOT EXISTS (SELECT FROM k)
        RETURNING slot
    ), o AS (
        INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount, request_id)
        SELECT :id, :key, :currency, :amount, :exchange_rate, :bitcoin_amount, :request_id
        FROM s
        RETURNING sequence, created_at
    ), e AS (
        {outbox.INSERT_FROM_ORDER_CTE}
    )
    SELECT o.sequence, o.created_at,
           k.sequence, k.id, k.created_at, k.currency, k.amount, k.exchange_rate, k.bitcoin_amount, k.idempotence_key
    FROM (SELECT) AS one LEFT JOIN o ON true LEFT JOIN k ON true
    """,  # noqa: S608  (fixed fragments; values are parameters)
    {
        "key": "uuid",
        "satoshis": "bigint",
        "slot": "integer",
        "id": "uuid",
        "currency": "text",
        "amount": "numeric",
        "exchange_rate": "numeric",
        "bitcoin_amount": "numeric",
        "request_id": "text",
        "event_id": "uuid",
        "routing_key": "text",
    },
)
_IDEMPOTENCE_KEY_CONSTRAINT = "buy_order_idempotence_key_key"

log = logging.getLogger(__name__)

# The slow path: lock every slot (always in slot order, so two such transactions
# cannot deadlock), then store the order, then take from the total and spread what is left.
# The ledger's cap rides along (not locked) so that every replica notices a cap set by another.
_LOCK_ALL_SLOTS = text(
    """
    SELECT slot, remaining_satoshis, (SELECT cap_satoshis FROM cap_ledger) AS cap_satoshis
    FROM cap_slot ORDER BY slot FOR UPDATE OF cap_slot
    """
)
_SET_SLOT = text("UPDATE cap_slot SET remaining_satoshis = :remaining WHERE slot = :slot")
_COUNT_SLOTS = text("SELECT count(*) FROM cap_slot")


def _lock_every_slot(connection: Connection) -> list[Row[Any]]:
    """Lock every slot, including any that a replica starting meanwhile added.

    `SELECT ... FOR UPDATE` locks the rows of the snapshot its statement began with: while it
    waited on a slot, `ensure_cap` may have added slots and another slow path may have spread
    capacity into them, capacity this transaction would not count (and so refuse an order that
    fits). Slots are only ever added, with higher numbers, so counting them again in a new
    snapshot and locking again until the count holds takes every one, still in slot order.
    """
    slots = list(connection.execute(_LOCK_ALL_SLOTS).all())
    while connection.execute(_COUNT_SLOTS).scalar_one() != len(slots):
        slots = list(connection.execute(_LOCK_ALL_SLOTS).all())
    return slots


# How long an order refused for the cap waits for another attempt with its key to finish
# before it answers `order_in_flight` instead (see `_refuse_unless_key_taken`).
KEY_WAIT_SECONDS = 1.0
_LOCK_NOT_AVAILABLE = "55P03"

# Claims the key for the length of a transaction that is always rolled back: ON CONFLICT waits
# for a concurrent, uncommitted insert of the same key (an attempt in flight) to end. The row
# is never committed, so only the key matters; the BTC column gets a placeholder that fits.
_CLAIM_KEY = text(
    """
    INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)
    VALUES (:id, :key, :currency, :amount, :exchange_rate, 0.00000001)
    ON CONFLICT (idempotence_key) DO NOTHING
    RETURNING sequence
    """
)


class _FastPath:
    """One run of `_PLACE_IN_ONE_STATEMENT`: its parameters, and what its row means."""

    def __init__(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None, slot: int
    ) -> None:
        self.request = request
        self.exchange_rate = exchange_rate
        self.order_id = uuid.uuid4()
        self.bitcoin_amount = money.satoshis_to_btc(satoshis)
        self.values = _PLACE_IN_ONE_STATEMENT.values(
            {
                "key": request.idempotence_key,
                "satoshis": satoshis,
                "slot": slot,
                "id": self.order_id,
                "currency": request.currency.value,
                "amount": request.amount,
                "exchange_rate": exchange_rate,
                "bitcoin_amount": self.bitcoin_amount,
                "request_id": request_id,
                "event_id": uuid.uuid4(),
                "routing_key": EVENT_TYPE,
            }
        )

    def outcome(self, row: tuple[Any, ...] | None) -> tuple[BuyOrder, bool] | None:
        """`(order, created)`, or None when the chosen slot could not cover the order."""
        assert row is not None  # the statement returns one row, always
        sequence, created_at, *replayed = row
        if replayed[0] is not None:  # the key names a stored order: its fields, in ORDER_FIELDS order
            return order_from_fields(replayed), False
        if sequence is None:
            return None
        order = BuyOrder(
            id=self.order_id,
            sequence=sequence,
            created_at=created_at,
            currency=self.request.currency,
            amount=self.request.amount,
            exchange_rate=self.exchange_rate,
            bitcoin_amount=self.bitcoin_amount,
            idempotence_key=self.request.idempotence_key,
        )
        return order, True


class WriteModel:
    """Orders, the cap ledger and the outbox in the write-model database."""

    def __init__(
        self,
        engine: Engine,
        slot_count: int = 16,
        choose: Callable[[int], int] | None = None,
        engine_autocommit: bool = False,
        loop_connections: LoopConnections | None = None,
    ) -> None:
        """`engine_autocommit`: the engine was made with `db.create_engine(autocommit=True)`.
        `loop_connections`: to the same database, for `place_on_loop` (without them it always
        answers None).

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
        self.slot_count = slot_count  # CAP_LEDGER_SLOTS: the slots `ensure_cap` makes sure exist
        # The slots that exist (the fast path picks one): learnt by `ensure_cap`, refreshed by the slow path.
        self.slots: tuple[int, ...] = tuple(range(slot_count))
        self._choose = choose or random.randrange
        self.configured_cap_satoshis: int | None = None  # BTC_CAP, as given to `ensure_cap`
        self.cap_satoshis: int | None = None  # the ledger's cap as last read (another replica may set it)
        self._disagreements_logged: set[tuple[str, int, int]] = set()
        self._log_lock = threading.Lock()
        self.loop_connections = loop_connections

    def find_by_key(self, idempotence_key: uuid.UUID) -> BuyOrder | None:
        with unavailable_on_outage("write-model"), self._statements.connect() as connection:
            row = connection.execute(_FIND_BY_KEY, {"key": idempotence_key}).one_or_none()
        return order_from_row(row) if row else None

    def place(self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None) -> tuple[BuyOrder, bool]:
        """Store the order priced at `exchange_rate`, or return the one its key already names.

        Returns `(order, created)`. Raises `BtcCapExceeded` when the order does not fit under
        the cap and no other attempt with its key is in flight (nothing is stored then and the
        key stays unused), `OrderInFlight` when one still is after KEY_WAIT_SECONDS: a refusal
        is final, and never one that the other attempt's outcome could contradict.
        """
        satoshis = money.bitcoin_satoshis(request.amount, exchange_rate)
        with unavailable_on_outage("write-model"):
            if self.cap_satoshis is not None and satoshis > self.cap_satoshis:
                # More than the whole cap (as last read): never asked to store (it may not even fit
                # the column), but refused only once no other attempt with its key is in flight.
                replayed = self._refuse_above_whole_cap(request, exchange_rate, satoshis)
                if replayed is not None:
                    return replayed, False
            placed = self._place_in_one_statement(request, exchange_rate, satoshis, request_id)
            if placed is not None:
                return placed
            # The chosen slot is short (nothing was stored, no lock is left): lock them all, in order.
            return self._place_taking_from_all_slots(request, exchange_rate, satoshis, request_id)

    async def place_on_loop(
        self, request: OrderRequest, exchange_rate: Decimal, request_id: str | None
    ) -> tuple[BuyOrder, bool] | None:
        """`place`'s common case awaited on the event loop, or None: call `place` (on a thread).

        The fast path's one statement on one of `loop_connections`. None, with nothing stored,
        whenever that statement cannot settle the order alone: no loop connections or none free,
        an order above the whole cap, the chosen slot short of it, or the key stored meanwhile by
        a concurrent request (its statement undone). Outages raise `ServiceUnavailable`, as `place`.
        """
        if self.loop_connections is None:
            return None
        satoshis = money.bitcoin_satoshis(request.amount, exchange_rate)
        if self.cap_satoshis is not None and satoshis > self.cap_satoshis:
            return None
        statement = _FastPath(request, exchange_rate, satoshis, request_id, self._pick_slot())
        with unavailable_on_outage("write-model"):
            try:
                row = await self.loop_connections.fetch_prepared(_PLACE_IN_ONE_STATEMENT, statement.values)
            except NoConnectionFree:
                return None
            except psycopg2.errors.UniqueViolation as error:
                if error.diag.constraint_name != _IDEMPOTENCE_KEY_CONSTRAINT:
                    raise
                return None  # `place` answers with the order the concurrent request stored
        return statement.outcome(row)

    def _place_in_one_statement(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None
    ) -> tuple[BuyOrder, bool] | None:
        """The fast path; None when the chosen slot cannot cover the order."""
        statement = _FastPath(request, exchange_rate, satoshis, request_id, self._pick_slot())
        try:
            row = fetch_prepared(self._statements, _PLACE_IN_ONE_STATEMENT, statement.values)
        except psycopg2.errors.UniqueViolation as error:
            if error.diag.constraint_name != _IDEMPOTENCE_KEY_CONSTRAINT:
                raise
            # A concurrent request stored this key first (and committed): a replay.
            with self._statements.connect() as connection:
                existing = connection.execute(_FIND_BY_KEY, {"key": request.idempotence_key}).one()
            return order_from_row(existing), False
        return statement.outcome(row)

    def _place_taking_from_all_slots(
        self, request: OrderRequest, exchange_rate: Decimal, satoshis: int, request_id: str | None
    ) -> tuple[BuyOrder, bool]:
        """The slow path: one transaction that locks every slot, stores the order and spreads what is left."""
        order_id = uuid.uuid4()
        bitcoin_amount = money.satoshis_to_btc(satoshis)
        with self._transactions.begin() as connection:
            slots = _lock_every_slot(connection)
            self._learn_ledger(slots)
            # The key is inserted after the slots are locked: an attempt in flight with this key holds
            # a slot until it ends (or is a claim of `_refuse_above_whole_cap`, which lasts at most
            # KEY_WAIT_SECONDS), so once this insert returns the key's fate is known (stored: the
            # replay; unused: the cap rule below is the final answer).
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
                return order_from_row(existing), False
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
            outbox.insert(connection, uuid.uuid4(), order.sequence, EVENT_TYPE, request_id)
        return order, True

    def ensure_cap(self, cap_satoshis: int) -> None:
        """Make the ledger hold `cap_satoshis`, with at least `slot_count` slots.

        Safe to run from every replica at start, while other replicas serve orders: it
        serialises on the ledger row and on every slot, and changes the ledger in place. Slots
        are only ever added (empty: the slow path spreads capacity into them) and never removed,
        so an order waiting on the slots meanwhile finds every one it counted, with its newest
        value. A new cap is applied by recounting what stored orders use and spreading the rest
        over the slots that were there already. Does nothing when the ledger already matches.
        A replica configured with fewer slots than exist uses the slots that exist.
        """
        with unavailable_on_outage("write-model"), self._transactions.begin() as connection:
            connection.execute(text("INSERT INTO cap_ledger (cap_satoshis) VALUES (0) ON CONFLICT DO NOTHING"))
            current = connection.execute(text("SELECT cap_satoshis FROM cap_ledger FOR UPDATE")).scalar_one()
            slots = connection.execute(_LOCK_ALL_SLOTS).all()
            existing = {row.slot for row in slots}
            missing = [slot for slot in range(self.slot_count) if slot not in existing]
            if missing:
                connection.execute(
                    text("INSERT INTO cap_slot (slot, remaining_satoshis) VALUES (:slot, 0) ON CONFLICT DO NOTHING"),
                    [{"slot": slot} for slot in missing],
                )
            # The slots that held capacity before (all of them on a fresh ledger) take the new total.
            holders = [row.slot for row in slots] or missing
            if current != cap_satoshis or not slots:
                used = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
                left = cap.remaining(cap_satoshis, money.btc_to_satoshis(used))
                parts = cap.spread(left, len(holders))
                connection.execute(
                    _SET_SLOT, [{"slot": slot, "remaining": part} for slot, part in zip(holders, parts, strict=True)]
                )
                connection.execute(text("UPDATE cap_ledger SET cap_satoshis = :cap"), {"cap": cap_satoshis})
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

    def _pick_slot(self) -> int:
        slots = self.slots
        return slots[self._choose(len(slots))]

    def _learn_ledger(self, slots: Any) -> None:
        """Refresh what this replica knows of the ledger from the slow path's locked rows."""
        known = tuple(row.slot for row in slots)
        if known and known != self.slots:
            self.slots = known
            self._check_slots()
        if slots and slots[0].cap_satoshis is not None:
            self._learn_cap(int(slots[0].cap_satoshis))

    def _learn_cap(self, ledger_cap: int) -> None:
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
        with self._log_lock:
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

    def _refuse_above_whole_cap(self, request: OrderRequest, exchange_rate: Decimal, satoshis: int) -> BuyOrder | None:
        """An order above the whole cap (as last read): the order its key names, or the refusal.

        The refusal is final, so it is given only once no other attempt with the key can be in
        flight: the key is claimed (and the claim always rolled back), which waits for such an
        attempt to end. Still in flight after KEY_WAIT_SECONDS: `OrderInFlight`. Returns None
        when another replica has raised the cap so that the order may fit after all.
        """
        with self._transactions.connect() as connection:
            ledger_cap = connection.execute(text("SELECT cap_satoshis FROM cap_ledger")).scalar_one()
            self._learn_cap(int(ledger_cap))
            if satoshis <= ledger_cap:
                connection.rollback()
                return None
            connection.execute(text(f"SET LOCAL lock_timeout = '{int(KEY_WAIT_SECONDS * 1000)}ms'"))
            try:
                claimed = connection.execute(
                    _CLAIM_KEY,
                    {
                        "id": uuid.uuid4(),
                        "key": request.idempotence_key,
                        "currency": request.currency.value,
                        "amount": request.amount,
                        "exchange_rate": exchange_rate,
                    },
                ).one_or_none()
            except OperationalError as error:
                if getattr(error.orig, "pgcode", None) != _LOCK_NOT_AVAILABLE:
                    raise
                raise OrderInFlight(
                    f"another request with idempotence_key {request.idempotence_key} is being stored; "
                    "retry to learn its outcome",
                    retry_after=1,
                ) from error
            if claimed is None:
                existing = connection.execute(_FIND_BY_KEY, {"key": request.idempotence_key}).one()
                connection.rollback()
                return order_from_row(existing)
            left = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
            connection.rollback()
        raise BtcCapExceeded(requested=money.satoshis_to_btc(satoshis), available=money.satoshis_to_btc(int(left)))

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
