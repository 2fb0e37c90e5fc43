"""What btc_price's route depends on (FastAPI `Depends`): the rate cache its lifespan built."""

from typing import Annotated

from fastapi import Depends, Request

from btc_orders.services.btc_price.rates import RateCache


async def get_rates(request: Request) -> RateCache:
    rates: RateCache = request.app.state.adapters.rates
    return rates


Rates = Annotated[RateCache, Depends(get_rates)]
