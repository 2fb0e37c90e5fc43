"""Filtered keyset pages on a real Postgres: exact against brute force, and constant cost.

Histories are written straight into the read model (through the projection's own
`apply_created_events`): that is the cheapest way to get orders whose `created_at` is out of
sequence order by any amount, and batches that land out of order, as several relays and workers
can make them.
"""

import asyncio
import itertools
import random
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg_pool
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from btc_orders.adapters import db, read_model
from btc_orders.adapters.projection import apply_created_events
from btc_orders.adapters.read_model import PageQuery, ReadModel
from btc_orders.domain.errors import UnknownReference
from tests.integration.test_read_model import nodes, plan
from tests.support.services import Databases, opened_pool, throwaway_databases

BASE = datetime(2025, 1, 1, tzinfo=UTC)
CURRENCIES = ("EUR", "GBP", "USD")


@dataclass(frozen=True)
class Order:
    sequence: int
    id: uuid.UUID
    created_at: datetime
    currency: str

    def row(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "id": self.id,
            "created_at": self.created_at,
            "currency": self.currency,
            "amount": "10.00",
            "exchange_rate": "97012.34",
            "bitcoin_amount": "0.00010309",
            "idempotence_key": uuid.uuid4(),
            "event_id": uuid.uuid4(),
        }


def true_disorder(orders: list[Order]) -> timedelta:
    """max created_at(a) - created_at(b) over a before b in sequence order (0 if in order)."""
    worst, highest = timedelta(0), None
    for order in sorted(orders, key=lambda o: o.sequence):
        if highest is not None:
            worst = max(worst, highest - order.created_at)
        highest = order.created_at if highest is None else max(highest, order.created_at)
    return worst


def reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE buy_order_view"))
        connection.execute(text("UPDATE buy_order_view_disorder SET disorder = interval '0'"))


def project(engine: Engine, orders: list[Order], batches: list[list[Order]]) -> None:
    for batch in batches:
        with engine.begin() as connection:
            apply_created_events(connection, [order.row() for order in batch])


def disorder(engine: Engine) -> timedelta:
    with engine.connect() as connection:
        value: timedelta = connection.execute(text("SELECT disorder FROM buy_order_view_disorder")).scalar_one()
    return value


def matches(order: Order, query: PageQuery) -> bool:
    return (
        (not query.currencies or order.currency in query.currencies)
        and (query.created_gte is None or order.created_at >= query.created_gte)
        and (query.created_lt is None or order.created_at < query.created_lt)
    )


def ids(page: dict[str, Any]) -> list[str]:
    return [order["id"] for order in page["buy_orders"]]


@pytest.fixture
async def read_pool(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.read_url, 2) as pool:
        yield pool


async def fetch(model: ReadModel, query: PageQuery) -> tuple[dict[str, Any], read_model.PageBody]:
    served = await model.fetch_page(query)
    return orjson.loads(served.body), served


def check_page(orders: list[Order], query: PageQuery, page: dict[str, Any], served: read_model.PageBody) -> None:
    """The page is exactly what brute force over the whole history says, flags included."""
    newest_first = [o for o in sorted(orders, key=lambda o: -o.sequence) if matches(o, query)]
    by_id = {o.id: o for o in orders}
    reference = query.last_reference or query.first_reference
    if reference is None:
        expected, beyond, other_side = newest_first[: query.page_size], newest_first[query.page_size :], []
    elif query.last_reference is not None:
        pivot = by_id[reference].sequence
        older = [o for o in newest_first if o.sequence < pivot]
        expected, beyond = older[: query.page_size], older[query.page_size :]
        edge = expected[0].sequence if expected else pivot
        other_side = [o for o in newest_first if o.sequence > edge]
    else:
        pivot = by_id[reference].sequence
        newer = [o for o in reversed(newest_first) if o.sequence > pivot]  # oldest first
        expected, beyond = list(reversed(newer[: query.page_size])), newer[query.page_size :]
        edge = expected[-1].sequence if expected else pivot
        other_side = [o for o in newest_first if o.sequence < edge]
    assert ids(page) == [str(o.id) for o in expected], query
    assert page["first_reference"] == (str(expected[0].id) if expected else None)
    assert page["last_reference"] == (str(expected[-1].id) if expected else None)
    assert page["has_more"] is bool(beyond)
    assert served.has_other_side is bool(other_side)
    for order in page["buy_orders"]:  # the served document is the order's own
        found = by_id[uuid.UUID(order["id"])]
        assert order["currency"] == found.currency
        assert order["created_at"] == found.created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def walk(model: ReadModel, orders: list[Order], query: PageQuery) -> None:
    """From the newest page to the oldest by last_reference, then back by first_reference: every
    matching order exactly once each way, in order."""
    expected = [str(o.id) for o in sorted(orders, key=lambda o: -o.sequence) if matches(o, query)]
    seen: list[str] = []
    page, served = await fetch(model, query)
    check_page(orders, query, page, served)
    seen += ids(page)
    pages = 1
    while page["has_more"]:
        step = PageQuery(query.page_size, uuid.UUID(page["last_reference"]), None, *_filters(query))
        page, served = await fetch(model, step)
        check_page(orders, step, page, served)
        seen += ids(page)
        pages += 1
        assert pages <= len(orders) + 2
    assert seen == expected
    if not seen:
        return
    back: list[list[str]] = [ids(page)]
    while True:
        step = PageQuery(query.page_size, None, uuid.UUID(page["first_reference"]), *_filters(query))
        page, served = await fetch(model, step)
        check_page(orders, step, page, served)
        if not page["buy_orders"]:
            break
        back.append(ids(page))
        if not page["has_more"]:
            break
    assert [order for chunk in reversed(back) for order in chunk] == expected


