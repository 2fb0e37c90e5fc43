"""The create path's statement awaited on the event loop (`db_loop.LoopConnections`,
`WriteModel.place_on_loop`), on a real Postgres: the same invariants as on threads, with both paths
racing, and every bound of the loop's connections (busy, lost, cancelled, a silent server)."""

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg2
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters import db, db_loop
from btc_orders.adapters.db_loop import LoopConnections, NoConnectionFree
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.domain.errors import BtcCapExceeded, ServiceUnavailable
from btc_orders.domain.orders import Currency
from btc_orders.services.create_buy_order.handler import KeysInFlight, place_buy_order_on_loop
from tests.integration.test_write_model import RATE, ledger_total, order
from tests.support.services import Databases
from tests.unit.fakes import FakeRates

APPLICATION = "create_buy_order_loop_test"
SLEEP = db.Prepared.named("sleep_a_while", "SELECT pg_sleep(:seconds)", {"seconds": "float8"})


@pytest.fixture
def engine(databases: Databases) -> Iterator[Engine]:
    engine = db.create_engine(databases.write_url, pool_size=8, autocommit=True)
    yield engine
    engine.dispose()


InThread = Callable[..., Awaitable[Any]]


@pytest.fixture
def in_thread() -> Iterator[InThread]:
    """`web.in_thread` as the service has it: the call on one of 64 threads, awaited on the loop."""
    threads = ThreadPoolExecutor(64)

    async def run(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(threads, function, *args)

    yield run
    threads.shutdown()


def backends(engine: Engine) -> int:
    with engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"), {"name": APPLICATION}
        ).scalar_one()
    return int(count)


def loop_model(databases: Databases, engine: Engine, cap_btc: str, size: int = 4) -> WriteModel:
    write_model = WriteModel(
        engine, 16, engine_autocommit=True, loop_connections=LoopConnections(databases.write_url, size, APPLICATION)
    )
    write_model.ensure_cap(money.btc_to_satoshis(Decimal(cap_btc)))
    return write_model


def test_an_order_placed_on_the_loop_is_stored_with_its_event_and_then_replayed(
    databases: Databases, engine: Engine
) -> None:
    write_model = loop_model(databases, engine, "100")
    request = order("123.45")

    async def run() -> tuple[Any, Any]:
        first = await write_model.place_on_loop(request, Decimal("97012.34"), "req-1")
        again = await write_model.place_on_loop(request, Decimal("90000.00"), "req-2")
        return first, again

    first, again = asyncio.run(run())
    assert first is not None and first[1] and first[0].bitcoin_amount == Decimal("0.00127252")
    assert again == (first[0], False)  # the stored order, whatever the rate now
    with engine.connect() as connection:
        event = connection.execute(text("SELECT order_sequence, request_id FROM outbox")).one()
    assert (event.order_sequence, event.request_id) == (first[0].sequence, "req-1")
    assert ledger_total(engine) == (127_252, 100 * 10**8 - 127_252)


def test_what_one_statement_cannot_settle_is_left_to_place(databases: Databases, engine: Engine) -> None:
    """None, and nothing stored: an order above the whole cap, a slot short of it, no connection free."""
    write_model = loop_model(databases, engine, "0.00016", size=1)  # 1,000 satoshis a slot

    async def run() -> list[Any]:
        busy = asyncio.ensure_future(write_model.loop_connections.fetch_prepared(SLEEP, (0.5,)))  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        outcomes = [
            await write_model.place_on_loop(order("0.01"), RATE, None),  # the one connection is busy
        ]
        await busy
        outcomes += [
            await write_model.place_on_loop(order("1000"), RATE, None),  # above the whole cap
            await write_model.place_on_loop(order("2"), RATE, None),  # 2,000 satoshis: more than any slot
        ]
        return outcomes

    assert asyncio.run(run()) == [None, None, None]
    assert ledger_total(engine) == (0, 16_000)
    assert asyncio.run(WriteModel(engine, 16).place_on_loop(order("1"), RATE, None)) is None  # no loop connections


def test_orders_racing_on_the_loop_and_on_threads_never_take_the_total_above_the_cap(
    databases: Databases, engine: Engine, in_thread: InThread
) -> None:
    """The service's way: the handler on one loop, two loop connections (most orders find them
    busy and go to a thread), 64 threads taking the slow path as slots run dry."""
    write_model = loop_model(databases, engine, "0.01", size=2)
    sizes = [f"{(i * 37) % 90 + 10}.00" for i in range(200)]
    rates = FakeRates(USD=str(RATE))

    async def place(size: str) -> bool:
        command = PlaceBuyOrder(Currency.USD, Decimal(size), uuid.uuid4())
        try:
            await place_buy_order_on_loop(command, rates, write_model, in_thread, KeysInFlight())
            return True
        except BtcCapExceeded:
            return False

    async def run() -> list[bool]:
        return list(await asyncio.gather(*(place(size) for size in sizes)))

    results = asyncio.run(run())
    used, left = ledger_total(engine)
    assert used + left == 1_000_000 and used <= 1_000_000
    assert any(results) and not all(results)
    refused = [money.btc_to_satoshis(Decimal(sizes[i]) / 100000) for i, ok in enumerate(results) if not ok]
    assert all(size > left for size in refused)


