"""A currency the code knows and the write model's schema does not yet (a deployment gap) is a 503
with Retry-After, logged once, with nothing stored: never a 500 (the service as it runs)."""

import uuid

import httpx
import psycopg

from tests.e2e.conftest import Suite
from tests.integration.test_schema_gap import CURRENCIES_BUT_USD
from tests.support.services import dsn, sql, wait_until


def test_a_currency_the_write_model_refuses_is_a_503_logged_once(suite: Suite) -> None:
    suite.start("btc_price")
    create = suite.start("create_buy_order")
    sql(suite.databases.write_name, CURRENCIES_BUT_USD)
    answers = [
        httpx.put(
            f"{create.url}/buy_order",
            json={"currency": "USD", "amount": "10.00", "idempotence_key": str(uuid.uuid4())},
            timeout=10,
        )
        for _ in range(3)
    ]
    for response in answers:
        assert response.status_code == 503, response.text
        assert response.json()["detail"]["code"] == "service_unavailable"
        assert int(response.headers["retry-after"]) >= 1
    euro = {"currency": "EUR", "amount": "10.00", "idempotence_key": str(uuid.uuid4())}
    placed = httpx.put(f"{create.url}/buy_order", json=euro, timeout=10)
    assert placed.status_code == 201, create.logs()[-3000:]
    with psycopg.connect(dsn(suite.databases.write_name)) as connection:
        assert connection.execute("SELECT count(*) FROM buy_order WHERE currency = 'USD'").fetchone() == (0,)
    wait_until(lambda: "order_refused_by_schema" in create.logs(), message="the gap logged")
    assert create.logs().count("order_refused_by_schema") == 1
    assert "internal_error" not in create.logs()