def _filters(query: PageQuery) -> tuple[tuple[str, ...], datetime | None, datetime | None]:
    return query.currencies, query.created_gte, query.created_lt


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Order], list[list[Order]]]:
    """Orders about a second apart, some out of time order (a little or a lot), projected in
    batches that land in a shuffled order."""
    count = draw(st.integers(0, 60))
    weights = draw(st.sampled_from([(1, 1, 1), (1, 0, 8), (5, 1, 0), (0, 0, 1)]))
    pool = [c for c, w in zip(CURRENCIES, weights, strict=True) for _ in range(w)]
    orders: list[Order] = []
    sequence = 0
    for index in range(count):
        sequence += draw(st.integers(1, 3))
        jitter = draw(st.one_of(st.just(0), st.integers(-3000, 3000), st.integers(-(10**8), 10**8)))
        orders.append(
            Order(
                sequence=sequence,
                id=uuid.UUID(int=index + 1),  # deterministic: hypothesis replays what it found
                created_at=BASE + timedelta(seconds=index, milliseconds=jitter),
                currency=draw(st.sampled_from(pool)),
            )
        )
    cuts = sorted(draw(st.lists(st.integers(0, count), max_size=6)))
    batches = [orders[a:b] for a, b in zip([0, *cuts], [*cuts, count], strict=True) if b > a]
    draw(st.randoms()).shuffle(batches)
    return orders, batches


