"""create_buy_order HTTP API: `PUT /buy_order` (port 8777).

The routes are module-level and reach their adapters through `deps`; `create_app` does no I/O
(the adapters are built by `bootstrap` when the app starts), so tests build the app with a
bootstrap of fakes or set `app.state.adapters` (or override `deps.get_adapters`). The key's HTTP
rules (header or body, both differing, neither) are here; the order's rules are
`handler.place_buy_order`'s. The body is read once, by the route's exact JSON parser (`ExactJsonRoute`).
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from btc_orders import logs, metrics, openapi, web
from btc_orders.domain import money, orders
from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.domain.errors import IdempotenceKeyConflict
from btc_orders.domain.orders import OrderRequest
from btc_orders.services import http_service
from btc_orders.services.create_buy_order.bootstrap import bootstrap as build_adapters
from btc_orders.services.create_buy_order.deps import Adapters, settings_of
from btc_orders.services.create_buy_order.handler import place_buy_order
from btc_orders.services.create_buy_order.schemas import (
    BuyOrderRequest,
    ExactJsonRoute,
    IdempotencyKeyHeader,
)
from btc_orders.services.resources import BuyOrderResource
from btc_orders.settings import CreateBuyOrderSettings

DESCRIPTION = (
    "Place an order to buy BTC for EUR, GBP or USD at the live Coinbase rate. "
    "Idempotent by `idempotence_key`; the sum of all orders never exceeds the BTC cap."
)


class Capacity(BaseModel):
    cap_btc: str = Field(description="`BTC_CAP`, in BTC with 8 places", examples=["100.00000000"])
    used_btc: str = Field(description="what stored orders use: cap - available", examples=["12.34567890"])
    available_btc: str = Field(description="what orders may still take", examples=["87.65432110"])


# strict_content_type=False: a body without a Content-Type is read as JSON (ExactJsonRoute
# answers any other media type with a 415)
router = APIRouter(route_class=ExactJsonRoute, tags=["buy orders"], strict_content_type=False)


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
        415: openapi.error("`unsupported_media_type`: send `Content-Type: application/json`", "unsupported_media_type"),
        422: {
            "description": "invalid input (FastAPI's validation shape), or `idempotence_key_reused` with another "
            "currency, amount or client_order_id",
            "content": {
                "application/json": {
                    "examples": openapi.error("", "idempotence_key_reused")["content"]["application/json"]["examples"]
                }
            },
        },
        503: openapi.error(
            "`rate_unavailable` or a database outage; nothing stored", "rate_unavailable", "service_unavailable"
        ),
    },
)
async def put_buy_order(
    request: Request,
    body: BuyOrderRequest,
    adapters: Adapters,
    idempotency_key: Annotated[
        IdempotencyKeyHeader,
        Header(description="alternative to the body's `idempotence_key`: a UUID, bare or quoted (RFC 8941)"),
    ] = None,
) -> Response:
    command = place_command(body, idempotency_key, logs.request_id_var.get())
    order, created = await place_buy_order(command, adapters.prices, adapters.orders)
    if created:
        location = f"{settings_of(request).public_fetch_url}/buy_orders/{order.id}"
        return web.json_response(order.resource(), 201, {"Location": location})
    return web.json_response(order.resource(), 200, {"Idempotent-Replayed": "true"})


@router.get(
    "/capacity",
    operation_id="getCapacity",
    response_model=Capacity,
    tags=["capacity"],
    summary="The BTC cap, what stored orders use and what is left",
    responses={503: openapi.error("the write model is unavailable", "service_unavailable")},
)
async def get_capacity(request: Request, adapters: Adapters) -> Response:
    ledger = await adapters.ledger.capacity()
    cap, available = ledger if ledger is not None else (settings_of(request).btc_cap_satoshis, 0)
    return web.json_response(
        {
            "cap_btc": money.format_btc(money.satoshis_to_btc(cap)),
            "used_btc": money.format_btc(money.satoshis_to_btc(max(cap - available, 0))),
            "available_btc": money.format_btc(money.satoshis_to_btc(available)),
        }
    )


def place_command(body: BuyOrderRequest, header_key: uuid.UUID | None, request_id: str | None) -> PlaceBuyOrder:
    """The command a request asks for: the order's request fields by name, the key from the body or
    the `Idempotency-Key` header."""
    key = idempotence_key(body.idempotence_key, header_key)
    fields = {name: getattr(body, name) for name in orders.REQUEST_FIELDS} | {"idempotence_key": key}
    return PlaceBuyOrder(OrderRequest(**fields), request_id)


def idempotence_key(body_key: uuid.UUID | None, header_key: uuid.UUID | None) -> uuid.UUID:
    """The one key of a request, given in the body, the header or both alike (SPEC 3.1)."""
    if body_key is not None and header_key is not None and body_key != header_key:
        error = IdempotenceKeyConflict(
            "the Idempotency-Key header and the body's idempotence_key differ; send one, or the same in both"
        )
        metrics.ORDERS_REJECTED.labels(error.code).inc()
        raise error
    key = body_key or header_key
    if key is None:
        raise RequestValidationError(
            [
                {
                    "type": "missing",
                    "loc": ("body", "idempotence_key"),
                    "msg": "Field required: give idempotence_key (a UUID) in the body or the Idempotency-Key header",
                    "input": None,
                }
            ]
        )
    return key


def create_app(
    settings: CreateBuyOrderSettings,
    bootstrap: Callable[[CreateBuyOrderSettings], Awaitable[http_service.Adapters]] = build_adapters,
) -> FastAPI:
    app = http_service.http_app("create_buy_order", DESCRIPTION, settings, bootstrap)
    app.include_router(router)
    return app
