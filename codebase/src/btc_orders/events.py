"""The `buy_order.created` v1 event: how the write model writes it and the read side reads it.

Body: `{"event_id", "type": "buy_order.created", "version": 1, "occurred_at",
"request_id", "order": {...the order resource plus "sequence"}}`. Money travels
as the exact decimal strings of the API.
"""

import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from btc_orders.domain import money
from btc_orders.domain.orders import BuyOrder, Currency

EVENT_TYPE = "buy_order.created"
EVENT_VERSION = 1


def created_event(order: BuyOrder, event_id: uuid.UUID, request_id: str | None) -> str:
    """The event body for a stored order, as JSON text."""
    resource = order.resource()
    body: dict[str, Any] = {
        "event_id": str(event_id),
        "type": EVENT_TYPE,
        "version": EVENT_VERSION,
        "occurred_at": resource["created_at"],
        "request_id": request_id,
        "order": {**resource, "sequence": order.sequence},
    }
    return orjson.dumps(body).decode()


def _positive(text: str) -> str:
    money.parse_rate(text)  # positive, plain notation; raises MoneyError (a ValueError)
    return text


DecimalText = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=64), AfterValidator(_positive)
]
SCHEMA_PATH = Path(__file__).parent / "contracts" / "buy_order.created.v1.schema.json"


class OrderPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID
    sequence: int = Field(gt=0)
    created_at: datetime
    currency: Currency
    amount: DecimalText
    exchange_rate: DecimalText
    bitcoin_amount: DecimalText
    idempotence_key: uuid.UUID


class BuyOrderCreated(BaseModel):
    """`buy_order.created` v1. Its JSON Schema is `contracts/buy_order.created.v1.schema.json`
    (generated from this model: `python -m btc_orders.events > that file`; a test keeps them equal)."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="buy_order.created v1")

    event_id: uuid.UUID
    type: Literal["buy_order.created"]
    version: Literal[1]
    occurred_at: datetime
    request_id: str | None = None
    order: OrderPayload


class InvalidEvent(ValueError):
    """A message that can never be applied: not JSON, or not a v1 `buy_order.created`."""


def parse_created_event(body: bytes) -> BuyOrderCreated:
    try:
        event = BuyOrderCreated.model_validate_json(body)
    except ValidationError as error:
        raise InvalidEvent(_summary(error)) from None
    if event.order.created_at.tzinfo is None:
        raise InvalidEvent("order.created_at has no time zone")
    return event


def _summary(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']} ({error.error_count()} problem(s))"


def json_schema() -> dict[str, Any]:
    schema = BuyOrderCreated.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:btc-orders:event:buy_order.created:v1"
    return schema


if __name__ == "__main__":
    print(orjson.dumps(json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
