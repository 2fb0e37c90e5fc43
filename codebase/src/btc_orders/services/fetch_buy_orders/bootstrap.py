"""fetch_buy_orders' composition root: every adapter it uses, built at start (the app's lifespan)."""

from dataclasses import dataclass

import psycopg_pool

from btc_orders.adapters import db
from btc_orders.adapters.read_model import ReadModel
from btc_orders.services import startup
from btc_orders.services.fetch_buy_orders.arrivals import Arrivals, connector
from btc_orders.settings import FetchBuyOrdersSettings


@dataclass(frozen=True)
class FetchAdapters:
    read_model: ReadModel
    arrivals: Arrivals
    pool: psycopg_pool.AsyncConnectionPool  # the process's one pool on the read model

    async def start(self) -> None:
        await self.arrivals.start()

    async def readiness(self) -> dict[str, bool]:
        return {"read_model": await db.ping_pool(self.pool)}

    async def close(self) -> None:
        await self.arrivals.stop()
        await self.pool.close()


async def bootstrap(settings: FetchBuyOrdersSettings) -> FetchAdapters:
    """The adapters, once the read model is at the schema this code needs: its pool opened (on the
    event loop) and the LISTEN connection of `Prefer: wait` (opened by `start`)."""
    url = settings.read_model_db_url
    startup.wait_for_schema(url, "read_model")
    pool = db.async_pool(url, settings.db_pool_size, "fetch_buy_orders")
    try:
        await pool.open(wait=True, timeout=startup.STARTUP_WAIT_SECONDS)
    except BaseException:
        await pool.close()
        raise
    arrivals = Arrivals(connector(url, "fetch_buy_orders_listen"), settings.read_your_write_max_waiters)
    return FetchAdapters(ReadModel(pool), arrivals, pool)
