"""create_buy_order HTTP API: `PUT /buy_order` (port 8777)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header
from fastapi.responses import Response
from pydantic import BaseModel, Field

from btc_orders import logs, metrics, openapi, web
from btc_orders.adapters import db
from btc_orders.adapters.btc_price_client import BtcPriceClient
from btc_orders.adapters.write_model import WriteModel
from btc_orders.domain import money
from btc_orders.services import engine_at_schema
from btc_orders.services.create_buy_order.handler import place_buy_order
from btc_orders.services.create_buy_order.schemas import (
    BuyOrderRequest,
    BuyOrderResource,
    ExactJsonRoute,
    IdempotencyKeyHeader,
)
from btc_orders.settings import CreateBuyOrderSettings


class Capacity(BaseModel):
    cap_btc: str = Field(description="`BTC_CAP`, in BTC with 8 places", examples=["100.00000000"])
    used_btc: str = Field(description="what stored orders use: cap - available", examples=["12.34567890"])
    available_btc: str = Field(description="what orders may still take", examples=["87.65432110"])


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
    openapi.install(app)
    # strict_content_type=False: a body without a Content-Type is read as JSON (ExactJsonRoute
    # answers any other media type with a 415)
    router = APIRouter(route_class=ExactJsonRoute, tags=["buy orders"], strict_content_type=False)
    location_base = f"{settings.public_fetch_url}/buy_orders"

    @router.put(
        "/buy_order",
        status_code=201,
        operation_id="placeBuyOrder",
        response_model=BuyOrderResource,
        summary="Place a buy order (idempotent)",
        responses={
            201: {"description": "the order, stored", "headers": openapi.headers("Location")},
            200: {
                "model": BuyOrderResource,
                "description": "replay: the order this key already names",
                "headers": openapi.headers("Idempotent-Replayed"),
            },
            400: openapi.error("`Idempotency-Key` header and body key differ", "idempotence_key_conflict"),
            409: openapi.error(
                "`btc_cap_exceeded`, with `available_btc`; `order_in_flight` (with `Retry-After`) while another "
                "request with this key is being stored",
                "btc_cap_exceeded",
                "order_in_flight",
                with_headers=("Retry-After",),
            ),
            413: openapi.error("`payload_too_large`: the body is over 16 KiB", "payload_too_large"),
            415: openapi.error(
                "`unsupported_media_type`: send `Content-Type: application/json`", "unsupported_media_type"
            ),
            422: {
                "description": "invalid input (FastAPI's validation shape), or `idempotence_key_reused` with another "
                "currency or amount",
                "content": {
                    "application/json": {
                        "examples": openapi.error("", "idempotence_key_reused")["content"]["application/json"][
                            "examples"
                        ]
                    }
                },
            },
            503: openapi.error(
                "`rate_unavailable` or a database outage; nothing stored", "rate_unavailable", "service_unavailable"
            ),
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
            return web.json_response(order.resource(), 201, {"Location": f"{location_base}/{order.id}"})
        return web.json_response(order.resource(), 200, {"Idempotent-Replayed": "true"})

    @router.get(
        "/capacity",
        operation_id="getCapacity",
        response_model=Capacity,
        tags=["capacity"],
        summary="The BTC cap, what stored orders use and what is left",
        responses={503: openapi.error("the write model is unavailable", "service_unavailable")},
    )
    def get_capacity() -> Response:
        ledger = write_model.capacity()
        cap, available = ledger if ledger is not None else (settings.btc_cap_satoshis, 0)
        return web.json_response(
            {
                "cap_btc": money.format_btc(money.satoshis_to_btc(cap)),
                "used_btc": money.format_btc(money.satoshis_to_btc(max(cap - available, 0))),
                "available_btc": money.format_btc(money.satoshis_to_btc(available)),
            }
        )

    app.include_router(router)
    return app
