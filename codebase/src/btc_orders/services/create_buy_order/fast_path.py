"""What `web.FastRoute` takes of `PUT /buy_order`: the plainly well-formed order.

A JSON body that `BuyOrderRequest` accepts, read by the route's own exact parser, and one
idempotence key (body, `Idempotency-Key` header, or both alike). Anything else is the route's to
answer. The route's tests run with and without the fast route
(`tests/inprocess/test_create_routes.py`), and a property test sends the same generated requests
both ways.
"""

import uuid

from fastapi import Request
from pydantic import TypeAdapter

from btc_orders import logs
from btc_orders.domain.commands import PlaceBuyOrder
from btc_orders.services.create_buy_order.schemas import (
    BuyOrderRequest,
    IdempotencyKeyHeader,
    exact_json,
    is_json_media_type,
)

_HEADER_KEY: TypeAdapter[uuid.UUID | None] = TypeAdapter(IdempotencyKeyHeader)


def plain_command(request: Request, body: bytes) -> PlaceBuyOrder | None:
    """The order a plainly well-formed request asks for, or None: FastAPI's route answers it.

    Anything the route might answer otherwise than 201 or 200 before placing the order is None:
    no body, another media type, a body that is not exact JSON or not a valid order, a header
    given twice, a malformed header key, no key, or two keys that differ.
    """
    content_type = header_key = None
    for name, value in request.scope["headers"]:
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
