"""The read model's queries, as fetch_buy_orders serves them: keyset pages, newest first, and one order.

Shaped for its query (CQRS): every row carries the JSON document the API serves for that
order, rendered once when the event is projected (`projection`). A page is one statement whose
result is the response body already assembled by Postgres (the documents joined in page order,
the first and last ids, `has_more`), so serving it costs no per-row work in Python: no row
objects, no JSON encoding.

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
from dataclasses import dataclass
from datetime import datetime
from functools import cache, partial
from typing import Any, Literal

import orjson
import psycopg
import psycopg_pool

from btc_orders.adapters import db
from btc_orders.domain import orders
from btc_orders.domain.errors import OrderNotFound, UnknownReference

Direction = Literal["older", "newer"]
_LOWEST, _HIGHEST = "-9223372036854775808", "9223372036854775807"
_CURRENCIES = frozenset(currency.value for currency in orders.Currency)
# The values a page statement may take, with the Postgres types the driver sends them as (the limit,
# `page_size + 1`, is at most 1001: a smallint); a shape numbers the ones it uses `$1`, `$2`, ... in
# this order (`_Shape.parameters`).
PARAMETER_TYPES = {
    "limit": "smallint",
    "reference": "uuid",
    "gte": "timestamp with time zone",
    "lt": "timestamp with time zone",
}


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
        """A name for the shape (tests, tools): one per shape."""
        parts = ["page", self.direction, "ref" if self.reference else "top", *self.currencies]
        parts += ["gte"] * self.gte + ["lt"] * self.lt
        return "_".join(parts).lower()

    @property
    def parameters(self) -> tuple[str, ...]:
        """The values its statement takes, as `$1`, `$2`, ... (`PARAMETER_TYPES`): only those it uses,
        since the server must know the type of every parameter it is sent."""
        used = {"limit": True, "reference": self.reference, "gte": self.gte, "lt": self.lt}
        return tuple(name for name in PARAMETER_TYPES if used[name])


@cache
def page_statement(shape: _Shape) -> bytes:
    """The one statement of a page of this shape, built once per shape, its values as `$n`
    placeholders (`_Shape.parameters`): the same text every time, so the driver prepares it.

    Result: no row for an unknown reference; else one row of the page's documents joined by commas
    in page order (NULL when empty), its first and last ids, `has_more`, and whether filtered rows
    exist on the other side of the page (for the `Link` header). `limit` = `page_size + 1`: the
    extra row only tells `has_more`; `n` numbers the rows in scan order.

    Only fixed fragments are put together here; every value is a bound parameter, but for the
    currencies, literals from their closed set (`_Shape`).
    """
    placeholders = {name: f"${number}" for number, name in enumerate(shape.parameters, 1)}
    limit, ref, gte, lt = (placeholders.get(name, "") for name in PARAMETER_TYPES)
    older = shape.direction == "older"
    ahead, behind, order, reverse = ("<", ">", "DESC", "ASC") if older else (">", "<", "ASC", "DESC")
    ctes = []
    if shape.reference:
        reference = "reference AS (SELECT sequence, currency, created_at FROM buy_order_view WHERE id ="
        ctes.append(" ".join([reference, ref, ")"]))
    if shape.gte or shape.lt:
        # the nearest row at or past `created_lt + disorder`, and before `created_gte - disorder`
        upper, lower = "NULL::bigint", "NULL::bigint"
        if shape.lt:
            upper = " ".join(
                [
                    "(SELECT o.sequence FROM buy_order_view AS o WHERE o.created_at >= CAST(",
                    lt,
                    "AS timestamptz) + d.disorder ORDER BY o.created_at LIMIT 1)",
                ]
            )
        if shape.gte:
            lower = " ".join(
                [
                    "(SELECT o.sequence FROM buy_order_view AS o WHERE o.created_at < CAST(",
                    gte,
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
            found.append(f"(o.created_at >= CAST({gte} AS timestamptz)) IS TRUE")
            found.append(" ".join(["o.sequence >= coalesce((SELECT lower FROM bounds) + 1,", _LOWEST, ")"]))
        if shape.lt:
            found.append(f"(o.created_at < CAST({lt} AS timestamptz)) IS TRUE")
            found.append(" ".join(["o.sequence <= coalesce((SELECT upper FROM bounds) - 1,", _HIGHEST, ")"]))
        return " ".join(["WHERE", " AND ".join(found)]) if found else ""

    def scan(currency: str | None, side: tuple[str, str] | None, columns: str, direction: str, limit: str) -> str:
        return " ".join(
            ["SELECT", columns, "FROM buy_order_view AS o", conditions(currency, side), "ORDER BY o.sequence",
             direction, "LIMIT", limit]
        )  # fmt: skip

    currencies: list[str | None] = [*shape.currencies] or [None]
    start = (ahead, "(SELECT sequence FROM reference)") if shape.reference else None
    selects = [scan(c, start, "o.sequence, o.id, o.document", order, limit) for c in currencies]
    if len(selects) == 1:
        rows = selects[0]
    else:  # a few ordered scans of `page_size + 1` rows each, merged: a sort of at most 3 x that
        merged = " UNION ALL ".join(f"({select})" for select in selects)
        rows = " ".join(["SELECT * FROM (", merged, ") AS scans ORDER BY sequence", order, "LIMIT", limit])
    ctes.append(
        " ".join(["page AS (SELECT rows.*, row_number() OVER (ORDER BY rows.sequence", order, ") AS n FROM (", rows,
                  ") AS rows)"])
    )  # fmt: skip

    if shape.reference:
        # the other side of the page: past its edge row, or past the reference when it is empty;
        # one row of one scan per currency (a scalar subquery keeps its ORDER BY and LIMIT: the index)
        edge_of = "max" if older else "min"
        ctes.append(
            " ".join(["edge AS (SELECT coalesce(", edge_of, "(page.sequence) FILTER (WHERE page.n <", limit, "),",
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
            passes.append(f"r.created_at >= CAST({gte} AS timestamptz)")
        if shape.lt:
            passes.append(f"r.created_at < CAST({lt} AS timestamptz)")
        reference_beyond = " ".join(
            ["(count(page.sequence) FILTER (WHERE page.n <", limit, ") > 0 AND coalesce((SELECT",
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
            f"SELECT string_agg(page.document, ',' ORDER BY page.sequence DESC) FILTER (WHERE page.n < {limit}),",
            f"(array_agg(page.id ORDER BY page.sequence DESC) FILTER (WHERE page.n < {limit}))[1]::text,",
            f"(array_agg(page.id ORDER BY page.sequence) FILTER (WHERE page.n < {limit}))[1]::text,",
            f"count(page.sequence) >= {limit},",
            other,
            "FROM",
            source,
        ]
    ).encode()


ONE_ORDER = b"SELECT document FROM buy_order_view WHERE id = $1"


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


def page_values(query: PageQuery, shape: _Shape) -> tuple[Any, ...]:
    """The values of `page_statement(shape)` that serve `query`, in its order (`_Shape.parameters`)."""
    values = {
        "limit": query.page_size + 1,
        "reference": query.last_reference or query.first_reference,
        "gte": query.created_gte,
        "lt": query.created_lt,
    }
    return tuple(values[name] for name in shape.parameters)


class ReadModel:
    """The service's queries: each one statement, one round trip, on the service's one pool.

    The statements' texts are fixed per shape, so the driver prepares each on a connection after
    its first uses there (`db.PREPARE_THRESHOLD`; generic plans, `db.connect_args`); a prepared
    statement the server forgot is prepared again by `db.run`. Outages are `ServiceUnavailable`.
    """

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self.pool = pool

    async def fetch_page(self, query: PageQuery) -> PageBody:
        """The `GET /buy_orders` body, as `web.json_response` would encode the page."""
        shape = page_shape(query)
        return _page_body(query, shape, await self._fetch_one(page_statement(shape), page_values(query, shape)))

    async def one_body(self, order_id: uuid.UUID) -> bytes:
        """The `GET /buy_orders/{id}` body: the stored document."""
        return _one_body(order_id, await self._fetch_one(ONE_ORDER, (order_id,)))

    async def page(self, page_size: int, last_reference: uuid.UUID | None = None, **filters: Any) -> Page:
        """The page as data (tests, tools): the served body, decoded."""
        body = orjson.loads((await self.fetch_page(PageQuery(page_size, last_reference, **filters))).body)
        return Page(body["buy_orders"], body["first_reference"], body["last_reference"], body["has_more"])

    async def _fetch_one(self, statement: bytes, values: tuple[Any, ...]) -> tuple[Any, ...] | None:
        with db.unavailable_on_outage("read-model"):
            return await db.run(self.pool, partial(_first_row, statement, values))


async def _first_row(
    statement: bytes, values: tuple[Any, ...], connection: psycopg.AsyncConnection[Any]
) -> tuple[Any, ...] | None:
    """The first row of `statement` (`$n` placeholders: a raw cursor, no query parsing per call)."""
    async with psycopg.AsyncRawCursor(connection) as cursor:
        await cursor.execute(statement, values)
        return await cursor.fetchone()


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
