"""create_buy_order HTTP API: `PUT /buy_order` (port 8777)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header
from fastapi.responses import Response

from btc_orders import logs, metrics, web
from btc_orders.adapters import db
from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.write_model import WriteModel
from btc_orders.services import engine_at_schema
from btc_orders.services.create_buy_order.handler import place_buy_order
from btc_orders.services.create_buy_order.schemas import (
    BuyOrderRequest,
    BuyOrderResource,
    ExactJsonRoute,
    IdempotencyKeyHeader,
)
from btc_orders.settings import CreateBuyOrderSettings
from btc_orders.web import ErrorBody


def create_app(settings: CreateBuyOrderSettings) -> FastAPI:
    # Autocommit: an order is one statement on the fast path (see WriteModel).
    engine = engine_at_schema(
        settings.write_model_db_url, settings.db_pool_size, "create_buy_order", "write_model", autocommit=True
    )
    write_model = WriteModel(engine, settings.cap_ledger_slots, engine_autocommit=True)
    write_model.ensure_cap(settings.btc_cap_satoshis)
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

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        prices.close()
        engine.dispose()
        probe_engine.dispose()

    async def readiness() -> dict[str, bool]:
        return {
            "write_model": await web.probe(db.ping, probe_engine),
            "btc_price": await web.probe(prices.ping),
        }

    app = web.create_app(
        "create_buy_order",
        "Place an order to buy BTC for EUR, GBP or USD at the live Coinbase rate. "
        "Idempotent by `idempotence_key`; the sum of all orders never exceeds the BTC cap.",
        readiness,
        lifespan,
        thread_limit=settings.db_pool_size,  # one connection per request thread, no more
    )
    # strict_content_type=False: a body without a Content-Type is read as JSON (ExactJsonRoute
    # answers any other media type with a 415)
    router = APIRouter(route_class=ExactJsonRoute, tags=["buy orders"], strict_content_type=False)

    @router.put(
        "/buy_order",
        status_code=201,
        response_model=BuyOrderResource,
        summary="Place a buy order (idempotent)",
        responses={
            200: {"model": BuyOrderResource, "description": "replay: the order this key already names"},
            400: {"model": ErrorBody, "description": "`Idempotency-Key` header and body key differ"},
            409: {
                "model": ErrorBody,
                "description": "`btc_cap_exceeded`, with `available_btc`; or `order_in_flight`, with `Retry-After`, "
                "while another request with the key is being placed",
            },
            413: {"model": ErrorBody, "description": "`payload_too_large`: the body is over 16 KiB"},
            415: {"model": ErrorBody, "description": "`unsupported_media_type`: send `Content-Type: application/json`"},
            422: {"description": "invalid input, or `idempotence_key_reused` with another currency or amount"},
            503: {"model": ErrorBody, "description": "`rate_unavailable` or a database outage; nothing stored"},
        },
    )
    def put_buy_order(
        body: BuyOrderRequest,
        idempotency_key: Annotated[
            IdempotencyKeyHeader,
            Header(description="alternative to the body's `idempotence_key`: a UUID, bare or quoted (RFC 8941)"),
        ] = None,
    ) -> Response:
        order, created = place_buy_order(body, idempotency_key, prices, write_model, logs.request_id_var.get())
        if created:
            return web.json_response(order.resource(), 201, {"Location": f"/buy_orders/{order.id}"})
        return web.json_response(order.resource(), 200, {"Idempotent-Replayed": "true"})

    app.include_router(router)
    return app
