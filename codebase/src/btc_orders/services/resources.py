"""The HTTP bodies both services serve: the order resource (SPEC 3.3), built from the order's declaration."""

import uuid
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, create_model

from btc_orders.domain import orders
from btc_orders.domain.orders import Currency, Kind, OrderField

# A client's own reference for an order, as the API takes and serves it.
ClientOrderId = Annotated[
    str, StringConstraints(pattern=orders.CLIENT_ORDER_ID_PATTERN, max_length=orders.CLIENT_ORDER_ID_MAX_LENGTH)
]
# How the resource writes each kind of value (money and timestamps as strings: `orders.Kind.to_json`).
_ANNOTATIONS: dict[Kind, Any] = {
    orders.UUID: uuid.UUID,
    orders.SEQUENCE: int,
    orders.TIMESTAMP: str,
    orders.CURRENCY: Currency,
    orders.FIAT: str,
    orders.RATE: str,
    orders.BTC: str,
    orders.CLIENT_REFERENCE: ClientOrderId,
}
_DOC = "The order resource (SPEC 3.3). Money values are decimal strings."


def _resource_field(field: OrderField) -> tuple[Any, Any]:
    """A declared field as a pydantic field: its annotation (`| None` when nullable) and its
    description and example. Every field of the resource is present: a nullable one as `null`."""
    annotation = _ANNOTATIONS[field.kind]
    described = Field(description=field.description, examples=[field.example] if field.example else None)
    return (annotation | None if field.nullable else annotation), described


def resource_model(order_fields: tuple[OrderField, ...] = orders.FIELDS) -> type[BaseModel]:
    """The model of the order resource for these declared fields, in the order the API serves them."""
    served = orders.resource_fields(order_fields)
    definitions: dict[str, Any] = {field.name: _resource_field(field) for field in served}
    return create_model("BuyOrderResource", __doc__=_DOC, __module__=__name__, **definitions)


if TYPE_CHECKING:

    class BuyOrderResource(BaseModel):
        """The order resource (SPEC 3.3): its fields follow from the declaration."""

else:
    BuyOrderResource = resource_model()
