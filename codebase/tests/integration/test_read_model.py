"""The read model on a real Postgres: idempotent projection and constant-cost keyset pages, served on
the service's pool (driver-prepared statements, generic plans), through lost connections."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg_pool
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db, read_model
from btc_orders.adapters.projection import apply_created_events
from btc_orders.adapters.read_model import ReadModel
from btc_orders.domain.errors import ServiceUnavailable, UnknownReference
from tests.support.services import Databases, admin_connection, opened_pool

ROWS = 100_000
APPLICATION = "read_model_test"


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


@pytest.fixture
async def read_pool(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.read_url, 2, APPLICATION) as pool:
        yield pool


@pytest.mark.anyio
async def test_applying_an_event_twice_changes_nothing(
    read_engine: Engine, read_pool: psycopg_pool.AsyncConnectionPool
) -> None:
    rows = [event_row(sequence) for sequence in (1, 2, 3)]
    with read_engine.begin() as connection:
        apply_created_events(connection, rows)
    with read_engine.begin() as connection:
        apply_created_events(connection, [rows[1], {**rows[2], "amount": "99.00"}])
    page = await ReadModel(read_pool).page(10, None)
    assert [order["id"] for order in page.buy_orders] == [str(row["id"]) for row in reversed(rows)]
    assert page.buy_orders[0]["amount"] == "10.00"
    assert page.has_more is False


@pytest.mark.anyio
async def test_pages_follow_each_other_without_gap_or_overlap(
    read_engine: Engine, read_pool: psycopg_pool.AsyncConnectionPool
) -> None:
    with read_engine.begin() as connection:
        apply_created_events(connection, [event_row(sequence) for sequence in range(1, 26)])
    model = ReadModel(read_pool)
    first = await model.page(10, None)
    second = await model.page(10, uuid.UUID(first.last_reference or ""))
    third = await model.page(10, uuid.UUID(second.last_reference or ""))
    assert (first.has_more, second.has_more, third.has_more) == (True, True, False)
    assert len(third.buy_orders) == 5
    with pytest.raises(UnknownReference):
        await model.page(10, uuid.uuid4())


# ---------------------------------------------------------------------------------------------
# Prepared by the driver: once per connection, generic plans, and again on a connection that lost them


@pytest.fixture
async def one_connection(databases: Databases, read_engine: Engine) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    """The service's pool, of one connection, on a read model of 25 orders."""
    with read_engine.begin() as connection:
        apply_created_events(connection, [event_row(sequence) for sequence in range(1, 26)])
    async with opened_pool(databases.read_url, 1, APPLICATION) as pool:
        yield pool


async def served(model: ReadModel) -> list[bytes]:
    """Every kind of statement the service sends: pages of two shapes, and one order."""
    newest = await model.fetch_page(read_model.PageQuery(10))
    query = read_model.PageQuery(10, uuid.UUID(newest.last_reference or ""), currencies=("USD",))
    older = await model.fetch_page(query)
    return [newest.body, older.body, await model.one_body(uuid.UUID(newest.first_reference or ""))]


async def prepared_statements(pool: psycopg_pool.AsyncConnectionPool) -> list[tuple[str, int, int]]:
    """(parameter types, generic plans, custom plans) of each statement the pool's connection prepared."""
    async with pool.connection() as connection:
        cursor = await connection.execute(
            "SELECT parameter_types::text, generic_plans, custom_plans FROM pg_prepared_statements"
            " WHERE statement NOT LIKE '%%pg_prepared%%' ORDER BY parameter_types::text"
        )
        return [(types, int(generic), int(custom)) for types, generic, custom in await cursor.fetchall()]


