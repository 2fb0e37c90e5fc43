"""create_buy_order's composition root: every adapter it uses, built at start (the app's lifespan).

The schema check and the cap ledger's `ensure_cap` run here and nowhere else.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine

from btc_orders import metrics, web
from btc_orders.adapters import db, db_loop
from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.db_loop import LoopConnections
from btc_orders.adapters.write_model import WriteModel
from btc_orders.services.startup import engine_at_schema
from btc_orders.settings import CreateBuyOrderSettings


@dataclass(frozen=True)
class CreateAdapters:
    orders: WriteModel
    prices: BtcPriceClient
    engine: Engine
    probe_engine: Engine
    loop_connections: LoopConnections
    # The threads that place orders (`web.in_thread`): one per pooled connection, so a request
    # waits for a thread, never for a connection.
    executor: ThreadPoolExecutor

    async def start(self) -> None:
        pass

    async def readiness(self) -> dict[str, bool]:
        return {
            "write_model": await web.probe(db.ping, self.probe_engine),
            "btc_price": await web.probe(self.prices.ping),
        }

    async def close(self) -> None:
        await self.loop_connections.close()
        self.executor.shutdown(wait=True)
        self.prices.close()
        self.engine.dispose()
        self.probe_engine.dispose()


def bootstrap(settings: CreateBuyOrderSettings) -> CreateAdapters:
    # Three quarters of DB_POOL_SIZE serve the fast path's statement awaited on the event loop, the
    # rest the threads, which take every other statement and an order when every loop connection is busy.
    on_loop = db_loop.connections_on_loop(settings.db_pool_size)
    threads = settings.db_pool_size - on_loop
    # Autocommit: an order is one statement on the fast path (see WriteModel).
    engine = engine_at_schema(settings.write_model_db_url, threads, "create_buy_order", "write_model", autocommit=True)
    loop_connections = LoopConnections(settings.write_model_db_url, on_loop, "create_buy_order")
    orders = WriteModel(engine, settings.cap_ledger_slots, engine_autocommit=True, loop_connections=loop_connections)
    orders.ensure_cap(settings.btc_cap_satoshis)
    # Probes (/readyz, the cap gauges of /metrics) read through connections of their own: never
    # one of the pool the request threads hold (web.probe bounds their threads).
    probe_engine = db.create_engine(
        settings.write_model_db_url, web.PROBE_THREADS, "create_buy_order_probe", autocommit=True
    )
    metrics.register(
        metrics.CapCollector(WriteModel(probe_engine, settings.cap_ledger_slots, engine_autocommit=True).cap_status)
    )
    prices = BtcPriceClient(
        str(settings.btc_price_url),
        settings.btc_price_timeout_seconds,
        settings.rate_max_age_seconds,
        reuse_seconds=settings.rate_ttl_seconds,
    )
    executor = ThreadPoolExecutor(threads, thread_name_prefix="write_model")
    return CreateAdapters(orders, prices, engine, probe_engine, loop_connections, executor)
