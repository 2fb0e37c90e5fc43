"""create_buy_order's btc_price client against a loopback HTTP server that answers like btc_price.

A rate is reused for the TTL; past half of it, one order starts a background
refresh and is priced with the rate it has, so under load no order waits for
btc_price; past the whole TTL an order fetches itself, and a failure is its 503.
"""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency

pytestmark = pytest.mark.anyio

TTL = 1.0


class FakeBtcPrice:
    """`GET /btc_price/{currency}`: the next rate of a counter, `fetched_at` now minus `age`."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200
        self.gate = threading.Event()  # cleared: answers wait (at most 10 s) until it is set
        self.gate.set()
        self.age = timedelta(0)
        self.body: bytes | None = None  # answered instead of the document when set
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.calls += 1
                fake.gate.wait(10)
                body = (
                    fake.body
                    or json.dumps(
                        {
                            "currency": self.path.rsplit("/", 1)[1],
                            "rate": f"{100 + fake.calls}.00",
                            "fetched_at": (datetime.now(UTC) - fake.age).isoformat(),
                        }
                    ).encode()
                )
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def btc_price() -> Iterator[FakeBtcPrice]:
    fake = FakeBtcPrice()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
async def client(btc_price: FakeBtcPrice) -> AsyncIterator[BtcPriceClient]:
    client = BtcPriceClient(btc_price.url, timeout_seconds=2, max_age_seconds=30, reuse_seconds=TTL)
    yield client
    await client.close()


async def wait_for(condition: Callable[[], object], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_rate_is_reused_within_the_first_half_of_the_ttl(
    client: BtcPriceClient, btc_price: FakeBtcPrice
) -> None:
    assert await client.rate(Currency.USD) == Decimal("101.00")
    assert [await client.rate(Currency.USD) for _ in range(50)] == [Decimal("101.00")] * 50
    assert btc_price.calls == 1
    assert await client.rate(Currency.EUR) == Decimal("102.00"), "each currency has its own rate"


async def test_orders_that_find_no_rate_at_once_share_one_fetch(
    client: BtcPriceClient, btc_price: FakeBtcPrice
) -> None:
    answers = await asyncio.gather(*(client.rate(Currency.USD) for _ in range(20)))
    assert answers == [Decimal("101.00")] * 20
    assert btc_price.calls == 1


async def test_past_half_the_ttl_one_background_refresh_and_no_order_waits(
    client: BtcPriceClient, btc_price: FakeBtcPrice
) -> None:
    await client.rate(Currency.USD)
    await asyncio.sleep(TTL * 0.6)
    btc_price.gate.clear()  # btc_price does not answer: an order that waited for it would hang here
    answers = [await asyncio.wait_for(client.rate(Currency.USD), 0.1) for _ in range(20)]
    assert answers == [Decimal("101.00")] * 20, "priced with the rate at hand while the refresh runs"
    await wait_for(lambda: btc_price.calls == 2)
    btc_price.gate.set()
    for _ in range(500):
        if await client.rate(Currency.USD) == Decimal("102.00"):
            break
        await asyncio.sleep(0.01)
    assert await client.rate(Currency.USD) == Decimal("102.00")
    assert btc_price.calls == 2, "one refresh, however many orders saw the rate ageing"


async def test_past_the_ttl_an_order_fetches_itself_and_a_failure_is_its_own(
    client: BtcPriceClient, btc_price: FakeBtcPrice
) -> None:
    await client.rate(Currency.USD)
    btc_price.status = 503
    await asyncio.sleep(TTL * 0.6)
    priced = await client.rate(Currency.USD)
    assert priced == Decimal("101.00"), "the refresh fails in the background, the order is priced"
    await asyncio.sleep(TTL * 0.5)
    with pytest.raises(RateUnavailable):
        await client.rate(Currency.USD)
    btc_price.status = 200
    assert await client.rate(Currency.USD) > Decimal("101.00")


async def test_a_silent_btc_price_fails_an_order_within_the_timeout(btc_price: FakeBtcPrice) -> None:
    client = BtcPriceClient(btc_price.url, timeout_seconds=0.3, max_age_seconds=30, reuse_seconds=TTL)
    btc_price.gate.clear()  # accepts, never answers (for 10 s)
    started = time.monotonic()
    try:
        with pytest.raises(RateUnavailable, match="cannot be reached"):
            await client.rate(Currency.USD)
        assert time.monotonic() - started < 2
    finally:
        btc_price.gate.set()
        await client.close()


async def test_a_rate_older_than_the_max_age_is_never_used(btc_price: FakeBtcPrice) -> None:
    client = BtcPriceClient(btc_price.url, timeout_seconds=2, max_age_seconds=1, reuse_seconds=TTL)
    btc_price.age = timedelta(seconds=0.9)
    assert await client.rate(Currency.GBP) == Decimal("101.00")
    await asyncio.sleep(0.15)  # now 1.05 s old by Coinbase's clock, though well within the reuse window
    btc_price.age = timedelta(seconds=1.2)  # and btc_price has nothing fresher
    with pytest.raises(RateUnavailable, match="too old"):
        await client.rate(Currency.GBP)
    await client.close()


@pytest.mark.parametrize(
    "body",
    [
        b'{"rate": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"rate": "100.00", "fetched_at": "2026-12-01T10:00:00"}',
        b'{"rate": 100.0, "fetched_at": "2026-12-01T10:00:00+00:00"}',
        b'["rate"]',
        b"\xff\xfe",
    ],
    ids=["parser bomb", "naive timestamp", "rate as a number", "a list", "not UTF-8"],
)
async def test_an_answer_that_is_not_the_rate_document_is_rate_unavailable(
    btc_price: FakeBtcPrice, client: BtcPriceClient, body: bytes
) -> None:
    btc_price.body = body
    with pytest.raises(RateUnavailable, match="unusable"):
        await client.rate(Currency.USD)
