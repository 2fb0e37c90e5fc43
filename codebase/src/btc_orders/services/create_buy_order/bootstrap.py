"""create_buy_order's composition root: every adapter it uses, built at start (the app's lifespan).

The schema check and the cap ledger's `ensure_cap` run here and nowhere else. One pool of the
write-model database serves everything: orders, `/capacity`, the readiness probe and the cap gauges.
"""

import asyncio
from dataclasses import dataclass, field

import psycopg_pool

from btc_orders import metrics
from btc_orders.adapters import db
from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.cap_ledger import CapLedger
from btc_orders.adapters.write_model import WriteModel
from btc_orders.services import startup
from btc_orders.settings import CreateBuyOrderSettings

# How long a scrape of /metrics waits for the cap gauges' statement (it reports no gauge past it).
CAP_GAUGES_SECONDS = 2.0


@dataclass(frozen=True)
class CreateAdapters:
    orders: WriteModel
    ledger: CapLedger
    prices: BtcPriceClient
    pool: psycopg_pool.AsyncConnectionPool
    collectors: list[metrics.CapCollector] = field(default_factory=list)

    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        # Through the orders' pool: a probe waits for a connection (bounded) as an order does.
        return {"write_model": await db.ping_pool(self.pool), "btc_price": await self.prices.ping()}

    async def close(self) -> None:
        for collector in self.collectors:
            metrics.unregister(collector)
        await self.prices.close()
        await self.pool.close()


async def bootstrap(settings: CreateBuyOrderSettings) -> CreateAdapters:
    startup.wait_for_schema(settings.write_model_db_url, "write_model")
    pool = db.async_pool(settings.write_model_db_url, settings.db_pool_size, "create_buy_order")
    try:
        await pool.open(wait=True, timeout=startup.STARTUP_WAIT_SECONDS)
        ledger = CapLedger(pool, settings.cap_ledger_slots)
        await ledger.ensure_cap(settings.btc_cap_satoshis)
    except BaseException:
        await pool.close()
        raise
    prices = BtcPriceClient(
        str(settings.btc_price_url),
        settings.btc_price_timeout_seconds,
        settings.rate_max_age_seconds,
        reuse_seconds=settings.rate_ttl_seconds,
    )
    # The cap gauges are read at scrape time on this loop, through the same pool, by the thread that
    # renders /metrics (`web.probe`): the loop never waits for them.
    gauges = metrics.CapCollector(metrics.on_loop(asyncio.get_running_loop(), ledger.cap_status, CAP_GAUGES_SECONDS))
    metrics.register(gauges)
    return CreateAdapters(WriteModel(pool, ledger), ledger, prices, pool, [gauges])
