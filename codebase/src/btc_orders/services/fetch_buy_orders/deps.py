"""What fetch_buy_orders' routes depend on (FastAPI `Depends`): the adapters its lifespan built.

One async getter (it runs on the event loop: no thread hop, and one dependency per request);
tests override it (`app.dependency_overrides`) or set `app.state.adapters`.
"""

from typing import Annotated

from fastapi import Depends, Request

from btc_orders.services.fetch_buy_orders.bootstrap import FetchAdapters
from btc_orders.settings import FetchBuyOrdersSettings


async def get_adapters(request: Request) -> FetchAdapters:
    adapters: FetchAdapters = request.app.state.adapters
    return adapters


def settings_of(request: Request) -> FetchBuyOrdersSettings:
    """The settings `create_app` was given (fixed for the app's life: never overridden)."""
    settings: FetchBuyOrdersSettings = request.app.state.settings
    return settings


Adapters = Annotated[FetchAdapters, Depends(get_adapters)]
