"""btc_price HTTP API: `GET /btc_price/{currency}` (port 8779, internal).

The route is module-level and reaches the rate cache through `deps`; `create_app` does no I/O.
"""

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from btc_orders import openapi
from btc_orders.domain import money
from btc_orders.domain.orders import Currency, format_timestamp
from btc_orders.services import http_service
from btc_orders.services.btc_price.bootstrap import bootstrap as build_adapters
from btc_orders.services.btc_price.deps import Rates
from btc_orders.settings import BtcPriceSettings

DESCRIPTION = "BTC's exchange rate per fiat currency, read from Coinbase, cached per currency and coalesced."


class BtcPrice(BaseModel):
    currency: Currency
    rate: str = Field(description="fiat per 1 BTC, exactly as Coinbase gave it", examples=["97012.34"])
    source: str = Field(examples=["coinbase"])
    fetched_at: str = Field(description="when the rate was read from Coinbase (RFC 3339, UTC)")


router = APIRouter()


@router.get(
    "/btc_price/{currency}",
    operation_id="getBtcPrice",
    response_model=BtcPrice,
    tags=["rates"],
    summary="BTC's current rate in a fiat currency",
    responses={503: openapi.error("no fresh-enough rate can be had", "rate_unavailable")},
)
async def btc_price(currency: Currency, rates: Rates) -> BtcPrice:
    quote = await rates.quote(currency)
    return BtcPrice(
        currency=currency,
        rate=money.format_rate(quote.rate),
        source="coinbase",
        fetched_at=format_timestamp(quote.fetched_at),
    )


def create_app(
    settings: BtcPriceSettings,
    bootstrap: Callable[[BtcPriceSettings], Awaitable[http_service.Adapters]] = build_adapters,
) -> FastAPI:
    app = http_service.http_app("btc_price", DESCRIPTION, settings, bootstrap)
    app.include_router(router)
    return app
