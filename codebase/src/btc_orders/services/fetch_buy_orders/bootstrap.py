"""fetch_buy_orders' composition root: every adapter it uses, built at start (the app's lifespan)."""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions
from sqlalchemy import Engine

from btc_orders import web
from btc_orders.adapters import db, db_loop
from btc_orders.adapters.db_loop import LoopConnections
from btc_orders.adapters.read_model import ReadModel
from btc_orders.services.fetch_buy_orders.arrivals import Arrivals
from btc_orders.services.startup import engine_at_schema
from btc_orders.settings import FetchBuyOrdersSettings


@dataclass(frozen=True)
class FetchAdapters:
    read_model: ReadModel
    arrivals: Arrivals
    engine: Engine
    probe_engine: Engine
    loop_connections: LoopConnections
    # The threads that run the read model's blocking statements: one per pooled connection, so
    # a request waits for a thread, never for a connection. Reached with `run_in_executor`,
    # which costs less per request than FastAPI's thread hand-off (tuning log in benchmarks.md).
    executor: ThreadPoolExecutor

    async def start(self) -> None:
        await self.arrivals.start()

    async def readiness(self) -> dict[str, bool]:
        return {"read_model": await web.probe(db.ping, self.probe_engine)}

    async def close(self) -> None:
        await self.arrivals.stop()
        await self.loop_connections.close()
        self.executor.shutdown(wait=True)
        self.engine.dispose()
        self.probe_engine.dispose()


def bootstrap(settings: FetchBuyOrdersSettings) -> FetchAdapters:
    # Three quarters of DB_POOL_SIZE serve the statements awaited on the event loop, the rest the
    # threads, which take a request when every loop connection is busy (`web.on_loop_or_thread`).
    on_loop = db_loop.connections_on_loop(settings.db_pool_size)
    threads = settings.db_pool_size - on_loop
    # Every query of this service is one read-only statement: autocommit saves BEGIN and ROLLBACK.
    engine = engine_at_schema(settings.read_model_db_url, threads, "fetch_buy_orders", "read_model", autocommit=True)
    loop_connections = LoopConnections(settings.read_model_db_url, on_loop, "fetch_buy_orders")
    # /readyz pings on connections of its own, never one of the pool the request threads hold.
    probe_engine = db.create_engine(settings.read_model_db_url, web.PROBE_THREADS, "fetch_buy_orders_probe")
    connect_args, connect_params = engine.dialect.create_connect_args(engine.url)

    def listen_connection() -> psycopg2.extensions.connection:
        # The suite's connection parameters (keepalives: a silently dead network is noticed in
        # seconds, and the listener reopened); it runs in autocommit, so never idle in a transaction.
        return psycopg2.connect(*connect_args, **{**connect_params, **db.connect_args("fetch_buy_orders_listen")})

    arrivals = Arrivals(listen_connection, settings.read_your_write_max_waiters)
    executor = ThreadPoolExecutor(threads, thread_name_prefix="read_model")
    return FetchAdapters(
        ReadModel(engine, loop_connections), arrivals, engine, probe_engine, loop_connections, executor
    )
