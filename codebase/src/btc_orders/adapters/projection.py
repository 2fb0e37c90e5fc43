"""The read model's writes: the idempotent projection of `buy_order.created` events.

Synchronous SQLAlchemy Core on a process's one engine (`db.create_engine`): used by the
read_model_sync projector and the admin reconcile. Each row is stored with the JSON document the
API serves for the order (`document`), rendered once here, so that `read_model` serves it as is.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, text

from btc_orders.domain import orders
from btc_orders.events import BuyOrderCreated

# Each column of a projected row, with its Postgres type (the statement's arrays are cast to it): the
# event's `order` as the read model holds it (`orders.READ_TYPES`), the event's id and the document.
_COLUMN_TYPES = {**orders.READ_TYPES, "event_id": "uuid", "document": "text"}
# Orders are immutable, so applying an event twice must change nothing: the first insert wins and
# a replay is skipped by the primary key. The whole batch is one statement (arrays unnested), so
# the statement-level triggers of migration 0003 (the disorder bound, the notification of the new
# ids) run once per batch.
_UPSERT = text(
    f"""
    INSERT INTO buy_order_view ({", ".join(_COLUMN_TYPES)})
    SELECT * FROM unnest({", ".join(f"CAST(:{c} AS {t}[])" for c, t in _COLUMN_TYPES.items())})
    ON CONFLICT (sequence) DO NOTHING
    """  # noqa: S608  (fixed fragments; values are parameters)
)
_HIGHEST_SEQUENCE = text("SELECT coalesce(max(sequence), 0) FROM buy_order_view")


def document(order: Mapping[str, Any]) -> str:
    """The served JSON of one order from a read-model row's fields by name (money as stored: the
    event's text), encoded exactly as `web.json_response` encodes a body."""
    return orjson.dumps(orders.resource_of(order)).decode()


def highest_sequence(connection: Connection) -> int:
    """The newest projected order's sequence (0 when there is none)."""
    return int(connection.execute(_HIGHEST_SEQUENCE).scalar_one())


def event_row(event: BuyOrderCreated) -> dict[str, Any]:
    """What `apply_created_events` takes of a validated event: its `order`'s fields by name, and `event_id`."""
    return {**event.order.values(), "event_id": event.event_id}


def apply_created_events(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Project validated `buy_order.created` events (their `order` plus `event_id`), in one statement
    (an optional field a row lacks is null)."""
    if rows:
        documents = [document(row) for row in rows]
        values = {
            column: [orders.value_of(row, column) for row in rows] for column in _COLUMN_TYPES if column != "document"
        }
        connection.execute(_UPSERT, {**values, "document": documents})
