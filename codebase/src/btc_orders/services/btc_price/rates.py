"""The rate cache: one upstream call per currency per TTL, shared by concurrent callers.

A fresh rate (younger than the TTL) is served from memory. On a miss, the first
caller starts the upstream call and every concurrent caller awaits that same
call (single flight). A failed call is remembered for the TTL too, so an
outage upstream never turns into more than one call per TTL. When the upstream
fails, a rate younger than the maximum age is still served; an older one never.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from btc_orders import logs, metrics
from btc_orders.adapters.coinbase import RateFetchFailed
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Quote:
    currency: Currency
    rate: Decimal
    fetched_at: datetime  # wall clock, for clients
    fetched_monotonic: float  # for age checks, immune to clock steps


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    at_monotonic: float


class RateCache:
    def __init__(
        self,
        fetch: Callable[[Currency], Awaitable[Decimal]],
        ttl_seconds: float,
        max_age_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.ttl_seconds = ttl_seconds
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._quotes: dict[Currency, Quote] = {}
        self._failures: dict[Currency, _Failure] = {}
        self._in_flight: dict[Currency, asyncio.Future[Quote]] = {}
        self.upstream_calls = 0

    async def quote(self, currency: Currency) -> Quote:
        now = self._clock()
        cached = self._quotes.get(currency)
        if cached and now - cached.fetched_monotonic < self.ttl_seconds:
            metrics.RATE_CACHE_HITS.labels(currency.value).inc()
            return cached
        metrics.RATE_CACHE_MISSES.labels(currency.value).inc()
        failure = self._failures.get(currency)
        if failure and now - failure.at_monotonic < self.ttl_seconds:
            return self._fallback(currency, failure.reason)
        in_flight = self._in_flight.get(currency)
        if in_flight is None:
            in_flight = asyncio.ensure_future(self._refresh(currency))
            self._in_flight[currency] = in_flight
            in_flight.add_done_callback(lambda _: self._in_flight.pop(currency, None))
        try:
            return await asyncio.shield(in_flight)
        except RateFetchFailed as error:
            return self._fallback(currency, str(error))

    async def _refresh(self, currency: Currency) -> Quote:
        self.upstream_calls += 1
        try:
            rate = await self._fetch(currency)
        except Exception as error:
            # Whatever the upstream call raised, it gave no rate: a failure remembered for the TTL
            # (one upstream call per TTL while it lasts), answered as a 503, never a 500.
            failed = (
                error if isinstance(error, RateFetchFailed) else RateFetchFailed(f"{type(error).__name__}: {error}")
            )
            metrics.RATE_UPSTREAM_FAILURES.labels(currency.value).inc()
            self._failures[currency] = _Failure(str(failed), self._clock())
            logs.event(log, "rate_fetch_failed", logging.WARNING, currency=currency.value, reason=str(failed))
            raise failed from None
        quote = Quote(currency, rate, datetime.now(UTC), self._clock())
        self._quotes[currency] = quote
        self._failures.pop(currency, None)
        logs.event(log, "rate_fetched", logging.DEBUG, currency=currency.value, rate=rate)
        return quote

    def _fallback(self, currency: Currency, reason: str) -> Quote:
        cached = self._quotes.get(currency)
        if cached and self._clock() - cached.fetched_monotonic <= self.max_age_seconds:
            return cached
        raise RateUnavailable(
            f"no fresh {currency.value} rate can be had from coinbase: {reason}", retry_after=self.ttl_seconds
        )
