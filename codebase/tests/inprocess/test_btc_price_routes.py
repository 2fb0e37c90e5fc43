"""btc_price's route in process: the rate's shape and the error mapping, the cache overridden."""

import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient

from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency
from btc_orders.services.btc_price import deps
from btc_orders.services.btc_price.app import create_app
from btc_orders.services.btc_price.rates import Quote
from btc_orders.settings import BtcPriceSettings


class FakeRateCache:
    def __init__(self) -> None:
        self.down = False

    async def quote(self, currency: Currency) -> Quote:
        if self.down:
            raise RateUnavailable("Coinbase gave no rate")
        fetched = datetime(2026, 11, 24, 12, 0, 0, 5, tzinfo=UTC)
        return Quote(currency, Decimal("97012.340"), fetched, time.monotonic())


@pytest.fixture
def rates() -> FakeRateCache:
    return FakeRateCache()


@pytest.fixture
def client(rates: FakeRateCache) -> TestClient:
    app = create_app(BtcPriceSettings(COINBASE_API_URL="http://127.0.0.1:9"))
    app.dependency_overrides[deps.get_rates] = lambda: rates
    return TestClient(app)


def test_a_rate_is_given_exactly_as_coinbase_gave_it(client: TestClient) -> None:
    response = client.get("/btc_price/EUR")
    assert response.status_code == 200
    assert response.json() == {
        "currency": "EUR",
        "rate": "97012.340",
        "source": "coinbase",
        "fetched_at": "2026-11-24T12:00:00.000005Z",
    }


def test_no_rate_is_503_rate_unavailable_with_retry_after(client: TestClient, rates: FakeRateCache) -> None:
    rates.down = True
    response = client.get("/btc_price/USD")
    assert response.status_code == 503
    assert response.json()["detail"]["code"] == "rate_unavailable"
    assert response.headers["retry-after"] == "1"


def test_an_unknown_currency_is_422(client: TestClient) -> None:
    assert client.get("/btc_price/XXX").status_code == 422
