"""Coinbase's public spot price endpoint, read through one pooled async HTTP client.

Whatever Coinbase answers is untrusted input: a body that is not the expected document
(too large, not UTF-8, not JSON, nested past any sense, fields of the wrong type) is a
`RateFetchFailed` like a timeout or a 500, never an exception of another kind.
"""

from decimal import Decimal

import anyio
import httpx
import orjson

from btc_orders.domain import money
from btc_orders.domain.orders import Currency

# The spot document is ~80 bytes; an error document a few hundred. Read no more than this.
MAX_BODY_BYTES = 64 * 1024


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
                async with self._client.stream("GET", f"/v2/prices/BTC-{currency.value}/spot") as response:
                    body = await _bounded_body(response)
        except TimeoutError:
            raise RateFetchFailed(f"coinbase did not answer within {self.timeout_seconds} s") from None
        except httpx.HTTPError as error:
            raise RateFetchFailed(f"coinbase could not be reached: {type(error).__name__}: {error}") from None
        return rate_from_answer(response.status_code, response.headers.get("content-type"), body, currency)

    async def aclose(self) -> None:
        await self._client.aclose()


async def _bounded_body(response: httpx.Response) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RateFetchFailed(f"coinbase answered {response.status_code} with a body of {declared} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RateFetchFailed(f"coinbase answered {response.status_code} with a body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def rate_from_answer(status_code: int, content_type: str | None, body: bytes, currency: Currency) -> Decimal:
    """The rate in a Coinbase answer, or `RateFetchFailed` saying what the answer was instead."""
    try:
        # orjson: strict UTF-8, and a bounded nesting depth (a JSONDecodeError, not a RecursionError)
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise RateFetchFailed(
            f"coinbase answered {status_code} with a body that is not JSON ({content_type or 'no content type'})"
        ) from None
    if status_code != 200:
        raise RateFetchFailed(f"coinbase answered {status_code}: {_error_messages(document)}")
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise RateFetchFailed("coinbase answered without a `data` object")
    base, quoted = data.get("base"), data.get("currency")
    if base != "BTC" or quoted != currency.value:
        raise RateFetchFailed(f"coinbase answered for {_text(base)}-{_text(quoted)}, not BTC-{currency.value}")
    try:
        return money.parse_rate(data.get("amount"))
    except money.MoneyError as error:
        raise RateFetchFailed(f"coinbase answered an unusable amount: {error}") from None


def _text(value: object, limit: int = 16) -> str:
    """A string field of the answer for a log line: cut short; any other type named, never rendered."""
    return value[:limit] if isinstance(value, str) else type(value).__name__


def _error_messages(document: object) -> str:
    if isinstance(document, dict) and isinstance(document.get("errors"), list):
        items = [item for item in document["errors"][:5] if isinstance(item, dict)]
        messages = [f"{_text(item.get('id', '?'), 64)}: {_text(item.get('message', '?'), 200)}" for item in items]
        if messages:
            return "; ".join(messages)
    return "no error message"
