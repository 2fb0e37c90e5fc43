"""The transactional outbox of the write model: every statement that touches the `outbox` table.

A row is written in the same statement as its order, by `write_model` (`INSERT_FROM_ORDER_CTE`);
the relay claims unsent rows, publishes them and marks them sent after the broker
confirmed them, then prunes rows sent longer ago than the retention; the admin CLI lists unsent
rows, publishes them, or marks sent ones unsent again. The statements are here; their callers
hold the connections and the transactions (SQLAlchemy Core on `db.create_engine`, the synchronous
processes' pool; the create path runs its fragment on its own asynchronous pool).

Lifecycle of a row: inserted with its order (unsent) -> `claim` + `mark_sent` (sent) -> `prune` (gone);
`mark_unsent_from` takes a sent row back to unsent.

A row holds only what the database cannot recompute: the event's id, the order's sequence, the
routing key and the request id. Orders are immutable, so the event is a pure function of the row
and its order: `claim` renders it (`events.created_event`) from the order it joins. A row written
with its `payload` (by a version before write-model migration 0003, or by hand) is published as
stored. docs/decisions.md ("The outbox row holds no payload") has the measurements.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

from btc_orders.adapters.order_rows import order_from_row, prefixed
from btc_orders.events import created_event

# The order's outbox row, a data-modifying CTE of the create path's one statement, after the CTE `o`
# that inserted the order (and returns its `sequence`). Written in psycopg's placeholder style
# (`%(name)s`), not SQLAlchemy's: the create path runs it on psycopg's own pool, and nothing passes
# it through SQLAlchemy's `text()`. Parameters: `event_id` (a UUID), `routing_key`, `request_id`
# (text or None); `payload` stays NULL (see above).
INSERT_FROM_ORDER_CTE = """INSERT INTO outbox (event_id, order_sequence, routing_key, request_id)
        SELECT %(event_id)s::uuid, o.sequence, %(routing_key)s::text, %(request_id)s::text
        FROM o"""


# Unsent rows, oldest first, locked so that several relays share the work without sending a row
# twice at once (`SKIP LOCKED`; only the outbox rows are locked, never the orders); served by the
# partial index of unsent rows, each joined to its order by the primary key.
_CLAIM = text(
    f"""
    SELECT x.id AS outbox_id, x.event_id, x.routing_key, x.payload, x.request_id, {prefixed("b")}
    FROM outbox AS x JOIN buy_order AS b ON b.sequence = x.order_sequence
    WHERE x.sent_at IS NULL
    ORDER BY x.id
    LIMIT :limit
    FOR UPDATE OF x SKIP LOCKED
    """  # noqa: S608  (fixed fragments; values are parameters)
)
# Whether any row is unsent: an index-only probe of the partial index of unsent rows; the idle
# relay's poll, 50 times a second: one small statement (the driver prepares it after its first
# runs on a connection), run in autocommit by `any_unsent` (one round trip, no BEGIN or ROLLBACK).
_ANY_UNSENT = text("SELECT EXISTS (SELECT FROM outbox WHERE sent_at IS NULL)")
_MARK_SENT = text("UPDATE outbox SET sent_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))")
# Rows sent longer ago than the retention, oldest first (the partial index of sent rows), skipping
# rows another relay prunes or an `admin outbox resend` marks unsent right now.
_PRUNE = text(
    """
    DELETE FROM outbox
    WHERE id IN (
        SELECT id FROM outbox
        WHERE sent_at < now() - make_interval(secs => :retention)
        ORDER BY sent_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    """
)
_HIGHEST_ORDER_SEQUENCE = "(SELECT coalesce(max(sequence), 0) FROM buy_order)"
_BACKLOG = text(
    f"""
    SELECT count(*) AS backlog,
           coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest_age,
           {_HIGHEST_ORDER_SEQUENCE} AS max_sequence
    FROM outbox
    WHERE sent_at IS NULL
    """  # noqa: S608  (a fixed fragment)
)
_HIGHEST = text(f"SELECT {_HIGHEST_ORDER_SEQUENCE}")
_UNSENT_COUNT = text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
_LIST_UNSENT = text(
    """
    SELECT id, event_id, order_sequence, request_id, created_at
    FROM outbox
    WHERE sent_at IS NULL
    ORDER BY id
    LIMIT :limit
    """
)
_MARK_UNSENT_FROM = text("UPDATE outbox SET sent_at = NULL WHERE order_sequence >= :from AND sent_at IS NOT NULL")
_ORDERS_WITHOUT_EVENT_FROM = text(
    """
    SELECT count(*) FROM buy_order AS b
    WHERE b.sequence >= :from AND NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.order_sequence = b.sequence)
    """
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """An unsent row locked by `claim`, with the event to publish."""

    id: int
    event_id: Any
    routing_key: str
    payload: str
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Backlog:
    unsent: int  # rows not yet confirmed by the broker
    oldest_age_seconds: float  # age of the oldest of them (0 when none)
    max_sequence: int  # the write model's newest order (0 when none)


@dataclass(frozen=True, slots=True)
class UnsentRow:
    id: int
    event_id: Any
    order_sequence: int
    request_id: str | None
    created_at: datetime


def claim(connection: Connection, limit: int) -> list[Claimed]:
    """Lock up to `limit` unsent rows, oldest first, for the caller's transaction (rows another
    transaction holds are skipped), each with its event rendered from its order."""
    return [
        Claimed(row.outbox_id, row.event_id, row.routing_key, _payload(row), row.request_id)
        for row in connection.execute(_CLAIM, {"limit": limit})
    ]


def _payload(row: Row[Any]) -> str:
    """The event's text: as stored (a row written before migration 0003), else rendered from the joined order."""
    if row.payload is not None:
        return str(row.payload)
    return created_event(order_from_row(row), row.event_id, row.request_id)


