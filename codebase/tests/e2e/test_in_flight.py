"""PUT /buy_order while another attempt with the key is in flight: `order_in_flight`, never a refusal.

The first attempt is held open in the write model from the test (its slots locked, its order
inserted, not committed), as a slow request on another replica would be.
"""

import uuid
from decimal import Decimal

import httpx
import psycopg2
import pytest

from btc_orders.domain import money
from tests.e2e.conftest import Suite
from tests.support.services import dsn

FIRST_AMOUNT = Decimal("50.00")
FIRST_RATE = Decimal("97012.34")  # 50 USD = 0.00051540 BTC


def hold_first_attempt(suite: Suite, key: str) -> "psycopg2.extensions.connection":
    connection = psycopg2.connect(dsn(suite.databases.write_name))
    satoshis = money.bitcoin_satoshis(FIRST_AMOUNT, FIRST_RATE)
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM cap_slot ORDER BY slot FOR UPDATE")
        cursor.execute("UPDATE cap_slot SET remaining_satoshis = remaining_satoshis - %s WHERE slot = 0", (satoshis,))
        cursor.execute(
            "INSERT INTO buy_order (id, idempotence_key, currency, amount, exchange_rate, bitcoin_amount)"
            " VALUES (%s, %s, 'USD', %s, %s, %s)",
            (str(uuid.uuid4()), key, FIRST_AMOUNT, FIRST_RATE, money.satoshis_to_btc(satoshis)),
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
