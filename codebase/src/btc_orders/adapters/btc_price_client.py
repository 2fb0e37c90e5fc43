"""How create_buy_order asks btc_price for a rate (one pooled HTTP client, a short memory).

A rate btc_price gave is reused for `reuse_seconds` (the rate TTL), so most
orders cost no HTTP call; a rate is never used once it is older, by the time
Coinbase gave it, than `max_age_seconds`.

Refresh-ahead: the first order that finds its rate past half of the reuse window
starts ONE background fetch and is priced with the rate it has, so under steady
load no order waits for btc_price; only when the whole window has passed (no
order for a while, or btc_price failing) does an order fetch a rate itself, and
a failure then is the order's 503.
"""

import logging
import threading
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
        self._refreshing: set[Currency] = set()
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
        )
        # Readiness probes get a client of their own: a storm of probes never takes a
        # connection from the client that prices orders.
        self._probe_client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(min(timeout_seconds, 2.0)),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        )

    def rate(self, currency: Currency, request_id: str | None = None) -> Decimal:
        """The current rate, never older than `max_age_seconds`; else `RateUnavailable`."""
        reusable = self.reusable_rate(currency, request_id)
        return reusable if reusable is not None else self._fetch_and_keep(currency, request_id)

    def reusable_rate(self, currency: Currency, request_id: str | None = None) -> Decimal | None:
        """The rate kept from btc_price while it may still be reused, else None (`rate` fetches one).

        Never blocks: the refresh-ahead fetch, when due, runs on a thread of its own.
        """
        recent = self._recent.get(currency)
        now = time.monotonic()
        if recent and now - recent[2] < self.reuse_seconds and _age(recent[1]) <= self.max_age_seconds:
            if now - recent[2] >= self.refresh_after_seconds:
                self._refresh_in_background(currency, request_id)
            return recent[0]
        return None

    def _fetch_and_keep(self, currency: Currency, request_id: str | None) -> Decimal:
        asked_at = time.monotonic()
        rate, fetched_at = self._fetch(currency, request_id)
        with self._lock:
            kept = self._recent.get(currency)
            if kept is None or kept[2] <= asked_at:
                self._recent[currency] = (rate, fetched_at, asked_at)
        return rate

    def _refresh_in_background(self, currency: Currency, request_id: str | None) -> None:
        with self._lock:
            if currency in self._refreshing:
                return
            self._refreshing.add(currency)
        threading.Thread(target=self._refresh, args=(currency, request_id), daemon=True).start()

    def _refresh(self, currency: Currency, request_id: str | None) -> None:
        try:
            self._fetch_and_keep(currency, request_id)
        except RateUnavailable:
            pass  # not this order's failure: the next order past the window fetches and answers it
        except Exception as error:  # e.g. the client closed at shutdown; never kill the thread loudly
            logs.event(log, "rate_refresh_failed", logging.WARNING, reason=f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self._refreshing.discard(currency)

    def _fetch(self, currency: Currency, request_id: str | None) -> tuple[Decimal, datetime]:
        headers = {"X-Request-ID": request_id} if request_id else None
        try:
            response = self._client.get(f"/btc_price/{currency.value}", headers=headers)
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

    def ping(self) -> bool:
        try:
            return self._probe_client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._client.close()
        self._probe_client.close()


def _age(fetched_at: datetime) -> float:
    return (datetime.now(UTC) - fetched_at).total_seconds()
