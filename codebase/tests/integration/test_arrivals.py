"""The one LISTEN connection of a fetch_buy_orders process, on a real Postgres: it wakes only the
waiters of the orders that landed, and comes back after its connection was killed."""

import asyncio
import uuid
from datetime import UTC, datetime

import anyio.to_thread
import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine

from btc_orders.adapters.read_model import apply_created_events
from btc_orders.services.fetch_buy_orders.arrivals import Arrivals
from tests.support.services import Databases, admin_connection, dsn

NAME = "arrivals_test"


def order(sequence: int) -> dict[str, object]:
    return {
        "sequence": sequence,
        "id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
        "currency": "USD",
        "amount": "10.00",
        "exchange_rate": "97012.34",
        "bitcoin_amount": "0.00010308",
        "idempotence_key": uuid.uuid4(),
        "event_id": uuid.uuid4(),
    }


def listening_backends(database: str) -> list[int]:
    connection = admin_connection()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s", (database, NAME)
        )
        pids = [row[0] for row in cursor.fetchall()]
    connection.close()
    return pids


async def until(predicate: object, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_only_the_landed_ids_are_woken_and_a_killed_connection_is_reopened(
    databases: Databases, read_engine: Engine
) -> None:
    def connect() -> psycopg2.extensions.connection:
        return psycopg2.connect(dsn(databases.read_name), application_name=NAME)

    def project(*rows: dict[str, object]) -> None:
        with read_engine.begin() as connection:
            apply_created_events(connection, list(rows))

    async def scenario() -> None:
        arrivals = Arrivals(connect, max_waiters=2)
        await arrivals.start()
        try:
            await until(lambda: arrivals.listening)
            a, b, c = order(1), order(2), order(3)
            with arrivals.wait_for(a["id"]) as landed_a, arrivals.wait_for(b["id"]) as landed_b:  # type: ignore[arg-type]
                assert landed_a is not None and landed_b is not None
                with arrivals.wait_for(c["id"]) as refused:  # type: ignore[arg-type]
                    assert refused is None  # past the bound: no wait offered
                await anyio.to_thread.run_sync(project, a)
                await asyncio.wait_for(landed_a.wait(), 20)
                assert not landed_b.is_set()  # another order's landing wakes nobody else
            assert arrivals.waiting == 0

            (first_pid,) = listening_backends(databases.read_name)
            killer = admin_connection()
            with killer.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
            killer.close()
            await until(lambda: listening_backends(databases.read_name) not in ([], [first_pid]) and arrivals.listening)
            with arrivals.wait_for(c["id"]) as landed_c:  # type: ignore[arg-type]
                assert landed_c is not None
                landed_c.clear()  # the reconnection wakes every waiter once; only the landing counts now
                await anyio.to_thread.run_sync(project, c)
                await asyncio.wait_for(landed_c.wait(), 20)
        finally:
            await arrivals.stop()
        assert listening_backends(databases.read_name) == []

    asyncio.run(scenario())
