"""The write model on a real Postgres, on a pool as the service opens it: storing, replaying, the cap
under concurrency, driver-prepared statements, and connections lost, closed while idle or cancelled."""

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from btc_orders.adapters import db, outbox
from btc_orders.adapters import write_model as write_model_module
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded, ServiceUnavailable
from btc_orders.domain.orders import Currency, OrderRequest
from btc_orders.events import created_event, parse_created_event
from tests.support.services import Databases, admin_connection, dsn, opened_pool, wait_until

pytestmark = pytest.mark.anyio

RATE = Decimal("100000.00")  # 1 USD = 0.00001 BTC = 1,000 satoshis
APPLICATION = "write_model_test"


def order(amount: str, currency: Currency = Currency.USD, key: uuid.UUID | None = None) -> OrderRequest:
    return OrderRequest(currency, Decimal(amount), key or uuid.uuid4())


def ledger_total(engine: Engine) -> tuple[int, int]:
    """(sum of orders, sum of slots) in satoshis."""
    with engine.connect() as connection:
        used = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
        left = connection.execute(text("SELECT coalesce(sum(remaining_satoshis), 0) FROM cap_slot")).scalar_one()
    return money.btc_to_satoshis(used), int(left)


@pytest.fixture
async def pool(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.write_url, 40, APPLICATION) as opened:
        yield opened


@pytest.fixture
async def one_connection(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.write_url, 1, APPLICATION) as opened:
        yield opened


async def model(
    pool: psycopg_pool.AsyncConnectionPool, cap_btc: str, slots: int = 16, choose: Callable[[int], int] | None = None
) -> WriteModel:
    ledger = CapLedger(pool, slots, choose)
    await ledger.ensure_cap(money.btc_to_satoshis(Decimal(cap_btc)))
    return WriteModel(pool, ledger)


async def test_an_order_is_stored_with_its_outbox_event(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "100")
    stored, created = await write_model.place(order("123.45"), Decimal("97012.34"), "req-1")
    assert created
    assert stored.bitcoin_amount == Decimal("0.00127252")
    with write_engine.begin() as connection:
        event = connection.execute(text("SELECT order_sequence, request_id, sent_at FROM outbox")).one()
        [claimed] = outbox.claim(connection, 10)
    assert event.order_sequence == stored.sequence
    assert '"bitcoin_amount":"0.00127252"' in claimed.payload
    assert event.request_id == claimed.request_id == "req-1"
    assert event.sent_at is None


async def test_the_same_key_returns_the_stored_order_and_stores_nothing_more(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "100")
    request = order("10.00")
    first, created = await write_model.place(request, RATE, None)
    again, created_again = await write_model.place(request, Decimal("1.00"), None)
    assert created and not created_again
    assert again == first
    assert await write_model.find_by_key(request.idempotence_key) == first
    assert ledger_total(write_engine) == (10_000, 100 * 10**8 - 10_000)


async def prepared(pool: psycopg_pool.AsyncConnectionPool) -> list[str]:
    async with pool.connection() as connection:
        cursor = await connection.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in await cursor.fetchall()]


async def test_the_one_statement_is_prepared_by_the_driver_and_again_when_the_server_forgot_it(
    write_engine: Engine, one_connection: psycopg_pool.AsyncConnectionPool
) -> None:
    """An order is one statement, prepared by the driver once it ran `PREPARE_THRESHOLD` times on a
    connection; a connection whose prepared statements were dropped behind the driver's back (a
    pooler's `DISCARD ALL`) prepares it again, and no order fails for it."""
    write_model = await model(one_connection, "100")
    for _ in range(db.PREPARE_THRESHOLD + 1):
        await write_model.place(order("1.00"), RATE, None)
    assert any("WITH k AS" in statement for statement in await prepared(one_connection))
    async with one_connection.connection() as connection:
        assert connection.pgconn.exec_(b"DEALLOCATE ALL").status == psycopg.pq.ExecStatus.COMMAND_OK
    assert await prepared(one_connection) == []
    for _ in range(db.PREPARE_THRESHOLD + 1):
        _, created = await write_model.place(order("1.00"), RATE, None)
        assert created
    assert any("WITH k AS" in statement for statement in await prepared(one_connection))
    assert ledger_total(write_engine) == (6_000, 100 * 10**8 - 6_000)
    with write_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")).scalar_one() == 6


