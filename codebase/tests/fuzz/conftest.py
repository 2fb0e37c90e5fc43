"""The whole suite as real processes for the fuzz tests, started once for the package.

Every process runs (the relay and the projector too), so fetch_buy_orders has a
read model with orders in it and create_buy_order has a live btc_price behind it.
"""

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Suite
from tests.support.fake_coinbase import FakeCoinbase
from tests.support.services import throwaway_databases, wait_until

SEED_ORDERS = (("USD", "123.45"), ("EUR", "10"), ("GBP", "0.01"), ("USD", "999.99"), ("EUR", "42.42"))


@pytest.fixture(scope="package")
def fuzz_suite(coinbase_server: FakeCoinbase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    """btc_price, create_buy_order, fetch_buy_orders, the relay and the projector, with a few orders."""
    with throwaway_databases() as databases:
        coinbase_server.reset()
        running = Suite(databases, coinbase_server, tmp_path_factory.mktemp("fuzz"))
        try:
            # a cap high enough that fuzzed amounts are priced and stored, not all refused with 409
            running.env["BTC_CAP"] = "100000000"
            running.start("btc_price")
            running.start("create_buy_order")
            running.start("fetch_buy_orders")
            running.start("outbox_relay", wait=False)
            running.start("read_model_sync", wait=False)
            seed(running)
            yield running
        finally:
            running.stop()


def seed(suite: Suite) -> None:
    create = suite.service("create_buy_order").url
    fetch = suite.service("fetch_buy_orders").url
    for currency, amount in SEED_ORDERS:
        body = {"currency": currency, "amount": amount, "idempotence_key": str(uuid.uuid4())}
        response = httpx.put(f"{create}/buy_order", json=body, timeout=10)
        assert response.status_code == 201, response.text
    wait_until(
        lambda: len(httpx.get(f"{fetch}/buy_orders", timeout=5).json()["buy_orders"]) >= len(SEED_ORDERS),
        timeout=30,
        message="the seeded orders to reach the read model",
    )