def test_one_key_racing_on_the_loop_and_on_threads_stores_one_order(
    databases: Databases, engine: Engine, in_thread: InThread
) -> None:
    write_model = loop_model(databases, engine, "100", size=3)
    rates = FakeRates(USD=str(RATE))
    key = uuid.uuid4()
    in_flight = KeysInFlight()

    async def run() -> list[tuple[Any, bool]]:
        command = PlaceBuyOrder(Currency.USD, Decimal("25.00"), key)
        return list(
            await asyncio.gather(
                *(place_buy_order_on_loop(command, rates, write_model, in_thread, in_flight) for _ in range(32))
            )
        )

    results = asyncio.run(run())
    assert len({stored.id for stored, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 1


def test_connections_open_when_needed_and_say_so_at_once_when_all_are_busy(
    databases: Databases, engine: Engine
) -> None:
    connections = LoopConnections(databases.write_url, 2, APPLICATION)

    async def run() -> None:
        assert connections.open == 0
        sleeping = [asyncio.ensure_future(connections.fetch_prepared(SLEEP, (0.5,))) for _ in range(2)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(NoConnectionFree):
            await connections.fetch_prepared(SLEEP, (0,))
        assert time.monotonic() - started < 0.05  # never a wait
        assert await asyncio.gather(*sleeping) == [("",), ("",)]
        assert connections.open == 2 and backends(engine) == 2
        await connections.fetch_prepared(SLEEP, (0,))  # an idle one is reused
        assert connections.open == 2
        await connections.close()
        with pytest.raises(NoConnectionFree):
            await connections.fetch_prepared(SLEEP, (0,))

    asyncio.run(run())
    assert backends(engine) == 0


def test_a_statement_the_server_forgot_is_prepared_again(databases: Databases, engine: Engine) -> None:
    connections = LoopConnections(databases.write_url, 1, APPLICATION)

    async def run() -> None:
        await connections.fetch_prepared(SLEEP, (0,))
        [idle] = connections._idle
        cursor = idle.raw.cursor()
        cursor.execute("DEALLOCATE ALL")  # behind the pool's back
        await db_loop._wait(idle.raw)
        cursor.close()
        assert await connections.fetch_prepared(SLEEP, (0,)) == ("",)
        await connections.close()

    asyncio.run(run())


def test_a_lost_connection_is_an_outage_and_the_next_order_opens_a_new_one(
    databases: Databases, engine: Engine
) -> None:
    write_model = loop_model(databases, engine, "100", size=2)

    async def run() -> None:
        assert await write_model.place_on_loop(order("1"), RATE, None) is not None
        with engine.connect() as connection:  # the server ends every loop connection (a restart, a failover)
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
                {"name": APPLICATION},
            )
        with pytest.raises(ServiceUnavailable):
            await write_model.place_on_loop(order("1"), RATE, None)
        assert write_model.loop_connections is not None and write_model.loop_connections.open == 0
        placed = await write_model.place_on_loop(order("1"), RATE, None)
        assert placed is not None and placed[1]
        await write_model.loop_connections.close()

    asyncio.run(run())


def test_a_statement_cancelled_midway_closes_its_connection(databases: Databases, engine: Engine) -> None:
    connections = LoopConnections(databases.write_url, 1, APPLICATION)

    async def run() -> None:
        sleeping = asyncio.ensure_future(connections.fetch_prepared(SLEEP, (30,)))
        await asyncio.sleep(0.3)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        assert connections.open == 0  # never given back half-way through a statement
        assert await connections.fetch_prepared(SLEEP, (0,)) == ("",)
        await connections.close()

    asyncio.run(run())
    deadline = time.monotonic() + 5
    while backends(engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backends(engine) == 0


def test_a_server_that_accepts_and_never_answers_fails_the_connect_within_its_timeout() -> None:
    """libpq's `connect_timeout` does not bound an asynchronous connect: the loop's deadline does."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nothing ever answers the startup packet
    port = silent.getsockname()[1]
    connections = LoopConnections(f"postgresql://postgres@127.0.0.1:{port}/x", 1, APPLICATION)
    started = time.monotonic()
    try:
        with pytest.raises(psycopg2.OperationalError, match="timed out") as raised:
            asyncio.run(connections.fetch_prepared(SLEEP, (0,)))
    finally:
        silent.close()
    assert db.is_outage(raised.value)
    assert db.CONNECT_TIMEOUT_SECONDS <= time.monotonic() - started < db.CONNECT_TIMEOUT_SECONDS + 2
    assert connections.open == 0
