"""The read model on a real Postgres: idempotent projection and constant-cost keyset pages."""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db, read_model
from btc_orders.adapters.db_loop import LoopConnections, NoConnectionFree
from btc_orders.adapters.read_model import ReadModel, apply_created_events
from btc_orders.domain.errors import OrderNotFound, ServiceUnavailable, UnknownReference
from tests.support.services import Databases

ROWS = 100_000


def event_row(sequence: int) -> dict[str, Any]:
    return {
        "sequence": sequence,
        "id": uuid.uuid4(),
        "created_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
        "currency": "USD",
        "amount": "10.00",
        "exchange_rate": "97012.34",
        "bitcoin_amount": "0.00010309",
        "idempotence_key": uuid.uuid4(),
        "event_id": uuid.uuid4(),
    }


def test_applying_an_event_twice_changes_nothing(read_engine: Engine) -> None:
    rows = [event_row(sequence) for sequence in (1, 2, 3)]
    with read_engine.begin() as connection:
        apply_created_events(connection, rows)
    with read_engine.begin() as connection:
        apply_created_events(connection, [rows[1], {**rows[2], "amount": "99.00"}])
    page = ReadModel(read_engine).page(10, None)
    assert [order["id"] for order in page.buy_orders] == [str(row["id"]) for row in reversed(rows)]
    assert page.buy_orders[0]["amount"] == "10.00"
    assert page.has_more is False


def test_pages_follow_each_other_without_gap_or_overlap(read_engine: Engine) -> None:
    with read_engine.begin() as connection:
        apply_created_events(connection, [event_row(sequence) for sequence in range(1, 26)])
    model = ReadModel(read_engine)
    first = model.page(10, None)
    second = model.page(10, uuid.UUID(first.last_reference or ""))
    third = model.page(10, uuid.UUID(second.last_reference or ""))
    assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
    assert len(third.buy_orders) == 5
    with pytest.raises(UnknownReference):
        model.page(10, uuid.uuid4())


def test_pages_and_orders_awaited_on_the_loop_are_the_threads_bytes(databases: Databases, read_engine: Engine) -> None:
    rows = [event_row(sequence) for sequence in range(1, 26)]
    with read_engine.begin() as connection:
        apply_created_events(connection, rows)
    model = ReadModel(read_engine, LoopConnections(databases.read_url, 2, "fetch_buy_orders_loop_test"))
    queries = [
        read_model.PageQuery(10, None),
        read_model.PageQuery(10, rows[14]["id"]),
        read_model.PageQuery(3, None, rows[3]["id"], ("USD",)),
    ]

    async def run() -> tuple[list[Any], bytes]:
        pages = [await model.fetch_page_on_loop(query) for query in queries]
        one = await model.one_body_on_loop(rows[7]["id"])
        with pytest.raises(UnknownReference):
            await model.fetch_page_on_loop(read_model.PageQuery(10, uuid.uuid4()))
        with pytest.raises(OrderNotFound):
            await model.one_body_on_loop(uuid.uuid4())
        assert model.loop_connections is not None
        await model.loop_connections.close()
        return pages, one

    pages, one = asyncio.run(run())
    assert pages == [model.fetch_page(query) for query in queries]
    assert one == model.one_body(rows[7]["id"])
    with pytest.raises(NoConnectionFree):  # none on the loop: the route takes the thread
        asyncio.run(ReadModel(read_engine).fetch_page_on_loop(queries[0]))


# ---------------------------------------------------------------------------------------------
# Prepared statements: once per connection, and again on a connection that lost them


@pytest.fixture(params=[True, False], ids=["autocommit", "transactions"])
def one_connection(databases: Databases, request: pytest.FixtureRequest) -> Any:
    """A read model on a pool of one connection (the service's engine runs in autocommit)."""
    engine = db.create_engine(databases.read_url, pool_size=1, autocommit=request.param)
    with engine.begin() as connection:
        apply_created_events(connection, [event_row(sequence) for sequence in range(1, 26)])
    yield engine
    engine.dispose()


def served(model: ReadModel) -> list[bytes]:
    """Every kind of statement the service sends: pages of two shapes, and one order."""
    newest = model.fetch_page(read_model.PageQuery(10))
    older = model.fetch_page(read_model.PageQuery(10, uuid.UUID(newest.last_reference or ""), currencies=("USD",)))
    return [newest.body, older.body, model.one_body(uuid.UUID(newest.first_reference or ""))]


