"""The read model: idempotent projection of order events, and keyset pages, newest first."""

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.domain.errors import OrderNotFound, UnknownReference
from btc_orders.domain.orders import format_timestamp

# Orders are immutable, so applying an event twice must change nothing: the
# first insert wins and a replay is skipped by the primary key.
_UPSERT = text(
    """
    INSERT INTO buy_order_view
        (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key, event_id)
    VALUES
        (:sequence, :id, :created_at, :currency, :amount, :exchange_rate, :bitcoin_amount, :idempotence_key, :event_id)
    ON CONFLICT (sequence) DO NOTHING
    """
)

# Keyset paging on the primary key: a backward index scan that reads
# `page_size + 1` rows whatever the depth. The extra row tells `has_more`.
_FIRST_PAGE = text(
    """
    SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
    FROM buy_order_view
    ORDER BY sequence DESC
    LIMIT :limit
    """
)
# One round trip for a later page: the reference is found by the unique index on
# `id`, the page read from the primary key after it. No row at all: unknown reference;
# one row of NULLs: the reference was the oldest order.
_PAGE_AFTER = text(
    """
    SELECT page.sequence, page.id, page.created_at, page.currency, page.amount, page.exchange_rate,
           page.bitcoin_amount, page.idempotence_key
    FROM buy_order_view AS reference
    LEFT JOIN LATERAL (
        SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
        FROM buy_order_view
        WHERE sequence < reference.sequence
        ORDER BY sequence DESC
        LIMIT :limit
    ) AS page ON true
    WHERE reference.id = :reference
    """
)
_ONE = text(
    """
    SELECT sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key
    FROM buy_order_view
    WHERE id = :id
    """
)


@dataclass(frozen=True, slots=True)
class Page:
    buy_orders: list[dict[str, Any]]
    last_reference: str | None
    has_more: bool

    def body(self) -> dict[str, Any]:
        return {"buy_orders": self.buy_orders, "last_reference": self.last_reference, "has_more": self.has_more}


class ReadModel:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def page(self, page_size: int, last_reference: uuid.UUID | None) -> Page:
        with unavailable_on_outage("read-model"), self.engine.connect() as connection:
            if last_reference is None:
                rows = connection.execute(_FIRST_PAGE, {"limit": page_size + 1}).all()
            else:
                rows = connection.execute(_PAGE_AFTER, {"reference": last_reference, "limit": page_size + 1}).all()
                if not rows:
                    raise UnknownReference(f"last_reference {last_reference} is not the id of any order")
                rows = [row for row in rows if row.sequence is not None]
        orders = [_resource(row) for row in rows[:page_size]]
        return Page(orders, orders[-1]["id"] if orders else None, len(rows) > page_size)

    def one(self, order_id: uuid.UUID) -> dict[str, Any]:
        with unavailable_on_outage("read-model"), self.engine.connect() as connection:
            row = connection.execute(_ONE, {"id": order_id}).one_or_none()
        if row is None:
            raise OrderNotFound(f"no order with id {order_id} (yet: a new order may take a moment to appear)")
        return _resource(row)


def apply_created_events(connection: Connection, orders: Sequence[dict[str, Any]]) -> None:
    """Project validated `buy_order.created` events (their `order` plus `event_id`)."""
    if orders:
        connection.execute(_UPSERT, list(orders))


def _resource(row: Any) -> dict[str, Any]:
    created_at: datetime = row.created_at
    return {
        "id": str(row.id),
        "created_at": format_timestamp(created_at),
        "currency": row.currency,
        "amount": row.amount,
        "exchange_rate": row.exchange_rate,
        "bitcoin_amount": row.bitcoin_amount,
        "idempotence_key": str(row.idempotence_key),
    }
