"""fetch_buy_orders HTTP API: `GET /buy_orders` and `GET /buy_orders/{id}` (port 8778)."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from btc_orders import web
from btc_orders.adapters import db
from btc_orders.adapters.read_model import ReadModel
from btc_orders.services import engine_at_schema
from btc_orders.services.create_buy_order.schemas import BuyOrderResource
from btc_orders.settings import FetchBuyOrdersSettings
from btc_orders.web import ErrorBody


class BuyOrderPage(BaseModel):
    buy_orders: list[BuyOrderResource] = Field(description="newest first")
    last_reference: uuid.UUID | None = Field(description="pass as `last_reference` to get the next page")
    has_more: bool


def create_app(settings: FetchBuyOrdersSettings) -> FastAPI:
    # Every query of this service is one read-only statement: autocommit saves BEGIN and ROLLBACK.
    engine = engine_at_schema(
        settings.read_model_db_url, settings.db_pool_size, "fetch_buy_orders", "read_model", autocommit=True
    )
    read_model = ReadModel(engine)
    # /readyz pings on connections of its own, never one of the pool the request threads hold.
    probe_engine = db.create_engine(settings.read_model_db_url, web.PROBE_THREADS, "fetch_buy_orders_probe")

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()
        probe_engine.dispose()

    async def readiness() -> dict[str, bool]:
        return {"read_model": await web.probe(db.ping, probe_engine)}

    app = web.create_app(
        "fetch_buy_orders",
        "Page through all buy orders, newest first. Keyset paging: every page costs the same.",
        readiness,
        lifespan,
        thread_limit=settings.db_pool_size,  # one pooled connection per request thread (no overflow)
    )

    @app.get(
        "/buy_orders",
        response_model=BuyOrderPage,
        tags=["buy orders"],
        summary="A page of orders, newest first",
        responses={404: {"model": ErrorBody, "description": "`unknown_reference`"}, **web.ERROR_RESPONSES},
    )
    def get_buy_orders(
        page_size: Annotated[int, Query(ge=1, le=1000, description="orders per page")] = 10,
        last_reference: Annotated[
            uuid.UUID | None, Query(description="the `id` of the last order of the previous page")
        ] = None,
    ) -> Response:
        return Response(read_model.page_body(page_size, last_reference), media_type="application/json")

    @app.get(
        "/buy_orders/{order_id}",
        response_model=BuyOrderResource,
        tags=["buy orders"],
        summary="One order",
        responses={404: {"model": ErrorBody, "description": "no such order (yet)"}, **web.ERROR_RESPONSES},
    )
    def get_buy_order(order_id: uuid.UUID) -> Response:
        return Response(read_model.one_body(order_id), media_type="application/json")

    return app
