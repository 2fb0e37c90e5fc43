"""What fetch_buy_orders' routes depend on (FastAPI `Depends`): the adapters its lifespan built.

Async getters, so they run on the event loop (no thread hop); tests replace them through
`app.dependency_overrides`.
"""

from typing import Annotated

from fastapi import Depends, Request

from btc_orders.adapters.read_model import ReadModel
from btc_orders.services.fetch_buy_orders.arrivals import Arrivals
from btc_orders.settings import FetchBuyOrdersSettings


async def get_read_model(request: Request) -> ReadModel:
    read_model: ReadModel = request.app.state.adapters.read_model
    return read_model


async def get_arrivals(request: Request) -> Arrivals:
    arrivals: Arrivals = request.app.state.adapters.arrivals
    return arrivals


async def get_settings(request: Request) -> FetchBuyOrdersSettings:
    settings: FetchBuyOrdersSettings = request.app.state.settings
    return settings


Orders = Annotated[ReadModel, Depends(get_read_model)]
Landings = Annotated[Arrivals, Depends(get_arrivals)]
Settings = Annotated[FetchBuyOrdersSettings, Depends(get_settings)]
