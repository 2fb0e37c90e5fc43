"""btc_price's composition root: the Coinbase client and the rate cache, built at start (the lifespan)."""

from dataclasses import dataclass

from btc_orders.adapters.coinbase import CoinbaseClient
from btc_orders.domain.errors import RateUnavailable
from btc_orders.domain.orders import Currency
from btc_orders.services.btc_price.rates import RateCache
from btc_orders.settings import BtcPriceSettings


@dataclass(frozen=True)
class PriceAdapters:
    rates: RateCache
    coinbase: CoinbaseClient

    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        try:
            await self.rates.quote(Currency.USD)
            return {"coinbase": True}
        except RateUnavailable:
            return {"coinbase": False}

    async def close(self) -> None:
        await self.coinbase.aclose()


async def bootstrap(settings: BtcPriceSettings) -> PriceAdapters:
    coinbase = CoinbaseClient(str(settings.coinbase_api_url), settings.coinbase_timeout_seconds)
    rates = RateCache(coinbase.spot_rate, settings.rate_ttl_seconds, settings.rate_max_age_seconds)
    return PriceAdapters(rates, coinbase)