def any_unsent(engine: Engine) -> bool:
    """Whether any row is unsent (committed; rows another relay holds count too), on a connection of
    `engine`'s pool in autocommit: one round trip, no transaction."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        return bool(connection.execute(_ANY_UNSENT).scalar_one())


def mark_sent(connection: Connection, ids: list[int]) -> None:
    connection.execute(_MARK_SENT, {"ids": ids})


def prune(connection: Connection, retention_seconds: float, limit: int) -> int:
    """Delete up to `limit` rows sent more than `retention_seconds` ago; return how many."""
    return int(connection.execute(_PRUNE, {"retention": retention_seconds, "limit": limit}).rowcount)


def backlog(connection: Connection) -> Backlog:
    """The unsent rows, the age of the oldest, and the write model's newest sequence, in one statement."""
    row = connection.execute(_BACKLOG).one()
    return Backlog(int(row.backlog), float(row.oldest_age), int(row.max_sequence))


def unsent_count(connection: Connection) -> int:
    return int(connection.execute(_UNSENT_COUNT).scalar_one())


def list_unsent(connection: Connection, limit: int) -> list[UnsentRow]:
    """Up to `limit` unsent rows, oldest first (not locked)."""
    rows = connection.execute(_LIST_UNSENT, {"limit": limit}).all()
    return [UnsentRow(row.id, row.event_id, row.order_sequence, row.request_id, row.created_at) for row in rows]


def mark_unsent_from(connection: Connection, from_sequence: int) -> tuple[int, int]:
    """Mark the sent events of orders from `from_sequence` on unsent again, in the caller's transaction.

    Returns (rows marked unsent, orders from that sequence on without an outbox row: sent, then
    pruned). Row locks settle any race with the relays' pruning (which skips locked rows): a row is
    either marked unsent here (and no longer prunable) or already gone, and counted so.
    """
    bound = {"from": from_sequence}
    marked = int(connection.execute(_MARK_UNSENT_FROM, bound).rowcount)
    pruned = int(connection.execute(_ORDERS_WITHOUT_EVENT_FROM, bound).scalar_one())
    return marked, pruned


def highest_order_sequence(connection: Connection) -> int:
    """The write model's newest order's sequence (0 when there is none)."""
    return int(connection.execute(_HIGHEST).scalar_one())
