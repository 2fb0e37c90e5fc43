"""The `buy_order.created` v1 event: how the write model writes it and the read side reads it.

Body: `{"event_id", "type": "buy_order.created", "version": 1, "occurred_at",
"request_id", "order": {...the order resource plus "sequence"}}`. Money travels
as the exact decimal strings of the API. The `order`'s fields, their types and their order follow
from the order's declaration (`domain.orders.FIELDS`).

Compatible one version either way (a rolling upgrade dead-letters nothing): a reader ignores a
field it does not know, in the envelope and in the `order`, and a field that is optional in the
declaration (nullable) may be absent. So a new optional field keeps `version` 1: an old worker
reads a new event (ignoring the field), a new worker reads an old event (the field `null`). What
is declared stays strict: types, money formats, the required fields, `type` and `version`. A
change an old reader cannot read (a field removed, renamed or retyped, a new required field) is a
new `version`, which the reader refuses until it is upgraded: workers first, then writers.
"""

import enum
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from btc_orders.domain import money, orders
from btc_orders.domain.orders import BuyOrder, Currency, Kind, OrderField

EVENT_TYPE = "buy_order.created"
EVENT_VERSION = 1


def created_event(order: BuyOrder, event_id: uuid.UUID, request_id: str | None) -> str:
    """The event body for a stored order, as JSON text."""
    values = order.event_order()
    body: dict[str, Any] = {
        "event_id": str(event_id),
        "type": EVENT_TYPE,
        "version": EVENT_VERSION,
        "occurred_at": values["created_at"],
        "request_id": request_id,
        "order": values,
    }
    return orjson.dumps(body).decode()


def _positive(text: str) -> str:
    money.parse_rate(text)  # positive, plain notation; raises MoneyError (a ValueError)
    return text


DecimalText = Annotated[
    str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=64), AfterValidator(_positive)
]
SCHEMA_PATH = Path(__file__).parent / "contracts" / "buy_order.created.v1.schema.json"


# How the event writes each kind of value; what the reader takes for it.
_ANNOTATIONS: dict[Kind, Any] = {
    orders.UUID: uuid.UUID,
    orders.SEQUENCE: Annotated[int, Field(gt=0)],
    orders.TIMESTAMP: datetime,
    orders.CURRENCY: Currency,
    orders.FIAT: DecimalText,
    orders.RATE: DecimalText,
    orders.BTC: DecimalText,
    orders.CLIENT_REFERENCE: Annotated[
        str, StringConstraints(pattern=orders.CLIENT_ORDER_ID_PATTERN, max_length=orders.CLIENT_ORDER_ID_MAX_LENGTH)
    ],
}


class OrderValues(BaseModel):
    """The event's `order`, as read: `OrderPayload`, whose fields follow from the declaration."""

    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_extra={"additionalProperties": True})

    if TYPE_CHECKING:  # each declared field is an attribute (the model is built from the declaration)

        def __getattr__(self, name: str) -> Any: ...

    def values(self) -> dict[str, Any]:
        """The declared fields' values by name (an enum as its value: the currency's code)."""
        return {name: _plain(getattr(self, name)) for name in type(self).model_fields}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _payload_field(field: OrderField) -> tuple[Any, Any]:
    annotation = _ANNOTATIONS[field.kind]
    described = Field(
        default=None if field.nullable else ...,
        description=field.description,
        examples=[field.example] if field.example else None,
    )
    return (annotation | None if field.nullable else annotation), described


def order_payload_model(order_fields: tuple[OrderField, ...] = orders.FIELDS) -> type[OrderValues]:
    """The model of the event's `order` for these declared fields (`orders.event_fields`)."""
    definitions: dict[str, Any] = {field.name: _payload_field(field) for field in orders.event_fields(order_fields)}
    return create_model("OrderPayload", __base__=OrderValues, __module__=__name__, **definitions)


if TYPE_CHECKING:
    OrderPayload = OrderValues
else:
    OrderPayload = order_payload_model()


class BuyOrderCreated(BaseModel):
    """`buy_order.created` v1. Its JSON Schema is `contracts/buy_order.created.v1.schema.json`
    (generated from this model: `python -m btc_orders.events > that file`; a test keeps them equal).
    A reader ignores the fields it does not know, here and in `order`, and takes a missing optional
    field as null: a new optional field keeps version 1; any other change is a new version."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, title="buy_order.created v1", json_schema_extra={"additionalProperties": True}
    )

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
