"""btc_price HTTP API: `GET /btc_price/{currency}` (port 8779, internal)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel, Field

from btc_orders import openapi, web
from btc_orders.adapters.coinbase import CoinbaseClient
from btc_orders.domain import money
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency, format_timestamp
from btc_orders.services.btc_price.rates import RateCache
from btc_orders.settings import BtcPriceSettings


class BtcPrice(BaseModel):
    currency: Currency
    rate: str = Field(description="fiat per 1 BTC, exactly as Coinbase gave it", examples=["97012.34"])
    source: str = Field(examples=["coinbase"])
    fetched_at: str = Field(description="when the rate was read from Coinbase (RFC 3339, UTC)")


def create_app(settings: BtcPriceSettings) -> FastAPI:
    coinbase = CoinbaseClient(str(settings.coinbase_api_url), settings.coinbase_timeout_seconds)
    rates = RateCache(coinbase.spot_rate, settings.rate_ttl_seconds, settings.rate_max_age_seconds)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await coinbase.aclose()

    async def readiness() -> dict[str, bool]:
        try:
            await rates.quote(Currency.USD)
            return {"coinbase": True}
        except RateUnavailable:
            return {"coinbase": False}

    app = web.create_app(
        "btc_price",
        "BTC's exchange rate per fiat currency, read from Coinbase, cached per currency and coalesced.",
        readiness,
        lifespan,
    )
    openapi.install(app)
    app.state.rates = rates

    @app.get(
        "/btc_price/{currency}",
        operation_id="getBtcPrice",
        response_model=BtcPrice,
        tags=["rates"],
        summary="BTC's current rate in a fiat currency",
        responses={503: openapi.error("no fresh-enough rate can be had", "rate_unavailable")},
    )
    async def btc_price(currency: Currency) -> BtcPrice:
        quote = await rates.quote(currency)
        return BtcPrice(
            currency=currency,
            rate=money.format_rate(quote.rate),
            source="coinbase",
            fetched_at=format_timestamp(quote.fetched_at),
        )

    return app