async def test_the_generic_plan_of_the_one_statement_finds_the_key_by_its_index_from_the_first_order(
    one_connection: psycopg_pool.AsyncConnectionPool,
) -> None:
    """Prepared with `force_generic_plan`, the statement is planned once for any key and slot, and
    kept until the next ANALYZE of its tables. Planned on a new deployment's tables (empty, never
    analyzed), that plan must already look the key up by its index, not read every order: it
    serves every order until autovacuum first analyzes the table, however many are stored
    meanwhile. Planned again after an ANALYZE, it still does."""
    write_model = await model(one_connection, "100")
    explain = f"EXPLAIN (FORMAT JSON) {write_model_module._PLACE_IN_ONE_STATEMENT}"
    values = write_model_module._Placement(order("1"), RATE, 1000, None, 0).values
    plans = []
    async with one_connection.connection() as connection:
        await connection.execute(explain, values, prepare=True)  # prepared and planned on the empty table
    for _ in range(2_000):
        await write_model.place(order("0.01"), RATE, None)
    async with one_connection.connection() as connection:  # the same connection: the plan made while empty
        plans.append((await (await connection.execute(explain, values, prepare=True)).fetchone())[0][0]["Plan"])  # type: ignore[index]
        await connection.execute("ANALYZE buy_order")
        plans.append((await (await connection.execute(explain, values, prepare=True)).fetchone())[0][0]["Plan"])  # type: ignore[index]
    for plan in plans:
        flat = [plan]
        for node in flat:
            flat.extend(node.get("Plans", []))
        assert "buy_order" not in {node["Relation Name"] for node in flat if node["Node Type"] == "Seq Scan"}, flat
        scanned = {node.get("Index Name") for node in flat if node["Node Type"] in ("Index Scan", "Index Only Scan")}
        assert "buy_order_idempotence_key_key" in scanned, scanned


async def test_orders_are_never_updated_or_deleted(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "100")
    await write_model.place(order("10.00"), RATE, None)
    for statement in ("UPDATE buy_order SET amount = 1", "DELETE FROM buy_order"):
        with pytest.raises(DBAPIError, match="never updated or deleted"), write_engine.begin() as connection:
            connection.execute(text(statement))


async def test_an_order_that_does_not_fit_is_refused_with_what_is_left(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "0.01")  # 1,000,000 satoshis = 1,000 USD at RATE
    await write_model.place(order("600.00"), RATE, None)
    with pytest.raises(BtcCapExceeded) as refused:
        await write_model.place(order("400.01"), RATE, None)
    assert refused.value.available == Decimal("0.00400000")
    _stored, created = await write_model.place(order("400.00"), RATE, None)  # exactly up to the cap is allowed
    assert created
    assert ledger_total(write_engine) == (1_000_000, 0)


async def test_a_refused_order_leaves_its_key_unused(pool: psycopg_pool.AsyncConnectionPool) -> None:
    write_model = await model(pool, "0.001")
    key = uuid.uuid4()
    with pytest.raises(BtcCapExceeded):
        await write_model.place(order("500.00", key=key), RATE, None)
    assert await write_model.find_by_key(key) is None
    _, created = await write_model.place(order("50.00", key=key), RATE, None)
    assert created


async def test_an_order_above_the_whole_cap_is_refused_without_being_stored(
    pool: psycopg_pool.AsyncConnectionPool,
) -> None:
    write_model = await model(pool, "100")
    request = order("999999999.99")
    with pytest.raises(BtcCapExceeded):
        await write_model.place(request, Decimal("0.000001"), None)  # more BTC than the column holds
    assert await write_model.find_by_key(request.idempotence_key) is None


