"""The cap ledger while replicas start: `ensure_cap` changes it in place, replicas that disagree say so
(each replica a `CapLedger` of its own on the one database)."""

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import psycopg
import psycopg_pool
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded
from btc_orders.domain.orders import Currency, OrderRequest
from tests.support.services import Databases, dsn, opened_pool

pytestmark = pytest.mark.anyio

RATE = Decimal("100000.00")  # 1 USD = 1,000 satoshis


def order(amount: str) -> OrderRequest:
    return OrderRequest(Currency.USD, Decimal(amount), uuid.uuid4())


def ledger(engine: Engine) -> tuple[int, int, int]:
    """(satoshis used by orders, satoshis the slots hold, number of slots)."""
    with engine.connect() as connection:
        used = connection.execute(text("SELECT coalesce(sum(bitcoin_amount), 0) FROM buy_order")).scalar_one()
        left, slots = connection.execute(
            text("SELECT coalesce(sum(remaining_satoshis), 0), count(*) FROM cap_slot")
        ).one()
    return money.btc_to_satoshis(used), int(left), int(slots)


def lock_waiters(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(DISTINCT pid) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE NOT l.granted AND a.datname = current_database()"
                )
            ).scalar_one()
        )


@pytest.fixture
async def pool(databases: Databases) -> AsyncIterator[psycopg_pool.AsyncConnectionPool]:
    async with opened_pool(databases.write_url, 40) as opened:
        yield opened


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait (on the loop, so that the tasks that should get there run) until `condition()`."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def replica(
    pool: psycopg_pool.AsyncConnectionPool, slots: int, choose: Callable[[int], int] | None = None
) -> WriteModel:
    """A replica's write model (its own view of the ledger) on the shared database."""
    return WriteModel(pool, CapLedger(pool, slots, choose))


def disagreements(caplog: pytest.LogCaptureFixture, setting: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.getMessage() == "cap_ledger_disagrees" and getattr(record, "event_fields", {})["setting"] == setting
    ]


@pytest.mark.parametrize(
    ("other_slots", "other_cap"),
    [(4, 1_000_000), (2, 2_000_000), (2, 900_000)],
    ids=["more_slots", "higher_cap", "lower_cap_that_still_fits"],
)
async def test_an_order_waiting_on_the_slots_while_another_replica_starts_is_stored(
    databases: Databases,
    write_engine: Engine,
    pool: psycopg_pool.AsyncConnectionPool,
    other_slots: int,
    other_cap: int,
) -> None:
    # Two slots, everything in slot 0; the order tries slot 1 (empty), so it must lock them all.
    serving = replica(pool, 2, choose=lambda _: 1)
    await serving.ledger.ensure_cap(1_000_000)
    with write_engine.begin() as connection:
        connection.execute(text("UPDATE cap_slot SET remaining_satoshis = CASE slot WHEN 0 THEN 1000000 ELSE 0 END"))
    blocker = psycopg.connect(dsn(databases.write_name))  # an order on slot 0, not committed yet
    blocker.execute("SELECT 1 FROM cap_slot WHERE slot = 0 FOR UPDATE")
    # the other replica's start queues on slot 0 first
    starting = asyncio.ensure_future(CapLedger(pool, other_slots).ensure_cap(other_cap))
    await eventually(lambda: lock_waiters(write_engine) == 1, "ensure_cap to wait on slot 0")

    async def place() -> object:
        try:
            return (await serving.place(order("500.00"), RATE, None))[1]
        except BtcCapExceeded as error:
            return error

    placing = asyncio.ensure_future(place())  # then the order, behind it: it sees the ledger as ensure_cap leaves it
    await eventually(lambda: lock_waiters(write_engine) == 2, "the order to wait on slot 0")
    blocker.rollback()
    blocker.close()
    await asyncio.wait_for(starting, 10)
    assert await asyncio.wait_for(placing, 10) is True
    used, left, slots = ledger(write_engine)
    assert (used, used + left, slots) == (500_000, other_cap, max(2, other_slots))