def test_statements_the_server_forgot_are_prepared_again_without_an_error(one_connection: Engine) -> None:
    model = ReadModel(one_connection)
    before = served(model)
    connection = one_connection.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 3  # the same connection prepared all three
        # what a pooler's reset (`DISCARD ALL`) would do behind the pool's back
        cursor.execute("DEALLOCATE ALL")
        cursor.execute("RESET ALL")
        connection.commit()
    finally:
        connection.close()
    assert served(model) == before
    assert served(model) == before
    connection = one_connection.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == 3
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
    finally:
        connection.close()


def test_a_lost_connection_is_replaced_and_the_new_one_prepares_again(one_connection: Engine) -> None:
    model = ReadModel(one_connection)
    before = served(model)
    with one_connection.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        connection.rollback()
    other = db.create_engine(one_connection.url.render_as_string(hide_password=False), pool_size=1)
    try:
        with other.begin() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
    finally:
        other.dispose()
    with pytest.raises(ServiceUnavailable):  # the dead connection's statement: an outage, a 503
        model.fetch_page(read_model.PageQuery(10))
    assert served(model) == before


@pytest.fixture
def large_read_model(read_engine: Engine) -> Engine:
    with read_engine.begin() as connection:
        connection.execute(
            text(
                """
                INSERT INTO buy_order_view
                    (sequence, id, created_at, currency, amount, exchange_rate, bitcoin_amount,
                     idempotence_key, event_id)
                SELECT s, gen_random_uuid(), now(), 'USD', '10.00', '97012.34', '0.00010309',
                       gen_random_uuid(), gen_random_uuid()
                FROM generate_series(1, :rows) AS s
                """
            ),
            {"rows": ROWS},
        )
    with read_engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE buy_order_view"))
    return read_engine


def plan(engine: Engine, prepared: db.Prepared, values: tuple[Any, ...]) -> dict[str, Any]:
    """The executed plan of one of the service's prepared statements, prepared and planned on a
    pooled connection as the service does it (`run_prepared`: the generic plan)."""
    explained = db.Prepared(
        prepared.name, prepared.prepare, f"EXPLAIN (ANALYZE, BUFFERS, SUMMARY, FORMAT JSON) {prepared.execute}"
    )
    connection = engine.raw_connection()
    try:
        cursor = db.run_prepared(connection, explained, values)
        result = cursor.fetchone()[0]
        cursor.execute("SHOW plan_cache_mode")
        assert cursor.fetchone()[0] == "force_generic_plan"
    finally:
        connection.close()
    document = result if isinstance(result, list) else json.loads(result)
    return dict(document[0]["Plan"], **{"Planning Time": document[0]["Planning Time"]})


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *[child for plan_ in node.get("Plans", []) for child in nodes(plan_)]]


def page_plan(engine: Engine, page_size: int, reference: uuid.UUID | None) -> dict[str, Any]:
    query = read_model.PageQuery(page_size, reference)
    return plan(engine, read_model.prepared_page(read_model.page_shape(query)), read_model.page_values(query))


@pytest.mark.parametrize("depth", ["first", "middle", "last"])
def test_every_page_is_an_index_scan_touching_about_a_page_of_rows(large_read_model: Engine, depth: str) -> None:
    page_size = 10
    after = {"first": None, "middle": ROWS // 2, "last": page_size + 1}[depth]
    reference = None
    if after is not None:
        with large_read_model.connect() as connection:
            reference = connection.execute(
                text("SELECT id FROM buy_order_view WHERE sequence = :after"), {"after": after}
            ).scalar_one()
    tree = page_plan(large_read_model, page_size, reference)
    kinds = [node["Node Type"] for node in nodes(tree)]
    assert "Seq Scan" not in kinds and "Sort" not in kinds, kinds
    scans = [node for node in nodes(tree) if node["Node Type"] in ("Index Scan", "Index Only Scan")]
    page_scan = next(scan for scan in scans if scan.get("Scan Direction") == "Backward")
    assert page_scan["Index Name"] == "buy_order_view_pkey"
    assert page_scan["Actual Rows"] <= page_size + 1
    buffers = page_scan["Shared Hit Blocks"] + page_scan.get("Shared Read Blocks", 0)
    assert buffers < 20, f"the scan touched {buffers} blocks for {page_size + 1} rows"
    others = [scan for scan in scans if scan is not page_scan]
    if after is None:
        assert others == []
    else:
        # a later page finds its reference by the unique index on id, one row; the newer-side probe
        # (for the Link header) reads one row of the primary key
        assert {scan["Index Name"] for scan in others} == {"buy_order_view_id_key", "buy_order_view_pkey"}
        assert all(scan["Actual Rows"] * scan["Actual Loops"] <= 1 for scan in others)