def queries(orders: list[Order]) -> st.SearchStrategy[PageQuery]:
    times = [o.created_at for o in orders] or [BASE]
    instant = st.one_of(
        st.none(),
        st.sampled_from(times),  # on an order's own time: the bounds' edges
        st.sampled_from(times).map(lambda t: t + timedelta(microseconds=1)),
        st.integers(-120, 180).map(lambda s: BASE + timedelta(seconds=s)),
    )
    return st.builds(
        lambda size, currencies, gte, lt: PageQuery(size, None, None, tuple(sorted(currencies)), gte, lt),
        st.integers(1, 7),
        st.sets(st.sampled_from(CURRENCIES)),
        instant,
        instant,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_filter_combination_pages_exactly_what_brute_force_says(
    databases: Databases, read_engine: Engine, data: st.DataObject
) -> None:
    orders, batches = data.draw(histories())
    reset(read_engine)
    project(read_engine, orders, batches)
    assert disorder(read_engine) >= true_disorder(orders)  # the bound the time filter relies on
    asked = []
    for query in data.draw(st.lists(queries(orders), min_size=1, max_size=4)):
        # any order may be a reference, in the filter or not
        references = data.draw(st.lists(st.sampled_from(orders), max_size=3)) if orders else []
        asked.append((query, references))

    async def check() -> None:
        async with opened_pool(databases.read_url, 1) as pool:
            model = ReadModel(pool)
            for query, references in asked:
                await walk(model, orders, query)
                for reference in references:
                    for step in (
                        PageQuery(query.page_size, reference.id, None, *_filters(query)),
                        PageQuery(query.page_size, None, reference.id, *_filters(query)),
                    ):
                        check_page(orders, step, *await fetch(model, step))

    asyncio.run(check())


@pytest.mark.anyio
async def test_an_unknown_reference_is_refused_in_either_direction_and_with_filters(
    read_pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    model = ReadModel(read_pool)
    for query in (
        PageQuery(10, uuid.uuid4()),
        PageQuery(10, None, uuid.uuid4()),
        PageQuery(10, None, uuid.uuid4(), ("GBP", "USD"), BASE, BASE + timedelta(days=1)),
    ):
        with pytest.raises(UnknownReference):
            await model.fetch_page(query)


def test_concurrent_projections_never_miss_the_disorder_between_their_batches(read_engine: Engine) -> None:
    """Two workers projecting interleaved batches at once: each batch alone is in order, only
    together are they out of order. The bound must still cover every pair."""
    rounds = 15
    for round_ in range(rounds):
        reset(read_engine)
        # odd sequences are early in time, even ones late: disorder only across the two streams
        late = [Order(2 * i + 2, uuid.uuid4(), BASE + timedelta(seconds=i + 30), "USD") for i in range(20)]
        early = [Order(2 * i + 1, uuid.uuid4(), BASE + timedelta(seconds=i), "EUR") for i in range(20)]
        barrier = threading.Barrier(2)

        def run(orders: list[Order], seed: int = round_, barrier: threading.Barrier = barrier) -> None:
            rng = random.Random(seed)
            barrier.wait()
            for start in range(0, len(orders), 5):
                with read_engine.begin() as connection:
                    apply_created_events(connection, [o.row() for o in orders[start : start + 5]])
                if rng.random() < 0.5:
                    threading.Event().wait(0.001)

        threads = [threading.Thread(target=run, args=(stream,)) for stream in (late, early)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert disorder(read_engine) >= true_disorder(late + early)


# ---------------------------------------------------------------------------------------------
# Constant cost: EXPLAIN of the service's own statements on a large read model

ROWS = 100_000
PAGE_SIZE = 10
LIMIT = PAGE_SIZE + 1


@pytest.fixture(scope="module")
def large_history() -> Iterator[Engine]:
    """100,000 orders a second apart, timestamps up to 3 s out of sequence order; GBP is 1%.
    Read only, so one database serves every test of this module."""
    with throwaway_databases() as databases:
        read_engine = db.create_engine(databases.read_url, pool_size=2)
        try:
            _fill(read_engine)
            yield read_engine
        finally:
            read_engine.dispose()


def _fill(read_engine: Engine) -> None:
    with read_engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO buy_order_view
                    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount, idempotence_key,
                     event_id)
                SELECT s, gen_random_uuid(),
                       timestamptz '2025-01-01 00:00:00+00' + s * interval '1 second'
                           + ((s * 37) % 7) * interval '0.5 second',
                       CASE WHEN s % 100 = 0 THEN 'GBP' WHEN s % 3 = 0 THEN 'EUR' ELSE 'USD' END,
                       '10.00', '97012.34', '0.00010309', gen_random_uuid(), gen_random_uuid()
                FROM generate_series(1, :rows) AS s
                """
            ),
            {"rows": ROWS},
        )
    with read_engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE buy_order_view"))


HOUR = timedelta(hours=1)
NEWEST_HOUR = BASE + timedelta(seconds=ROWS) - HOUR
FILTERS: dict[str, tuple[tuple[str, ...], datetime | None, datetime | None]] = {
    "none": ((), None, None),
    "rarest currency": (("GBP",), None, None),
    "two currencies": (("EUR", "GBP"), None, None),
    "first hour (far past)": ((), BASE, BASE + HOUR),
    "newest hour": ((), NEWEST_HOUR, None),
    "before the first hour's end": ((), None, BASE + HOUR),
    "rarest currency in the far past": (("GBP",), BASE, BASE + 2 * HOUR),
    "all currencies in a middle hour": (("EUR", "GBP", "USD"), BASE + 13 * HOUR, BASE + 14 * HOUR),
}


def filtered_sql(currencies: tuple[str, ...], gte: datetime | None, lt: datetime | None) -> tuple[str, dict[str, Any]]:
    parts, parameters = ["true"], {}
    if currencies:
        parts.append("currency = ANY(:currencies)")
        parameters["currencies"] = list(currencies)
    if gte:
        parts.append("created_at >= :gte")
        parameters["gte"] = gte
    if lt:
        parts.append("created_at < :lt")
        parameters["lt"] = lt
    return " AND ".join(parts), parameters


@pytest.mark.parametrize("name", list(FILTERS))
@pytest.mark.parametrize("direction", ["older", "newer"])
@pytest.mark.parametrize("depth", ["first", "middle", "last"])
def test_every_filtered_page_reads_a_bounded_number_of_rows_at_any_depth(
    large_history: Engine, name: str, direction: str, depth: str
) -> None:
    currencies, gte, lt = FILTERS[name]
    where, parameters = filtered_sql(currencies, gte, lt)
    with large_history.connect() as connection:
        count = connection.execute(text(f"SELECT count(*) FROM buy_order_view WHERE {where}"), parameters).scalar_one()
        assert count > 3 * PAGE_SIZE, "the filter must select a few pages at least"
        skip = {"first": 0, "middle": count // 2, "last": count - PAGE_SIZE - 1}[depth]
        if direction == "newer":
            skip = {"first": count - 1, "middle": count // 2, "last": PAGE_SIZE}[depth]  # first: the oldest
        reference = connection.execute(
            text(f"SELECT id FROM buy_order_view WHERE {where} ORDER BY sequence DESC OFFSET :skip LIMIT 1"),
            {**parameters, "skip": skip},
        ).scalar_one()
    use_reference = not (direction == "older" and depth == "first")
    query = PageQuery(
        PAGE_SIZE,
        reference if use_reference and direction == "older" else None,
        reference if use_reference and direction == "newer" else None,
        currencies,
        gte,
        lt,
    )
    shape = read_model.page_shape(query)
    tree = plan(large_history, shape, read_model.page_values(query, shape))
    every = nodes(tree)
    for node in every:
        assert not (node["Node Type"] == "Seq Scan" and node["Relation Name"] == "buy_order_view"), node
        if node["Node Type"] == "Sort":
            assert node["Actual Rows"] <= 3 * LIMIT, node
    scans = [node for node in every if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    assert all(scan["Index Name"] != "buy_order_view_created_at" or scan["Actual Rows"] <= 1 for scan in scans)
    read = sum((scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0)) * scan["Actual Loops"] for scan in scans)
    # a page of rows per currency scan, one row per bound and per probe, and the rows within
    # `disorder` (3 s here, a few rows) of the range's two ends: nothing that grows with depth
    assert read <= 3 * LIMIT + 40, f"{name} {direction} {depth}: {read} rows read"
    buffers = tree["Shared Hit Blocks"] + tree.get("Shared Read Blocks", 0)
    assert buffers <= 120, f"{name} {direction} {depth}: {buffers} buffers"


def every_shape() -> list[read_model._Shape]:
    subsets = [tuple(sorted(c)) for n in range(4) for c in itertools.combinations(sorted(read_model._CURRENCIES), n)]
    return [
        read_model._Shape(direction, reference, currencies, gte, lt)
        for direction in ("older", "newer")
        for reference in (False, True)
        for currencies in subsets
        for gte in (False, True)
        for lt in (False, True)
    ]


def test_the_generic_plan_of_every_shape_scans_indexes_only(large_history: Engine) -> None:
    """All 128 shapes, beyond the filters measured above: the plan every request of the shape
    runs (generic, so whatever the values) reads `buy_order_view` by index scans only."""
    with large_history.connect() as connection:
        middle = connection.execute(text("SELECT id FROM buy_order_view WHERE sequence = :s"), {"s": ROWS // 2})
        reference = middle.scalar_one()
    values = {"limit": LIMIT, "reference": reference, "gte": BASE, "lt": BASE + HOUR}
    explained = []
    for shape in every_shape():
        tree = plan(large_history, shape, tuple(values[name] for name in shape.parameters), analyze=False)
        scans = [node for node in nodes(tree) if node.get("Relation Name") == "buy_order_view"]
        assert all(node["Node Type"] in ("Index Scan", "Index Only Scan") for node in scans), (shape, scans)
        # each currency asked for is read from its own partial index, never filtered out of a wider scan
        used = {node["Index Name"] for node in scans}
        assert {f"buy_order_view_{c.lower()}_sequence" for c in shape.currencies} <= used, (shape, used)
        explained.append(shape.name)
    assert len(set(explained)) == 128
