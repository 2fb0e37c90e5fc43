"""The one LISTEN connection of a fetch_buy_orders process, on a real Postgres: it wakes only the
waiters of the orders that landed, and comes back after its connection was killed, waking every
waiter to look again (what landed in between was not notified)."""

import asyncio
import itertools
import os
import shutil
import urllib.parse
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import psycopg
import pytest
from sqlalchemy import Engine

from btc_orders.adapters.projection import apply_created_events
from btc_orders.services.fetch_buy_orders.arrivals import Arrivals, connector
from tests.support.blackhole_proxy import BlackholeProxy
from tests.support.services import Databases, admin_connection

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
    with admin_connection() as connection:
        query = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s"
        return [pid for (pid,) in connection.execute(query, (database, NAME)).fetchall()]


async def until(predicate: object, seconds: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_only_the_landed_ids_are_woken_and_a_killed_connection_is_reopened(
    databases: Databases, read_engine: Engine
) -> None:
    def project(*rows: dict[str, object]) -> None:
        with read_engine.begin() as connection:
            apply_created_events(connection, list(rows))

    arrivals = Arrivals(connector(databases.read_url, NAME), max_waiters=2)
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
        with arrivals.wait_for(b["id"]) as across:  # type: ignore[arg-type]
            assert across is not None
            with admin_connection() as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (first_pid,))
            await asyncio.wait_for(across.wait(), 20)  # the loss wakes it: it looks once
            across.clear()  # before the backoff is over
            await asyncio.wait_for(across.wait(), 20)  # and once more when listening resumes
            assert arrivals.listening
        assert listening_backends(databases.read_name) not in ([], [first_pid])
        with arrivals.wait_for(c["id"]) as landed_c:  # type: ignore[arg-type]
            assert landed_c is not None
            await anyio.to_thread.run_sync(project, c)
            await asyncio.wait_for(landed_c.wait(), 20)
    finally:
        await arrivals.stop()
    assert not arrivals.listening
    assert listening_backends(databases.read_name) == []


@pytest.mark.anyio
async def test_a_database_away_at_start_is_listened_to_once_it_answers() -> None:
    """The listener starts whatever the database's state, retries with bounded backoff, and offers
    no wait until it listens."""
    attempts: list[float] = []

    async def refused() -> Any:
        attempts.append(asyncio.get_running_loop().time())
        raise psycopg.OperationalError("connection refused")

    arrivals = Arrivals(refused, max_waiters=10)
    await arrivals.start()
    try:
        await until(lambda: len(attempts) >= 4)
        with arrivals.wait_for(uuid.uuid4()) as offered:
            assert offered is None  # not listening: answered at once
        assert not arrivals.listening
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert gaps == sorted(gaps) and all(0.1 < gap < 5 for gap in gaps), gaps  # backed off, and bounded
    finally:
        await arrivals.stop()


@pytest.mark.anyio
@pytest.mark.skipif(
    not (os.geteuid() == 0 and shutil.which("iptables")),
    reason="a dead peer needs the kernel to drop packets (root, iptables): a proxy's kernel answers keepalives",
)
async def test_a_listener_cut_off_by_a_silent_network_wakes_its_waiters_and_listens_again(
    databases: Databases, read_engine: Engine
) -> None:
    """No reset, no close: only silence. The keepalives of `db.connect_args` notice it in seconds, every
    waiter looks again, and the listener reconnects once the network is back."""
    target = urllib.parse.urlsplit(databases.read_url)
    with BlackholeProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        url = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
        arrivals = Arrivals(connector(url, NAME), max_waiters=2)
        await arrivals.start()
        try:
            await until(lambda: arrivals.listening)
            with arrivals.wait_for(uuid.uuid4()) as across:
                assert across is not None
                proxy.blackhole()
                started = asyncio.get_running_loop().time()
                await asyncio.wait_for(across.wait(), 40)  # the silence noticed: it looks again
                assert not arrivals.listening
                noticed = asyncio.get_running_loop().time() - started
            proxy.restore()
            await until(lambda: arrivals.listening, 30)
            landing = order(1)
            with arrivals.wait_for(landing["id"]) as landed:  # type: ignore[arg-type]
                assert landed is not None
                with read_engine.begin() as connection:
                    apply_created_events(connection, [landing])
                await asyncio.wait_for(landed.wait(), 20)
        finally:
            await arrivals.stop()
    assert noticed < 30, noticed