async def test_capacity_moves_between_slots_when_one_runs_low(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    # Every order lands in slot 0, so all but the first few must borrow from the others.
    ledger = CapLedger(pool, 4, choose=lambda _: 0)
    await ledger.ensure_cap(4_000_000)
    write_model = WriteModel(pool, ledger)
    for _ in range(4):
        await write_model.place(order("1000.00"), RATE, None)  # 1,000,000 satoshis each
    assert ledger_total(write_engine) == (4_000_000, 0)
    with pytest.raises(BtcCapExceeded):
        await write_model.place(order("0.01"), RATE, None)
    assert await ledger.capacity() == (4_000_000, 0)


async def test_changing_the_cap_keeps_what_orders_use(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "1")
    await write_model.place(order("30000.00"), RATE, None)  # 0.3 BTC
    await model(pool, "2", slots=8)
    assert ledger_total(write_engine) == (30_000_000, 170_000_000)
    await model(pool, "0.1")  # below what is used: nothing left, nothing undone
    assert ledger_total(write_engine) == (30_000_000, 0)
    with write_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM cap_slot")).scalar_one() == 16


@pytest.mark.parametrize("round_", range(3))
async def test_racing_orders_never_take_the_total_above_the_cap(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool, round_: int
) -> None:
    # 0.01 BTC cap; 200 orders of random sizes at once over 16 slots, on 40 connections.
    write_model = await model(pool, "0.01")
    sizes = [f"{(i * 37 + round_ * 11) % 90 + 10}.00" for i in range(200)]

    async def place(size: str) -> bool:
        try:
            await write_model.place(order(size), RATE, None)
            return True
        except BtcCapExceeded:
            return False

    results = await asyncio.gather(*(place(size) for size in sizes))
    used, left = ledger_total(write_engine)
    assert used + left == 1_000_000
    assert used <= 1_000_000
    assert any(results) and not all(results)
    # Every refusal was right: the refused order itself did not fit what was left at the end.
    refused = [money.btc_to_satoshis(Decimal(sizes[i]) / 100000) for i, ok in enumerate(results) if not ok]
    assert all(size > left for size in refused)


async def test_racing_the_same_key_stores_one_order(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(pool, "100")
    request = order("25.00")
    results = await asyncio.gather(*(write_model.place(request, RATE, None) for _ in range(32)))
    assert len({stored.id for stored, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with write_engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 1


@pytest.mark.parametrize(
    "request_id",
    [None, "req-1", '"occurred_at":"2999-12-31T23:59:59.999999Z"', "2999-12-31T23:59:59.999999Z", '\\"}}'],
)
@pytest.mark.parametrize(
    ("cap_btc", "untouched_slots"), [("100", 15), ("0.0016", 0)], ids=["one statement", "slow path"]
)
async def test_the_published_event_is_exactly_the_one_events_renders_for_the_answered_order(
    write_engine: Engine,
    pool: psycopg_pool.AsyncConnectionPool,
    request_id: str | None,
    cap_btc: str,
    untouched_slots: int,
) -> None:
    # The outbox row holds no payload: the relay renders it from the stored order (read back from
    # the database), which must give byte for byte the event of the order the client was answered.
    # A cap of 0.0016 BTC leaves 0.0001 in each of the 16 slots: this order (0.00010824) needs the slow path.
    write_model = await model(pool, cap_btc)
    stored, created = await write_model.place(order("10.50", Currency.EUR), Decimal("97012.340"), request_id)
    assert created
    share = money.btc_to_satoshis(Decimal(cap_btc)) // 16
    with write_engine.begin() as connection:
        slots = connection.execute(text("SELECT remaining_satoshis FROM cap_slot")).scalars().all()
        assert sum(1 for left in slots if left == share) == untouched_slots
        assert connection.execute(text("SELECT payload FROM outbox")).scalar_one() is None
        [event] = outbox.claim(connection, 10)
    assert event.payload == created_event(stored, event.event_id, request_id)
    assert parse_created_event(event.payload.encode()).order.sequence == stored.sequence


def terminate_sessions(condition: str = "true") -> int:
    """End the write-model test sessions (a restart, a failover, an idle-session reaper)."""
    with admin_connection() as connection:
        ended = connection.execute(
            f"SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity"
            f" WHERE application_name = %s AND {condition}",
            (APPLICATION,),
        ).fetchone()
    assert ended is not None
    return int(ended[0])


async def test_connections_the_server_closed_while_idle_in_the_pool_cost_no_order(
    write_engine: Engine, databases: Databases
) -> None:
    async with opened_pool(databases.write_url, 4, APPLICATION) as pool:
        write_model = await model(pool, "100")
        await asyncio.gather(*(write_model.place(order("1"), RATE, None) for _ in range(8)))
        for _ in range(200):  # a connection the pool is still opening is counted before it exists
            stats = pool.get_stats()
            if stats["pool_available"] == stats["pool_size"]:
                break
            await asyncio.sleep(0.01)
        assert terminate_sessions() == pool.get_stats()["pool_size"] >= 1  # every connection the pool holds
        await asyncio.sleep(0.2)
        for _ in range(40):
            _, created = await write_model.place(order("1"), RATE, None)
            assert created
    assert ledger_total(write_engine)[0] == 48_000


async def test_a_connection_lost_mid_order_is_an_outage_and_the_next_order_is_stored(
    write_engine: Engine, databases: Databases
) -> None:
    async with opened_pool(databases.write_url, 2, APPLICATION) as pool:
        write_model = await model(pool, "100", slots=1)
        blocker = psycopg.connect(dsn(databases.write_name))  # holds the one slot: the order waits on it
        blocker.execute("SELECT 1 FROM cap_slot FOR UPDATE")
        try:
            placing = asyncio.ensure_future(write_model.place(order("1"), RATE, None))
            await wait_for_a_lock_wait(placing)
            assert terminate_sessions("wait_event_type = 'Lock'") == 1
            with pytest.raises(ServiceUnavailable):
                await placing
        finally:
            blocker.rollback()
            blocker.close()
        _, created = await write_model.place(order("1"), RATE, None)
        assert created
    assert ledger_total(write_engine)[0] == 1_000


async def wait_for_a_lock_wait(task: "asyncio.Future[Any]") -> None:
    for _ in range(500):
        if task.done():
            break
        with admin_connection() as connection:
            waiting = connection.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
                (APPLICATION,),
            ).fetchone()
        if waiting and waiting[0]:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the order never waited on a lock ({task})")


async def test_an_order_cancelled_midway_ends_its_statement_and_leaves_the_pool_serving(
    write_engine: Engine, databases: Databases
) -> None:
    async with opened_pool(databases.write_url, 1, APPLICATION) as pool:
        write_model = await model(pool, "100", slots=1)
        blocker = psycopg.connect(dsn(databases.write_name))
        blocker.execute("SELECT 1 FROM cap_slot FOR UPDATE")
        try:
            placing = asyncio.ensure_future(write_model.place(order("1"), RATE, None))
            await wait_for_a_lock_wait(placing)
            placing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await placing

            def nothing_running() -> bool:
                with admin_connection() as connection:
                    active = connection.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
                        (APPLICATION,),
                    ).fetchone()
                return active == (0,)

            wait_until(nothing_running, 5, 0.02, "the cancelled statement to end on the server")
        finally:
            blocker.rollback()
            blocker.close()
        _, created = await write_model.place(order("2"), RATE, None)  # the pool's one connection serves on
        assert created
    assert ledger_total(write_engine)[0] == 2_000  # nothing of the cancelled order was stored


async def test_an_order_that_finds_every_connection_busy_is_an_outage_within_the_pools_bound(
    write_engine: Engine, one_connection: psycopg_pool.AsyncConnectionPool
) -> None:
    write_model = await model(one_connection, "100")
    async with one_connection.connection():  # the pool's one connection, held
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="busy"):
            await write_model.place(order("1"), RATE, None)
        assert db.CONNECT_TIMEOUT_SECONDS <= time.monotonic() - started < db.CONNECT_TIMEOUT_SECONDS + 1
    _, created = await write_model.place(order("1"), RATE, None)  # free again: served
    assert created and ledger_total(write_engine)[0] == 1_000


async def test_a_server_that_accepts_and_never_answers_is_an_outage_within_the_pools_bound() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nothing ever answers the startup packet
    pool = db.async_pool(f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x", 1, APPLICATION)
    await pool.open(wait=False)
    try:
        write_model = WriteModel(pool, CapLedger(pool))
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await write_model.place(order("1"), RATE, None)
        assert time.monotonic() - started < db.CONNECT_TIMEOUT_SECONDS + 1
    finally:
        await pool.close()
        silent.close()
