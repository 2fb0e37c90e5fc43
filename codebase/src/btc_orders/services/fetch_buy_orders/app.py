"""fetch_buy_orders HTTP API: `GET /buy_orders` and `GET /buy_orders/{id}` (port 8778).

The routes are module-level and reach their adapters through `deps`; `create_app` does no I/O
(the adapters, the pool and the LISTEN connection, are built by `bootstrap` when the app starts).
Each route parses its parameters once (FastAPI's) and awaits the read model on the event loop.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from btc_orders import openapi, web
from btc_orders.adapters.read_model import PageQuery
from btc_orders.domain.errors import OrderNotFound
from btc_orders.domain.orders import Currency
from btc_orders.services import http_service
from btc_orders.services.fetch_buy_orders.arrivals import preferred_wait
from btc_orders.services.fetch_buy_orders.bootstrap import FetchAdapters
from btc_orders.services.fetch_buy_orders.bootstrap import bootstrap as build_adapters
from btc_orders.services.fetch_buy_orders.deps import Adapters, settings_of
from btc_orders.services.fetch_buy_orders.query import DEFAULT_PAGE_SIZE, PageSize, Timestamp, link_header
from btc_orders.services.resources import BuyOrderResource
from btc_orders.settings import FetchBuyOrdersSettings

DESCRIPTION = (
    "Page through all buy orders, newest first, in both directions and filtered. Keyset paging: every "
    "page costs the same, at any depth and whatever the filter."
)
RETRY_AFTER_SECONDS = 1  # a 404 after a wait: the order may be a moment away


class BuyOrderPage(BaseModel):
    buy_orders: list[BuyOrderResource] = Field(description="newest first, in either direction")
    first_reference: uuid.UUID | None = Field(
        description="the first (newest) order's id: pass as `first_reference` for the page just newer"
    )
    last_reference: uuid.UUID | None = Field(
        description="the last (oldest) order's id: pass as `last_reference` for the page just older"
    )
    has_more: bool = Field(description="more orders in the direction asked for (older, or newer with first_reference)")


router = APIRouter()


@router.get(
    "/buy_orders",
    operation_id="listBuyOrders",
    response_model=BuyOrderPage,
    tags=["buy orders"],
    summary="A page of orders, newest first",
    description="Keyset pages in both directions: `last_reference` gives the page just older than that "
    "order, `first_reference` the page just newer (still newest first inside the page). Filters combine "
    "with each other and with either reference. The `Link` header names the older (`next`) and newer "
    "(`prev`) pages that exist.",
    responses={
        200: {"description": "the page", "headers": openapi.headers("Link")},
        404: openapi.error("`unknown_reference`: no order has that id", "unknown_reference"),
        422: {"description": "malformed parameters, both references, or a timestamp without offset"},
        503: openapi.error("the read model is unavailable", "service_unavailable"),
    },
)
async def list_buy_orders(
    request: Request,
    adapters: Adapters,
    page_size: Annotated[PageSize, Query(description="orders per page")] = DEFAULT_PAGE_SIZE,
    last_reference: Annotated[
        uuid.UUID | None, Query(description="the `id` of the last order of a page: the page just older")
    ] = None,
    first_reference: Annotated[
        uuid.UUID | None, Query(description="the `id` of the first order of a page: the page just newer")
    ] = None,
    currency: Annotated[
        list[Currency] | None, Query(description="only these currencies (repeatable: `currency=USD&currency=EUR`)")
    ] = None,
    created_gte: Annotated[
        Timestamp | None, Query(description="only orders created at or after this RFC 3339 time (with offset)")
    ] = None,
    created_lt: Annotated[
        Timestamp | None, Query(description="only orders created before this RFC 3339 time (with offset)")
    ] = None,
) -> Response:
    if last_reference is not None and first_reference is not None:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "first_reference"),
                    "msg": "give last_reference (older) or first_reference (newer), not both",
                    "input": str(first_reference),
                }
            ]
        )
    query = PageQuery(
        page_size,
        last_reference,
        first_reference,
        tuple(sorted({c.value for c in currency or ()})),
        created_gte,
        created_lt,
    )
    page = await adapters.read_model.fetch_page(query)
    reference = last_reference or first_reference
    link = link_header(
        request.url.path, request.query_params.multi_items(), page, str(reference) if reference else None
    )
    return Response(page.body, media_type="application/json", headers={"Link": link} if link else None)


@router.get(
    "/buy_orders/{order_id}",
    operation_id="getBuyOrder",
    response_model=BuyOrderResource,
    tags=["buy orders"],
    summary="One order",
    description="With `Prefer: wait=N` (RFC 7240) a request for an order not projected yet waits up to N "
    "seconds (at most `READ_YOUR_WRITE_MAX_WAIT_SECONDS`) and is answered as soon as the order lands: "
    "read your own write from the 201's `Location`.",
    responses={
        200: {"description": "the order", "headers": openapi.headers("Preference-Applied")},
        404: openapi.error(
            "no such order (yet); after a wait, with `Retry-After` and `Preference-Applied`",
            "order_not_found",
            with_headers=("Retry-After", "Preference-Applied"),
        ),
        503: openapi.error("the read model is unavailable", "service_unavailable"),
    },
)
async def get_buy_order(request: Request, order_id: uuid.UUID, adapters: Adapters) -> Response:
    wait = preferred_wait(request.headers.getlist("prefer"))
    seconds = min(wait, settings_of(request).read_your_write_max_wait_seconds) if wait else 0
    if seconds <= 0:
        return await _one(adapters, order_id)
    with adapters.arrivals.wait_for(order_id) as landed:
        if landed is None:  # no wait can be offered now (too many waiters, not listening)
            return await _one(adapters, order_id)
        return await _waited(adapters, order_id, landed, seconds)


async def _one(adapters: FetchAdapters, order_id: uuid.UUID, headers: dict[str, str] | None = None) -> Response:
    body = await adapters.read_model.one_body(order_id)
    return Response(body, media_type="application/json", headers=headers)


async def _waited(adapters: FetchAdapters, order_id: uuid.UUID, landed: asyncio.Event, seconds: int) -> Response:
    applied = {"Preference-Applied": f"wait={seconds}"}
    deadline = asyncio.get_running_loop().time() + seconds
    while True:  # registered before the first look: a landing in between is not missed
        landed.clear()
        try:
            return await _one(adapters, order_id, applied)
        except OrderNotFound as missing:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return _not_found(missing, applied)
            try:
                await asyncio.wait_for(landed.wait(), remaining)
            except TimeoutError:
                return _not_found(missing, applied)


def _not_found(missing: OrderNotFound, applied: dict[str, str]) -> Response:
    response = web.error_response(404, missing.code, missing.message, RETRY_AFTER_SECONDS)
    response.headers.update(applied)
    return response


def create_app(
    settings: FetchBuyOrdersSettings,
    bootstrap: Callable[[FetchBuyOrdersSettings], Awaitable[http_service.Adapters]] = build_adapters,
) -> FastAPI:
    app = http_service.http_app("fetch_buy_orders", DESCRIPTION, settings, bootstrap)
    app.include_router(router)
    return app
