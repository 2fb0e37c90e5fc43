"""The Coinbase adapter against a real loopback HTTP server speaking Coinbase's JSON.

Whatever the answer, the adapter gives a rate or `RateFetchFailed`: never another exception.
"""

import asyncio
from decimal import Decimal

import pytest

from btc_orders.adapters.coinbase import CoinbaseClient, RateFetchFailed
from btc_orders.domain.orders import Currency
from tests.support.fake_coinbase import FAULTS, FakeCoinbase


def _spot(coinbase: FakeCoinbase, currency: Currency = Currency.USD) -> Decimal:
    async def call() -> Decimal:
        client = CoinbaseClient(coinbase.url, timeout_seconds=0.5)
        try:
            return await client.spot_rate(currency)
        finally:
            await client.aclose()

    return asyncio.run(call())


def test_a_healthy_answer_is_the_rate_exactly_as_written(coinbase: FakeCoinbase) -> None:
    assert _spot(coinbase) == Decimal("97012.34")


@pytest.mark.parametrize("fault", FAULTS)
def test_every_answer_that_is_not_the_spot_document_is_a_rate_fetch_failure(coinbase: FakeCoinbase, fault: str) -> None:
    coinbase.set(fault)
    with pytest.raises(RateFetchFailed) as failed:
        _spot(coinbase)
    assert len(str(failed.value)) < 300  # a log line, not the body


def test_a_huge_body_is_not_read_to_its_end(coinbase: FakeCoinbase) -> None:
    coinbase.set("huge_body")
    with pytest.raises(RateFetchFailed, match="bytes"):
        _spot(coinbase)
