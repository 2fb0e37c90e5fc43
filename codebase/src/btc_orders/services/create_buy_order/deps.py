"""What create_buy_order's routes depend on (FastAPI `Depends`): the adapters its lifespan built.

Async getters, so they run on the event loop (no thread hop); tests replace them through
`app.dependency_overrides`.
"""

from typing import Annotated

from fastapi import Depends, Request

from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.write_model import WriteModel
from btc_orders.settings import CreateBuyOrderSettings


async def get_orders(request: Request) -> WriteModel:
    orders: WriteModel = request.app.state.adapters.orders
    return orders


async def get_prices(request: Request) -> BtcPriceClient:
    prices: BtcPriceClient = request.app.state.adapters.prices
    return prices


async def get_settings(request: Request) -> CreateBuyOrderSettings:
    settings: CreateBuyOrderSettings = request.app.state.settings
    return settings


Orders = Annotated[WriteModel, Depends(get_orders)]
Prices = Annotated[BtcPriceClient, Depends(get_prices)]
Settings = Annotated[CreateBuyOrderSettings, Depends(get_settings)]