@pytest.mark.anyio
async def test_statements_are_prepared_by_the_driver_with_generic_plans_and_again_after_the_server_forgot_them(
    one_connection: psycopg_pool.AsyncConnectionPool,
) -> None:
    model = ReadModel(one_connection)
    before = await served(model)
    for _ in range(db.PREPARE_THRESHOLD):
        assert await served(model) == before
    statements = await prepared_statements(one_connection)
    # the same connection prepared all three, with the types `plan` prepares them with in the tests below
    limit, reference = read_model.PARAMETER_TYPES["limit"], read_model.PARAMETER_TYPES["reference"]
    assert [types for types, _, _ in statements] == sorted([f"{{{limit}}}", f"{{{limit},{reference}}}", "{uuid}"])
    assert all(generic >= 1 and custom == 0 for _, generic, custom in statements), statements
    async with one_connection.connection() as connection:
        # what a pooler's reset (`DISCARD ALL`) would do, behind the driver's back (libpq itself)
        assert connection.pgconn.exec_(b"DEALLOCATE ALL").status == psycopg.pq.ExecStatus.COMMAND_OK
        assert await (await connection.execute("SELECT count(*) FROM pg_prepared_statements")).fetchone() == (0,)
    for _ in range(db.PREPARE_THRESHOLD + 1):
        assert await served(model) == before
    assert len(await prepared_statements(one_connection)) == 3
    async with one_connection.connection() as connection:
        assert await (await connection.execute("SHOW plan_cache_mode")).fetchone() == ("force_generic_plan",)


async def backend_of(pool: psycopg_pool.AsyncConnectionPool) -> int:
    async with pool.connection() as connection:
        return connection.info.backend_pid


def terminate(pid: int) -> None:
    with admin_connection() as connection:
        assert connection.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() == (True,)


@pytest.mark.anyio
async def test_a_connection_the_server_closed_while_idle_in_the_pool_costs_no_request(
    one_connection: psycopg_pool.AsyncConnectionPool,
) -> None:
    model = ReadModel(one_connection)
    before = await served(model)
    pid = await backend_of(one_connection)
    terminate(pid)  # a restart, a failover, an idle-session reaper
    assert await served(model) == before
    assert await backend_of(one_connection) != pid


@pytest.mark.anyio
async def test_a_connection_lost_in_use_is_an_outage_and_the_next_request_is_served(
    databases: Databases, one_connection: psycopg_pool.AsyncConnectionPool
) -> None:
    model = ReadModel(one_connection)
    before = await served(model)
    pid = await backend_of(one_connection)
    waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s"
    # the page's statement waits on this lock, in use on its connection
    with psycopg.connect(databases.read_url, autocommit=True) as locker, locker.transaction():
        locker.execute("LOCK TABLE buy_order_view IN ACCESS EXCLUSIVE MODE")
        page = asyncio.ensure_future(model.fetch_page(read_model.PageQuery(10)))
        while locker.execute(waiting, (pid,)).fetchone() != (True,):
            await asyncio.sleep(0.02)
        terminate(pid)
        with pytest.raises(ServiceUnavailable):  # the statement's connection died under it: a 503
            await page
    assert await served(model) == before  # a new connection, preparing its statements again


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


def plan(engine: Engine, shape: Any, values: tuple[Any, ...], analyze: bool = True) -> dict[str, Any]:
    """The plan of a page statement as the service's connections get it: prepared with the types of
    its values and planned generically (`plan_cache_mode = force_generic_plan`, which every service
    connection sets), whatever the values. SQL-level `PREPARE` and `EXPLAIN EXECUTE` show the plan the
    driver's prepared statement gets; `analyze` also runs it."""
    types = ", ".join(read_model.PARAMETER_TYPES[name] for name in shape.parameters)
    options = "ANALYZE, BUFFERS, SUMMARY, FORMAT JSON" if analyze else "FORMAT JSON"
    connection = engine.raw_connection()
    try:
        # values as literals: EXPLAIN EXECUTE takes no bound parameters
        with psycopg.ClientCursor(connection.driver_connection) as cursor:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
            cursor.execute(f"PREPARE page_plan ({types}) AS ".encode() + read_model.page_statement(shape))
            placeholders = ", ".join(["%s"] * len(values))
            cursor.execute(f"EXPLAIN ({options}) EXECUTE page_plan ({placeholders})".encode(), values)
            row = cursor.fetchone()
            cursor.execute("DEALLOCATE page_plan")
    finally:
        connection.close()
    assert row is not None
    document = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return {**document[0]["Plan"], "Planning Time": document[0].get("Planning Time")}


def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *[child for plan_ in node.get("Plans", []) for child in nodes(plan_)]]


def page_plan(engine: Engine, page_size: int, reference: uuid.UUID | None) -> dict[str, Any]:
    query = read_model.PageQuery(page_size, reference)
    shape = read_model.page_shape(query)
    return plan(engine, shape, read_model.page_values(query, shape))


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
