"""What create_buy_order's routes depend on (FastAPI `Depends`): the adapters its lifespan built.

One async getter (it runs on the event loop: no thread hop); tests may override it
(`app.dependency_overrides[get_adapters]`).
"""

from typing import Annotated

from fastapi import Depends, Request

from btc_orders.services.create_buy_order.bootstrap import CreateAdapters
from btc_orders.settings import CreateBuyOrderSettings


async def get_adapters(request: Request) -> CreateAdapters:
    adapters: CreateAdapters = request.app.state.adapters
    return adapters


def settings_of(request: Request) -> CreateBuyOrderSettings:
    """The settings `create_app` was given (fixed for the app's life: never overridden)."""
    settings: CreateBuyOrderSettings = request.app.state.settings
    return settings


Adapters = Annotated[CreateAdapters, Depends(get_adapters)]
