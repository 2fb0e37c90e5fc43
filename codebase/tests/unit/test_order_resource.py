"""The HTTP order resource's model follows from the order's declaration (`domain.orders.FIELDS`)."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from btc_orders.domain import orders
from btc_orders.domain.orders import BuyOrder, Currency
from btc_orders.services.resources import BuyOrderResource, resource_model

COMMITTED = Path(__file__).resolve().parents[3] / "docs" / "openapi" / "create_buy_order.json"
ORDER = BuyOrder(
    id=uuid.uuid4(),
    sequence=3,
    created_at=datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    currency=Currency.GBP,
    amount=Decimal("7.50"),
    exchange_rate=Decimal("81234.5600"),
    bitcoin_amount=Decimal("0.00009233"),
    idempotence_key=uuid.uuid4(),
)


def schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def test_the_model_is_the_committed_openapi_component_byte_for_byte() -> None:
    app = FastAPI()
    app.get("/order", response_model=BuyOrderResource)(lambda: None)
    served = app.openapi()["components"]["schemas"]["BuyOrderResource"]
    committed = json.loads(COMMITTED.read_text())["components"]["schemas"]["BuyOrderResource"]
    assert json.dumps(served) == json.dumps(committed)


def test_the_model_takes_what_an_order_serves() -> None:
    model = BuyOrderResource.model_validate(ORDER.resource())
    assert model.model_dump(mode="json") == ORDER.resource()


def test_with_client_order_id_the_resource_shows_it_last_present_and_nullable() -> None:
    without = tuple(field for field in orders.FIELDS if field is not orders.CLIENT_ORDER_ID)
    following = resource_model((*without, orders.CLIENT_ORDER_ID))
    properties = schema(following)["properties"]
    assert list(properties) == [*(field.name for field in orders.resource_fields(without)), "client_order_id"]
    assert schema(following)["required"] == list(properties)
    assert properties["client_order_id"]["examples"] == ["shop-42/A"]
    assert {"type": "null"} in properties["client_order_id"]["anyOf"]
    assert following.model_validate({**ORDER.resource(), "client_order_id": None})
    assert following.model_validate({**ORDER.resource(), "client_order_id": "shop-42/A"})
    for bad in ["", "x" * 65, "é"]:
        with pytest.raises(ValidationError):
            following.model_validate({**ORDER.resource(), "client_order_id": bad})


def test_every_kind_of_value_has_its_annotation() -> None:
    every_kind = tuple(orders.OrderField(kind.name.replace(" ", "_"), kind) for kind in orders.KINDS)
    assert list(resource_model(every_kind).model_fields) == [field.name for field in every_kind]
