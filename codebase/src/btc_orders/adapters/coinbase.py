"""Coinbase's public spot price endpoint, read through one pooled async HTTP client."""

from decimal import Decimal

import anyio
import httpx

from btc_orders.domain import money
from btc_orders.domain.orders import Currency


class RateFetchFailed(Exception):
    """Coinbase did not give a usable rate; the message says what it did instead."""


class CoinbaseClient:
    """`GET {base}/v2/prices/BTC-{CURRENCY}/spot` with a deadline on the whole call."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout_seconds),
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=5),
            headers={"Accept": "application/json", "User-Agent": "btc-orders/1.0"},
        )

    async def spot_rate(self, currency: Currency) -> Decimal:
        """BTC's spot price in `currency`, exactly as Coinbase wrote it."""
        try:
            with anyio.fail_after(self.timeout_seconds):
                response = await self._client.get(f"/v2/prices/BTC-{currency.value}/spot")
        except TimeoutError:
            raise RateFetchFailed(f"coinbase did not answer within {self.timeout_seconds} s") from None
        except httpx.HTTPError as error:
            raise RateFetchFailed(f"coinbase could not be reached: {type(error).__name__}: {error}") from None
        return _rate_from_response(response, currency)

    async def aclose(self) -> None:
        await self._client.aclose()


def _rate_from_response(response: httpx.Response, currency: Currency) -> Decimal:
    try:
        document = response.json()
    except ValueError:
        raise RateFetchFailed(
            f"coinbase answered {response.status_code} with a body that is not JSON "
            f"({response.headers.get('content-type', 'no content type')})"
        ) from None
    if response.status_code != 200:
        raise RateFetchFailed(f"coinbase answered {response.status_code}: {_error_messages(document)}")
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise RateFetchFailed("coinbase answered without a `data` object")
    if data.get("base") != "BTC" or data.get("currency") != currency.value:
        raise RateFetchFailed(
            f"coinbase answered for {data.get('base')}-{data.get('currency')}, not BTC-{currency.value}"
        )
    try:
        return money.parse_rate(data.get("amount"))
    except money.MoneyError as error:
        raise RateFetchFailed(f"coinbase answered an unusable amount: {error}") from None


def _error_messages(document: object) -> str:
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        items = [item for item in document["errors"] if isinstance(item, dict)]
        messages = [f"{item.get('id', '?')}: {item.get('message', '?')}" for item in items]
        if messages:
            return "; ".join(messages)
    return "no error message"