@pytest.mark.parametrize("round_", range(2))
async def test_replicas_starting_while_orders_fill_the_cap_exactly_never_refuse_one(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool, round_: int
) -> None:
    cap = 1_000_000  # 0.01 BTC; the 200 orders below add up to exactly that: every one of them fits
    sizes = [("3.00", "7.00")[(i * 7 + round_) % 2] for i in range(200)]
    assert sum(money.bitcoin_satoshis(Decimal(size), RATE) for size in sizes) == cap
    replicas = [replica(pool, 16) for _ in range(2)]
    for serving in replicas:
        await serving.ledger.ensure_cap(cap)
    stop = asyncio.Event()

    async def start_replicas(offset: int) -> int:
        starts = 0
        while not stop.is_set():  # replicas of other slot counts start, over and over
            await CapLedger(pool, 8 + (starts * 5 + offset) % 24).ensure_cap(cap)
            starts += 1
        return starts

    at_once = asyncio.Semaphore(32)

    async def place(index: int) -> str:
        async with at_once:
            try:
                await replicas[index % 2].place(order(sizes[index]), RATE, None)
                return "stored"
            except BtcCapExceeded as error:
                return f"refused with {error.available} BTC available"

    starters = [asyncio.ensure_future(start_replicas(offset)) for offset in range(3)]
    results = await asyncio.gather(*(place(index) for index in range(len(sizes))))
    stop.set()
    assert all(start > 0 for start in await asyncio.gather(*starters))
    assert Counter(results) == {"stored": 200}
    assert ledger(write_engine)[:2] == (cap, 0)


async def test_a_replica_with_fewer_slots_than_exist_uses_them_all_and_says_so_once(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    await CapLedger(pool, 16).ensure_cap(1_000_000)
    caplog.set_level(logging.WARNING)
    fewer = CapLedger(pool, 4)
    await fewer.ensure_cap(1_000_000)
    await fewer.ensure_cap(1_000_000)
    assert fewer.slots == tuple(range(16))
    assert ledger(write_engine)[1:] == (1_000_000, 16)
    [logged] = disagreements(caplog, "CAP_LEDGER_SLOTS")
    assert logged.event_fields["configured"] == 4 and logged.event_fields["ledger"] == 16  # type: ignore[attr-defined]
    assert "CAP_LEDGER_SLOTS" in logged.event_fields["message"]  # type: ignore[attr-defined]


async def test_a_replica_with_more_slots_adds_empty_ones_and_the_others_learn_them(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    running = replica(pool, 4, choose=lambda n: n - 1)  # always the last slot it knows
    await running.ledger.ensure_cap(1_000_000)
    await CapLedger(pool, 8).ensure_cap(1_000_000)
    with write_engine.connect() as connection:
        slots = dict(connection.execute(text("SELECT slot, remaining_satoshis FROM cap_slot")).all())
    assert slots == {0: 250_000, 1: 250_000, 2: 250_000, 3: 250_000, 4: 0, 5: 0, 6: 0, 7: 0}  # nothing moved
    caplog.set_level(logging.WARNING)
    for _ in range(3):  # slot 3 runs dry, then the slow path spreads over all 8
        await running.place(order("100.00"), RATE, None)
    assert running.ledger.slots == tuple(range(8))
    assert ledger(write_engine) == (300_000, 700_000, 8)
    assert len(disagreements(caplog, "CAP_LEDGER_SLOTS")) == 1


async def test_a_replica_whose_cap_differs_uses_the_ledgers_and_says_so_once(
    pool: psycopg_pool.AsyncConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    running = replica(pool, 2)
    await running.ledger.ensure_cap(1_000_000)  # BTC_CAP=0.01
    await CapLedger(pool, 2).ensure_cap(2_000_000)  # another replica starts with BTC_CAP=0.02
    caplog.set_level(logging.WARNING)
    # 0.015 BTC: above the cap `running` was started with, within the ledger's: stored
    _stored, created = await running.place(order("1500.00"), RATE, None)
    assert created and running.ledger.cap_satoshis == 2_000_000
    with pytest.raises(BtcCapExceeded) as refused:
        await running.place(order("600.00"), RATE, None)
    assert refused.value.available == Decimal("0.00500000")
    [logged] = disagreements(caplog, "BTC_CAP")
    assert logged.event_fields["configured"] == Decimal("0.01")  # type: ignore[attr-defined]
    assert logged.event_fields["ledger"] == Decimal("0.02")  # type: ignore[attr-defined]


async def test_restarting_with_another_cap_changes_the_ledger_in_place_and_logs_it(
    write_engine: Engine, pool: psycopg_pool.AsyncConnectionPool, caplog: pytest.LogCaptureFixture
) -> None:
    await CapLedger(pool, 4).ensure_cap(1_000_000)
    caplog.set_level(logging.WARNING)
    await CapLedger(pool, 4).ensure_cap(600_000)
    assert ledger(write_engine) == (0, 600_000, 4)
    [changed] = [record for record in caplog.records if record.getMessage() == "cap_ledger_changed"]
    assert changed.event_fields["from_btc"] == Decimal("0.01")  # type: ignore[attr-defined]
    assert changed.event_fields["to_btc"] == Decimal("0.006")  # type: ignore[attr-defined]
