"""PUT /buy_order while another attempt with the key is in flight: `order_in_flight`, never a refusal.

The first attempt is held open in the write model from the test (its slots locked, its order
inserted, not committed), as a slow request on another replica would be.
"""

import threading
import uuid
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from btc_orders.domain import money
from tests.e2e.conftest import Suite
from tests.support.services import dsn, wait_until

FIRST_AMOUNT = Decimal("50.00")
FIRST_RATE = Decimal("97012.34")  # 50 USD = 0.00051540 BTC


def hold_first_attempt(suite: Suite, key: str) -> "psycopg.Connection[Any]":
    connection = psycopg.connect(dsn(suite.databases.write_name))  # in a transaction until committed
    satoshis = money.bitcoin_satoshis(FIRST_AMOUNT, FIRST_RATE)
    connection.execute("SELECT 1 FROM cap_slot ORDER BY slot FOR UPDATE")
    connection.execute("UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - %s WHERE slot = 0", (satoshis,))
    connection.execute(
        "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
        " VALUES (%s, %s::uuid, 'USD', %s, %s, %s)",
        (uuid.uuid4(), key, FIRST_AMOUNT, FIRST_RATE, money.satoshis_to_btc(satoshis)),
    )
    return connection


@pytest.mark.parametrize(
    ("amount", "usd_rate", "after_commit"),
    [
        ("50.00", "1000.00", 200),  # the same order, but the rate fell: now above the whole cap
        ("2000.00", "97012.34", 422),  # another amount, above the whole cap
    ],
)
def test_a_retry_above_the_cap_while_the_first_attempt_is_in_flight_is_told_to_retry(
    suite: Suite, amount: str, usd_rate: str, after_commit: int
) -> None:
    suite.coinbase.set(USD=usd_rate)
    suite.start("btc_price")
    api = suite.start("create_buy_order", BTC_CAP="0.01").url
    key = str(uuid.uuid4())
    body = {"currency": "USD", "amount": amount, "idempotence_key": key}
    first = hold_first_attempt(suite, key)
    try:
        answer = httpx.put(f"{api}/buy_order", json=body, timeout=10)
        assert answer.status_code == 409, answer.text
        assert answer.json()["detail"]["code"] == "order_in_flight"
        assert int(answer.headers["Retry-After"]) >= 1
        first.commit()
    finally:
        first.close()
    retried = httpx.put(f"{api}/buy_order", json=body, timeout=10)
    assert retried.status_code == after_commit, retried.text
    if after_commit == 200:
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json()["amount"] == "50.00"
    else:
        assert retried.json()["detail"]["code"] == "idempotence_key_reused"


def test_a_retry_above_the_cap_after_the_first_attempt_failed_is_refused(suite: Suite) -> None:
    suite.start("btc_price")
    api = suite.start("create_buy_order", BTC_CAP="0.01").url
    key = str(uuid.uuid4())
    first = hold_first_attempt(suite, key)
    first.rollback()
    first.close()
    refused = httpx.put(f"{api}/buy_order", json={"currency": "USD", "amount": "2000.00", "idempotence_key": key})
    assert refused.status_code == 409
    assert refused.json()["detail"]["code"] == "btc_cap_exceeded"
    assert "Retry-After" not in refused.headers


def test_a_retry_above_the_cap_while_the_first_attempt_is_still_being_priced_is_told_to_retry(suite: Suite) -> None:
    # The first attempt waits on a slow EUR rate: it has not reached the database yet.
    suite.coinbase.delays["EUR"] = 3.0
    suite.start("btc_price", COINBASE_TIMEOUT_SECONDS="10")
    api = suite.start("create_buy_order", BTC_CAP="0.01", BTC_PRICE_TIMEOUT_SECONDS="10").url
    key = str(uuid.uuid4())
    first: list[httpx.Response] = []
    pricing = threading.Thread(
        target=lambda: first.append(
            httpx.put(
                f"{api}/buy_order", json={"currency": "EUR", "amount": "50.00", "idempotence_key": key}, timeout=20
            )
        )
    )
    pricing.start()
    wait_until(lambda: suite.coinbase.calls["EUR"] > 0, 10, 0.01, "the first attempt to be priced")
    over_cap = {"currency": "USD", "amount": "2000.00", "idempotence_key": key}
    answer = httpx.put(f"{api}/buy_order", json=over_cap, timeout=10)
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"]["code"] == "order_in_flight"
    assert int(answer.headers["Retry-After"]) >= 1
    pricing.join(20)
    assert first[0].status_code == 201, first[0].text
    retried = httpx.put(f"{api}/buy_order", json=over_cap, timeout=10)
    assert retried.status_code == 422
    assert retried.json()["detail"]["code"] == "idempotence_key_reused"
