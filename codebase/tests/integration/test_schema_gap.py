"""A value the code accepts and the write model's schema does not (yet): a 503, never a 500.

Code that knows a new currency may be deployed before the migration that lets the write model's
CHECK constraint take it. Here the constraint is narrowed on a throwaway database (USD no longer
allowed): an order in USD is then that deployment gap. The service answers 503
`service_unavailable` with Retry-After and a sentence saying so, stores nothing (the key stays
unused: the same request is a 201 once the schema takes it), and logs the gap as an error once,
not once per order.
"""

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import psycopg_pool
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from btc_orders.adapters import db, order_rows
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.services.create_buy_order.app import create_app
from btc_orders.settings import CreateBuyOrderSettings
from tests.support.services import Databases, dsn, sql
from tests.unit.fakes import FakeRates

CURRENCIES_BUT_USD = (
    "ALTER TABLE buy_order DROP CONSTRAINT buy_order_currency_check, "
    "ADD CONSTRAINT buy_order_currency_check CHECK (currency IN ('EUR', 'GBP'))"
)
EVERY_CURRENCY = (
    "ALTER TABLE buy_order DROP CONSTRAINT buy_order_currency_check, "
    "ADD CONSTRAINT buy_order_currency_check CHECK (currency IN ('EUR', 'GBP', 'USD'))"
)


@dataclass
class Adapters:
    """create_buy_order's adapters on the throwaway write model, with rates that never change."""

    orders: WriteModel
    ledger: CapLedger
    prices: FakeRates
    pool: psycopg_pool.AsyncConnectionPool

    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        return {"write_model": await db.ping_pool(self.pool)}

    async def close(self) -> None:
        await self.pool.close()


@pytest.fixture
def client(databases: Databases) -> Iterator[TestClient]:
    """The create service as it serves (its routes, its error handlers) on the throwaway write model."""

    async def bootstrap(settings: CreateBuyOrderSettings) -> Adapters:
        pool = db.async_pool(settings.write_model_db_url, 2, "test_schema_gap")
        await pool.open(wait=True, timeout=10)
        ledger = CapLedger(pool, 4)
        await ledger.ensure_cap(money.btc_to_satoshis(Decimal("100")))
        return Adapters(WriteModel(pool, ledger), ledger, FakeRates(USD="50000", EUR="40000", GBP="35000"), pool)

    settings = CreateBuyOrderSettings(
        WRITE_MODEL_DB_URL=databases.write_url, BTC_PRICE_URL="http://127.0.0.1:9", PUBLIC_FETCH_URL=""
    )
    with TestClient(create_app(settings, bootstrap), raise_server_exceptions=False) as started:
        yield started


@pytest.fixture(autouse=True)
def logged_afresh() -> Iterator[None]:
    """Each test sees the gap's first log line (it is logged once per constraint and process)."""
    order_rows._logged.clear()
    yield
    order_rows._logged.clear()


def stored(engine: Engine) -> tuple[int, int]:
    """(orders, outbox rows) in the write model."""
    with engine.connect() as connection:
        orders = connection.execute(text("SELECT count(*) FROM buy_order")).scalar_one()
        events = connection.execute(text("SELECT count(*) FROM outbox")).scalar_one()
    return int(orders), int(events)


def test_a_currency_the_schema_refuses_is_a_503_that_stores_nothing_and_leaves_the_key_unused(
    client: TestClient, databases: Databases, write_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first = client.put("/buy_order", json={"currency": "EUR", "amount": "1", "idempotence_key": str(uuid.uuid4())})
    assert first.status_code == 201, first.text
    sql(databases.write_name, CURRENCIES_BUT_USD)
    before = stored(write_engine)
    body = {"currency": "USD", "amount": "10.00", "idempotence_key": str(uuid.uuid4())}

    with caplog.at_level(logging.ERROR, logger=order_rows.__name__):
        answers = [client.put("/buy_order", json=body) for _ in range(3)]
        answers.append(client.put("/buy_order", json={**body, "idempotence_key": str(uuid.uuid4())}))
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == str(order_rows.SCHEMA_GAP_RETRY_SECONDS)
        detail = response.json()["detail"]
        assert detail["code"] == "service_unavailable"
        assert "schema does not accept this order's currency yet" in detail["message"]
    assert stored(write_engine) == before, "nothing stored, no event"
    gaps = [record for record in caplog.records if record.getMessage() == "order_refused_by_schema"]
    assert len(gaps) == 1, "logged once, not once per order"
    assert gaps[0].levelno == logging.ERROR
    assert gaps[0].event_fields["constraint"] == "buy_order_currency_check"  # type: ignore[attr-defined]

    # the gap closed (the migration ran): the same request is stored, its key was never bound
    sql(databases.write_name, EVERY_CURRENCY)
    placed = client.put("/buy_order", json=body)
    assert placed.status_code == 201, placed.text
    assert placed.json()["currency"] == "USD"
    assert stored(write_engine) == (before[0] + 1, before[1] + 1)


def test_other_currencies_are_served_while_one_is_refused(client: TestClient, databases: Databases) -> None:
    sql(databases.write_name, CURRENCIES_BUT_USD)
    refused = client.put("/buy_order", json={"currency": "USD", "amount": "1", "idempotence_key": str(uuid.uuid4())})
    placed = client.put("/buy_order", json={"currency": "GBP", "amount": "1", "idempotence_key": str(uuid.uuid4())})
    assert (refused.status_code, placed.status_code) == (503, 201)


def test_a_check_violation_elsewhere_is_not_a_schema_gap(databases: Databases) -> None:
    """Only the order's own columns' constraints are a deployment gap; another CHECK stays a bug."""
    with psycopg.connect(dsn(databases.write_name), autocommit=True) as connection:
        with pytest.raises(psycopg.errors.CheckViolation) as other:
            connection.execute("INSERT INTO cap_slot (slot, remaining_satoshis) VALUES (99, -1)")
        with pytest.raises(psycopg.errors.CheckViolation) as own:
            connection.execute(
                "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
                " VALUES (gen_random_uuid(), gen_random_uuid(), 'XXX', 1, 1, 1)"
            )
    assert order_rows.schema_gap(other.value) is None
    gap = order_rows.schema_gap(own.value)
    assert gap is not None and "currency" in gap.message
