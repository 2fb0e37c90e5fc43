"""btc_price's rate cache: one upstream call per currency per TTL, never an old rate."""

import asyncio
from decimal import Decimal

import pytest

from btc_orders.adapters.coinbase import RateFetchFailed
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency
from btc_orders.services.btc_price.rates import RateCache


class Upstream:
    def __init__(self) -> None:
        self.calls = 0
        self.failing = False
        self.release = asyncio.Event()
        self.release.set()

    async def fetch(self, currency: Currency) -> Decimal:
        self.calls += 1
        await self.release.wait()
        if self.failing:
            raise RateFetchFailed("coinbase answered 500")
        return Decimal("100.00") + self.calls


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_concurrent_misses_share_one_upstream_call() -> None:
    async def scenario() -> None:
        upstream = Upstream()
        upstream.release.clear()
        cache = RateCache(upstream.fetch, ttl_seconds=2, max_age_seconds=30)
        waiting = [asyncio.ensure_future(cache.quote(Currency.USD)) for _ in range(100)]
        await asyncio.sleep(0)
        upstream.release.set()
        quotes = await asyncio.gather(*waiting)
        assert upstream.calls == 1
        assert {quote.rate for quote in quotes} == {Decimal("101.00")}

    run(scenario())


def test_a_rate_is_reused_for_the_ttl_then_fetched_again() -> None:
    async def scenario() -> None:
        upstream, clock = Upstream(), Clock()
        cache = RateCache(upstream.fetch, ttl_seconds=2, max_age_seconds=30, clock=clock)
        assert (await cache.quote(Currency.EUR)).rate == Decimal("101.00")
        clock.now += 1.9
        assert (await cache.quote(Currency.EUR)).rate == Decimal("101.00")
        clock.now += 0.2
        assert (await cache.quote(Currency.EUR)).rate == Decimal("102.00")
        assert (await cache.quote(Currency.GBP)).rate == Decimal("103.00")  # per currency

    run(scenario())


def test_when_upstream_fails_a_young_rate_is_served_and_an_old_one_never() -> None:
    async def scenario() -> None:
        upstream, clock = Upstream(), Clock()
        cache = RateCache(upstream.fetch, ttl_seconds=2, max_age_seconds=30, clock=clock)
        await cache.quote(Currency.USD)
        upstream.failing = True
        clock.now += 10
        assert (await cache.quote(Currency.USD)).rate == Decimal("101.00")
        clock.now += 20.5
        with pytest.raises(RateUnavailable):
            await cache.quote(Currency.USD)

    run(scenario())


def test_a_failure_is_remembered_for_one_ttl_so_an_outage_costs_one_call_per_ttl() -> None:
    async def scenario() -> None:
        upstream, clock = Upstream(), Clock()
        upstream.failing = True
        cache = RateCache(upstream.fetch, ttl_seconds=2, max_age_seconds=30, clock=clock)
        for _ in range(50):
            with pytest.raises(RateUnavailable) as refused:
                await cache.quote(Currency.USD)
        assert upstream.calls == 1
        assert refused.value.retry_after == 2
        clock.now += 2.1
        upstream.failing = False
        assert (await cache.quote(Currency.USD)).rate == Decimal("102.00")

    run(scenario())


def test_an_upstream_call_that_raises_anything_is_a_failure_remembered_for_the_ttl() -> None:
    # e.g. a parser bomb raising RecursionError inside the adapter: a 503, not a 500, and no
    # upstream call per request while it lasts; the last good rate is served while young enough.
    async def scenario() -> None:
        calls = 0

        async def fetch(currency: Currency) -> Decimal:
            nonlocal calls
            calls += 1
            if calls == 1:
                return Decimal("97012.34")
            raise RecursionError("maximum recursion depth exceeded")

        clock = Clock()
        cache = RateCache(fetch, ttl_seconds=2, max_age_seconds=5, clock=clock)
        assert (await cache.quote(Currency.USD)).rate == Decimal("97012.34")
        clock.now += 2.5
        for _ in range(50):
            assert (await cache.quote(Currency.USD)).rate == Decimal("97012.34")  # younger than the max age
        assert calls == 2
        clock.now += 3
        with pytest.raises(RateUnavailable, match="RecursionError"):
            await cache.quote(Currency.USD)
        assert calls == 3
        for _ in range(50):
            with pytest.raises(RateUnavailable):
                await cache.quote(Currency.USD)
        assert calls == 3

    run(scenario())
