"""Orders written in groups, on a real Postgres: each order's outcome is the one it would have alone.

Random runs of groups (keys repeated within and across groups, amounts that straddle what the cap
leaves, slots that cover a group or not) are checked against a model that takes the orders one at
a time in arrival order. One writer, so that the orders placed at once are one group (or several,
in order, when they outnumber the group's bound). Then what a group shares: an outage fails every
order of it and stores none; an order the schema refuses fails alone.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import psycopg_pool
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from btc_orders.adapters import db, write_model
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded, ServiceUnavailable
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest
from tests.integration.test_write_model import APPLICATION, opened_pool, terminate_sessions, wait_for_a_lock_wait
from tests.support.services import Databases, dsn, sql

RATE = Decimal("100000.00")  # 1 USD = 1,000 satoshis: an amount in cents is a hundredth of its satoshis
SLOTS = 4
MAX_GROUP = 6


@dataclass(frozen=True)
class Order:
    key: int  # which of the run's keys
    cents: int  # the amount, in cents

    @property
    def satoshis(self) -> int:
        return self.cents * 10


@dataclass(frozen=True)
class Run:
    slots: tuple[int, ...]  # satoshis each slot holds at the start
    chosen_slot: int  # the slot every group tries first
    batches: tuple[tuple[Order, ...], ...]  # orders placed at once; one batch after the other


# Amounts around what a slot and the slots together hold (up to 10,000 USD), and above it all. The
# ledger's cap stays above every order: each order is written in its group (an order above the whole
# cap is refused before it is queued: test_cap_in_flight).
CAP = 10**7
amounts = st.one_of(st.integers(1, 6_000), st.integers(6_000, 40_000), st.integers(40_000, 200_000))
orders_ = st.builds(Order, key=st.integers(0, 7), cents=amounts)
runs = st.builds(
    Run,
    slots=st.tuples(*[st.sampled_from([0, 1_000, 50_000, 100_000, 250_000])] * SLOTS),
    chosen_slot=st.integers(0, SLOTS - 1),
    batches=st.lists(st.lists(orders_, min_size=1, max_size=MAX_GROUP * 2).map(tuple), min_size=1, max_size=5).map(
        tuple
    ),
)


@dataclass
class Expected:
    """The outcome of one order alone: stored, the replay of the order `replay_of` stored, or refused."""

    stored: bool = False
    replay_of: int | None = None  # the index of the order that stored the key
    replay_of_earlier_run: bool = False
    refused_available: int | None = None


def one_at_a_time(orders: Sequence[Order], available: int) -> list[Expected]:
    """The model: each order in arrival order, alone."""
    stored_by: dict[int, int] = {}
    expected = []
    for index, order in enumerate(orders):
        if order.key in stored_by:
            expected.append(Expected(replay_of=stored_by[order.key]))
        elif order.satoshis <= available:
            available -= order.satoshis
            stored_by[order.key] = index
            expected.append(Expected(stored=True))
        else:
            expected.append(Expected(refused_available=available))
    return expected


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as opened:
        yield opened


@dataclass
class Writer:
    pool: psycopg_pool.AsyncConnectionPool
    model: WriteModel
    chosen: list[int]


@pytest.fixture
def writer(databases: Databases, runner: asyncio.Runner) -> Iterator[Writer]:
    pool = runner.run(_opened(databases.write_url))
    chosen = [0]
    ledger = CapLedger(pool, SLOTS, choose=lambda _: chosen[0])
    runner.run(ledger.ensure_cap(CAP))
    yield Writer(pool, WriteModel(pool, ledger, writers=1, max_group=MAX_GROUP), chosen)
    runner.run(pool.close())


async def _opened(url: str) -> psycopg_pool.AsyncConnectionPool:
    pool = db.async_pool(url, 4, APPLICATION)
    await pool.open(wait=True, timeout=10)
    return pool


async def place_at_once(model: WriteModel, requests: Sequence[OrderRequest]) -> list[tuple[BuyOrder, bool] | Exception]:
    async def place(request: OrderRequest) -> tuple[BuyOrder, bool] | Exception:
        try:
            return await model.place(request, RATE, None)
        except BtcCapExceeded as error:
            return error

    return list(await asyncio.gather(*(place(request) for request in requests)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=runs)
def test_each_order_of_a_group_is_answered_as_it_would_be_alone(
    writer: Writer, runner: asyncio.Runner, write_engine: Engine, run: Run
) -> None:
    keys = [uuid.uuid4() for _ in range(8)]  # this run's keys: no order of an earlier run has one
    available = sum(run.slots)
    with write_engine.begin() as connection:
        connection.execute(
            text("UPDATE cap_slot SET remaining_satoshis = (CAST(:slots AS bigint[]))[slot + 1]"),
            {"slots": list(run.slots)},
        )
    writer.chosen[0] = run.chosen_slot

    arrived = [order for batch in run.batches for order in batch]
    expected = one_at_a_time(arrived, available)
    answers: list[tuple[BuyOrder, bool] | Exception] = []
    for batch in run.batches:
        requests = [OrderRequest(Currency.USD, Decimal(order.cents) / 100, keys[order.key]) for order in batch]
        answers.extend(runner.run(place_at_once(writer.model, requests)))

    left = available
    for index, (order, want, answer) in enumerate(zip(arrived, expected, answers, strict=True)):
        where = f"order {index} {order} of {run}: {answer!r}"
        if want.refused_available is not None:
            assert isinstance(answer, BtcCapExceeded), where
            assert answer.available == money.satoshis_to_btc(want.refused_available), where
            assert answer.requested == money.satoshis_to_btc(order.satoshis), where
            continue
        assert not isinstance(answer, Exception), where
        stored, created = answer
        if want.stored:
            assert created, where
            assert (stored.idempotence_key, stored.amount) == (keys[order.key], Decimal(order.cents) / 100), where
            left -= order.satoshis
        else:
            assert want.replay_of is not None
            first = answers[want.replay_of]
            assert not isinstance(first, Exception)
            assert (stored, created) == (first[0], False), where

    with write_engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT b.sequence, b.bitcoin_amount, b.created_at, count(x.id) AS events FROM buy_order AS b"
                " LEFT JOIN outbox AS x ON x.order_sequence = b.sequence"
                " WHERE b.idempotence_key = ANY(CAST(:keys AS uuid[])) GROUP BY b.sequence"
            ),
            {"keys": keys},
        ).all()
        slots_left = connection.execute(text("SELECT sum(remaining_satoshis) FROM cap_slot")).scalar_one()
    created_answers = [answer[0] for answer in answers if not isinstance(answer, Exception) and answer[1]]
    assert sorted(row.sequence for row in rows) == sorted(order.sequence for order in created_answers)
    assert all(row.events == 1 for row in rows), "one outbox row per order"
    assert slots_left == left == available - sum(money.btc_to_satoshis(row.bitcoin_amount) for row in rows)
    # The orders of one group share one transaction: stored at one moment.
    position = 0
    for batch in run.batches:
        for start in range(0, len(batch), MAX_GROUP):
            group = answers[position + start : position + min(start + MAX_GROUP, len(batch))]
            moments = {answer[0].created_at for answer in group if not isinstance(answer, Exception) and answer[1]}
            assert len(moments) <= 1, moments
        position += len(batch)


@pytest.fixture
async def one_writer(databases: Databases) -> AsyncIterator[WriteModel]:
    async with opened_pool(databases.write_url, 2) as pool:
        ledger = CapLedger(pool, 1)
        await ledger.ensure_cap(100 * 10**8)
        yield WriteModel(pool, ledger, writers=1)


def count_orders(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM buy_order")).scalar_one())


@pytest.mark.anyio
async def test_an_outage_fails_every_order_of_the_group_and_stores_none(
    databases: Databases, write_engine: Engine, one_writer: WriteModel
) -> None:
    blocker: psycopg.Connection[Any] = psycopg.connect(dsn(databases.write_name))  # holds the one slot
    blocker.execute("SELECT 1 FROM cap_slot FOR UPDATE")
    try:
        requests = [OrderRequest(Currency.USD, Decimal(amount), uuid.uuid4()) for amount in ("1", "2", "3", "4")]
        placing = asyncio.ensure_future(
            asyncio.gather(*(one_writer.place(request, RATE, None) for request in requests), return_exceptions=True)
        )
        await wait_for_a_lock_wait(placing)
        assert terminate_sessions("wait_event_type = 'Lock'") == 1
        answers = await placing
    finally:
        blocker.rollback()
        blocker.close()
    assert all(isinstance(answer, ServiceUnavailable) for answer in answers), answers
    assert count_orders(write_engine) == 0
    _, created = await one_writer.place(requests[0], RATE, None)  # the retry is stored
    assert created


@pytest.mark.anyio
async def test_an_order_the_schema_refuses_fails_alone_and_the_rest_of_its_group_is_stored(
    databases: Databases, write_engine: Engine, one_writer: WriteModel
) -> None:
    sql(
        databases.write_name,
        "ALTER TABLE buy_order DROP CONSTRAINT buy_order_currency_check, "
        "ADD CONSTRAINT buy_order_currency_check CHECK (currency IN ('EUR', 'GBP'))",
    )
    requests = [OrderRequest(currency, Decimal("1"), uuid.uuid4()) for currency in Currency]
    answers = await asyncio.gather(
        *(one_writer.place(request, RATE, None) for request in requests), return_exceptions=True
    )
    by_currency = dict(zip(Currency, answers, strict=True))
    assert isinstance(by_currency[Currency.USD], psycopg.errors.CheckViolation), answers
    assert all(not isinstance(by_currency[currency], Exception) for currency in (Currency.EUR, Currency.GBP)), answers
    assert count_orders(write_engine) == 2


@pytest.mark.anyio
async def test_an_order_cancelled_in_a_group_leaves_the_others_stored(
    databases: Databases, write_engine: Engine, one_writer: WriteModel
) -> None:
    blocker: psycopg.Connection[Any] = psycopg.connect(dsn(databases.write_name))
    blocker.execute("SELECT 1 FROM cap_slot FOR UPDATE")
    try:
        requests = [OrderRequest(Currency.USD, Decimal(amount), uuid.uuid4()) for amount in ("1", "2")]
        tasks = [asyncio.ensure_future(one_writer.place(request, RATE, None)) for request in requests]
        await wait_for_a_lock_wait(tasks[1])
        tasks[0].cancel()
        await asyncio.sleep(0.1)
        assert not tasks[1].done()  # its group's statement still waits on the slot
    finally:
        blocker.rollback()
        blocker.close()
    _, created = await tasks[1]
    assert created
    with pytest.raises(asyncio.CancelledError):
        await tasks[0]
    assert count_orders(write_engine) == 2  # the cancelled order's client retries with its key: a replay


@pytest.mark.anyio
async def test_an_order_no_writer_takes_within_the_bound_is_a_503_and_never_written(
    databases: Databases, write_engine: Engine, one_writer: WriteModel
) -> None:
    blocker: psycopg.Connection[Any] = psycopg.connect(dsn(databases.write_name))  # the one writer waits on it
    blocker.execute("SELECT 1 FROM cap_slot FOR UPDATE")
    try:
        first = asyncio.ensure_future(
            one_writer.place(OrderRequest(Currency.USD, Decimal("1"), uuid.uuid4()), RATE, None)
        )
        await wait_for_a_lock_wait(first)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable, match="busy"):
            await one_writer.place(OrderRequest(Currency.USD, Decimal("2"), uuid.uuid4()), RATE, None)
        assert write_model.QUEUE_WAIT_SECONDS <= time.monotonic() - started < write_model.QUEUE_WAIT_SECONDS + 1
    finally:
        blocker.rollback()
        blocker.close()
    _, created = await first
    assert created
    assert count_orders(write_engine) == 1
