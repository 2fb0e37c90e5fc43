"""The read model: idempotent projection of order events, and keyset pages, newest first.

Shaped for its query (CQRS): every row carries the JSON document the API serves for that
order, rendered once when the event is projected. A page is one statement whose result is the
response body already assembled by Postgres (the documents joined in page order, the last id,
`has_more`), so serving it costs no per-row work in Python: no row objects, no JSON encoding.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg2
from sqlalchemy import Connection, Engine, text

from btc_orders.adapters.db import unavailable_on_outage
from btc_orders.domain.errors import OrderNotFound, UnknownReference
from btc_orders.domain.orders import format_timestamp

# Orders are immutable, so applying an event twice must change nothing: the
# first insert wins and a replay is skipped by the primary key.
_UPSERT = text(
    """
    INSERT INTO buy_order_view
        (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key, event_id,
         document)
    VALUES
        (:sequence, :id, :created_at, :currency, :amount, :exchange_rate, :bitcoin_amount, :idempotence_key, :event_id,
         :document)
    ON CONFLICT (sequence) DO NOTHING
    """
)

# The page's rows: a backward scan of the primary key reading `:limit` = `page_size + 1` rows
# whatever the depth (keyset paging); the extra row only tells `has_more`. `n` numbers them
# newest first.
_ROWS = """
    SELECT sequence, id, document, row_number() OVER (ORDER BY sequence DESC) AS n
    FROM (
        SELECT o.sequence, o.id, o.document
        FROM buy_order_view AS o {where}
        ORDER BY o.sequence DESC
        LIMIT :limit
    ) AS newest
"""
# One result row: the page's documents joined by commas in page order (NULL for an empty
# page), the id of its last order, and `has_more`.
_AGGREGATES = """
    SELECT string_agg(page.document, ',' ORDER BY page.sequence DESC) FILTER (WHERE page.n < :limit) AS documents,
           (array_agg(page.id ORDER BY page.sequence) FILTER (WHERE page.n < :limit))[1]::text AS last_reference,
           count(page.sequence) >= :limit AS has_more
"""
_FIRST_PAGE = text(f"{_AGGREGATES} FROM ({_ROWS.format(where='')}) AS page")
# A later page: the reference is found by the unique index on `id` and the page read after it,
# in the same statement. Unknown reference: no group, so no result row at all; a reference
# with nothing after it (the oldest order): one group of NULLs, an empty page.
_PAGE_AFTER = text(
    f"""{_AGGREGATES}
    FROM buy_order_view AS reference
    LEFT JOIN LATERAL ({_ROWS.format(where="WHERE o.sequence < reference.sequence")}) AS page ON true
    WHERE reference.id = :reference
    GROUP BY reference.id
    """
)
_ONE = text("SELECT document FROM buy_order_view WHERE id = :id")


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
        # the statements as psycopg2 takes them (`%(name)s` placeholders)
        self._first_page, self._page_after, self._one = (
            str(statement.compile(dialect=engine.dialect)) for statement in (_FIRST_PAGE, _PAGE_AFTER, _ONE)
        )

    def page_body(self, page_size: int, last_reference: uuid.UUID | None) -> bytes:
        """The `GET /buy_orders` body, as `web.json_response` would encode the page."""
        if last_reference is None:
            row = self._fetch_one(self._first_page, {"limit": page_size + 1})
        else:
            row = self._fetch_one(self._page_after, {"reference": last_reference, "limit": page_size + 1})
        if row is None:  # the first page always has its one row of aggregates
            raise UnknownReference(f"last_reference {last_reference} is not the id of any order")
        documents, last, has_more = row
        return b"".join(
            (
                b'{"buy_orders":[',
                documents.encode() if documents else b"",
                b'],"last_reference":',
                b'"%s"' % last.encode() if last else b"null",
                b',"has_more":true}' if has_more else b',"has_more":false}',
            )
        )

    def page(self, page_size: int, last_reference: uuid.UUID | None) -> Page:
        """The page as data (tests, tools): the served body, decoded."""
        body = orjson.loads(self.page_body(page_size, last_reference))
        return Page(body["buy_orders"], body["last_reference"], body["has_more"])

    def one_body(self, order_id: uuid.UUID) -> bytes:
        """The `GET /buy_orders/{id}` body: the stored document."""
        row = self._fetch_one(self._one, {"id": order_id})
        if row is None:
            raise OrderNotFound(f"no order with id {order_id} (yet: a new order may take a moment to appear)")
        found: str = row[0]
        return found.encode()

    def one(self, order_id: uuid.UUID) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.one_body(order_id))
        return result

    def _fetch_one(self, statement: str, parameters: dict[str, Any]) -> tuple[Any, ...] | None:
        """One row of one statement on a pooled psycopg2 connection, without SQLAlchemy's
        per-execution work (measured: +39% req/s at page_size=10; tuning log in benchmarks.md).

        Outages answer as through `unavailable_on_outage`: a 503 with the same message; a
        connection lost with the server is discarded, and the pool with it (the others died
        too), as SQLAlchemy does on a disconnect.
        """
        with unavailable_on_outage("read-model"):  # refused, lost or an exhausted pool: 503
            connection = self.engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(statement, parameters)
                row: tuple[Any, ...] | None = cursor.fetchone()
                cursor.close()
                return row
            except psycopg2.Error as error:
                if getattr(connection.dbapi_connection, "closed", 1):  # lost, not just refused
                    connection.invalidate(error)
                    self.engine.dispose(close=False)
                raise
            finally:
                connection.close()


def resource(order: Mapping[str, Any]) -> dict[str, Any]:
    """The order resource (SPEC 3.3) from a read-model row's fields."""
    return {
        "id": str(order["id"]),
        "created_at": format_timestamp(order["created_at"]),
        "currency": order["currency"],
        "amount": order["amount"],
        "exchange_rate": order["exchange_rate"],
        "bitcoin_amount": order["bitcoin_amount"],
        "idempotence_key": str(order["idempotence_key"]),
    }


def document(order: Mapping[str, Any]) -> str:
    """The served JSON of one order, encoded exactly as `web.json_response` encodes a body."""
    return orjson.dumps(resource(order)).decode()


def apply_created_events(connection: Connection, orders: Sequence[dict[str, Any]]) -> None:
    """Project validated `buy_order.created` events (their `order` plus `event_id`)."""
    if orders:
        connection.execute(_UPSERT, [{**order, "document": document(order)} for order in orders])
