"""`PUT /buy_order`'s common case, answered ahead of FastAPI's routing.

FastAPI's work per request (its middleware layers, routing, dependency solving, the body
validated as a route parameter) was about a fifth of this service's CPU per order (tuning log in
docs/benchmarks.md). `FastPlaceOrder` sits inside the request context
(`web.RequestContextMiddleware`: request id, body limit, access line, metrics) and takes the
requests that are plainly well formed: a JSON body that `BuyOrderRequest` accepts, read by the
route's own exact parser, and one idempotence key (body, `Idempotency-Key` header, or both
alike). It places them with the route's own `app.place`, and any error is answered by the app's
own exception handlers (`web.error_answer`).

Every other request goes on, body and all, to the FastAPI app, whose route is the contract: it
documents the API and answers what is not well formed in FastAPI's validation shape. A request is
never half taken: either nothing here has looked at the order, or the FastAPI app never sees it.
The route's tests run both ways (`tests/inprocess/test_create_routes.py`), and a property test
sends the same generated requests to both.
"""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from btc_orders import logs, web
from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.services.create_buy_order.schemas import (
    BuyOrderRequest,
    IdempotencyKeyHeader,
    exact_json,
    is_json_media_type,
)

_HEADER_KEY: TypeAdapter[uuid.UUID | None] = TypeAdapter(IdempotencyKeyHeader)

# The route's own answer to a command: `place(adapters, settings, command)` (`app.place`).
Place = Callable[[Any, Any, PlaceBuyOrder], Awaitable[Response]]


class FastPlaceOrder:
    """ASGI middleware: `route`'s well-formed requests answered by `place`, the rest passed to `app`."""

    def __init__(self, app: ASGIApp, route: APIRoute, place: Place) -> None:
        self.app = app
        self.route = route
        self.place = place

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "PUT" or scope["path"] != self.route.path:
            await self.app(scope, receive, send)
            return
        messages = await _request_messages(receive)
        command = None
        if messages[-1]["type"] == "http.request":  # else the client left while sending the body
            command = plain_command(scope["headers"], b"".join(message.get("body", b"") for message in messages))
        if command is None:
            await self.app(scope, _replay(messages, receive), send)
            return
        scope["route"] = self.route  # as FastAPI's router sets it: the access line's and metrics' route
        app = scope["app"]
        try:
            response = await self.place(app.state.adapters, app.state.settings, command)
        except Exception as error:
            response = await web.error_answer(Request(scope), error)
        await response(scope, receive, send)


def plain_command(headers: list[tuple[bytes, bytes]], body: bytes) -> PlaceBuyOrder | None:
    """The order a plainly well-formed request asks for, or None: FastAPI's route answers it.

    Anything the route might answer otherwise than 201 or 200 before placing the order is None:
    no body, another media type, a body that is not exact JSON or not a valid order, a header
    given twice, a malformed header key, no key, or two keys that differ.
    """
    content_type = header_key = None
    for name, value in headers:
        if name == b"content-type":
            if content_type is not None:
                return None
            content_type = value.decode("latin-1")
        elif name == b"idempotency-key":
            if header_key is not None:
                return None
            header_key = value.decode("latin-1")
    if not body or not is_json_media_type(content_type):
        return None
    try:
        order = BuyOrderRequest.model_validate(exact_json(body))
        key = _HEADER_KEY.validate_python(header_key)
    except Exception:  # whatever it is, the route answers it, in its own words
        return None
    if order.idempotence_key is not None:
        if key is not None and key != order.idempotence_key:
            return None
        key = order.idempotence_key
    if key is None:
        return None
    return PlaceBuyOrder(order.currency, order.amount, key, logs.request_id_var.get())


async def _request_messages(receive: Receive) -> list[Message]:
    """The request's messages until its body is whole, or until the client left."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` for the FastAPI app: the messages already read, then the connection's own."""
    pending = list(reversed(messages))

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
