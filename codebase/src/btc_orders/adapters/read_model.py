"""The read model: idempotent projection of order events, and keyset pages, newest first.

Shaped for its query (CQRS): every row carries the JSON document the API serves for that
order, rendered once when the event is projected. A page is one statement whose result is the
response body already assembled by Postgres (the documents joined in page order, the first and
last ids, `has_more`), so serving it costs no per-row work in Python: no row objects, no JSON
encoding.

Every page, filtered or not, in either direction, is a keyset range scan that reads at most
`page_size + 1` matching rows, plus the rows the scan skips. What it skips is bounded whatever
the page's depth and however many orders lie outside the filter:

- no filter: the primary key (`sequence`) scanned from the reference: nothing skipped;
- `currency`: one scan of the `(currency, sequence)` index per currency asked for (at most
  three), merged: only rows of those currencies are read;
- `created_gte` / `created_lt`: the time range becomes a range of sequences. `created_at` is
  not monotonic in `sequence` (a timestamp is taken when the order's transaction starts, its
  sequence a little later), so the read model keeps `disorder` (migration 0003): an upper bound
  of `created_at(a) - created_at(b)` over all rows `a` before `b` in sequence order, kept up to
  date by a trigger on every statement that writes rows. Then, for any row `x`:
  `created_at(x) >= created_lt + disorder` implies that every row after `x` has
  `created_at >= created_lt`, so every order of the range comes before `x`; and
  `created_at(x) < created_gte - disorder` implies that every order of the range comes after
  `x`. One row from the `created_at` index on each side (the nearest such `x`) bounds the scan;
  the filter itself is then applied to each row's own `created_at`: exact, whatever `disorder`
  is. What the scan reads outside the range lies within `disorder` (plus the gap to the
  nearest row) of its two ends: a constant for a given history, the same a year back as for
  today. A history whose timestamps were once far out of order (a large `disorder`) makes
  time-filtered pages read more, never wrong ones.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, Engine, text

from btc_orders.adapters.db import Prepared, fetch_prepared, unavailable_on_outage
from btc_orders.adapters.db_loop import LoopConnections, NoConnectionFree
from btc_orders.domain import orders
from btc_orders.domain.errors import OrderNotFound, UnknownReference
from btc_orders.events import BuyOrderCreated

_COLUMNS = ("sequence", *orders.RESOURCE_FIELDS, "event_id", "document")
_TYPES = ("bigint", "uuid", "timestamptz", "text", "text", "text", "text", "uuid", "uuid", "text")
# Orders are immutable, so applying an event twice must change nothing: the first insert wins and
# a replay is skipped by the primary key. The whole batch is one statement (arrays unnested), so
# the statement-level triggers of migration 0003 (the disorder bound, the notification of the new
# ids) run once per batch.
_UPSERT = text(
    f"""
    INSERT INTO buy_order_view ({", ".join(_COLUMNS)})
    SELECT * FROM unnest({", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(_COLUMNS, _TYPES, strict=True))})
    ON CONFLICT (sequence) DO NOTHING
    """  # noqa: S608  (fixed fragments; values are parameters)
)
_HIGHEST_SEQUENCE = text("SELECT coalesce(max(sequence), 0) FROM buy_order_view")
_PRESENT = text("SELECT id FROM buy_order_view WHERE id = ANY(CAST(:ids AS uuid[]))")

Direction = Literal["older", "newer"]
_LOWEST, _HIGHEST = "-9223372036854775808", "9223372036854775807"
_CURRENCIES = frozenset(currency.value for currency in orders.Currency)
# A page statement's parameters, in this order in every shape (a shape may leave some unused).
_LIMIT, _REFERENCE, _GTE, _LT = "$1", "$2", "$3", "$4"
_PARAMETER_TYPES = "bigint, uuid, timestamptz, timestamptz"


@dataclass(frozen=True, slots=True)
class PageQuery:
    """What `GET /buy_orders` asks for. At most one reference; `currencies` empty: all."""

    page_size: int = 10
    last_reference: uuid.UUID | None = None
    first_reference: uuid.UUID | None = None
    currencies: tuple[str, ...] = ()
    created_gte: datetime | None = None
    created_lt: datetime | None = None

    def __post_init__(self) -> None:
        if self.last_reference is not None and self.first_reference is not None:
            raise ValueError("give last_reference or first_reference, not both")


@dataclass(frozen=True, slots=True)
class PageBody:
    """A served page: its body, and what the `Link` header needs."""

    body: bytes
    first_reference: str | None
    last_reference: str | None
    has_more: bool  # more orders in the direction asked for
    has_other_side: bool  # orders on the other side of the page (newer when paging older, and back)
    direction: Direction = "older"

    @property
    def has_older(self) -> bool:
        return self.has_more if self.direction == "older" else self.has_other_side

    @property
    def has_newer(self) -> bool:
        return self.has_other_side if self.direction == "older" else self.has_more


@dataclass(frozen=True, slots=True)
class Page:
    buy_orders: list[dict[str, Any]]
    first_reference: str | None
    last_reference: str | None
    has_more: bool

    def body(self) -> dict[str, Any]:
        return {
            "buy_orders": self.buy_orders,
            "first_reference": self.first_reference,
            "last_reference": self.last_reference,
            "has_more": self.has_more,
        }


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the statement of a page depends on (the other values travel as parameters).

    The currencies asked for are part of the shape, written into the statement as literals from
    their closed set (SPEC 3.1): so the planner matches each to its partial index
    (`WHERE currency = 'GBP'`, migration 0003) in a generic plan too, which a parameter would not.
    """

    direction: Direction
    reference: bool
    currencies: tuple[str, ...]  # sorted, each a `Currency`; empty: no currency filter
    gte: bool
    lt: bool

    def __post_init__(self) -> None:
        if not set(self.currencies) <= _CURRENCIES:
            raise ValueError(f"not a currency of SPEC 3.1: {self.currencies}")

    @property
    def name(self) -> str:
        """The prepared statement's name: one per shape, the same on every connection."""
        parts = ["page", self.direction, "ref" if self.reference else "top", *self.currencies]
        parts += ["gte"] * self.gte + ["lt"] * self.lt
        return "_".join(parts).lower()


@cache
def _page_statement(shape: _Shape) -> str:
    """The one statement of a page of this shape, with `$1`..`$4` placeholders (limit, reference,
    created_gte, created_lt: `_PARAMETER_TYPES`), to be prepared.

    Result: no row for an unknown reference; else one row of the page's documents joined by commas
    in page order (NULL when empty), its first and last ids, `has_more`, and whether filtered rows
    exist on the other side of the page (for the `Link` header). `limit` = `page_size + 1`: the
    extra row only tells `has_more`; `n` numbers the rows in scan order.

    Only fixed fragments are put together here; every value is a bound parameter, but for the
    currencies, literals from their closed set (`_Shape`).
    """
    older = shape.direction == "older"
    ahead, behind, order, reverse = ("<", ">", "DESC", "ASC") if older else (">", "<", "ASC", "DESC")
    ctes = []
    if shape.reference:
        reference = "reference AS (SELECT sequence, currency, created_at FROM buy_order_view WHERE id ="
        ctes.append(" ".join([reference, _REFERENCE, ")"]))
    if shape.gte or shape.lt:
        # the nearest row at or past `created_lt + disorder`, and before `created_gte - disorder`
        upper, lower = "NULL::bigint", "NULL::bigint"
        if shape.lt:
            upper = " ".join(
                [
                    "(SELECT o.sequence FROM buy_order_view AS o WHERE o.created_at >= CAST(",
                    _LT,
                    "AS timestamptz) + d.disorder ORDER BY o.created_at LIMIT 1)",
                ]
            )
        if shape.gte:
            lower = " ".join(
                [
                    "(SELECT o.sequence FROM buy_order_view AS o WHERE o.created_at < CAST(",
                    _GTE,
                    "AS timestamptz) - d.disorder ORDER BY o.created_at DESC LIMIT 1)",
                ]
            )
        ctes.append(
            " ".join(["bounds AS (SELECT", upper, "AS upper,", lower, "AS lower FROM buy_order_view_disorder AS d)"])
        )

    def conditions(currency: str | None, side: tuple[str, str] | None) -> str:
        """The filter of one scan: a range of sequences, then each row's own currency and time.

        The time test is written `(...) IS TRUE` so that no index serves it: the scan must follow
        `sequence` (never the `created_at` index and a sort of the whole time range), bounded by
        the range of sequences that `bounds` found.
        """
        found = [] if currency is None else [f"o.currency = '{currency}'"]
        if side is not None:
            found.append(f"o.sequence {side[0]} {side[1]}")
        if shape.gte:
            found.append(f"(o.created_at >= CAST({_GTE} AS timestamptz)) IS TRUE")
            found.append(" ".join(["o.sequence >= coalesce((SELECT lower FROM bounds) + 1,", _LOWEST, ")"]))
        if shape.lt:
            found.append(f"(o.created_at < CAST({_LT} AS timestamptz)) IS TRUE")
            found.append(" ".join(["o.sequence <= coalesce((SELECT upper FROM bounds) - 1,", _HIGHEST, ")"]))
        return " ".join(["WHERE", " AND ".join(found)]) if found else ""

    def scan(currency: str | None, side: tuple[str, str] | None, columns: str, direction: str, limit: str) -> str:
        return " ".join(
            ["SELECT", columns, "FROM buy_order_view AS o", conditions(currency, side), "ORDER BY o.sequence",
             direction, "LIMIT", limit]
        )  # fmt: skip

    currencies: list[str | None] = [*shape.currencies] or [None]
    start = (ahead, "(SELECT sequence FROM reference)") if shape.reference else None
    selects = [scan(c, start, "o.sequence, o.id, o.document", order, _LIMIT) for c in currencies]
    if len(selects) == 1:
        rows = selects[0]
    else:  # a few ordered scans of `page_size + 1` rows each, merged: a sort of at most 3 x that
        merged = " UNION ALL ".join(f"({select})" for select in selects)
        rows = " ".join(["SELECT * FROM (", merged, ") AS scans ORDER BY sequence", order, "LIMIT", _LIMIT])
    ctes.append(
        " ".join(["page AS (SELECT rows.*, row_number() OVER (ORDER BY rows.sequence", order, ") AS n FROM (", rows,
                  ") AS rows)"])
    )  # fmt: skip

    if shape.reference:
        # the other side of the page: past its edge row, or past the reference when it is empty;
        # one row of one scan per currency (a scalar subquery keeps its ORDER BY and LIMIT: the index)
        edge_of = "max" if older else "min"
        ctes.append(
            " ".join(["edge AS (SELECT coalesce(", edge_of, "(page.sequence) FILTER (WHERE page.n <", _LIMIT, "),",
                      "(SELECT sequence FROM reference)) AS sequence FROM page)"])
        )  # fmt: skip
        beyond = (behind, "(SELECT sequence FROM edge)")
        # A page that is not empty lies wholly on one side of its reference: a reference that
        # passes the filters is a filtered row beyond the page (the common case, a client following
        # links), and the scans are never run (they are init plans, evaluated only when reached).
        passes = ["true"]
        if shape.currencies:
            passes.append("r.currency IN (" + ", ".join(f"'{c}'" for c in shape.currencies) + ")")
        if shape.gte:
            passes.append(f"r.created_at >= CAST({_GTE} AS timestamptz)")
        if shape.lt:
            passes.append(f"r.created_at < CAST({_LT} AS timestamptz)")
        reference_beyond = " ".join(
            ["(count(page.sequence) FILTER (WHERE page.n <", _LIMIT, ") > 0 AND coalesce((SELECT",
             " AND ".join(passes), "FROM reference AS r), false))"]
        )  # fmt: skip
        scans = [f"({scan(c, beyond, 'o.sequence', reverse, '1')}) IS NOT NULL" for c in currencies]
        other = " OR ".join([reference_beyond, *scans])
        source = "page HAVING EXISTS (SELECT FROM reference)"  # an unknown reference: no result row at all
    else:  # the newest page: nothing is newer
        other = "false"
        source = "page"
    return " ".join(
        [
            "WITH",
            ", ".join(ctes),
            f"SELECT string_agg(page.document, ',' ORDER BY page.sequence DESC) FILTER (WHERE page.n < {_LIMIT}),",
            f"(array_agg(page.id ORDER BY page.sequence DESC) FILTER (WHERE page.n < {_LIMIT}))[1]::text,",
            f"(array_agg(page.id ORDER BY page.sequence) FILTER (WHERE page.n < {_LIMIT}))[1]::text,",
            f"count(page.sequence) >= {_LIMIT},",
            other,
            "FROM",
            source,
        ]
    )


@cache
def prepared_page(shape: _Shape) -> Prepared:
    """The prepared statement of a page of this shape; `ReadModel.page_values` are its parameters."""
    statement = _page_statement(shape)
    prepare = f"PREPARE {shape.name} ({_PARAMETER_TYPES}) AS {statement}"
    return Prepared(shape.name, prepare, f"EXECUTE {shape.name} (%s, %s, %s, %s)")


PREPARED_ONE = Prepared.named("one_order", "SELECT document FROM buy_order_view WHERE id = :id", {"id": "uuid"})


def _quoted(reference: str | None) -> bytes:
    return b'"%s"' % reference.encode() if reference else b"null"


def page_shape(query: PageQuery) -> _Shape:
    """The shape of the statement that serves `query`."""
    return _Shape(
        "newer" if query.first_reference is not None else "older",
        query.last_reference is not None or query.first_reference is not None,
        tuple(sorted(set(query.currencies))),
        query.created_gte is not None,
        query.created_lt is not None,
    )


def page_values(query: PageQuery) -> tuple[Any, ...]:
    """The parameters of `prepared_page(page_shape(query))`, in its order (`_PARAMETER_TYPES`)."""
    return (query.page_size + 1, query.last_reference or query.first_reference, query.created_gte, query.created_lt)


class ReadModel:
    """The read model's queries. Each is one prepared statement, run on a thread (`fetch_page`,
    `one_body`) or awaited on the event loop (`*_on_loop`, with `loop_connections`: those raise
    `NoConnectionFree` when every loop connection is busy, and the caller takes the thread)."""

    def __init__(self, engine: Engine, loop_connections: LoopConnections | None = None) -> None:
        self.engine = engine
        self.loop_connections = loop_connections

    def fetch_page(self, query: PageQuery) -> PageBody:
        """The `GET /buy_orders` body, as `web.json_response` would encode the page."""
        shape = page_shape(query)
        return _page_body(query, shape, self._fetch_one(prepared_page(shape), page_values(query)))

    async def fetch_page_on_loop(self, query: PageQuery) -> PageBody:
        shape = page_shape(query)
        return _page_body(query, shape, await self._fetch_one_on_loop(prepared_page(shape), page_values(query)))

    def page_body(self, page_size: int, last_reference: uuid.UUID | None) -> bytes:
        """The body of an unfiltered page older than `last_reference` (the newest page without one)."""
        return self.fetch_page(PageQuery(page_size, last_reference)).body

    def page(self, page_size: int, last_reference: uuid.UUID | None = None, **filters: Any) -> Page:
        """The page as data (tests, tools): the served body, decoded."""
        body = orjson.loads(self.fetch_page(PageQuery(page_size, last_reference, **filters)).body)
        return Page(body["buy_orders"], body["first_reference"], body["last_reference"], body["has_more"])

    def one_body(self, order_id: uuid.UUID) -> bytes:
        """The `GET /buy_orders/{id}` body: the stored document."""
        return _one_body(order_id, self._fetch_one(PREPARED_ONE, (order_id,)))

    async def one_body_on_loop(self, order_id: uuid.UUID) -> bytes:
        return _one_body(order_id, await self._fetch_one_on_loop(PREPARED_ONE, (order_id,)))

    def one(self, order_id: uuid.UUID) -> dict[str, Any]:
        result: dict[str, Any] = orjson.loads(self.one_body(order_id))
        return result

    def present(self, order_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Which of these orders the read model holds (one statement)."""
        with unavailable_on_outage("read-model"), self.engine.connect() as connection:
            return set(connection.execute(_PRESENT, {"ids": list(order_ids)}).scalars())

    def _fetch_one(self, prepared: Prepared, values: Sequence[Any]) -> tuple[Any, ...] | None:
        """One row of one prepared statement, without SQLAlchemy's per-execution work (measured:
        +39% req/s at page_size=10; tuning log in benchmarks.md). Outages answer 503."""
        with unavailable_on_outage("read-model"):
            return fetch_prepared(self.engine, prepared, values)

    async def _fetch_one_on_loop(self, prepared: Prepared, values: Sequence[Any]) -> tuple[Any, ...] | None:
        if self.loop_connections is None:
            raise NoConnectionFree("no connections on the loop")
        with unavailable_on_outage("read-model"):
            return await self.loop_connections.fetch_prepared(prepared, values)


def _page_body(query: PageQuery, shape: _Shape, row: tuple[Any, ...] | None) -> PageBody:
    if row is None:  # the newest page always has its one row of aggregates
        name = "last_reference" if shape.direction == "older" else "first_reference"
        reference = query.last_reference or query.first_reference
        raise UnknownReference(f"{name} {reference} is not the id of any order")
    documents, first, last, has_more, has_other_side = row
    body = b"".join(
        (
            b'{"buy_orders":[',
            documents.encode() if documents else b"",
            b'],"first_reference":',
            _quoted(first),
            b',"last_reference":',
            _quoted(last),
            b',"has_more":true}' if has_more else b',"has_more":false}',
        )
    )
    return PageBody(body, first, last, bool(has_more), bool(has_other_side), shape.direction)


def _one_body(order_id: uuid.UUID, row: tuple[Any, ...] | None) -> bytes:
    if row is None:
        raise OrderNotFound(f"no order with id {order_id} (yet: a new order may take a moment to appear)")
    found: str = row[0]
    return found.encode()


def resource(order: Mapping[str, Any]) -> dict[str, Any]:
    """The order resource (SPEC 3.3) from a read-model row's fields (money as stored: the event's text)."""
    return orders.resource(*(order[name] for name in orders.RESOURCE_FIELDS))


def document(order: Mapping[str, Any]) -> str:
    """The served JSON of one order, encoded exactly as `web.json_response` encodes a body."""
    return orjson.dumps(resource(order)).decode()


def highest_sequence(connection: Connection) -> int:
    """The newest projected order's sequence (0 when there is none)."""
    return int(connection.execute(_HIGHEST_SEQUENCE).scalar_one())


def event_row(event: BuyOrderCreated) -> dict[str, Any]:
    """What `apply_created_events` takes of a validated event: its `order` fields and `event_id`."""
    order = event.order
    return {
        "sequence": order.sequence,
        "id": order.id,
        "created_at": order.created_at,
        "currency": order.currency.value,
        "amount": order.amount,
        "exchange_rate": order.exchange_rate,
        "bitcoin_amount": order.bitcoin_amount,
        "idempotence_key": order.idempotence_key,
        "event_id": event.event_id,
    }


def apply_created_events(connection: Connection, orders: Sequence[dict[str, Any]]) -> None:
    """Project validated `buy_order.created` events (their `order` plus `event_id`), in one statement."""
    if orders:
        rows = [{**order, "document": document(order)} for order in orders]
        connection.execute(_UPSERT, {column: [row[column] for row in rows] for column in _COLUMNS})
