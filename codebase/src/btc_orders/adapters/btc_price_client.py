"""How create_buy_order asks btc_price for a rate (one pooled HTTP client, a short memory).

A rate btc_price gave is reused for `reuse_seconds` (the rate TTL), so most
orders cost no HTTP call; a rate is never used once it is older, by the time
Coinbase gave it, than `max_age_seconds`.

Refresh-ahead: the first order that finds its rate past half of the reuse window
starts ONE background fetch (an asyncio task per currency) and is priced with the
rate it has, so under steady load no order waits for btc_price; only when the whole
window has passed (no order for a while, or btc_price failing) does an order wait for
a rate, sharing the one fetch in flight for its currency, and a failure then is the
order's 503. Every wait is bounded by the client's timeout.
"""

import asyncio
import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson

from btc_orders import logs
from btc_orders.domain import money
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency

log = logging.getLogger(__name__)


class BtcPriceClient:
    def __init__(self, base_url: str, timeout_seconds: float, max_age_seconds: float, reuse_seconds: float = 0) -> None:
        self.max_age_seconds = max_age_seconds
        self.reuse_seconds = min(reuse_seconds, max_age_seconds)
        self.refresh_after_seconds = self.reuse_seconds / 2
        self._recent: dict[Currency, tuple[Decimal, datetime, float]] = {}
        self._fetching: dict[Currency, asyncio.Task[Decimal]] = {}  # at most one fetch per currency
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )
        # Readiness probes get a client of their own: a storm of probes never takes a
        # connection from the client that prices orders.
        self._probe_client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(min(timeout_seconds, 2.0)),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        )

    async def rate(self, currency: Currency, request_id: str | None = None) -> Decimal:
        """The current rate, never older than `max_age_seconds`; else `RateUnavailable`.

        A rate that may still be reused is answered at once (and past half of the reuse window one
        background fetch is started); else the fetch in flight for `currency` is awaited, or started.
        """
        recent = self._recent.get(currency)
        now = time.monotonic()
        if recent and now - recent[2] < self.reuse_seconds and _age(recent[1]) <= self.max_age_seconds:
            if now - recent[2] >= self.refresh_after_seconds:
                self._fetch_in_background(currency, request_id)
            return recent[0]
        # Shielded: an order that stops waiting (its request cancelled) leaves the fetch to the others.
        return await asyncio.shield(self._fetch_in_background(currency, request_id))

    def _fetch_in_background(self, currency: Currency, request_id: str | None) -> "asyncio.Task[Decimal]":
        """The fetch in flight for `currency`, started if there is none."""
        task = self._fetching.get(currency)
        if task is None:
            task = self._fetching[currency] = asyncio.create_task(self._fetch_and_keep(currency, request_id))
            task.add_done_callback(lambda done: self._fetched(currency, done))
        return task

    def _fetched(self, currency: Currency, task: "asyncio.Task[Decimal]") -> None:
        if self._fetching.get(currency) is task:
            del self._fetching[currency]
        if task.cancelled():
            return
        error = task.exception()  # retrieved: a refresh nobody awaited fails quietly
        if error is not None and not isinstance(error, RateUnavailable):
            logs.event(log, "rate_refresh_failed", logging.WARNING, reason=f"{type(error).__name__}: {error}")

    async def _fetch_and_keep(self, currency: Currency, request_id: str | None) -> Decimal:
        asked_at = time.monotonic()
        rate, fetched_at = await self._fetch(currency, request_id)
        kept = self._recent.get(currency)
        if kept is None or kept[2] <= asked_at:
            self._recent[currency] = (rate, fetched_at, asked_at)
        return rate

    async def _fetch(self, currency: Currency, request_id: str | None) -> tuple[Decimal, datetime]:
        headers = {"X-Request-ID": request_id} if request_id else None
        try:
            response = await self._client.get(f"/btc_price/{currency.value}", headers=headers)
        except httpx.HTTPError as error:
            raise RateUnavailable(f"the btc_price service cannot be reached: {type(error).__name__}") from None
        if response.status_code != 200:
            retry_after = response.headers.get("retry-after")
            raise RateUnavailable(
                f"no exchange rate for {currency.value} is available right now",
                retry_after=int(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        try:
            document = orjson.loads(response.content)  # bounded depth: never a RecursionError
            rate = money.parse_rate(document["rate"])
            fetched_at = datetime.fromisoformat(document["fetched_at"])
            age = _age(fetched_at)  # a naive timestamp is a TypeError here
        except (ValueError, KeyError, TypeError, money.MoneyError):
            raise RateUnavailable("the btc_price service answered something unusable") from None
        if age > self.max_age_seconds:
            raise RateUnavailable(f"the {currency.value} rate is {age:.0f} s old, too old to price an order")
        return rate, fetched_at

    async def ping(self) -> bool:
        try:
            return (await self._probe_client.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        for task in list(self._fetching.values()):
            task.cancel()
        await self._client.aclose()
        await self._probe_client.aclose()


def _age(fetched_at: datetime) -> float:
    return (datetime.now(UTC) - fetched_at).total_seconds()
