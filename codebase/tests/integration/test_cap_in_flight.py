"""A second attempt with a key while the first is still in flight: never a final answer the first contradicts.

The first attempt is held open from the test exactly where a real one holds its locks (the fast
path: one slot and the key; the slow path: every slot and the key), then the second attempt runs
against the real write model, and the first is committed or rolled back.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.domain.errors import BtcCapExceeded, OrderInFlight
from btc_orders.domain.orders import BuyOrder, Currency, OrderRequest
from tests.integration.test_cap_ledger import eventually
from tests.support.services import Databases, dsn, opened_pool

pytestmark = pytest.mark.anyio

RATE = Decimal("100000.00")  # 1 USD = 1,000 satoshis
CAP = 1_000_000  # 0.01 BTC = 1,000 USD at RATE
FIRST = Decimal("200.00")  # 200,000 satoshis, taken from slot 0


@dataclass
class HeldAttempt:
    """The first attempt, its transaction open: the order and its slot deduction not yet committed."""

    connection: "psycopg.Connection[Any]"
    order_id: uuid.UUID

    def end(self, outcome: str) -> None:
        if outcome == "commit":
            self.connection.commit()
        else:
            self.connection.rollback()
        self.connection.close()


def hold_first_attempt(databases: Databases, key: uuid.UUID, path: str) -> HeldAttempt:
    connection = psycopg.connect(dsn(databases.write_name))  # in a transaction until `end`
    satoshis = money.bitcoin_satoshis(FIRST, RATE)
    order_id = uuid.uuid4()
    if path == "fast":
        connection.execute("SELECT 1 FROM cap_slot WHERE slot = 0 FOR UPDATE")
    else:
        connection.execute("SELECT 1 FROM cap_slot ORDER BY slot FOR UPDATE")
    connection.execute("UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - %s WHERE slot = 0", (satoshis,))
    connection.execute(
        "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
        " VALUES (%s, %s, 'USD', %s, %s, %s)",
        (order_id, key, FIRST, RATE, money.satoshis_to_btc(satoshis)),
    )
    return HeldAttempt(connection, order_id)


def waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                " WHERE NOT l.granted AND a.datname = current_database()"
            )
        ).scalar_one()
    return bool(waiting)


@pytest.fixture
async def write_model(databases: Databases) -> AsyncIterator[WriteModel]:
    # Two slots; the second attempt always tries slot 1 first, the first attempt holds slot 0.
    async with opened_pool(databases.write_url, 4) as pool:
        ledger = CapLedger(pool, 2, choose=lambda _: 1)
        await ledger.ensure_cap(CAP)
        model = WriteModel(pool, ledger)
        await model.place(OrderRequest(Currency.USD, Decimal("500.00"), uuid.uuid4()), RATE, None)  # 500,000 left
        yield model


# (second attempt's amount, its rate): what the second attempt alone would be answered
SAME = (FIRST, RATE)  # fits
OTHER_AMOUNT = (Decimal("100.00"), RATE)  # fits, but names another order
OVER_REMAINING = (Decimal("600.00"), RATE)  # 600,000 satoshis: more than is left, less than the cap
OVER_CAP_SAME_AMOUNT = (FIRST, Decimal("10000.00"))  # the rate fell: 2,000,000 satoshis, above the whole cap
OVER_CAP_OTHER_AMOUNT = (Decimal("2000.00"), RATE)  # 2,000,000 satoshis, above the whole cap
SECOND_ATTEMPTS = {
    "same": SAME,
    "other_amount": OTHER_AMOUNT,
    "over_remaining": OVER_REMAINING,
    "over_cap_same_amount": OVER_CAP_SAME_AMOUNT,
    "over_cap_other_amount": OVER_CAP_OTHER_AMOUNT,
}


@pytest.mark.parametrize("path", ["fast", "slow"])
@pytest.mark.parametrize("second", list(SECOND_ATTEMPTS))
@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_a_second_attempt_is_answered_only_what_the_first_cannot_contradict(
    databases: Databases, write_engine: Engine, write_model: WriteModel, path: str, second: str, outcome: str
) -> None:
    key = uuid.uuid4()
    amount, rate = SECOND_ATTEMPTS[second]
    request = OrderRequest(Currency.USD, amount, key)
    held = hold_first_attempt(databases, key, path)
    answers: list[tuple[BuyOrder, bool] | Exception] = []

    async def attempt() -> None:
        try:
            answers.append(await write_model.place(request, rate, None))
        except (BtcCapExceeded, OrderInFlight) as error:
            answers.append(error)

    try:
        if second.startswith("over_cap"):
            # Above the whole cap: it cannot wait for the database's verdict on itself, so it waits
            # (bounded) for the key's fate, then answers "in flight, retry", never "refused".
            await attempt()
            assert isinstance(answers[0], OrderInFlight), answers
            assert answers[0].retry_after
            answers.clear()
        else:
            # Fits, or might after the first: it waits on the first attempt's locks for its verdict.
            waiting = asyncio.ensure_future(attempt())
            await eventually(lambda: waiting_on_a_lock(write_engine) or waiting.done(), "the wait")
            assert not answers, f"answered {answers} while the first attempt was in flight"
    finally:
        held.end(outcome)
    if second.startswith("over_cap"):
        await attempt()  # the client's retry after Retry-After
    else:
        await asyncio.wait_for(waiting, 10)

    [answer] = answers
    if outcome == "commit":
        # The key names the first attempt's order: the replay (the handler answers 422 if it differs).
        assert not isinstance(answer, Exception), answer
        stored, created = answer
        assert (stored.id, created) == (held.order_id, False)
    elif second in ("same", "other_amount"):
        assert not isinstance(answer, Exception), answer
        assert answer[1] is True
    else:
        assert isinstance(answer, BtcCapExceeded)
    with write_engine.connect() as connection:
        orders = connection.execute(
            text("SELECT count(*) FROM buy_order WHERE idempotence_key = :key"), {"key": key}
        ).scalar_one()
    assert orders == (1 if outcome == "commit" or second in ("same", "other_amount") else 0)


async def test_an_order_above_the_whole_cap_with_its_key_free_is_refused_after_one_look(
    write_model: WriteModel,
) -> None:
    request = OrderRequest(Currency.USD, Decimal("2000.00"), uuid.uuid4())
    with pytest.raises(BtcCapExceeded) as refused:
        await write_model.place(request, RATE, None)
    assert refused.value.available == Decimal("0.00500000")
    assert await write_model.find_by_key(request.idempotence_key) is None  # the claim was rolled back


async def test_an_order_above_the_whole_cap_with_its_key_stored_is_the_replay(write_model: WriteModel) -> None:
    request = OrderRequest(Currency.USD, FIRST, uuid.uuid4())
    stored, _ = await write_model.place(request, RATE, None)
    again, created = await write_model.place(request, Decimal("0.01"), None)  # priced far above the cap now
    assert (again, created) == (stored, False)
